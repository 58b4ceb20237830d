"""`lninspect run` (a watch log read back), `lninspect compare` (local checkpoints, same or
different depths) and `lninspect report A B` (one page, side by side)."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import lninspect
from lninspect.cli import app
from lninspect.comparison import split_revision
from lninspect.derived import nan_median
from lninspect.results import GradsResult
from lninspect.results.compare import COMPARE_SCHEMA, CompareResult
from lninspect.results.watch import (
    LOG_NAME,
    WATCH_SCHEMA,
    NormRecord,
    Quantiles,
    WatchLog,
    WatchRecord,
    read_log,
)
from lninspect.statistics import SUMMARIES
from lninspect.trends import JUMP_FACTOR, jumps, spike_history
from tests import processes
from tests.conftest import build_tokenizer, tiny_gpt2, words
from tests.test_watch import batches, ref_gpt

runner = CliRunner()
TEXT = "The quick brown fox jumps over the lazy dog. Layer normalization keeps every token."
GOLDEN = Path(__file__).parent / "golden"


def invoke(*args: str, columns: int = 200):
    return runner.invoke(app, list(args), env={"COLUMNS": str(columns), "HF_HUB_OFFLINE": "1"})


def assert_png(path: Path) -> None:
    image = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    assert image.shape[0] > 200 and image.std() > 5, path


@pytest.fixture(scope="module")
def watch_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("watch")
    model = ref_gpt()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    with lninspect.watch(model, every=2, log_dir=folder, optimizer=opt) as w:
        for ids in batches(12):
            loss = model.loss(ids)
            loss.backward()
            opt.step()
            opt.zero_grad()
            w.step(loss=loss)
    return folder


@pytest.mark.parametrize("columns", [80, 120])
def test_run_tables_fit_the_terminal(
    watch_log: Path, columns: int, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(watch_log)  # the header names the log: a temporary path would wrap it
    result = invoke("run", LOG_NAME, columns=columns)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "6 records" in words(result.stdout) and "2.ln_2" in result.stdout
    assert max(len(line) for line in lines) <= columns
    assert not [line for line in lines if line != line.rstrip()], "trailing spaces"


def test_run_figures_decode_and_are_not_blank(watch_log: Path, tmp_path: Path):
    result = invoke("run", str(watch_log / LOG_NAME), "--plot", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["run-grad-scale.png", "run-input-std.png", "run-loss.png", "run-spikes.png"]
    for path in tmp_path.iterdir():
        assert_png(path)
    again = invoke("run", str(watch_log), "--plot", "--out", str(tmp_path))
    assert again.exit_code == 2 and "already exists" in again.output


def test_run_reads_a_log_still_being_written(
    watch_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    data = (watch_log / LOG_NAME).read_bytes()
    path = tmp_path / "live.jsonl"
    path.write_bytes(data + data.split(b"\n")[0][:100])  # a line half written
    monkeypatch.chdir(tmp_path)  # the header names the log: a temporary path would wrap it
    result = invoke("run", path.name, "--plot", "--out", "figs")
    assert result.exit_code == 0, result.output
    assert "still being written" in result.stderr and "6 records" in words(result.stdout)
    missing = invoke("run", str(tmp_path / "nothing.jsonl"))
    assert missing.exit_code == 2 and missing.output.count("\n") == 1


def _record(step: int, std: float, dim: int = 3) -> WatchRecord:
    q = Quantiles(std, std, std, std, std, std)
    quantiles = {s.key: q for s in SUMMARIES if not s.peak}
    norm = NormRecord("h.0.ln_1", 0, "attn", absmax=10 * std, absmax_dim=dim, quantiles=quantiles)
    return WatchRecord(step=step, loss=1.0, lr=0.1, norms=[norm], params=[])


def test_jumps_are_sudden_changes_not_trends():
    growth = WatchLog("a", [_record(10 * i, 2.0**i) for i in range(8)])  # ×2 every record
    assert jumps(growth) == []
    steady = [1.0, 1.05, 1.1, 1.12, 1.15, 4.0, 4.1, 4.2]  # one break: ×3.5 at step 50
    log = WatchLog("b", [_record(10 * i, v, dim=7 if i >= 5 else 2) for i, v in enumerate(steady)])
    found = jumps(log)
    assert {(j.step, j.statistic) for j in found} == {
        (50, s.key) for s in SUMMARIES if not s.signed
    }
    assert found[0].factor == pytest.approx(4.0 / 1.15) and found[0].factor > JUMP_FACTOR
    (spike,) = spike_history(log)
    assert (spike.value, spike.step, spike.dim, spike.first) == (42.0, 70, 7, 50)


def test_jumps_table_all_and_the_first_interval(tmp_path: Path):
    from rich.console import Console

    from lninspect.render.run_tables import MAX_JUMPS, jumps_table

    # a break at the start, then five breaks between steady levels (each: 3 statistics)
    values = [v * level for level in (1, 9, 1, 9, 1, 9) for v in (1.0, 1.05, 1.0, 1.05, 1.0)]
    log = WatchLog("c", [_record(10 * i, v) for i, v in enumerate([50.0, *values])])
    found = jumps(log)
    assert len(found) > MAX_JUMPS and all(j.step != 10 for j in found)  # not the first
    console = Console(width=80, record=True)
    console.print(jumps_table(log, found))
    text = console.export_text()
    assert f"the {MAX_JUMPS} largest shown (--all: every one)" in text
    assert "first record to the second is never flagged" in " ".join(text.split())
    console = Console(width=200, record=True)
    console.print(jumps_table(log, found, limit=None))
    rows = [line for line in console.export_text().splitlines() if "0.ln_1" in line]
    assert len(rows) == len(found)
    help_text = invoke("run", "--help").stdout
    assert "--all" in help_text and "--json" not in help_text


def test_watch_record_golden(tmp_path: Path):
    """One record of a fixed step of the reference GPT: the schema's golden document."""
    model = ref_gpt()
    with lninspect.watch(model, every=1, log_dir=tmp_path) as w:
        model.loss(batches(1)[0]).backward()
        w.step(loss=1.25, lr=0.001)
    doc = json.loads((tmp_path / LOG_NAME).read_text().splitlines()[0])
    golden = GOLDEN / "watch.json"
    if os.environ.get("LNINSPECT_UPDATE_GOLDEN") == "1":
        golden.write_text(json.dumps(doc, ensure_ascii=False) + "\n")
    want = json.loads(golden.read_text())
    assert list(doc) == list(want) and doc["schema"] == WATCH_SCHEMA
    for got, expected in zip(doc["norms"], want["norms"], strict=True):
        assert got["name"] == expected["name"] and got["absmax_dim"] == expected["absmax_dim"]
        assert got["input_denominator"]["q50"] == pytest.approx(
            expected["input_denominator"]["q50"], rel=1e-4
        )
    assert WatchRecord.from_json(doc).to_json() == doc
    assert read_log(tmp_path).records[0].to_json() == doc


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two checkpoints of one model (different weights) and a deeper model, one tokenizer."""
    tokenizer = build_tokenizer()
    paths = []
    for name, layers, seed in (("step-100", 2, 0), ("step-200", 2, 1), ("deep", 4, 2)):
        path = tmp_path_factory.mktemp(name)
        tiny_gpt2(n_layer=layers, seed=seed, vocab_size=len(tokenizer)).save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths.append(path)
    return paths


def _grads(path: Path, tmp_path: Path) -> GradsResult:
    out = tmp_path / f"{path.name}.json"
    done = invoke("grads", str(path), "--text", TEXT, "--json", str(out))
    assert done.exit_code == 0, done.output
    return GradsResult.from_json(json.loads(out.read_text()))


def test_compare_two_local_checkpoints_token_by_token(
    checkpoints: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    a, b = checkpoints[:2]
    out = tmp_path / "compare.json"
    figures = tmp_path / "figs"
    monkeypatch.chdir(a.parent)  # the header names the models: temporary paths would wrap it
    args = ("compare", a.name, b.name, "--text", TEXT, "--json", str(out), "--plot")
    result = invoke(*args, "--out", str(figures), columns=80)
    assert result.exit_code == 0, result.output
    shown = words(result.stdout)
    assert "token by token" in shown and "matched by names" in shown
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    doc = json.loads(out.read_text())
    assert doc["schema"] == COMPARE_SCHEMA
    compared = CompareResult.from_json(doc)
    assert compared.mode == "tokens" and compared.matching == "names"
    separate = [_grads(a, tmp_path), _grads(b, tmp_path)]  # each model on its own
    assert [m.loss for m in compared.models] == pytest.approx([r.loss for r in separate])
    for row in compared.rows:
        for values, result_m in zip(row.models, separate, strict=True):
            norm = result_m.norm(values.name)
            assert values.value("input_denominator") == pytest.approx(
                nan_median(norm.denominator), rel=1e-6
            )
            assert values.value("grad_scale") == pytest.approx(
                nan_median(norm.grad.scale), rel=1e-6
            )
            assert values.tokens == pytest.approx(norm.denominator[0].tolist(), rel=1e-6)
    for d in compared.differences:
        assert d.ratio == pytest.approx(d.value / d.reference, rel=1e-6) and d.model == 1
    changes = [abs(math.log(d.ratio)) for d in compared.differences]
    assert changes == sorted(changes, reverse=True)
    assert sorted(p.name for p in figures.iterdir()) == ["compare-layers.png", "compare-tokens.png"]
    for path in figures.iterdir():
        assert_png(path)


def test_compare_different_depths_matches_by_relative_depth(checkpoints: list[Path]):
    a, _, deep = checkpoints
    result = invoke("compare", str(a), str(deep), "--text", TEXT, "--json", "-")
    assert result.exit_code == 0, result.output
    compared = CompareResult.from_json(json.loads(result.stdout))
    assert compared.matching == "relative depth" and compared.mode == "tokens"
    assert any("relative depth" in note for note in compared.notes)
    by_name = {row.models[0].name: row.models[1].name for row in compared.rows}
    assert by_name["transformer.h.0.ln_1"] == "transformer.h.0.ln_1"  # depth 0 -> 0
    assert by_name["transformer.h.1.ln_2"] == "transformer.h.3.ln_2"  # depth 1 -> 1
    assert by_name["transformer.ln_f"] == "transformer.ln_f"


def test_compare_needs_two_models(checkpoints: list[Path]):
    result = invoke("compare", str(checkpoints[0]))
    assert result.exit_code == 2 and "at least two" in result.output


def test_report_of_two_models_is_one_page(checkpoints: list[Path], tmp_path: Path):
    a, b = checkpoints[:2]
    folder = tmp_path / "report"
    result = invoke("report", str(a), str(b), "--text", TEXT, "--out", str(folder))
    assert result.exit_code == 0, result.output
    names = {p.name for p in folder.iterdir()}
    assert {"index.html", "compare.json", "A-report.json", "B-report.json"} <= names
    assert {"A-stats-std-per-layer.png", "B-stats-std-per-layer.png"} <= names
    page = (folder / "index.html").read_text()
    assert page.count("data:image/png;base64,") == len([n for n in names if n.endswith(".png")])
    assert f"A: {a}" in page and f"B: {b}" in page and "residual-stream growth" in page
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left

    # Again with --force and two models fewer than a third run had: C's files are stale.
    (folder / "C-report.json").write_text("{}")
    (folder / "notes.txt").write_text("mine")
    assert invoke("report", str(a), str(b), "--text", TEXT, "--out", str(folder)).exit_code == 2
    again = invoke("report", str(a), str(b), "--text", TEXT, "--out", str(folder), "--force")
    assert again.exit_code == 0, again.output
    left = {p.name for p in folder.iterdir()}
    assert "C-report.json" not in left and "notes.txt" in left and ".lninspect.lock" not in left


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("gpt2@v1", ("gpt2", "v1")),
        ("org/model@step-1000", ("org/model", "step-1000")),
        ("random:gpt2", ("random:gpt2", None)),
        ("tiny", ("tiny", None)),
        ("a@b/c", ("a@b/c", None)),
    ],
)
def test_revision_in_the_spec(spec: str, expected: tuple[str, str | None]):
    assert split_revision(spec) == expected


def test_example_script_trains_and_its_log_reads_back(tmp_path: Path):
    script = Path(__file__).parents[1] / "examples" / "train_watch.py"
    args = ["--steps", "5", "--every", "2", "--layers", "2", "--d-model", "32", "--seq-len", "32"]
    done = processes.run(
        [sys.executable, str(script), *args, "--batch", "2", "--log-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    log = read_log(tmp_path)
    assert log.steps == [0, 2, 4] and all(r.tokens == 2 * 32 for r in log.records)
    assert all(math.isfinite(r.loss) and r.lr > 0 for r in log.records)


def test_compare_keeps_the_models_notes_and_counts_the_rows_shown(tiny_model_dir: Path):
    from rich.console import Console

    from lninspect.render.compare_tables import MAX_ROWS, differences_table
    from lninspect.results.compare import CompareResult, Difference

    long_text = "The quick brown fox jumps over the lazy dog. " * 20  # > the 64-token context
    model = str(tiny_model_dir)
    result = invoke("compare", model, model, "--text", long_text, "--json", "-", "-q")
    assert result.exit_code == 0, result.output
    notes = json.loads(result.stdout)["notes"]
    assert any("kept the first 64" in note for note in notes), notes
    assert len([n for n in notes if "kept the first" in n]) == 1  # said once for both
    compared = CompareResult.from_json(json.loads(result.stdout))
    compared.differences = [
        Difference("input_denominator", 0, 1, 1.0, 2.0 + i, 2.0 + i) for i in range(MAX_ROWS + 5)
    ]
    console = Console(width=200, record=True)
    console.print(differences_table(compared))
    text = console.export_text()
    assert f"({MAX_ROWS} shown of {MAX_ROWS + 5} kept; every one in --json)" in text
    assert sum(" std/rms " in f" {line} " for line in text.splitlines()) == MAX_ROWS


def test_run_figures_name_each_line_and_tick_whole_steps(watch_log: Path):
    from lninspect.render.run_plots import plot_series_panels

    figure = plot_series_panels(read_log(watch_log), "absmax", "largest |x|", dims=True)
    axes = figure.axes
    assert len(axes) == 3  # the panels only: a legend per line, no continuous colour bar
    legend = axes[0].get_legend()
    assert legend is not None and [t.get_text() for t in legend.get_texts()] == [
        "0.ln_1",
        "1.ln_1",
        "2.ln_1",
    ]
    ticks = axes[-1].get_xticks()
    assert np.allclose(ticks, np.round(ticks))  # whole optimizer steps
    notes = [a.get_text() for ax in axes for a in ax.texts]
    short = {f"{layer}.ln_{i}" for layer in range(3) for i in (1, 2)} | {"final"}
    assert notes and all(n.split(":")[0] in short for n in notes)
