"""The interactive page in a real headless Chromium: the script draws the heatmaps, and a
hovered cell names its token, position, value and layer (read back from the browser's DOM)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lninspect.render.interactive import interactive_html
from tests.test_stats_plots import synthetic

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None
)


def dump_dom(url: str) -> str:
    """The DOM of `url` after its scripts ran, from headless Chromium."""
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url]
    # Chromium keeps a socket under TMPDIR and aborts when its path passes the 107 bytes a
    # socket's path may have (make test-other-cpu's long TMPDIR): it gets a short one
    with tempfile.TemporaryDirectory(dir="/tmp" if os.path.isdir("/tmp") else None) as short:
        run = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            env={**os.environ, "TMPDIR": short},
        )
    return run.stdout


def test_page_is_self_contained():
    page = interactive_html(synthetic())
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched
    assert "<script>" in page and 'id="data"' in page


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (make venv installs it on Debian)")
def test_hover_in_headless_chromium(tmp_path: Path):
    result = synthetic()
    page = tmp_path / "interactive.html"
    page.write_text(interactive_html(result), encoding="utf-8")
    row, column = 2, 1  # h.1.ln_1 at token 1
    dom = dump_dom(f"{page.as_uri()}#hover=denominator,{row},{column}")
    cells = re.findall(r'<rect [^>]*id="(?:denominator|mean)-\d', dom)  # not the key's ramp
    assert len(cells) == 2 * len(result.norms) * len(result.input.tokens[0])
    tip = re.search(r'<div id="tooltip"([^>]*)>', dom)
    assert tip is not None, dom[:2000]
    attributes = dict(re.findall(r'data-(\w+)="([^"]*)"', tip.group(1)))
    norm = result.norms[row]
    assert attributes["module"] == "1.ln_1" and attributes["layer"] == str(norm.layer)
    assert html.unescape(attributes["token"]) == result.input.tokens[0][column]
    assert attributes["position"] == str(column) and attributes["statistic"] == "std"
    assert float(attributes["value"]) == pytest.approx(float(norm.input.std[0, column]))
    tokens = result.input.tokens[0]
    labels = re.findall(r'<text [^>]*class="token"[^>]*>([^<]*)</text>', dom)
    assert [html.unescape(t) for t in labels] == 2 * [t.replace(" ", "·") for t in tokens]
    ticks = {  # the colour key of each map: its smallest, middle and largest value
        key: [float(v) for v in re.findall(r'class="key-tick" data-value="([^"]+)"', group)]
        for key, group in re.findall(r'<g class="key" id="key-(\w+)">(.*?)</g>', dom)
    }
    std = np.concatenate([n.input.std[0] for n in result.norms])
    mean = np.concatenate([n.input.mean[0] for n in result.norms])
    assert ticks["denominator"][::2] == pytest.approx([std.min(), std.max()], rel=1e-6)
    middle = (mean.min() + mean.max()) / 2  # a linear key
    assert ticks["mean"] == pytest.approx([mean.min(), middle, mean.max()], rel=1e-6, abs=1e-9)


HOSTILE = ["<!--<script>", "</script><b>x</b>", "a & b > c", "<![CDATA["]  # no "-->": it rescues


def test_inline_json_escapes_every_angle_bracket_and_ampersand():
    result = synthetic()
    result.norms[0] = replace(result.norms[0], name="h.0.<!--<script>")
    page = interactive_html(result)
    data = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert data is not None and not re.search("[<>&]", data.group(1))
    assert json.loads(data.group(1))["norms"][0].endswith("<!--<script>")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (make venv installs it on Debian)")
def test_hostile_names_and_tokens_leave_every_cell_drawn(tmp_path: Path):
    result = synthetic()
    for i, name in enumerate(HOSTILE):
        result.norms[i] = replace(result.norms[i], name=f"transformer.h.{i}.{name}")
    tokens = result.input.tokens[0]
    tokens[: len(HOSTILE)] = HOSTILE
    page = tmp_path / "interactive.html"
    page.write_text(interactive_html(result), encoding="utf-8")
    dom = dump_dom(f"{page.as_uri()}#hover=mean,0,0")
    cells = re.findall(r'<rect [^>]*id="(?:denominator|mean)-\d', dom)
    assert len(cells) == 2 * len(result.norms) * len(tokens)
    tip = re.search(r'<div id="tooltip"([^>]*)>', dom)
    assert tip is not None
    attributes = dict(re.findall(r'data-(\w+)="([^"]*)"', tip.group(1)))
    assert html.unescape(attributes["token"]) == HOSTILE[0]
