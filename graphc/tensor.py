"""Tensor: a handle on a value, concrete (a numpy array, eager mode) or symbolic (an IR
Value, while tracing), with PyTorch's autograd attributes. Every operation goes through
dispatch.apply, so eager execution, tracing and autodiff share one op table.
"""
from __future__ import annotations

import numbers
from collections import namedtuple
from collections.abc import Sequence
from typing import Any

import numpy as np

from .context import state
from .dispatch import apply
from .epoch import EPOCH
from .errors import TraceError, guard_class, located, user_location
from .hyper import Hyper
from .ir.types import DType, TensorType, bool_, dtype_of, float32, int64, promote

_DT_CACHE: dict[np.dtype, DType] = {}
MinMax = namedtuple("MinMax", ["values", "indices"])


def _dt(a: np.ndarray) -> DType:
    d = _DT_CACHE.get(a.dtype)
    if d is None:
        d = _DT_CACHE[a.dtype] = dtype_of(a.dtype)
    return d


# graphc.autograd's backward without its boundary (Tensor.backward is one), looked up on first use: graphc.autograd
# is imported lazily here, and a relative import on every call costs more than the rest of Tensor.backward
_AUTOGRAD_BACKWARD: list[Any] = []


def _bind_backward() -> Any:
    from .autograd import _backward

    _AUTOGRAD_BACKWARD.append(_backward)
    return _backward


def _shape_args(shape: Sequence[Any]) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(s) for s in shape)


