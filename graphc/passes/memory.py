"""Memory planning for the numpy backend: liveness, in-place execution and the planned peak.

The generated numpy code allocates one array per node output and drops each name right after
its last use. This pass decides, per node, whether its result can be written with `out=` into
the buffer of an input that dies at that very node (in-place execution), which saves the
allocation, the page faults of a fresh multi-megabyte buffer, and half the cache traffic of a
streaming elementwise op. A chain of elementwise ops (a fused group) thus runs in ONE buffer.

Safety rules, checked on storages (a value and every view of it share one storage):
  * never write into a graph input (the caller's data, frozen parameters, anything read again
    after the step), except a donated one (below);
  * never write into a storage that is still live after this node: a saved activation, a graph
    output, or any view of the buffer read later;
  * only full-size buffers of exactly the output's type (shape and dtype), produced fresh by a
    kernel of this graph (not a view, not a broadcast), and only for ops whose kernel takes
    `out=` (numpy ufuncs and the kernels that declare it).
Donation. A training step replaces its parameters, optimizer state and accumulated grads with new
values; the old ones are dead once the step has read them. Like torch's in-place optimizers (and
XLA's donated buffers), the node computing the new value of a donated input writes it straight into
the input's buffer (`p_new = np.subtract(p, upd, out=p)`), which saves a fresh parameter-sized buffer
per tensor and the cache traffic of writing it. A failed call must still change nothing, so a donated
write is planned only after the last heavy kernel (convolution, matmul, pooling: the big allocations,
the only kernels with more than arithmetic inside): what follows is elementwise arithmetic on arrays
whose shapes were checked when the graph was built, run with floating-point errors ignored (IEEE
results, as torch gives), so it cannot fail on the data. In a training step that is the optimizer's
update, after the whole backward pass; a BatchNorm running-statistics update in the middle of the
forward pass is not donated. Only the input's own update may be written into it (never another
tensor's value), by the node producing the update and the chain of ops leading to it, and only
once nothing reads the old value (or a view of it) later. The caller (compile.Executable) hands
over only arrays that no other input aliases.

Gradient buffers. A step that starts with `opt.zero_grad()` throws each parameter's last `.grad` away and
computes a new one; holding both is a model-sized buffer more than torch needs, whose zero_grad() frees the old
gradients before its backward. The kernel computing a new gradient (a convolution's or a linear layer's weight
gradient: nearly all of a model's parameters) therefore takes the old gradient's buffer as `out=` when the
caller hands it over (compile.Executable: only a `.grad` nobody else can see; a call that fails then leaves that
`.grad` None, the state the step's own zero_grad() left). Planned here are the outputs that can take one: the
kernel's own result (not a view), of the parameter's type, returned once, and of at least min_bytes.

The planned peak walks the same schedule: bytes of live buffers plus each kernel's scratch (the
im2col columns of a convolution, say), with graph inputs counted as resident throughout.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ir.graph import Graph, Node, Value
from ..ops import OPS

#: buffers below this size are left to numpy's small-array cache: out= would cost more than it saves
MIN_INPLACE_BYTES = 1 << 14


def out_capable(op: str) -> bool:
    """Whether the numpy kernel of op accepts out= (ufuncs do; kernels declare it)."""
    from ..backends.numpy.elementwise import _UFUNCS
    from ..backends.numpy.registry import KERNELS

    return op in _UFUNCS or bool(getattr(KERNELS.get(op), "supports_out", False))


def _writes_out(node: Node) -> bool:
    """Whether node's one output can be written into an existing buffer (an elementwise op taking out=)."""
    return len(node.outputs) == 1 and OPS[node.op].kind == "elementwise" and out_capable(node.op)


