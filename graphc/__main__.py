"""The graphc command line: `python -m graphc info | dump`.

`dump` runs a user's script unchanged with GRAPHC_DUMP set, so every graph it compiles is written out:
the same path as `gc.compile(..., dump=DIR)`, with nothing to edit in the script.
"""
from __future__ import annotations

import argparse
import os
import runpy
import shutil
import subprocess
import sys

from .viz import FORMATS

DESCRIPTION = """graphc: PyTorch-style model code captured as static graphs, differentiated, optimized and compiled.

commands:
  info   print graphc's version and what it found on this machine: backends (numpy; jax with its version
         and devices when installed) and Graphviz's `dot` (needed for --format svg only)
  dump   run a Python script and write every graph it compiles (each gc.compile build), one file per
         graph and stage, then list the files written

Run `python -m graphc COMMAND --help` for a command's options."""

ENVIRONMENT = """environment (read by every graphc program, not only by this command):
  GRAPHC_DUMP=DIR            write every compiled graph into DIR, as `dump` does
  GRAPHC_DUMP_FORMAT=html    text, json, dot, svg, html; several separated by commas
  GRAPHC_DUMP_STAGE=traced,optimized    traced, optimized, all, or pass names, separated by commas"""


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m graphc", description=DESCRIPTION, epilog=ENVIRONMENT,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("info", help="version, backends and devices found, Graphviz",
                   description="Print graphc's version, the backends found (numpy always; jax with its version "
                               "and devices when importable) and whether Graphviz's dot is on PATH.")
    d = sub.add_parser("dump", help="run a script and write every graph it compiles",
                       description="Run SCRIPT.py as __main__ with sys.argv = [SCRIPT.py, ARGS...] and write each\n"
                                   "graph that it compiles into DIR as <function>_<n>.<stage>.<ext>, then print the\n"
                                   "files written. HTML files open in any browser, with no network needed.",
                       epilog=ENVIRONMENT, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--format", default="html", choices=FORMATS,
                   help="file format (default: html, a self-contained interactive viewer; svg needs Graphviz)")
    d.add_argument("--stage", default="traced,optimized", metavar="traced|optimized|all",
                   help="which graphs of each build: the traced graph, the optimized one, or every stage "
                        "(one per pass); several separated by commas (default: traced,optimized)")
    d.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the files (created)")
    d.add_argument("script", metavar="SCRIPT.py", help="the program to run")
    d.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="arguments passed to the script")
    return ap


def _info() -> int:
    import numpy as np

    from . import __version__

    print(f"graphc {__version__} (Python {sys.version.split()[0]})")
    print("backends:")
    print(f"  numpy {np.__version__}: available (CPU)")
    from .backends.numpy import native

    print(f"    C loops for fused elementwise groups, max pooling and small convolutions (on two threads: lanes.c): "
          f"{native.describe()}")
    try:
        import jax
    except Exception as e:  # any import failure means: not usable here
        print(f"  jax: not available ({type(e).__name__}: {e}); install with pip install 'graphc[jax]'")
    else:
        try:  # every device gc.compile(..., backend="jax", device=...) can name, with its hardware kind
            found = jax.devices() + (jax.devices("cpu") if jax.default_backend() != "cpu" else [])
            devices = ", ".join(f"{d} ({d.device_kind})" for d in found)
            if jax.process_count() > 1:
                devices += f"; process {jax.process_index()} of {jax.process_count()}"
        except Exception as e:
            devices = f"no devices ({e})"
        print(f"  jax {jax.__version__}: available, devices: {devices}")
    dot = shutil.which("dot")
    if dot:
        proc = subprocess.run([dot, "-V"], capture_output=True, text=True)
        print(f"graphviz: {(proc.stderr or proc.stdout).strip()} at {dot} (dump --format svg works)")
    else:
        print("graphviz: dot not found on PATH (only --format svg needs it; Debian/Ubuntu: apt-get install graphviz)")
    return 0


def _dump(ns: argparse.Namespace) -> int:
    from .viz import dump
    from .viz.svg import INSTALL_HINT

    if ns.format == "svg" and not shutil.which("dot"):
        print(f"error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    if not os.path.isfile(ns.script):
        print(f"error: no such script: {ns.script}", file=sys.stderr)
        return 2
    out = os.path.abspath(ns.output)
    os.environ.update(GRAPHC_DUMP=out, GRAPHC_DUMP_FORMAT=ns.format, GRAPHC_DUMP_STAGE=ns.stage)
    argv, path0 = sys.argv, sys.path[0]
    sys.argv = [ns.script, *ns.args]
    sys.path[0] = os.path.dirname(os.path.abspath(ns.script))
    code = 0
    try:
        runpy.run_path(ns.script, run_name="__main__")
    except SystemExit as e:  # the script's own exit status, after the list of files
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv, sys.path[0] = argv, path0
        print(f"graphc dump: {len(dump.written)} file(s) written to {out}", file=sys.stderr)
        for p in dump.written:
            print(p)
    if not dump.written:
        print("graphc dump: the script compiled no graph (nothing was called through gc.compile)", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m graphc`; returns the exit status."""
    ap = _parser()
    ns = ap.parse_args(argv)
    if ns.command == "info":
        return _info()
    if ns.command == "dump":
        return _dump(ns)
    ap.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
