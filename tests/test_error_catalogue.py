"""Every entry of the error catalogue (docs/errors.md): the right exception and message, a traceback that
ends at the user's line, and a page that shows what graphc really prints."""
from __future__ import annotations

import os

import pytest
from error_catalogue import CASES, DOC, FILENAME, normalize, render, run_case

import graphc as gc

GRAPHC = os.path.dirname(gc.__file__)


@pytest.mark.parametrize("case", CASES, ids=[c.key for c in CASES])
def test_catalogue_entry(case):
    out = run_case(case)
    assert out.exc is not None, f"{case.key}: no error was raised"
    assert type(out.exc).__name__ == case.error, out.text
    msg = str(out.exc)
    for fragment in case.expect:
        assert fragment in msg, f"{fragment!r} not in:\n{msg}"
    # the traceback ends at the user's line: no graphc frame anywhere after the user's first frame
    assert [f for f in out.frames if f.filename.startswith(GRAPHC)] == [], out.text
    assert out.frames[-1].filename == FILENAME and out.frames[-1].lineno == case.line, out.text
    if case.located:
        assert f"{FILENAME}:{case.line}" in msg, msg


def test_shape_errors_cover_every_family_eager_and_compiled():
    keys = {c.key for c in CASES}
    for family in ("matmul", "broadcast", "reshape", "cat", "conv2d", "linear"):
        assert {f"shape-{family}-eager", f"shape-{family}-compiled"} <= keys


def test_the_page_shows_real_output():
    assert DOC.exists(), "run: python tests/error_catalogue.py"
    assert normalize(DOC.read_text()) == normalize(render()), \
        "docs/errors.md is stale; regenerate it with: python tests/error_catalogue.py"
