"""Running graphs on XLA: one jitted, ahead-of-time compiled computation per graph.

A JaxProgram wraps the function that codegen.generate writes for a graph in `jax.jit`, with
the graph's input types known in advance, so `Lowered.compile()` is `jit(f).lower(types).compile()`
and nothing is traced at call time. It owns the decisions that sit between graphc's calling
convention (numpy arrays in, numpy arrays out) and XLA's:

* 64-bit types. A graph whose values include float64 or int64 (a float64 model, the float64
  hyperparameter scalars of a captured optimizer step, an int64 seed or labels) is traced,
  compiled and run inside a local `enable_x64` scope, so its declared types hold exactly; the
  user's global jax configuration is never changed. Other graphs run in jax's default mode.
* Placement. Inputs go to one device (`device="cpu" | "gpu" | "tpu" | jax.Device`), or, for data
  parallelism, over a `jax.sharding.Mesh`: the leading (batch) dimension of every tensor argument
  is split over all devices of the mesh, everything else (parameters, buffers, optimizer state) is
  replicated. jax.jit then partitions the computation (GSPMD) and inserts the gradient all-reduce
  itself: the same program gives the same numbers on one device or many.
* Donation. Inputs that the step overwrites in place (parameters, buffers, optimizer state) are
  donated, so XLA may write the new values into the input buffers: a numpy array stays untouched
  (jax copies it to the device first); a device array held by a graphc tensor is consumed, and the
  Executable gives that tensor the new value. The device holds one copy of the state, not two.
  State a step only reads (frozen parameters) is put on the device once (`place`) and kept there by
  its tensor, when nothing else shares its numpy array (graphc.compile._sole_owner).
* Results. `run` leaves every output on the device (graphc tensors hold them there, see
  Tensor._on_device, and copy to the host only when Python reads them); `__call__` gives the
  first n_host outputs as writeable numpy arrays of the graph's declared dtypes.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import operator
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from ...ir.graph import Graph
from ...ir.types import TensorType
from ..allocator import keep_freed_memory
from .codegen import generate

_WIDE = ("float64", "int64")


def x64_scope(enabled: bool) -> contextlib.AbstractContextManager:
    """jax's 64-bit mode switched on or off for one block only, so a float64 graph never flips the
    process-wide setting: jax's own context manager, returned as it is (every step enters one)."""
    return _ENABLE_X64(enabled)


def _enable_x64() -> Callable[[bool], contextlib.AbstractContextManager]:
    enable = getattr(jax, "enable_x64", None)
    if enable is None:  # jax < 0.6
        from jax.experimental import enable_x64 as enable
    return enable


_ENABLE_X64 = _enable_x64()


def needs_x64(g: Graph) -> bool:
    """Whether any value of g has a 64-bit dtype that jax's default mode would narrow to 32 bits."""
    vals = list(g.inputs) + [v for n in g.nodes for v in n.outputs]
    return any(v.type.dtype.name in _WIDE for v in vals)


def resolve_device(device: Any = None) -> jax.Device:
    """A jax.Device from graphc's `device=` argument: None (jax's default device), a platform name
    ("cpu", "gpu"/"cuda"/"rocm", "tpu"), "platform:index", or a jax.Device itself."""
    if device is None:
        return jax.devices()[0]
    if isinstance(device, jax.Device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu', 'gpu', 'tpu' or 'gpu:1', or a jax.Device; "
                        f"got {device!r}")
    platform, _, index = device.partition(":")
    try:
        devices = jax.devices(platform)
    except RuntimeError as e:
        raise ValueError(f"no jax device for {device!r} ({e}); jax sees: {', '.join(map(str, jax.devices()))}")\
            from None
    i = int(index) if index else 0
    if not 0 <= i < len(devices):
        raise ValueError(f"device {device!r}: jax has {len(devices)} {platform} device(s)")
    return devices[i]