def _axes(dim: Any, ndim: int) -> tuple[int, ...]:
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    n = max(ndim, 1)
    out = []
    for d in dims:
        if not -n <= d < n:
            raise IndexError(located(
                f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {d})"))
        out.append(d % n)
    return tuple(sorted(set(out))) if ndim else ()


class Tensor:
    __slots__ = ("_data", "_sym", "_dtype", "_requires_grad", "_grad", "grad_fn", "_out_index", "_retains_grad",
                 "_vc", "_base", "_view", "_accumulator", "_name", "_dev", "__weakref__")

    # torch gives the reflected operator priority to tensors over numpy arrays
    __array_priority__ = 1000

    def __init__(self, data: Any, requires_grad: bool = False, dtype: DType | None = None):
        arr = np.array(data.numpy() if isinstance(data, Tensor) else data, dtype=None if dtype is None else dtype.np)
        if dtype is None and arr.dtype.kind == "f" and not isinstance(data, (np.ndarray, np.generic)):
            arr = arr.astype(np.float32)
        self._init(arr, None, _dt(arr))
        if requires_grad:
            self.requires_grad = True

    def _init(self, data: np.ndarray | None, sym: Any, dtype: DType) -> None:
        self._data = data
        self._dev: Any = None
        self._sym = sym
        self._dtype = dtype
        self._requires_grad = False
        self._grad: Tensor | None = None
        self.grad_fn: Any = None
        self._out_index = 0
        self._retains_grad = False
        self._vc = [0]  # version counter, shared with detached aliases and views (as torch's)
        self._base: Tensor | None = None
        self._view: tuple | None = None  # (base, view op, attrs) when a view op made this tensor
        self._accumulator: Any = None
        self._name: str | None = None

    @classmethod
    def _make(cls, data: np.ndarray | None, sym: Any, dtype: DType) -> Tensor:
        t = cls.__new__(cls)
        t._init(data, sym, dtype)
        return t

    # ---- values held on a device (the jax backend) ----------------------------------------------------
    # A compiled jax step leaves its results, parameters and optimizer state where XLA computed them, so the
    # next step runs on them (and donates them) without a round trip through host memory. Such a tensor holds
    # the device array in `_dev` and has NO `_data` (the slot is unset): the first read of `_data` anywhere (an
    # eager op, .numpy(), printing, an artifact) lands in __getattr__, which copies the value into a writeable
    # numpy array of the tensor's dtype and forgets the device array. Invariant: `_dev is not None` only while
    # `_data` is unset, so numpy code never sees a jax array and nothing else in graphc needs to know.

    @classmethod
    def _on_device(cls, array: Any, dtype: DType) -> Tensor:
        """A tensor whose value is the device array `array` (a jax.Array of dtype's shape and kind)."""
        t = cls.__new__(cls)
        t._init(None, None, dtype)
        t._set_device(array)
        return t

    def _set_device(self, array: Any) -> None:
        """Replace this tensor's value by a device array (the write-back of a compiled jax step)."""
        if self._dev is None:  # a host value (the invariant: else `_data` is unset already)
            del self._data
        self._dev, self._sym = array, None

    def _device_value(self) -> Any:
        """The value as the jax backend takes it: the device array if there is one, else the numpy array."""
        d = self._dev
        return self._data if d is None else d

    def __getattr__(self, name: str) -> Any:
        # only reached for an unset slot: `_data` of a device-held tensor is materialized here, once
        if name == "_data":
            dev = object.__getattribute__(self, "_dev")
            if dev is not None:
                a = np.array(dev, dtype=self._dtype.np, copy=True)  # writeable, owned by this tensor
                self._data, self._dev = a, None
                return a
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _alias(self) -> Tensor:
        """A new handle on the same value (shared array / IR value) without autograd history."""
        t = Tensor._make(self._data, self._sym, self._dtype)
        t._vc = self._vc
        return t

    @property
    def _version(self) -> int:
        """Bumped by every in-place update; backward compares it with the version an op saved."""
        return self._vc[0]

    @_version.setter
    def _version(self, v: int) -> None:
        self._vc[0] = v

    # ---- basic attributes -----------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        if self._sym is not None:
            return self._sym.type.shape
        d = self._dev
        return self._data.shape if d is None else d.shape

    @property
    def dtype(self) -> DType:
        return self._dtype

    @property
    def type(self) -> TensorType:
        return TensorType(self.shape, self._dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dim(self) -> int:
        return len(self.shape)

    def size(self, dim: int | None = None) -> tuple[int, ...] | int:
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def device(self) -> str:
        return "cpu"

    @property
    def grad(self) -> Tensor | None:
        return self._grad

    def _set_grad(self, g: Tensor | None) -> None:
        old = self._grad
        # a gradient appearing, going or changing type changes compiled steps' cache keys (graphc/epoch.py); a
        # step's new gradients replacing the last ones do not
        if old is None or g is None or old._dtype is not g._dtype or old.shape != g.shape:
            if old is not g:
                EPOCH[0] += 1
        self._grad = g

    _set_grad._graphc_boundary = True  # type: ignore[attr-defined]  (raises nothing: no error boundary, a
    #                                    call layer fewer on every `.grad =` of every backward and zero_grad)
    grad = grad.setter(_set_grad)

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag: bool) -> None:
        if not self.is_leaf:
            raise RuntimeError("you can only change requires_grad flags of leaf variables. If you want to use a "
                               "computed variable in a subgraph that doesn't require differentiation use "
                               "var_no_grad = var.detach().")
        if flag and not self._dtype.is_floating_point:
            raise RuntimeError(located(f"only Tensors of floating point dtype can require gradients "
                                       f"(got {self._dtype.name})"))
        self._requires_grad = bool(flag)
        EPOCH[0] += 1  # compiled functions' cache keys hold every parameter's flag (graphc/epoch.py)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        self.requires_grad = requires_grad
        return self

    def retain_grad(self) -> None:
        if not self.requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if not self.is_leaf:
            self._retains_grad = True
            self.grad_fn.retain(self._out_index, self)

    @property
    def retains_grad(self) -> bool:
        return self._retains_grad

    @property
    def data(self) -> Tensor:
        t = self._traced_detach() if state.tracer is not None else self._alias()
        t._base, t._vc = self, [0]  # as torch's .data: updates through it are not tracked
        return t

    @data.setter
    def data(self, value: Tensor) -> None:
        self._data, self._sym, self._dtype, self._dev = value._data, value._sym, value._dtype, None
        EPOCH[0] += 1  # may change shape and dtype (graphc/epoch.py)

    def detach(self) -> Tensor:
        return self._traced_detach() if state.tracer is not None else self._alias()

    def _traced_detach(self) -> Tensor:
        """While tracing, an alias would be the same graph value, and a compiled backward would differentiate
        through it: record an identity node under no_grad instead (its meta says so; see passes/autodiff)."""
        prev, state.grad_enabled = state.grad_enabled, False
        try:
            t = apply("cast", (self,), {"dtype": self._dtype.name})
        finally:
            state.grad_enabled = prev
        t._vc = self._vc
        return t

    def detach_(self) -> Tensor:
        self.grad_fn, self._requires_grad = None, False
        EPOCH[0] += 1
        return self

    # ---- leaving the graph world ----------------------------------------------------------------
    def _concrete(self, what: str) -> np.ndarray:
        if self._sym is not None and state.tracer is not None:
            raise TraceError(state.tracer.control_flow_message(what, user_location()))
        if self._data is None:
            raise RuntimeError(located(f"{what} on a symbolic tensor outside of tracing"))
        return self._data

    def numpy(self) -> np.ndarray:
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.")
        return self._concrete("Tensor.numpy()")

    def item(self) -> Any:
        d = self._dev
        if d is not None:  # a jax step's loss, read where it is (the tensor keeps no host copy it does not need)
            if d.size != 1:
                raise RuntimeError(f"a Tensor with {d.size} elements cannot be converted to Scalar")
            return d.item()
        a = self._concrete("Tensor.item()")
        if a.size != 1:
            raise RuntimeError(f"a Tensor with {a.size} elements cannot be converted to Scalar")
        return a.reshape(()).item()

    def tolist(self) -> Any:
        return self._concrete("Tensor.tolist()").tolist()

    def __bool__(self) -> bool:
        a = self._concrete("bool(tensor)")
        if a.size != 1:
            raise RuntimeError("Boolean value of Tensor with more than one value is ambiguous")
        return bool(a.reshape(()))

    def __float__(self) -> float:
        return float(self._concrete("float(tensor)").reshape(()))

    def __int__(self) -> int:
        return int(self._concrete("int(tensor)").reshape(()))

    def __index__(self) -> int:
        if self._dtype.kind == "f":
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d tensor")
        if self._sym is not None and state.tracer is not None:
            raise TraceError(state.tracer.control_flow_message("iterating over a tensor", user_location()))
        return (self[i] for i in range(self.shape[0]))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self._concrete("np.asarray(tensor)")
        return a if dtype is None else a.astype(dtype)

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        if self._sym is not None and state.tracer is not None or self._data is None:
            body = f"<traced %{self._sym.name}: {self._sym.type}>" if self._sym is not None else "<symbolic>"
            return f"tensor({body})"
        from ._tensor_str import tensor_repr  # torch's layout: 4 decimals, sci mode, padding, summaries

        extra = []
        if self.grad_fn is not None:
            extra.append(f"grad_fn=<{self.grad_fn.name()}>")
        elif self.requires_grad:
            extra.append("requires_grad=True")
        return tensor_repr(self._data, self._dtype.name, extra)

    # ---- autograd -------------------------------------------------------------------------------
    def backward(self, gradient: Tensor | None = None, retain_graph: bool | None = None,
                 create_graph: bool = False, inputs: Sequence[Tensor] | None = None) -> None:
        run = _AUTOGRAD_BACKWARD[0] if _AUTOGRAD_BACKWARD else _bind_backward()
        run([self], None if gradient is None else [gradient], retain_graph=retain_graph, create_graph=create_graph,
            inputs=inputs)

    # ---- dtype and conversion -------------------------------------------------------------------
    def to(self, *args: Any, dtype: DType | None = None, **_: Any) -> Tensor:
        for a in args:
            if isinstance(a, DType):
                dtype = a
            elif isinstance(a, Tensor):
                dtype = a.dtype
        if dtype is None or dtype_of(dtype) == self._dtype:
            return self
        return apply("cast", (self,), {"dtype": dtype_of(dtype).name})

    def float(self) -> Tensor:
        return self.to(float32)

    def double(self) -> Tensor:
        from .ir.types import float64

        return self.to(float64)

    def long(self) -> Tensor:
        return self.to(int64)

    def int(self) -> Tensor:
        from .ir.types import int32

        return self.to(int32)

    def bool(self) -> Tensor:
        return self.to(bool_)

    def cpu(self) -> Tensor:
        return self

    def clone(self) -> Tensor:
        # (to() to the same dtype returns self; clone must copy)
        return self + 0 if self._dtype.is_floating_point else apply("cast", (self,), {"dtype": self._dtype.name})

    def contiguous(self) -> Tensor:
        return self

    def type_as(self, other: Tensor) -> Tensor:
        return self.to(other.dtype)

    # ---- elementwise math -------------------------------------------------------------------------
    def _lift(self, other: Any) -> Tensor:
        if isinstance(other, Tensor):
            return other
        if isinstance(other, Hyper) and state.tracer is not None:
            # an optimizer hyperparameter while tracing: a float64 graph input, cast like a Python scalar
            return other.sym().to(self._dtype if self._dtype.is_floating_point else float32)
        if isinstance(other, bool):
            dt = bool_ if self._dtype == bool_ else self._dtype
        elif isinstance(other, numbers.Integral):
            dt = self._dtype if self._dtype != bool_ else int64
        elif isinstance(other, numbers.Real):
            dt = self._dtype if self._dtype.is_floating_point else float32
        elif isinstance(other, np.ndarray):
            return Tensor(other)
        else:
            raise TypeError(f"unsupported operand type for a graphc tensor op: {type(other).__name__}")
        t = Tensor._make(np.asarray(other, dtype=dt.np), None, dt)
        t._name = "#const"  # a Python scalar: a tracer may fold it into the graph as a constant
        return t

    def _binary(self, name: str, other: Any, reverse: bool = False) -> Tensor:
        a, b = self, self._lift(other)
        if name == "sub" and bool_ in (a._dtype, b._dtype):  # torch's wording
            raise RuntimeError(located(
                "Subtraction, the `-` operator, with two bool tensors is not supported. Use the `^` or "
                "`logical_xor()` operator instead." if a._dtype == b._dtype else
                "Subtraction, the `-` operator, with a bool tensor is not supported. If you are trying to invert "
                "a mask, use the `~` or `logical_not()` operator instead."))
        if a._dtype != b._dtype:
            # torch: a Python scalar (lifted to 0-d) or a 0-d tensor never widens a dimensioned tensor of its
            # category (f32 * f64 0-d -> f32); it can raise the category (int tensor * 2.5 -> float32)
            dt = promote(a._dtype, b._dtype)
            if (a.ndim == 0) != (b.ndim == 0) and a._dtype.kind == b._dtype.kind:
                dt = b._dtype if a.ndim == 0 else a._dtype
            a, b = a.to(dt), b.to(dt)
        return apply(name, (b, a) if reverse else (a, b), {})

    def __add__(self, o): return self._binary("add", o)  # noqa: E704
    def __radd__(self, o): return self._binary("add", o)  # noqa: E704
    def __sub__(self, o): return self._binary("sub", o)  # noqa: E704
    def __rsub__(self, o): return self._binary("sub", o, True)  # noqa: E704
    def __mul__(self, o): return self._binary("mul", o)  # noqa: E704
    def __rmul__(self, o): return self._binary("mul", o)  # noqa: E704

    def __truediv__(self, o):
        x = self if self._dtype.is_floating_point else self.float()
        return x._binary("div", o)

    def __rtruediv__(self, o):
        x = self if self._dtype.is_floating_point else self.float()
        return x._binary("div", o, True)

    def __pow__(self, o): return self._binary("pow", o)  # noqa: E704
    def __rpow__(self, o): return self._binary("pow", o, True)  # noqa: E704
    def __neg__(self):
        if self._dtype == bool_:
            raise RuntimeError(located("Negation, the `-` operator, on a bool tensor is not supported. If you are "
                                       "trying to invert a mask, use the `~` or `logical_not()` operator instead."))
        return apply("neg", (self,), {})
    def __pos__(self): return self  # noqa: E704
    def __abs__(self): return self.abs()  # noqa: E704
    def __matmul__(self, o): return self.matmul(o)  # noqa: E704
    def __rmatmul__(self, o): return self._lift(o).matmul(self)  # noqa: E704
    def __eq__(self, o): return self._binary("eq", o)  # noqa: E704
    def __ne__(self, o): return self._binary("ne", o)  # noqa: E704
    def __lt__(self, o): return self._binary("lt", o)  # noqa: E704
    def __le__(self, o): return self._binary("le", o)  # noqa: E704
    def __gt__(self, o): return self._binary("gt", o)  # noqa: E704
    def __ge__(self, o): return self._binary("ge", o)  # noqa: E704
    def __and__(self, o): return self._binary("logical_and", o)  # noqa: E704
    def __or__(self, o): return self._binary("logical_or", o)  # noqa: E704
    def __invert__(self): return apply("logical_not", (self,), {})  # noqa: E704

    add = __add__
    sub = __sub__
    mul = __mul__
    div = __truediv__
    pow = __pow__
    neg = __neg__
    eq, ne, lt, le, gt, ge = __eq__, __ne__, __lt__, __le__, __gt__, __ge__

    def maximum(self, o): return self._binary("maximum", o)  # noqa: E704
    def minimum(self, o): return self._binary("minimum", o)  # noqa: E704
    def abs(self): return apply("abs", (self,), {})  # noqa: E704
    def sign(self): return apply("sign", (self,), {})  # noqa: E704
    def _float_unary(self, name: str) -> Tensor:
        """exp, log, sqrt, ... of an integer or bool tensor: computed in float32, torch's default dtype
        (as `/` is); the op itself takes floating point only."""
        return apply(name, (self if self._dtype.is_floating_point else self.float(),), {})

    def exp(self): return self._float_unary("exp")  # noqa: E704
    def log(self): return self._float_unary("log")  # noqa: E704
    def sqrt(self): return self._float_unary("sqrt")  # noqa: E704
    def rsqrt(self): return self._float_unary("rsqrt")  # noqa: E704
    def tanh(self): return self._float_unary("tanh")  # noqa: E704
    def sigmoid(self): return self._float_unary("sigmoid")  # noqa: E704
    def relu(self): return apply("relu", (self,), {})  # noqa: E704
    def sin(self): return self._float_unary("sin")  # noqa: E704
    def cos(self): return self._float_unary("cos")  # noqa: E704
    def square(self): return self * self  # noqa: E704

    def clamp(self, min: float | None = None, max: float | None = None) -> Tensor:
        return apply("clamp", (self,), {"min": None if min is None else float(min),
                                        "max": None if max is None else float(max)})

    clip = clamp

    def where(self, condition: Tensor, other: Any) -> Tensor:
        """torch's Tensor.where: self where condition holds, else other."""
        from .functional import where

        return where(condition, self, other)

    # ---- reductions -------------------------------------------------------------------------------
    def _reduce(self, name: str, dim: Any, keepdim: bool, **extra: Any) -> Tensor:
        return apply(name, (self,), {"axes": _axes(dim, self.ndim), "keepdim": bool(keepdim), **extra})

    def sum(self, dim: Any = None, keepdim: bool = False, dtype: DType | None = None) -> Tensor:
        out = self._reduce("sum", dim, keepdim)
        return out if dtype is None else out.to(dtype)

    def mean(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return self._reduce("mean", dim, keepdim)

    def var(self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *,
            correction: int | None = None) -> Tensor:
        if correction is None:
            correction = 0 if unbiased is False else 1
        return self._reduce("var", dim, keepdim, correction=int(correction))

    def std(self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *,
            correction: int | None = None) -> Tensor:
        return self.var(dim, unbiased, keepdim, correction=correction).sqrt()

    def amax(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return self._reduce("amax", dim, keepdim)

    def amin(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return self._reduce("amin", dim, keepdim)

    def prod(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return self._reduce("prod", dim, keepdim)

    def logsumexp(self, dim: Any, keepdim: bool = False) -> Tensor:
        return self._reduce("logsumexp", dim, keepdim)

    def _minmax(self, name: str, dim: Any, keepdim: bool) -> Any:
        if dim is None:
            return self._reduce("amax" if name == "max_dim" else "amin", None, False)
        if isinstance(dim, Tensor):
            return self.maximum(dim) if name == "max_dim" else self.minimum(dim)
        values, indices = apply(name, (self,), {"axis": _axes(dim, self.ndim)[0] if self.ndim else 0,
                                                "keepdim": bool(keepdim)})
        return MinMax(values, indices)

    def max(self, dim: Any = None, keepdim: bool = False) -> Any:
        return self._minmax("max_dim", dim, keepdim)

    def min(self, dim: Any = None, keepdim: bool = False) -> Any:
        return self._minmax("min_dim", dim, keepdim)

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        axis = None if dim is None else _axes(dim, self.ndim)[0]
        return apply("argmax", (self,), {"axis": axis, "keepdim": bool(keepdim)})

    def argmin(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        axis = None if dim is None else _axes(dim, self.ndim)[0]
        return apply("argmin", (self,), {"axis": axis, "keepdim": bool(keepdim)})

    def all(self) -> Tensor:
        return self.to(bool_).long().sum() == self.numel()

    def any(self) -> Tensor:
        return self.to(bool_).long().sum() > 0

    def softmax(self, dim: int) -> Tensor:
        return apply("softmax", (self,), {"axis": _axes(dim, self.ndim)[0]})

    def log_softmax(self, dim: int) -> Tensor:
        return apply("log_softmax", (self,), {"axis": _axes(dim, self.ndim)[0]})

    def sum_to_size(self, *shape: Any) -> Tensor:
        """Sum broadcast dims away so the result has `shape` (the adjoint of broadcasting)."""
        shape = _shape_args(shape)
        if self.shape == shape:
            return self
        lead = self.ndim - len(shape)
        axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape) if s == 1 and self.shape[lead + i] != 1)
        out = self._reduce("sum", axes, True) if axes else self
        return out.reshape(shape)

    # ---- shapes -----------------------------------------------------------------------------------
    def reshape(self, *shape: Any) -> Tensor:
        shape = _shape_args(shape)
        if -1 in shape:
            known = 1
            for s in shape:
                if s != -1:
                    known *= s
            if shape.count(-1) > 1 or known == 0 or self.numel() % known:
                raise RuntimeError(located(f"shape '{list(shape)}' is invalid for input of size {self.numel()}"))
            shape = tuple(self.numel() // known if s == -1 else s for s in shape)
        if shape == self.shape:
            return self
        return apply("reshape", (self,), {"shape": shape})

    view = reshape

    def view_as(self, other: Tensor) -> Tensor:
        return self.reshape(other.shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        if self.ndim == 0:
            return self.reshape(1)
        s, e = start_dim % self.ndim, end_dim % self.ndim
        n = 1
        for d in self.shape[s:e + 1]:
            n *= d
        return self.reshape(self.shape[:s] + (n,) + self.shape[e + 1:])

    def squeeze(self, dim: int | None = None) -> Tensor:
        if dim is None:
            return self.reshape(tuple(s for s in self.shape if s != 1))
        d = _axes(dim, self.ndim)
        return self.reshape(tuple(s for i, s in enumerate(self.shape) if not (i in d and s == 1)))

    def unsqueeze(self, dim: int) -> Tensor:
        d = dim % (self.ndim + 1) if -self.ndim - 1 <= dim <= self.ndim else None
        if d is None:
            raise IndexError(located(f"Dimension out of range (expected to be in range of [{-self.ndim - 1}, "
                                     f"{self.ndim}], but got {dim})"))
        return self.reshape(self.shape[:d] + (1,) + self.shape[d:])

    def permute(self, *dims: Any) -> Tensor:
        perm = tuple(d % self.ndim for d in _shape_args(dims))
        if perm == tuple(range(self.ndim)):
            return self
        return apply("permute", (self,), {"perm": perm})

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        perm = list(range(self.ndim))
        a, b = _axes(dim0, self.ndim)[0], _axes(dim1, self.ndim)[0]
        perm[a], perm[b] = perm[b], perm[a]
        return self.permute(*perm)

    def t(self) -> Tensor:
        return self if self.ndim < 2 else self.transpose(0, 1)

    @property
    def T(self) -> Tensor:  # noqa: N802
        return self.permute(*reversed(range(self.ndim)))

    @property
    def mT(self) -> Tensor:  # noqa: N802
        return self.transpose(-2, -1)

    def expand(self, *sizes: Any) -> Tensor:
        sizes = _shape_args(sizes)
        lead = len(sizes) - self.ndim
        shape = tuple(self.shape[i - lead] if s == -1 else s for i, s in enumerate(sizes))
        if shape == self.shape:
            return self
        return apply("expand", (self,), {"shape": shape})

    def expand_as(self, other: Tensor) -> Tensor:
        return self.expand(other.shape)

    def matmul(self, other: Any) -> Tensor:
        a, b = self, self._lift(other)
        if a.ndim == 0 or b.ndim == 0:
            raise RuntimeError(located("both arguments to matmul need to be at least 1D, but they are "
                                       f"{a.ndim}D and {b.ndim}D"))
        if a._dtype != b._dtype:
            dt = promote(a._dtype, b._dtype)
            a, b = a.to(dt), b.to(dt)
        if a.ndim == 1 and b.ndim == 1:
            if a.shape != b.shape:
                raise RuntimeError(located(f"inconsistent tensor size, expected tensor [{a.shape[0]}] and src "
                                           f"[{b.shape[0]}] to have the same number of elements"))
            return apply("matmul", (a.reshape(1, -1), b.reshape(-1, 1)), {}).reshape(())
        if a.ndim == 1:
            return apply("matmul", (a.unsqueeze(0), b), {}).squeeze(-2)
        if b.ndim == 1:
            return apply("matmul", (a, b.unsqueeze(-1)), {}).squeeze(-1)
        return apply("matmul", (a, b), {})

    mm = matmul

    def __getitem__(self, index: Any) -> Tensor:
        norm, _ = _normalize_index(index, self.shape)
        return apply("index", (self,), {"index": norm})

    def __setitem__(self, index: Any, value: Any) -> None:
        norm, _ = _normalize_index(index, self.shape)
        from .ops.shape import index_shape

        part = self._lift(value).to(self._dtype).expand(index_shape(self.shape, norm))
        placed = apply("index_grad", (part,), {"index": norm, "shape": self.shape})
        from .factories import ones

        ones = ones(part.shape, dtype=bool_)
        mask = apply("index_grad", (ones,), {"index": norm, "shape": self.shape})
        self._inplace(placed.where(mask, self))

    # ---- in-place ops -----------------------------------------------------------------------------
    def _inplace(self, result: Tensor) -> Tensor:
        """Make this tensor hold `result`: write through to the shared array eagerly,
        rebind the IR value while tracing (functionalization), take over the autograd history."""
        if self.requires_grad and self.is_leaf and state.grad_enabled:
            raise RuntimeError(located("a leaf Variable that requires grad is being used in an in-place operation."))
        if result._dtype != self._dtype:
            result = result.to(self._dtype)
        if result.shape != self.shape:
            raise RuntimeError(located(f"output with shape {list(self.shape)} doesn't match the broadcast shape "
                                       f"{list(result.shape)}"))
        if result.grad_fn is None and self.grad_fn is not None and state.grad_enabled:
            # y.zero_() / y.copy_(const) on a non-leaf: like torch's CopyBackwards, y keeps requiring grad
            # and its old history receives a zero gradient
            from .factories import full

            result = self.where(full(self.shape, False), result)
        view = self._view
        if view is not None and (state.tracer is not None or self.grad_fn is not None or view[0].requires_grad
                                 or not np.may_share_memory(self._data, view[0]._data)):
            # no shared memory to write through (a traced value, a kernel that copied, or a value with autograd
            # history): update the base explicitly, then take the view of the new base, as torch's view +
            # CopySlices does
            base, op, attrs = view
            base._inplace(_scatter_into(base, op, attrs, result))
            new = apply(op, (base,), attrs)
            if new._requires_grad != self._requires_grad:
                EPOCH[0] += 1
            self._data, self._sym, self.grad_fn, self._out_index, self._requires_grad, self._dev = \
                new._data, new._sym, new.grad_fn, new._out_index, new._requires_grad, None
            return self
        fn = result.grad_fn
        if fn is not None and fn.inputs:
            # the op computing the update saved this tensor's old value (mul_ needs it for the other operand's
            # gradient): keep that value private, so this very update does not count as modifying it
            for k, s in enumerate(fn.inputs):
                if s._vc is self._vc:
                    snap = s._alias()
                    snap._vc, snap._requires_grad, snap.grad_fn, snap._out_index = [0], s._requires_grad, \
                        s.grad_fn, s._out_index
                    if state.tracer is None and self.grad_fn is None:  # about to be overwritten in place below
                        snap._data = snap._data.copy()
                    fn.inputs[k], fn.versions[k] = snap, 0
        tracer = state.tracer
        if tracer is not None:
            self._sym = result._sym
            tracer.mutated(self)
            if self._base is not None:
                self._base._sym = result._sym
                tracer.mutated(self._base)
        elif self.grad_fn is not None:
            # recorded ops may have saved this tensor's array (exp saves its output, mul its inputs):
            # give it a new array rather than overwrite theirs, so their gradients stay right
            self._data = result._data.copy()
        else:
            if not self._data.flags.writeable:
                self._data = self._data.copy()
            np.copyto(self._data, result._data)
        if result.grad_fn is not None:
            if not self._requires_grad:
                EPOCH[0] += 1
            self.grad_fn, self._out_index, self._requires_grad = result.grad_fn, result._out_index, True
        self._version += 1
        return self

    def add_(self, other: Any, alpha: float = 1) -> Tensor:
        return self._inplace(self + (other * alpha if alpha != 1 else other))

    def sub_(self, other: Any, alpha: float = 1) -> Tensor:
        return self._inplace(self - (other * alpha if alpha != 1 else other))

    def mul_(self, other: Any) -> Tensor:
        return self._inplace(self * other)

    def div_(self, other: Any) -> Tensor:
        return self._inplace(self / other)

    def clamp_(self, min: float | None = None, max: float | None = None) -> Tensor:
        return self._inplace(self.clamp(min, max))

    def relu_(self) -> Tensor:
        return self._inplace(self.relu())

    def copy_(self, src: Any) -> Tensor:
        return self._inplace(self._lift(src).to(self._dtype).expand(self.shape))

    def fill_(self, value: float) -> Tensor:
        from .factories import full

        return self._inplace(full(self.shape, value, dtype=self._dtype))

    def zero_(self) -> Tensor:
        return self.fill_(0)

    def new_zeros(self, *shape: Any) -> Tensor:
        from .factories import zeros

        return zeros(*shape, dtype=self._dtype)

    def new_ones(self, *shape: Any) -> Tensor:
        from .factories import ones

        return ones(*shape, dtype=self._dtype)

    def new_tensor(self, data: Any) -> Tensor:
        return Tensor(data, dtype=self._dtype)


def _scatter_into(base: Tensor, op: str, attrs: dict, value: Tensor) -> Tensor:
    """The base tensor with `value` written where the view op `op` reads from it."""
    if op == "reshape":
        return value.reshape(base.shape)
    if op == "permute":
        inverse = [0] * len(attrs["perm"])
        for i, p in enumerate(attrs["perm"]):
            inverse[p] = i
        return value.permute(*inverse)
    if op == "index":
        from .factories import ones

        placed = apply("index_grad", (value,), {"index": attrs["index"], "shape": base.shape})
        mask = apply("index_grad", (ones(value.shape, dtype=bool_),), {"index": attrs["index"], "shape": base.shape})
        return placed.where(mask, base)
    raise RuntimeError(located("unsupported operation: more than one element of the written-to tensor refers to a "
                               "single memory location. Please clone() the tensor before performing the operation."))


def _normalize_index(index: Any, shape: tuple[int, ...]) -> tuple[tuple, bool]:
    """Basic indexing (ints, slices, None, Ellipsis) -> the index op's attr."""
    if not isinstance(index, tuple):
        index = (index,)
    n_real = sum(1 for i in index if i is not None and i is not Ellipsis)
    if sum(1 for i in index if i is Ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if n_real > len(shape):
        raise IndexError(located(f"too many indices for tensor of dimension {len(shape)}"))
    out, d = [], 0
    for item in index:
        if item is Ellipsis:
            for _ in range(len(shape) - n_real):
                out.append(("s", 0, shape[d], 1))
                d += 1
        elif item is None:
            out.append(("n",))
        elif isinstance(item, slice):
            start, stop, step = item.indices(shape[d])
            if step <= 0:
                raise ValueError("step must be greater than zero")
            out.append(("s", start, stop, step))
            d += 1
        elif isinstance(item, (int, np.integer)) or (isinstance(item, Tensor) and item.ndim == 0
                                                       and not item.dtype.is_floating_point):
            k = int(item)
            if not -shape[d] <= k < shape[d]:
                raise IndexError(located(f"index {k} is out of bounds for dimension {d} with size {shape[d]}"))
            out.append(("i", k % shape[d]))
            d += 1
        else:
            raise IndexError(located(f"graphc supports basic indexing (ints, slices, None, ...), not "
                                     f"{type(item).__name__}; use gc.where or a mask multiply instead"))
    while d < len(shape):
        out.append(("s", 0, shape[d], 1))
        d += 1
    return tuple(out), False


Tensor._tensor_class = Tensor  # type: ignore[attr-defined]  # for modules tensor.py imports (passes/autodiff.py)
guard_class(Tensor, subclasses=True)  # errors end at the user's line (graphc/errors.py)
