"""`python -m graphc`: help, info, dump (run as a user would, in a subprocess)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import sys
    import graphc as gc

    w = gc.ones(3, 4, requires_grad=True)

    @gc.compile
    def loss(x):
        return (x @ w).relu().sum()

    print("args", sys.argv[1:])
    loss(gc.ones(2, 3)).backward()
    loss(gc.ones(5, 3))  # a new shape: a second graph
    sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
""")


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=str(ROOT))
    full_env.pop("GRAPHC_DUMP", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "graphc", *args], capture_output=True, text=True, cwd=ROOT,
                          env=full_env, timeout=120)


def test_help_explains_every_command():
    proc = _run("--help")
    assert proc.returncode == 0
    for word in ("info", "dump", "GRAPHC_DUMP", "GRAPHC_DUMP_FORMAT", "GRAPHC_DUMP_STAGE"):
        assert word in proc.stdout
    dump_help = _run("dump", "--help").stdout
    for word in ("--format", "html", "svg", "--stage", "traced", "optimized", "all", "-o DIR", "SCRIPT.py"):
        assert word in dump_help
    assert _run().returncode == 0  # no command: the help


def test_info_lists_version_backends_and_graphviz():
    proc = _run("info")
    assert proc.returncode == 0, proc.stderr
    assert "graphc 0.1.0" in proc.stdout and "numpy" in proc.stdout and "C loops" in proc.stdout
    assert "jax" in proc.stdout and "graphviz" in proc.stdout


def test_dump_runs_the_script_and_lists_the_files(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(SCRIPT)
    out = tmp_path / "graphs"
    proc = _run("dump", "--format", "text", "-o", str(out), str(script), "3")
    assert proc.returncode == 3, proc.stderr  # the script's exit status is kept
    assert "args ['3']" in proc.stdout
    listed = [line for line in proc.stdout.splitlines() if line.startswith(str(out))]
    names = sorted(os.path.basename(p) for p in listed)
    assert names == ["loss_0.optimized.txt", "loss_0.traced.txt", "loss_1.optimized.txt", "loss_1.traced.txt"]
    assert all(Path(p).read_text().startswith("graph loss(") for p in listed)


def test_dump_html_all_stages(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(SCRIPT)
    proc = _run("dump", "--stage", "all", "-o", str(tmp_path / "g"), str(script))
    assert proc.returncode == 0, proc.stderr
    names = os.listdir(tmp_path / "g")
    assert "loss_0.00-traced.html" in names and all(n.endswith(".html") for n in names)


def test_dump_svg_without_graphviz_is_a_clear_error(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(SCRIPT)
    proc = _run("dump", "--format", "svg", "-o", str(tmp_path / "g"), str(script), env={"PATH": ""})
    assert proc.returncode == 2 and "install graphviz" in proc.stderr.lower()
