"""The HTML viewer in a real browser: headless Chromium opens the dump of a LeNet training step, the
page's URL-hash commands click a node, expand and collapse modules and switch stages, and the test
reads the resulting DOM (--dump-dom) and takes a screenshot. No Python browser driver is needed.

Skipped when no Chromium is installed (Debian: apt-get install chromium). GRAPHC_CHROMIUM=/path/to/chrome
picks a browser explicitly.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from vizsteps import lenet_lowered

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
BROWSER = os.environ.get("GRAPHC_CHROMIUM") or next(filter(None, map(shutil.which, CANDIDATES)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium/Chrome found (apt-get install chromium, "
                                                        "or set GRAPHC_CHROMIUM)")


def chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium once on url; stderr carries the page's console messages."""
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--disable-extensions", f"--user-data-dir={profile}",
           "--enable-logging=stderr", "--v=0", "--window-size=1400,900", *args, url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert "Uncaught" not in proc.stderr, re.findall(r".*Uncaught.*", proc.stderr)
    return proc


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("html") / "lenet_step.html"
    lenet_lowered().dump(str(path), format="html")
    return path


def _dom(page: Path, tmp_path: Path, hash_: str) -> str:
    proc = chromium(page.as_uri() + hash_, tmp_path / "profile", "--dump-dom")
    assert 'data-ready="1"' in proc.stdout, proc.stderr[-2000:]
    return proc.stdout


def _details(dom: str) -> str:
    m = re.search(r'<div id="details">(.*?)</div></section>', dom, re.S)
    return re.sub(r"<[^>]+>", " ", m.group(1))


def test_clicking_a_node_shows_its_details(page, tmp_path):
    dom = _dom(page, tmp_path, "#select=conv2d_1")
    text = _details(dom)
    for want in ("conv2d", "f32[2,16,13,13]", "stride", "(1, 1)", "module", "conv2", "phase", "forward",
                 "vizsteps.py:"):
        assert want in text, (want, text)
    assert 'class="node  result' not in dom  # sanity: class lists are well formed
    assert re.search(r'class="node[^"]*selected[^"]*" data-key="n:conv2d_1"', dom)


def test_modules_collapse_and_expand(page, tmp_path):
    shown = lambda dom: int(re.search(r'data-shown="(\d+)"', dom).group(1))  # noqa: E731
    expanded = _dom(page, tmp_path, "")
    collapsed = _dom(page, tmp_path, "#collapse=all")
    one_open = _dom(page, tmp_path, "#collapse=all&expand=fc1")
    assert shown(collapsed) < shown(one_open) < shown(expanded)
    assert 'data-expand="conv1"' in collapsed and 'data-collapse="fc1"' in one_open


def test_stage_switch_and_screenshot(page, tmp_path):
    dom = _dom(page, tmp_path, "#stage=traced")
    assert "stage: traced" in dom and re.search(r'<tr data-stage="0" class="current">', dom)
    png = tmp_path / "shot.png"
    chromium(page.as_uri() + "#select=matmul", tmp_path / "profile2", f"--screenshot={png}")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