@dataclass
class MemoryPlan:
    """What the generated code does with memory, and what that costs at its worst moment."""

    out: dict[int, Value] = field(default_factory=dict)  # id(output value) -> input value whose buffer it reuses
    argument_bytes: int = 0  # graph inputs, resident for the whole call (owned by the caller)
    output_bytes: int = 0  # graph outputs computed here
    peak_bytes: int = 0  # arguments + the largest set of live buffers (and kernel scratch) at any node
    unplanned_peak_bytes: int = 0  # the same without in-place reuse: every node allocates its outputs
    in_place: int = 0  # nodes that write into a dying input's buffer
    donated: int = 0  # graph inputs whose buffers receive their own new value (donated state)
    grad_buffers: dict[int, str] = field(default_factory=dict)  # output index -> name: new .grads written into
    #                                                            the old gradient's buffer when the caller has one
    bytes_reused: int = 0  # bytes those nodes did not allocate
    peak_node: str = ""  # the value being computed at the peak

    def as_dict(self) -> dict[str, Any]:
        return {"argument_bytes": self.argument_bytes, "output_bytes": self.output_bytes,
                "temp_peak_bytes": self.peak_bytes - self.argument_bytes, "peak_bytes": self.peak_bytes,
                "unplanned_peak_bytes": self.unplanned_peak_bytes, "in_place_nodes": self.in_place,
                "bytes_reused": self.bytes_reused, "donated_inputs": self.donated,
                "grad_buffers": len(self.grad_buffers), "peak_at": self.peak_node}

    def __str__(self) -> str:
        mb = 1 / 2**20
        return (f"planned peak {self.peak_bytes * mb:.1f} MiB (arguments {self.argument_bytes * mb:.1f} MiB), "
                f"{self.unplanned_peak_bytes * mb:.1f} MiB without the plan; {self.in_place} nodes in place "
                f"({self.donated} donated inputs overwritten; {self.bytes_reused * mb:.1f} MiB not allocated); "
                f"{len(self.grad_buffers)} gradients into the old .grad's buffer")


def storages(g: Graph) -> dict[int, int]:
    """id(value) -> id of the value that owns its memory (views share their source's storage)."""
    owner: dict[int, int] = {id(v): id(v) for v in g.inputs}
    for node in g.nodes:
        kind = OPS[node.op].kind
        for v in node.outputs:
            owner[id(v)] = owner[id(node.inputs[0])] if kind == "view" and node.inputs else id(v)
    return owner


def _scratch_bytes(node: Node) -> int:
    """Temporary memory a kernel allocates beyond its outputs (an estimate for the planned peak)."""
    op, a = node.op, node.attrs
    if op in ("conv2d", "conv2d_weight_grad"):
        x = node.inputs[0].type
        out = node.outputs[0].type if op == "conv2d" else node.inputs[1].type
        kh, kw = a.get("kernel_size") or node.inputs[1].type.shape[2:]
        positions = out.shape[0] * out.shape[2] * out.shape[3]
        pad = x.nbytes if any(a["padding"]) else 0
        return pad + (0 if (kh, kw) == (1, 1) and a["stride"] == (1, 1) else
                      x.shape[1] * kh * kw * positions * x.dtype.itemsize)
    if op == "conv2d_input_grad":
        g, w = node.inputs[0].type, node.inputs[1].type
        cols = w.shape[1] * a["groups"] * w.shape[2] * w.shape[3] * g.shape[0] * g.shape[2] * g.shape[3]
        return cols * g.dtype.itemsize + node.outputs[0].type.nbytes
    if op in ("max_pool2d", "max_pool2d_with_indices"):  # the padded input split into stride phases
        extra = 3 * node.outputs[0].type.numel if op == "max_pool2d_with_indices" else 0  # winner bookkeeping
        return node.inputs[0].type.nbytes + extra
    if op == "max_pool2d_indices_grad":  # flat int64 indices; overlapping windows sum in float64 (bincount)
        g = node.inputs[0].type
        overlap = any(s < k for s, k in zip(a["stride"], a["kernel_size"]))
        return g.numel * 8 + (node.outputs[0].type.numel * 8 if overlap else 0)
    return 0


