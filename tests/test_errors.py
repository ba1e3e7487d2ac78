"""Shape errors point at the user's code: they name the op, both shapes and the user's file:line
(DESIGN.md, 'Errors point at the user's code'), in PyTorch's wording where PyTorch has one."""
from __future__ import annotations

import os

import pytest

import graphc as gc
from graphc.dispatch import apply

THIS_FILE = os.path.basename(__file__)
CONV = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}


def _points_here(excinfo: pytest.ExceptionInfo) -> str:
    """The message, after checking that it names this file and the line (in this file) that raised."""
    msg = str(excinfo.value)
    here = [e for e in excinfo.traceback if os.path.basename(str(e.path)) == THIS_FILE]
    line = here[-1].lineno + 1  # pytest's entries count lines from 0
    assert f"{THIS_FILE}:{line}" in msg, msg
    assert "graphc" + os.sep not in msg.split(" (at ")[-1], msg  # the user's line, never graphc's internals
    return msg


def test_matmul_shape_error_names_both_shapes_and_the_line():
    with pytest.raises(RuntimeError) as e:
        gc.ones(1, 576) @ gc.ones(400, 120)
    msg = _points_here(e)
    assert "mat1 and mat2 shapes cannot be multiplied (1x576 and 400x120)" in msg
    assert isinstance(e.value, gc.ShapeError)


def test_matmul_vector_shape_errors():
    with pytest.raises(RuntimeError) as e:
        gc.ones(3) @ gc.ones(4, 2)
    assert "(1x3 and 4x2)" in _points_here(e)
    with pytest.raises(RuntimeError) as e:
        gc.ones(3) @ gc.ones(4)
    assert "expected tensor [3] and src [4]" in _points_here(e)
    with pytest.raises(RuntimeError) as e:
        gc.matmul(gc.ones(2, 2, 3), gc.ones(3, 3, 4))
    msg = _points_here(e)
    assert "(2, 2, 3)" in msg and "(3, 3, 4)" in msg
    assert "matmul: matmul" not in msg


def test_error_inside_a_user_function_names_that_line():
    def model(x):
        return x @ gc.ones(5, 2)  # the line inside the user's function is named

    with pytest.raises(RuntimeError) as e:
        model(gc.ones(3, 4))
    msg = str(e.value)
    assert f"{THIS_FILE}:{model.__code__.co_firstlineno + 1}" in msg
    assert "(3x4 and 5x2)" in msg


def test_broadcast_mismatch_names_both_shapes():
    with pytest.raises(RuntimeError) as e:
        gc.ones(2, 3) + gc.ones(3, 2)
    msg = _points_here(e)
    assert "(2, 3)" in msg and "(3, 2)" in msg and "add" in msg
    # torch's sentence, with the dimension torch names (the first mismatch from the right)
    assert "size of tensor a (3) must match the size of tensor b (2) at non-singleton dimension 1" in msg
    with pytest.raises(RuntimeError) as e:
        gc.ones(2, 3, 4) * gc.ones(5, 1, 4)
    msg = _points_here(e)
    assert "(2, 3, 4)" in msg and "(5, 1, 4)" in msg and "mul" in msg
    assert "size of tensor a (2) must match the size of tensor b (5) at non-singleton dimension 0" in msg


@pytest.mark.torch
@pytest.mark.parametrize("sa,sb", [((2, 3), (3, 2)), ((2, 3, 4), (5, 1, 4)), ((4,), (3,)), ((2, 1, 3), (4, 2))])
def test_broadcast_sentence_matches_torch(sa, sb):
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError) as t:
        torch.ones(sa) + torch.ones(sb)
    with pytest.raises(RuntimeError) as g:
        gc.ones(sa) + gc.ones(sb)
    assert str(t.value).lower() in str(g.value).lower()


def test_reshape_invalid_size_names_shape_and_line():
    with pytest.raises(RuntimeError) as e:
        gc.ones(3, 4).reshape(5, 3)
    msg = _points_here(e)
    assert "shape '[5, 3]' is invalid for input of size 12" in msg
    with pytest.raises(RuntimeError) as e:
        gc.ones(3, 4).view(-1, 5)
    assert "shape '[-1, 5]' is invalid for input of size 12" in _points_here(e)


def test_cat_mismatch_names_both_shapes():
    with pytest.raises(RuntimeError) as e:
        gc.cat([gc.ones(2, 3), gc.ones(3, 4)], dim=0)
    msg = _points_here(e)
    assert "(2, 3)" in msg and "(3, 4)" in msg
    assert "Sizes of tensors must match except in dimension 0" in msg
    with pytest.raises(RuntimeError) as e:
        gc.stack([gc.ones(2, 3), gc.ones(3, 3)])
    msg = _points_here(e)
    assert "[2, 3]" in msg and "[3, 3]" in msg


def test_conv2d_channel_mismatch():
    x, w = gc.ones(1, 3, 8, 8), gc.ones(6, 1, 3, 3)
    with pytest.raises(RuntimeError) as e:
        apply("conv2d", [x, w], CONV)
    msg = _points_here(e)
    # torch's wording
    assert ("Given groups=1, weight of size [6, 1, 3, 3], expected input[1, 3, 8, 8] to have 1 channels, but got 3 "
            "channels instead") in msg


def test_conv2d_input_too_small():
    with pytest.raises(RuntimeError) as e:
        apply("conv2d", [gc.ones(1, 1, 2, 2), gc.ones(1, 1, 3, 3)], CONV)
    msg = _points_here(e)
    assert "(1, 1, 2, 2)" in msg and "(3, 3)" in msg


def test_index_and_dim_errors_point_at_the_line():
    x = gc.ones(2, 3)
    with pytest.raises(IndexError) as e:
        x[2]
    assert "index 2 is out of bounds for dimension 0 with size 2" in _points_here(e)
    with pytest.raises(IndexError) as e:
        x.sum(2)
    assert "Dimension out of range (expected to be in range of [-2, 1], but got 2)" in _points_here(e)
    with pytest.raises(IndexError) as e:
        x.unsqueeze(3)
    assert "Dimension out of range" in _points_here(e)


def test_expand_and_where_errors():
    with pytest.raises(RuntimeError) as e:
        gc.ones(2, 3).expand(4, 3)
    msg = _points_here(e)
    assert "The expanded size of the tensor (4) must match the existing size (2) at non-singleton dimension 0" in msg
    with pytest.raises(RuntimeError) as e:
        gc.where(gc.ones(2) > 0, gc.ones(3), gc.ones(2))
    msg = _points_here(e)
    assert "(2,)" in msg and "(3,)" in msg


def test_in_place_shape_mismatch():
    x = gc.ones(2, 3)
    with pytest.raises(RuntimeError) as e:
        x.add_(gc.ones(4, 2, 3))
    assert "doesn't match the broadcast shape" in _points_here(e)