class Placement:
    """Where a program's arrays live: one device, or a mesh whose every axis splits the batch."""

    def __init__(self, device: Any = None, data_parallel: bool = False, mesh: Mesh | None = None):
        if mesh is None and data_parallel:
            platform = resolve_device(device).platform
            mesh = Mesh(np.array(jax.devices(platform)), ("batch",))
        self.mesh = mesh
        self.device = None if mesh is not None else resolve_device(device)

    @property
    def n_shards(self) -> int:
        return 1 if self.mesh is None else self.mesh.devices.size

    def sharding(self, batched: bool) -> jax.sharding.Sharding:
        if self.mesh is None:
            return SingleDeviceSharding(self.device)
        spec = PartitionSpec(tuple(self.mesh.axis_names)) if batched else PartitionSpec()
        return NamedSharding(self.mesh, spec)

    def can_shard(self, t: TensorType) -> bool:
        return self.mesh is not None and len(t.shape) >= 1 and t.shape[0] % self.n_shards == 0

    def __repr__(self) -> str:
        if self.mesh is None:
            return f"Placement({self.device})"
        return f"Placement(mesh {dict(self.mesh.shape)} over {self.mesh.devices.flat[0].platform})"


def _abstract(t: TensorType) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(t.shape), np.dtype(t.dtype.np))