def donation_writes(g: Graph, donated: dict[int, int], owner: dict[int, int]) -> dict[int, Value]:
    """For donated (input index -> index of the output holding its new value) pairs, the node writes
    that may go into the input's own buffer: {id(output value): input value}. See the module docstring."""
    if not donated:
        return {}
    index = {id(n): i for i, n in enumerate(g.nodes)}
    fence = max((i for i, n in enumerate(g.nodes) if OPS[n.op].kind == "opaque"), default=-1)
    readers: dict[int, list[tuple[int, Value]]] = {}  # storage -> (node index, value read)
    for i, node in enumerate(g.nodes):
        for v in node.inputs:
            readers.setdefault(owner[id(v)], []).append((i, v))
    counts: dict[int, int] = {}  # value -> times it is a graph output
    stored: dict[int, int] = {}  # storage -> graph outputs living in it
    for v in g.outputs:
        counts[id(v)] = counts.get(id(v), 0) + 1
        stored[owner[id(v)]] = stored.get(owner[id(v)], 0) + 1
    writes: dict[int, Value] = {}
    for j, k in donated.items():
        src, new = g.inputs[j], g.outputs[k]
        node = new.producer
        # the new value: made by an elementwise op, the same type, returned once, not a view, and the old
        # value (or a view of it) is not returned as well
        if (node is None or not _writes_out(node) or new.type != src.type or new.type.ndim == 0
                or counts[id(new)] != 1 or owner[id(new)] != id(new) or id(src) in stored or id(new) in writes):
            continue
        at = index[id(node)]
        if at <= fence:
            continue
        # the old value is read last by this very node (as itself, elementwise-aligned) or before it
        src_reads = readers.get(owner[id(src)], ())
        if not all(i < at or (i == at and v is src) for i, v in src_reads):
            continue
        writes[id(new)] = src
        # the chain leading to the update runs in the same buffer (buf *= momentum; buf += grad) as long as each
        # link is read only by the next one and the old value is dead by then
        while True:
            link = next((u for u in node.inputs if u.producer is not None and u.type == src.type
                         and owner[id(u)] == id(u) and id(u) not in writes and id(u) not in counts
                         and readers.get(id(u)) == [(at, u)]), None)
            if link is None:
                break
            prev = link.producer
            if not _writes_out(prev) or index[id(prev)] <= fence:
                break
            at, node = index[id(prev)], prev
            if not all(i < at or (i == at and v is src) for i, v in src_reads):
                break
            writes[id(link)] = src
    return writes


def gradient_buffers(g: Graph, fresh: dict[int, str], owner: dict[int, int],
                     min_bytes: int = MIN_INPLACE_BYTES) -> dict[int, str]:
    """Of the outputs `fresh` ({output index: name}: new gradients replacing a .grad the step discards), those
    whose kernel can write into the old gradient's buffer (see the module docstring). Small ones are left alone:
    they save nothing worth the .grad a failing call would lose."""
    from ..backends.numpy.registry import KERNELS

    counts: dict[int, int] = {}  # storage -> graph outputs living in it
    for v in g.outputs:
        counts[owner[id(v)]] = counts.get(owner[id(v)], 0) + 1
    out = {}
    for k, name in fresh.items():
        v = g.outputs[k]
        node = v.producer
        if (node is None or len(node.outputs) != 1 or owner[id(v)] != id(v) or counts[id(v)] != 1
                or OPS[node.op].kind == "elementwise" or v.type.nbytes < min_bytes
                or not getattr(KERNELS.get(node.op), "supports_out", False)):
            continue
        out[k] = name
    return out


