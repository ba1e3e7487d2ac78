"""How a jax-backend Executable takes its inputs from tensors and gives its outputs back, leaving state on the
device between steps.

A compiled jax step's outputs stay where XLA computed them: a parameter, buffer or optimizer state tensor
then holds the device array (Tensor._dev) that the next step reads and donates, and a result is a
device-held tensor, copied to the host only when someone reads it. At batch 1 a LeNet step is about half a
millisecond of XLA time against ~30 inputs and outputs, so everything per call is planned once here: where
each input comes from and what each output replaces, in lists walked without further decisions.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

from . import factories
from .epoch import EPOCH, HYPERS
from .ir.graph import Graph
from .tensor import Tensor


class DeviceIO:
    """The calling convention of one jax program: inputs (graphc.trace.InputSlot) and outputs
    (graphc.trace.OutputSlot) of `graph`, whose program is `program` (a JaxProgram: its `place` puts one input's
    value on the device as the program takes it)."""

    def __init__(self, inputs: list[Any], outputs: list[Any], graph: Graph, program: Any) -> None:
        self.program = program
        self.inputs = [(_IN_KIND.get(s.kind, _STATE), s.ref) for s in inputs]
        self.hyper_slots = [(i, s.ref) for i, s in enumerate(inputs) if s.kind == "hyper"]
        self.hypers: dict[int, tuple[float, Any]] = {}  # input index -> (value, its device scalar)
        self.hyper_arrays: list[Any] = []
        self.hypers_at = (-1, -1)  # (HYPERS[0], EPOCH[0]) when the hyperparameter inputs were last read
        # outputs by what they replace: (output index, tensor) for an update of captured state, (index,
        # parameter, the gradient's dtype and shape) for a captured parameter's .grad; anything else (an argument's
        # update or .grad, new optimizer state) keeps its slot, in output order
        self.updates, self.grads, self.others, self.results = [], [], [], []
        for k, (o, v) in enumerate(zip(outputs, graph.outputs)):
            if o.kind == "result":
                self.results.append((k, v.type.dtype))
            elif isinstance(o.ref, (int, tuple)):
                self.others.append((k, o, v.type.dtype))
            elif o.kind == "grad":
                self.grads.append((k, o.ref, v.type.dtype, v.type.shape))
            else:
                self.updates.append((k, o.ref))
        # a result that is an input or the new value of some state may come back as that very array (jax
        # forwards inputs on some versions): only then is each result compared with the state arrays
        self.state_outputs = [k for k, o in enumerate(outputs) if o.kind != "result"]
        state_values = {id(graph.outputs[k]) for k in self.state_outputs} | {id(v) for v in graph.inputs}
        self.results_alias = any(id(v) in state_values for o, v in zip(outputs, graph.outputs) if o.kind == "result")

    def gather(self, leaves: list[Any]) -> tuple[list[Any], bool]:
        """The program's inputs, and whether every one is a device array already: a tensor's device array where
        it has one (state left there by the last step). A tensor that alone holds its numpy array (_sole_owner)
        moves to the device at its first call and stays there, as after `model.to(device)`: an argument or state
        the step reads but never replaces (a batch passed again, a frozen parameter) is then not copied
        host->device at every call. So is each hyperparameter: its device scalar is kept while its value stays
        the same (read again only after some param group's number was set, or anything else changed:
        graphc.epoch)."""
        if self.hypers_at[0] != HYPERS[0] or self.hypers_at[1] != EPOCH[0]:
            self._read_hypers()
        hypers = iter(self.hyper_arrays)
        arrays, placed = [], True
        for i, (code, ref) in enumerate(self.inputs):
            if code == _STATE:
                t = ref
            elif code == _ARG:
                t = leaves[ref]
            elif code == _HYPER:
                arrays.append(next(hypers))
                continue
            elif code == _GRAD:
                d = ref.grad._device_value()
                placed = placed and type(d) is not np.ndarray
                arrays.append(d)
                continue
            else:
                arrays.append(np.int64(factories._rng.integers(0, 2**62)))
                placed = False
                continue
            d = t._dev
            if d is None:
                if _sole_owner(t):
                    d = self.program.place(i, t._data)
                    t._set_device(d)
                else:
                    d, placed = t._data, False
            arrays.append(d)
        return arrays, placed

    def _read_hypers(self) -> None:
        at, out = (HYPERS[0], EPOCH[0]), []
        for i, read in self.hyper_slots:
            v = read()
            last = self.hypers.get(i)
            if last is None or last[0] != v:
                last = self.hypers[i] = (v, self.program.place(i, np.float64(v)))
            out.append(last[1])
        self.hyper_arrays, self.hypers_at = out, at

    def write_back(self, leaves: list[Any], outs: Any) -> list[Tensor]:
        """Results become device-held tensors; the rest replace the state they update (its tensors then hold
        the new device arrays, donated to the next step). Called once every output exists: a failing call
        changes nothing."""
        for k, t in self.updates:  # of a parameter, buffer or existing state
            if t._dev is None:
                t._set_device(outs[k])
            else:  # (the steady state: a device array replaces the last one)
                t._dev = outs[k]
            t._vc[0] += 1  # its _version
        for k, p, dt, shape in self.grads:
            # A captured parameter's new .grad. The last step's gradient tensor takes the new value itself when
            # nobody else can see it: still on the device (never read, so no alias or view of its value exists),
            # plain, no other reference (p's slot, `old`, getrefcount's argument) or weak reference. That is
            # indistinguishable from torch's new .grad tensor, without building one per parameter per step
            # (LeNet: 10 of a step's 30 write-backs). Otherwise the setter gives p a new tensor (and moves EPOCH
            # if the type changed).
            old = p._grad
            d = None if old is None else old._dev
            if d is not None and old._dtype is dt and not old._requires_grad and old.__weakref__ is None \
                    and sys.getrefcount(old) <= 3 and d.shape == shape:
                old._dev = outs[k]
                old._vc[0] += 1
            else:
                p.grad = Tensor._on_device(outs[k], dt)
        for k, slot, dt in self.others:
            a = outs[k]
            if isinstance(slot.ref, int):  # the argument passed at this call
                arg = leaves[slot.ref]
                if slot.kind == "grad":  # accumulates into an existing .grad, as backward() does
                    old = arg.grad
                    arg.grad = Tensor._on_device(a, arg.dtype) if old is None else \
                        Tensor._make(old._data + np.asarray(a), None, arg.dtype)
                else:
                    arg._set_device(a)
                    arg._vc[0] += 1
            else:  # new optimizer state: (optimizer, parameter, key)
                opt, p, key = slot.ref
                opt.state[p][key] = Tensor._on_device(a, dt)
        if self.results_alias:
            # a result that is the very array of some state (a step returning an updated parameter) gets its own
            # copy: the state's array is donated to the next step, which would delete the result's value with it
            taken = {id(outs[k]) for k in self.state_outputs}
            return [Tensor._on_device(_device_copy(outs[k]) if id(outs[k]) in taken else outs[k], dt)
                    for k, dt in self.results]
        return [Tensor._on_device(outs[k], dt) for k, dt in self.results]


# where gather takes each input from: an argument, captured state (parameter, buffer, tensor, optimizer state),
# a captured parameter's .grad, a hyperparameter, a random seed
_ARG, _STATE, _GRAD, _HYPER, _SEED = range(5)
_IN_KIND = {"arg": _ARG, "grad": _GRAD, "hyper": _HYPER, "seed": _SEED}


def _sole_owner(t: Tensor) -> bool:
    """Whether t's numpy array is reachable through t alone: it owns its memory (no base) and nothing else
    refers to it (no alias from detach()/.data, no view, no array the caller passed to from_numpy).

    A jax step moves such an argument, parameter, buffer or captured tensor to the device for good, as
    `model.to(device)` would, instead of copying it host->device at every call (a frozen backbone's weights
    are never replaced by the step, so they would otherwise stay on the host; nor is a batch passed again).
    Nobody can write the host array behind graphc's back, and the first read of `_data` brings the value back
    (Tensor.__getattr__). A shared array stays where it is: writes through its other holders must keep
    reaching the tensor."""
    a = t._data
    # references: the tensor's slot, `a`, getrefcount's argument
    return a.base is None and sys.getrefcount(a) <= 3


def _device_copy(a: Any) -> Any:
    import jax.numpy as jnp

    return jnp.array(a, copy=True)