class JaxProgram:
    """One graph, jitted for its input types and placement; call it with numpy (or jax) arrays.

    batched: indices of inputs split along their leading dimension (data parallel); in_shardings: the
    sharding of each input where the caller knows better (a backward graph takes the forward's saved
    values as XLA laid them out); donate: {input index: output index} for inputs whose buffers XLA may
    reuse for that output (the new value of the same state); n_host: how many leading outputs come back
    as numpy arrays (the rest stay jax arrays on the device, for a later program).
    """

    def __init__(self, g: Graph, name: str, placement: Placement | None = None, *, batched: Sequence[int] = (),
                 in_shardings: Sequence[Any] | None = None, donate: dict[int, int] | None = None,
                 n_host: int | None = None, free_layout: Sequence[int] = (),
                 fn: Any = None):
        keep_freed_memory()
        self.graph = g
        self.placement = placement or Placement()
        self.source, self.fn = generate(g, name)
        if fn is not None:  # a deserialized jax.export: run it, keep the generated source for reading
            self.fn = fn
        self.x64 = needs_x64(g) or bool(jax.config.read("jax_enable_x64"))
        self.in_types = [v.type for v in g.inputs]
        self.out_types = [v.type for v in g.outputs]
        self.n_host = len(g.outputs) if n_host is None else n_host
        batched = set(batched)
        self.in_shardings = tuple(in_shardings) if in_shardings is not None else \
            tuple(self.placement.sharding(i in batched) for i in range(len(g.inputs)))
        host = self.placement.sharding(False)  # results and new state: whole on every device
        self.out_shardings = tuple(host if k < self.n_host or self.placement.mesh is None else None
                                   for k in range(len(g.outputs)))
        self.free_layout = frozenset(free_layout)
        donate = donate or {}
        self.donate = tuple(sorted(donate))
        # jax pairs each output with the first donated input of the same shape and dtype, in output order; a step
        # returns a parameter's .grad next to its new value, so a grad would take the momentum buffer's memory and
        # XLA would copy every buffer to keep the old values readable. The jitted function therefore returns the
        # donated inputs' own outputs first, in input order (self.order), and run() puts them back in graph order.
        first = [donate[i] for i in self.donate]
        self.order = first + [k for k in range(len(g.outputs)) if k not in donate.values()]
        self._unorder = [self.order.index(k) for k in range(len(g.outputs))] if first else None
        # the program's outputs back in graph order, in one C call per step (one output: a 1-tuple)
        self._in_graph_order = (lambda outs: (outs[self._unorder[0]],)) if first and len(g.outputs) == 1 else \
            operator.itemgetter(*self._unorder) if first else tuple
        self._jit()

    def _jit(self) -> None:
        """self.jitted, the free_layout outputs in the layout XLA picks (where jax has the layout API)."""
        free = _auto_layout(self.placement.sharding(False)) if self.free_layout else None
        if free is None:
            self.free_layout = frozenset()
        fn = self.fn
        ordered = fn
        if self._unorder is not None:
            @functools.wraps(fn)  # the graph's input names stay the HLO parameter names
            def ordered(*a: Any) -> tuple:
                outs = fn(*a)
                return tuple(outs[k] for k in self.order)
        outs = tuple(free if k in self.free_layout else self.out_shardings[k] for k in self.order)
        self.jitted = jax.jit(ordered, in_shardings=self.in_shardings, out_shardings=outs,
                              donate_argnums=self.donate)
        self._lowered: Any = None
        self._compiled: Any = None

    # ---- ahead of time -------------------------------------------------------------------------------
    def lower(self) -> Any:
        """jax.stages.Lowered for the graph's input types (traced once, then kept)."""
        if self._lowered is None:
            with x64_scope(self.x64):
                self._lowered = self.jitted.lower(*(_abstract(t) for t in self.in_types))
        return self._lowered

    def compile(self) -> Any:
        """jax.stages.Compiled: XLA's executable for this graph (compiled once, then kept)."""
        if self._compiled is None:
            lowered = self.lower()
            with x64_scope(self.x64):
                self._compiled = lowered.compile()
            if self.free_layout and not self._layouts_hold():
                self.free_layout = frozenset()
                self._jit()
                return self.compile()
        return self._compiled

    def _layouts_hold(self) -> bool:
        """Whether every output outside free_layout really is row-major in the compiled program. XLA gives one
        value returned twice (a first step's momentum buffer is its .grad) the layout chosen for the free one,
        while jax still labels the other row-major: the next program would read it transposed. Checked on the
        executable's own output layouts; where they cannot be read, the program is rebuilt without free
        layouts."""
        try:
            from jax.experimental.layout import Layout

            got = self._compiled._executable.xla_executable.get_output_layouts()
            for j, k in enumerate(self.order):
                if k not in self.free_layout:
                    order = tuple(Layout.from_pjrt_layout(got[j]).major_to_minor)
                    if order != tuple(range(len(order))):
                        return False
        except Exception:  # noqa: BLE001  (jax internals moved: take the safe program)
            return False
        return True

    def as_text(self, dialect: str = "stablehlo") -> str:
        return self.lower().as_text(dialect=dialect)

    def cost_analysis(self) -> dict[str, float]:
        """XLA's own estimate for the compiled computation (flops, bytes accessed, ...)."""
        cost = self.compile().cost_analysis()
        if isinstance(cost, (list, tuple)):  # older jax: one dict per device program
            cost = cost[0] if cost else {}
        return dict(cost or {})

    # ---- running ---------------------------------------------------------------------------------------
    def __call__(self, *arrays: Any) -> tuple:
        """numpy (or jax) arrays in; the first n_host outputs back as numpy arrays, the rest as jax arrays."""
        return self.to_host(self.run(*arrays))

    def run(self, *arrays: Any, placed: bool = False) -> tuple:
        """numpy or jax arrays in, every output as the jax array XLA computed (nothing copied to the host):
        what graphc's Executable calls, so state stays on the device between steps. placed: every argument is
        a jax array of the program's type already (as a step's state kept on the device and its hyperparameters
        are): jax's 64-bit mode, which only decides how host values convert, is then left as it is (entering
        it costs a step at batch 1 several microseconds)."""
        compiled = self._compiled if self._compiled is not None else self.compile()
        if placed:
            outs = self._call(compiled, arrays)
        else:
            with x64_scope(self.x64):
                if jax.process_count() > 1 and self.placement.mesh is not None:
                    arrays = tuple(a if isinstance(a, jax.Array) else _global_array(a, s)
                                   for a, s in zip(arrays, self.in_shardings))
                outs = self._call(compiled, arrays)
        return self._in_graph_order(outs)

    def _call(self, compiled: Any, arrays: Sequence[Any]) -> Any:
        try:
            return compiled(*arrays)
        except ValueError as e:  # an argument left by a free_layout output: checked before anything runs
            if "layout" not in str(e):
                raise
            return compiled(*self._relayout(arrays))

    def place(self, i: int, array: np.ndarray) -> jax.Array:
        """Input i's value as a device array laid out as the program takes it (kept by the tensor for later
        calls, so that state the step reads but never replaces is not copied to the device every time)."""
        s = self.in_shardings[i]
        with x64_scope(self.x64):
            if jax.process_count() > 1 and self.placement.mesh is not None:
                return _global_array(array, s)
            return jax.device_put(array, s)

    def _relayout(self, arrays: Sequence[Any]) -> list[Any]:
        """The arguments, each device array in the layout this program was compiled for (a gradient that an
        earlier program left in its convolution's layout, passed to a program that reads gradients)."""
        want = self.compile().input_formats[0]
        return [jax.device_put(a, f) if isinstance(a, jax.Array) and getattr(a, "format", f) != f else a
                for a, f in zip(arrays, want)]

    def output_shardings(self) -> list[Any]:
        """The sharding XLA gave each output, in the graph's output order."""
        got = list(self.compile().output_shardings)
        return got if self._unorder is None else [got[j] for j in self._unorder]

    def to_host(self, outs: Sequence[Any]) -> tuple:
        """The first n_host outputs as writeable numpy arrays of the graph's dtypes; the rest as they are."""
        host = jax.device_get(list(outs[:self.n_host]))  # starts every transfer before waiting on any
        res = []
        for a, t in zip(host, self.out_types):
            a = np.array(a, dtype=t.dtype.np, copy=True)  # graphc tensors own writeable memory
            res.append(a)
        return tuple(res) + tuple(outs[self.n_host:])