def plan_memory(g: Graph, min_bytes: int = MIN_INPLACE_BYTES, donated: dict[int, int] | None = None,
                fresh_grads: dict[int, str] | None = None) -> MemoryPlan:
    """The in-place decisions for g's nodes in their order, and the peak they lead to.

    donated: {input index: index of the output that replaces it} for inputs the caller gives up (see the
    module docstring); None or {} plans as if every input were read again after the call. fresh_grads:
    {output index: name} for new gradients whose parameter's old .grad the caller may hand over as their
    buffer (gradient_buffers); the peak is planned as if it always did."""
    owner = storages(g)
    plan = MemoryPlan()
    plan.grad_buffers = gradient_buffers(g, fresh_grads or {}, owner, min_bytes)
    # graph inputs, and constants (which the generated code builds once and shares between calls)
    external = {id(v) for v in g.inputs} | {id(n.outputs[0]) for n in g.nodes if OPS[n.op].kind == "factory"}
    end = len(g.nodes)
    last: dict[int, int] = {}  # storage -> index of the last node reading any value of it (end: outlives the call)
    for i, node in enumerate(g.nodes):
        for v in node.inputs:
            last[owner[id(v)]] = i
    for v in g.outputs:
        last[owner[id(v)]] = end
    rep: dict[int, int] = {}  # storage -> the storage whose buffer it was written into

    def find(s: int) -> int:
        while s in rep:
            s = rep[s]
        return s

    writes = donation_writes(g, donated or {}, owner)
    for oid, src in writes.items():
        plan.out[oid] = src
        rep[oid] = id(src)
        plan.in_place += 1
        plan.bytes_reused += src.type.nbytes
    plan.donated = len({id(src) for src in writes.values()})
    for i, node in enumerate(g.nodes):
        if not _writes_out(node):
            continue
        o = node.outputs[0]
        if id(o) in plan.out:  # a donated write
            continue
        if o.type.nbytes < min_bytes or o.type.ndim == 0:  # numpy returns scalars, not arrays, for 0-d results
            continue
        for v in node.inputs:
            s = find(owner[id(v)])
            if (owner[id(v)] == id(v) and s not in external and last.get(s) == i and v.type == o.type
                    and v.producer is not None):
                plan.out[id(o)] = v
                rep[id(o)] = s
                last[s] = max(i, last.get(id(o), i))
                plan.in_place += 1
                plan.bytes_reused += o.type.nbytes
                break
    plan.argument_bytes = sum(v.type.nbytes for v in g.inputs)
    # gradients written into the caller's old .grad buffers allocate nothing here
    into_old = external | {id(g.outputs[k]) for k in plan.grad_buffers}
    plan.output_bytes = sum(v.type.nbytes for v in g.outputs if find(owner[id(v)]) not in into_old)
    peak, plan.peak_node = _peak(g, owner, find, last, into_old)
    plan.peak_bytes = plan.argument_bytes + peak
    plain_last: dict[int, int] = {}
    for i, node in enumerate(g.nodes):
        for v in node.inputs:
            plain_last[owner[id(v)]] = i
    for v in g.outputs:
        plain_last[owner[id(v)]] = end
    plan.unplanned_peak_bytes = plan.argument_bytes + _peak(g, owner, lambda s: s, plain_last, external)[0]
    return plan


def _peak(g: Graph, owner: dict[int, int], find: Any, last: dict[int, int], external: set[int]) -> tuple[int, str]:
    """Walk the schedule: a storage is allocated by the node producing its root value and freed after its
    last reader; -> (largest bytes live at once, kernel scratch included; the value computed then)."""
    live, peak, where = 0, 0, ""
    size: dict[int, int] = {}
    for i, node in enumerate(g.nodes):
        for o in node.outputs:
            s = find(owner[id(o)])
            if s == id(o) and s not in external:
                size[s] = o.type.nbytes
                live += o.type.nbytes
        scratch = _scratch_bytes(node)
        if live + scratch > peak:
            peak, where = live + scratch, (node.outputs[0].name if node.outputs else node.op)
        for v in list(node.inputs) + list(node.outputs):
            s = find(owner[id(v)])
            if s in size and last.get(s, i) <= i:
                live -= size.pop(s)
    return peak, where
