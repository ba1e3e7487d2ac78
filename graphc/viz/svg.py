"""SVG by Graphviz: the DOT text laid out by the `dot` program, which graphc does not bundle."""
from __future__ import annotations

import shutil
import subprocess

INSTALL_HINT = ("SVG output needs Graphviz's `dot` program, which is not on PATH. Install Graphviz "
                "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz; "
                "conda: conda install graphviz), or dump with format='html' (self-contained, no Graphviz needed) "
                "or format='dot'.")


def dot_to_svg(dot_text: str, timeout: float = 300.0) -> str:
    """Run `dot -Tsvg`; a missing Graphviz is an error that says how to install it."""
    exe = shutil.which("dot")
    if exe is None:
        raise RuntimeError(INSTALL_HINT)
    proc = subprocess.run([exe, "-Tsvg"], input=dot_text, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"Graphviz dot failed (exit {proc.returncode}): {proc.stderr.strip()[:2000]}")
    return proc.stdout
