"""The compiled-artifact format: one zip file, no pickle, verified on load.

Members: manifest.json (format name, schema version, sha256 of every other member),
graph.json (the IR), signature.json (what each graph input and output is), state.npz
(parameters, buffers and optimizer state, loaded with allow_pickle=False) and source.py (the
generated code, for reference only: loading regenerates code from graph.json and never
executes anything from the file). A step saved from the jax backend also holds xla.jaxexport, a
jax.export serialization (versioned StableHLO, lowered for CPU, CUDA and TPU): gc.load runs it
when jax is installed. Saving writes a temporary file and renames it, so an
interrupted save never leaves a half-written artifact under the final name.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from typing import Any

import numpy as np

from ..ir.serialize import SCHEMA_VERSION, _dec, _enc, graph_from_dict, graph_to_dict

FORMAT = "graphc-artifact"
ARTIFACT_VERSION = 1


class ArtifactError(ValueError):
    """The file is not a graphc artifact, or it was altered, truncated or written by another version."""


def save_artifact(exe: Any, path: str, export: bool | None = None) -> None:
    """export: also store a jax.export serialization of the step (None: when exe runs on the jax backend)."""
    fresh = [o.name for o in exe.outputs if o.kind == "new_state"]
    if fresh:
        raise ArtifactError(f"this step was traced before the optimizer had state (it creates {fresh[0]} and "
                            f"{len(fresh) - 1} more), so a saved copy would restart that state at every call; save "
                            f"the step after one training call: step(x, y); step.lower(x, y).compile().save(path)")
    graph = exe.saved_graph()
    state = {s.name: np.ascontiguousarray(s.ref._data) for s in exe.inputs
             if s.kind in ("param", "buffer", "state", "tensor")}
    grads = {s.name: np.ascontiguousarray(s.ref.grad._data) for s in exe.inputs if s.kind == "grad"}
    signature = {
        "inputs": [{"kind": s.kind, "name": s.name, "leaf": s.ref if s.kind == "arg" else None}
                   | ({"value": float(s.ref())} if s.kind == "hyper" else {}) for s in exe.inputs],
        "outputs": [{"kind": o.kind, "name": o.name, "leaf": o.ref if isinstance(o.ref, int) else None}
                    for o in exe.outputs],
        "in_tree": _enc(exe.in_tree), "out_tree": _enc(exe.out_tree), "out_static": exe.out_static,
        "arg_types": [{"shape": list(t.shape), "dtype": t.dtype.name} for t in exe.arg_types],
        "in_static": exe.in_static,
    }
    buf = io.BytesIO()
    np.savez(buf, **state, **{f"@grad/{k}": v for k, v in grads.items()})
    members = {
        "graph.json": json.dumps(graph_to_dict(graph), indent=1).encode(),
        "signature.json": json.dumps(signature, indent=1).encode(),
        "state.npz": buf.getvalue(),
        "source.py": exe.source.encode(),
    }
    if export or (export is None and getattr(exe, "backend", "numpy") == "jax"):
        from ..backends.jax.program import EXPORT_MEMBER, export_graph

        try:
            members[EXPORT_MEMBER] = export_graph(graph)
        except ImportError as e:  # jax.export serializes with flatbuffers, an optional package
            if export:
                raise
            import warnings

            warnings.warn(f"artifact saved without its jax.export ({e}); loading it regenerates code from "
                          f"graph.json", stacklevel=3)
    manifest = {"format": FORMAT, "version": ARTIFACT_VERSION, "schema": SCHEMA_VERSION,
                "sha256": {k: hashlib.sha256(v).hexdigest() for k, v in members.items()}}
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".graphc-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("manifest.json", json.dumps(manifest, indent=1))
            for k, v in members.items():
                z.writestr(k, v)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_artifact(path: str, extras: dict[str, bytes] | None = None
                  ) -> tuple[Any, dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """-> (graph, signature, state arrays, grad arrays), after checking format, version and digests."""
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ArtifactError(f"{path} is not a graphc artifact, or it was truncated (not a readable zip file: "
                            f"{e})") from None
    with z:
        try:
            manifest = json.loads(z.read("manifest.json"))
        except (KeyError, ValueError, zipfile.BadZipFile) as e:
            raise ArtifactError(f"{path} is not a graphc artifact (no readable manifest.json: {e})") from None
        if manifest.get("format") != FORMAT:
            raise ArtifactError(f"{path} is not a graphc artifact (format {manifest.get('format')!r})")
        if manifest.get("version") != ARTIFACT_VERSION or manifest.get("schema") != SCHEMA_VERSION:
            raise ArtifactError(f"{path} was written with artifact version {manifest.get('version')}, graph schema "
                                f"{manifest.get('schema')}; this graphc reads version {ARTIFACT_VERSION}, schema "
                                f"{SCHEMA_VERSION}")
        data = {}
        for name, digest in manifest["sha256"].items():
            try:
                data[name] = z.read(name)
            except (KeyError, zipfile.BadZipFile, OSError, EOFError) as e:
                raise ArtifactError(f"{path}: member {name} is missing or truncated ({e})") from None
            if hashlib.sha256(data[name]).hexdigest() != digest:
                raise ArtifactError(f"{path}: member {name} does not match its sha256 in the manifest; the file "
                                    f"was altered or corrupted")
    if extras is not None:  # verified members beyond the four above (a jax.export, say), for the caller
        extras.update({k: v for k, v in data.items() if k not in ("graph.json", "signature.json", "state.npz",
                                                                    "source.py")})
    graph = graph_from_dict(json.loads(data["graph.json"])).verify()
    sig = json.loads(data["signature.json"])
    sig["in_tree"], sig["out_tree"] = _dec(sig["in_tree"]), _dec(sig["out_tree"])
    with np.load(io.BytesIO(data["state.npz"]), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    state = {k: v for k, v in arrays.items() if not k.startswith("@grad/")}
    grads = {k[len("@grad/"):]: v for k, v in arrays.items() if k.startswith("@grad/")}
    return graph, sig, state, grads