def _auto_layout(sharding: jax.sharding.Sharding) -> Any:
    """An output format that lets XLA keep the layout it computed the value in (None on jax without the
    layout API). A convolution's weight gradient comes out as (kh, kw, in, out) on the CPU; a `.grad` output in
    torch's (out, in, kh, kw) order costs one more pass over every gradient (ResNet-18: 47 MB, ~10 ms a step),
    while copying it to the host puts it in row-major order anyway."""
    try:
        from jax.experimental.layout import Format, Layout
    except ImportError:
        return None
    return Format(Layout.AUTO, sharding)


def _global_array(a: Any, s: jax.sharding.Sharding) -> jax.Array:
    """Multi-host: every process passes the same global value (the whole batch, the same state) and copies to
    its own devices only the pieces they hold."""
    return jax.make_array_from_callback(np.shape(a), s, lambda idx: np.asarray(a)[idx])


def build_programs(inputs: Sequence[Any], outputs: Sequence[Any], forward: Graph, backward: Graph | None,
                   placement: Placement) -> tuple[JaxProgram, JaxProgram | None]:
    """The programs of one Executable: its forward (or whole step) graph and, when results carry a compiled
    backward, the backward graph. inputs/outputs are the Executable's slots (graphc.trace.InputSlot/OutputSlot):
    they say which inputs are the batch (tensor arguments) and which state each output overwrites."""
    batched = [i for i, s in enumerate(inputs) if s.kind == "arg" and placement.can_shard(forward.inputs[i].type)]
    if placement.mesh is not None:
        skipped = [s.name for i, s in enumerate(inputs) if s.kind == "arg" and i not in batched]
        if skipped:
            warnings.warn(f"data_parallel: argument(s) {', '.join(skipped)} have no leading dimension divisible by "
                          f"{placement.n_shards} devices and are replicated, not split", stacklevel=4)
    # an input may be donated when an output of the same type replaces the same state in the same tensor after the
    # call (its device array is then unreachable). Not a .grad: the step gives the parameter a new .grad tensor, and
    # the old one, which the caller may still hold, must keep its value
    written = {id(o.ref): k for k, o in enumerate(outputs) if o.kind == "update" and o.ref is not None}
    # Only state read once (a momentum buffer, read by its own update): XLA copies a donated buffer that other
    # ops read as well (a weight, read by the forward, the input gradient and the update) rather than order
    # every read before the write, and that copy costs more than a fresh output buffer.
    users = forward.users()
    donate = {}
    for i, s in enumerate(inputs):
        k = written.get(id(s.ref)) if s.kind in ("param", "buffer", "state") else None
        if k is not None and forward.outputs[k].type == forward.inputs[i].type \
                and len(users.get(id(forward.inputs[i]), ())) <= 1:
            donate[i] = k
    name = "forward" if backward is not None else "step"
    # .grad outputs are read by nobody in the step: XLA may leave them in the layout it computed them in
    # (not a value that is another output as well, which must then be row-major: see _layouts_hold)
    counts = collections.Counter(id(v) for v in forward.outputs)
    grads = [k for k, o in enumerate(outputs) if o.kind == "grad" and counts[id(forward.outputs[k])] == 1] \
        if placement.mesh is None else []
    fwd = JaxProgram(forward, name, placement, batched=batched, donate=donate, n_host=len(outputs),
                     free_layout=grads)
    if backward is None:
        return fwd, None
    n_saved = len(forward.outputs) - len(outputs)
    saved = fwd.output_shardings()[len(outputs):]
    host = placement.sharding(False)
    shardings = saved + [host] * (len(backward.inputs) - n_saved)
    return fwd, JaxProgram(backward, "backward", placement, in_shardings=shardings)


