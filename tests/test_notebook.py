"""Notebook display: results, a comparison and a watch log as compact HTML with an inline
PNG figure, made without pyplot."""

from __future__ import annotations

import ast
import base64
import io
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import lninspect
from lninspect.results import StatsResult
from lninspect.results.compare import ComparedModel, CompareResult, MatchedRow, NormValues
from lninspect.results.watch import NormRecord, Quantiles, WatchLog, WatchRecord
from tests import processes
from tests.test_stats_plots import synthetic


def _check(html: str, headline: str) -> None:
    assert html.startswith('<div class="lninspect">') and headline in html
    assert "<table>" in html and "<th>" in html
    (png,) = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("L"), float)
    assert image.shape[0] > 100 and image.std() > 5


def _pyplot_figures() -> list[int]:
    pyplot = sys.modules.get("matplotlib.pyplot")
    return [] if pyplot is None else list(pyplot.get_fignums())


def test_results_comparison_and_log_render_as_html():
    before = _pyplot_figures()
    result: StatsResult = synthetic()
    html = result._repr_html_()
    _check(html, "synthetic")
    assert "final" in html and "out std" in html
    values = [
        NormValues(
            f"h.{i}.ln_1",
            i,
            i / 2,
            absmax=5.0,
            absmax_dim=3,
            max_abs_z=float("nan"),
            medians={"input_denominator": 1.0 + i, "grad_scale": 1.0},
        )
        for i in range(3)
    ]
    models = [
        ComparedModel(spec, spec, None, "local", "GPT2LMHeadModel", 3, 9, 4.5) for spec in "ab"
    ]
    rows = [MatchedRow("attn", v.depth, [v, v]) for v in values]
    _check(CompareResult("tokens", "names", models, rows, [])._repr_html_(), "compared")
    q = Quantiles(1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    records = [
        WatchRecord(
            step=s,
            loss=5.0 - s,
            lr=0.1,
            norms=[
                NormRecord(
                    "h.0.ln_1",
                    0,
                    "attn",
                    absmax=2.0,
                    absmax_dim=1,
                    quantiles={"input_denominator": q, "output_std": q, "grad_scale": q},
                )
            ],
            params=[],
        )  # fmt: skip
        for s in range(3)
    ]
    _check(WatchLog("runs/a/log.jsonl", records)._repr_html_(), "runs/a/log.jsonl")
    assert _pyplot_figures() == before


def test_a_capture_with_grads_and_spikes_shows_them():
    import torch
    from conftest import tiny_gpt2

    from lninspect import SpikeOptions, capture

    model = tiny_gpt2()
    with torch.enable_grad(), capture(model, grads=True, spikes=SpikeOptions()) as cap:
        model(torch.arange(12)[None]).logits.logsumexp(-1).mean().backward()
    page = cap.result()._repr_html_()
    _check(page, "out std")
    assert "gradients, medians over tokens" in page and "|dL/dx|" in page
    assert page.count("<table>") == 3 and "largest spikes" in page
    assert page.count("<td>0.ln_1</td>") == 2  # a row per norm in the stats and grads tables


def test_a_notebook_that_only_imported_lninspect_shows_html():
    """The results ask lninspect.display for their view; the renderer that registers it is
    imported on the first view, not by `import lninspect` (no matplotlib then)."""
    golden = Path(__file__).parent / "golden"
    code = (
        "import json, sys, lninspect\n"
        "assert not {'matplotlib', 'lninspect.render.notebook'} & set(sys.modules)\n"
        "from lninspect.results import StatsResult\n"
        "from lninspect.results.compare import CompareResult\n"
        f"stats = StatsResult.from_json(json.load(open({str(golden / 'stats.json')!r})))\n"
        f"compared = CompareResult.from_json(json.load(open({str(golden / 'compare.json')!r})))\n"
        "for html in (stats._repr_html_(), compared._repr_html_()):\n"
        "    assert html.startswith('<div class=\"lninspect\">') and 'data:image/png' in html\n"
        "assert lninspect.display.html_view(object()) is None  # no view: the text repr\n"
    )
    done = processes.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_results_import_nothing_from_render():
    """Counting imports inside functions: the layers run one way (render reads results)."""
    package = Path(lninspect.__file__).parent
    for path in [*(package / "results").glob("*.py"), package / "display.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not [n for n in names if n.startswith("lninspect.render")], path.name