def total_cost(programs: Sequence[JaxProgram | None]) -> dict[str, float]:
    """XLA's cost analysis summed over an executable's programs (forward and backward run once each per step)."""
    total: dict[str, float] = {}
    for p in programs:
        if p is not None:
            for k, v in p.cost_analysis().items():
                if isinstance(v, (int, float)):
                    total[k] = total.get(k, 0.0) + float(v)
    return total


# ---- artifacts: jax.export next to graph.json ----------------------------------------------------------

#: the artifact member holding a serialized jax.export of the step (graphc.io.artifact stores it verbatim)
EXPORT_MEMBER = "xla.jaxexport"
#: lowered for every platform at once where possible, so one artifact runs on CPU, GPU and TPU
EXPORT_PLATFORMS = ("cpu", "cuda", "tpu")


def export_graph(g: Graph) -> bytes:
    """jax.export serialization of g for one device (StableHLO plus calling convention, versioned by jax).

    Exported without any mesh: an artifact does not assume the device count of the machine that wrote it."""
    from jax import export

    prog = JaxProgram(g, "step")
    args = [_abstract(t) for t in prog.in_types]
    with x64_scope(prog.x64):
        try:
            exp = export.export(jax.jit(prog.fn), platforms=EXPORT_PLATFORMS)(*args)
        except Exception:  # noqa: BLE001  (a platform lacks a lowering here: export for this one only)
            exp = export.export(jax.jit(prog.fn))(*args)
        return bytes(exp.serialize())


def exported_program(data: bytes, g: Graph, placement: Placement | None = None) -> JaxProgram:
    """A JaxProgram that runs an artifact's serialized jax.export instead of regenerating code from g (g gives
    the types and the readable source)."""
    from jax import export

    exp = export.deserialize(bytearray(data))
    prog = JaxProgram(g, "step", placement, fn=exp.call)
    want = [_abstract(t) for t in prog.in_types]
    got = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in exp.in_avals]
    if [(w.shape, w.dtype) for w in want] != [(a.shape, a.dtype) for a in got]:
        raise ValueError("the artifact's jax export does not match its graph.json input types")
    return prog
