"""80 columns that never cut a number (issue 33, item 7): the stats, spike, order, census and
ablation tables and the report's findings, of the bundled model, a 12-layer Llama (long names)
and a synthetic result with massive values, at 80 and 120 columns: no line wider than the
console, every number, header and module name that a table holds whole on one line, the
optional columns left out named in the caption, token text cut to a fixed width."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest
from rich.console import RenderableType
from typer.testing import CliRunner

from lninspect.cli import app
from lninspect.cli.console import Output
from lninspect.render.fit import FitTable
from lninspect.render.format import short_names, words_of
from lninspect.render.report import findings, findings_table
from lninspect.render.spike_tables import spike_tables
from lninspect.render.stats_tables import stats_table
from lninspect.results import GradsResult, StatsResult
from tests.conftest import build_tokenizer, words
from tests.test_llama_tables import tiny_llama
from tests.test_spike_render import synthetic as ablated
from tests.test_stats_plots import synthetic

runner = CliRunner()
TEXT = "The quick brown fox jumps over the lazy dog."
WIDTHS = [80, 120]
MASSIVE = (22545.0, -104061.0)


def whole(piece: str, text: str) -> bool:
    """`piece` on one line of `text`, with white space (or a line's end, or an item's comma)
    on both sides: not cut, not folded."""
    return re.search(rf"(^|\s){re.escape(piece)}(,?\s|,?$)", text, re.M) is not None


def held(tables: list[RenderableType], width: int) -> Iterator[str]:
    """Every header and cell of the columns the tables show at `width`."""
    for table in tables:
        if isinstance(table, FitTable):
            for column in table.shown(width):
                yield column.header
                for cell in column.cells:
                    yield from [cell] if isinstance(cell, str) else cell


def assert_whole(
    text: str, width: int, tables: list[RenderableType], names: list[str], limit: int = 0
) -> None:
    """No line wider than `width` (or `limit`); what the tables hold at `width` whole."""
    lines = text.splitlines()
    assert all(len(line) <= (limit or width) for line in lines), max(lines, key=len)
    for piece in held(tables, width):
        assert not piece.strip() or whole(piece, text), (piece, text)
    for name in short_names(names):
        assert whole(name, text), (name, text)
    assert not re.search(r"[\d.]…|…\d", text), text  # no number cut short


def printed(tables: list[RenderableType], width: int, monkeypatch: pytest.MonkeyPatch) -> str:
    """The tables as the CLI prints them (cli.console.Output) at `width` columns."""
    monkeypatch.setenv("COLUMNS", str(width))
    output = Output()
    with output.out.capture() as capture:
        for table in tables:
            output.show(table)
    return capture.get()


def massive(names: str = "gpt2") -> StatsResult:
    """The synthetic result with massive values (and Gemma 3's names with `names="gemma"`)."""
    result = synthetic()
    norm = result.norms[5]
    for spike, value in zip(norm.spikes or [], MASSIVE, strict=False):
        spike.value, spike.massive = value, True
    norm.input.absmax[0, 4] = -MASSIVE[1]
    for entry in norm.census or []:
        entry.max_abs = -MASSIVE[1]
    if names == "gemma":
        leaves = ["self_attn.q_norm", "post_attention_layernorm"]
        for i, n in enumerate(result.norms[:-1]):
            n.name = f"model.layers.{10 + i // 2}.{leaves[i % 2]}"
        result.norms[-1].name = "model.norm"
    return result


def with_loss(result: StatsResult) -> GradsResult:
    base = {f.name: getattr(result, f.name) for f in fields(StatsResult) if f.name != "schema"}
    return GradsResult(**base, loss=3.25)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("names", ["gpt2", "gemma"])
def test_massive_values_and_long_names_whole(names: str, width: int, monkeypatch):
    result = massive(names)
    tables = [stats_table(result), *spike_tables(result)]
    text = printed(tables, width, monkeypatch)
    assert_whole(text, width, tables, [n.name for n in result.norms])
    assert whole("22545 m", text) and whole("-104061 m", text) and whole("1.04e+05", text)
    assert whole("104061", text)  # the census's max |x|
    assert "1.041e+05" in words(printed([findings_table(with_loss(result))], width, monkeypatch))


def test_optional_columns_go_in_order_and_the_caption_says_which(monkeypatch):
    result = massive("gemma")
    text = words(printed([stats_table(result)], 80, monkeypatch))
    assert "out mean left out to fit the width; --wide adds it and the weights" in text
    wide = Output(wide=True)
    with wide.out.capture() as capture:
        wide.show(stats_table(result, wide=True))
    assert "out mean" in capture.get() and "left out" not in capture.get()
    narrow = stats_table(result).shown(50)
    assert [c.header for c in narrow] == ["module", "std med", "max |x|", "out std"]
    spikes = spike_tables(result, wide=True)[0]
    assert isinstance(spikes, FitTable) and spikes.shown(40) == spikes.columns  # all, with wide
    left = [c.header for c in spike_tables(result)[0].shown(40)]  # gain, by, y, z go first
    assert left == ["module", "token", "dim", "x", "rank"]


def test_narrower_than_the_numbers_the_table_is_wider_than_the_console(monkeypatch):
    """At 40 columns the numbers are shown whole on lines longer than the console (the
    terminal folds them) rather than cut."""
    result = massive("gemma")
    table = stats_table(result)
    text = printed([table], 40, monkeypatch)
    assert_whole(text, 40, [table], [n.name for n in result.norms], limit=60)
    assert max(map(len, text.splitlines())) > 40


@pytest.mark.parametrize("width", WIDTHS)
def test_the_ablation_and_census_tables_whole(width: int, monkeypatch):
    result = ablated()
    tables = spike_tables(result)
    text = printed(tables, width, monkeypatch)
    assert_whole(text, width, tables, [n.name for n in result.norms])
    assert whole("t0 '<|endo…", text) and whole("'<|endoftex… 2", text)  # cut, not wrapped


@pytest.mark.parametrize("width", WIDTHS)
def test_the_findings_wrap_labels_and_values_at_words(width: int, monkeypatch):
    result = ablated()
    text = printed([findings_table(result)], width, monkeypatch)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines), max(lines, key=len)
    for _, value in findings(result)[1:]:  # the model's row: test_narrow_tables
        assert all(whole(word, text) for word in words_of(value)), value
    label = "dimension with the most z-rule outliers"
    assert whole(label, text) == (width > 80)  # two lines at 80, the value keeps the room
    starts = [line.split("  ")[1].strip() for line in lines if line.startswith("  ")]
    assert width > 80 or {"dimension with the most", "z-rule outliers"} <= set(starts), starts


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-layer Llama: two-digit layers, `model.layers.10.post_attention_layernorm`."""
    path = tmp_path_factory.mktemp("llama-12")
    tokenizer = build_tokenizer()
    tiny_llama(len(tokenizer), layers=12).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def shown(width: int, *args: str) -> str:
    ran = runner.invoke(app, list(args), env={"COLUMNS": str(width), "HF_HUB_OFFLINE": "1"})
    assert ran.exit_code == 0, ran.output
    return ran.stdout


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("model", ["tiny", "llama"])
def test_stats_and_spikes_through_the_cli(model: str, width: int, llama_dir: Path, tmp_path):
    spec = "tiny" if model == "tiny" else str(llama_dir)
    out = tmp_path / "s.json"
    text = shown(width, "stats", spec, "--text", TEXT, "--spikes", "--json", str(out))
    result = StatsResult.from_json(json.loads(out.read_text()))
    tables = [stats_table(result), *spike_tables(result)]
    assert_whole(text, width, tables, [n.name for n in result.norms])
    order = text.split("does each norm keep the order of its spikes?\n")[1].splitlines()
    rows = order[: next(i for i, line in enumerate(order) if line.startswith("all"))]
    assert len(rows) == len(result.norms) + 3  # the header, its rule, one line per norm, a gap


@pytest.mark.parametrize("model", ["tiny", "llama"])
def test_the_report_findings_through_the_cli(model: str, llama_dir: Path, tmp_path, monkeypatch):
    spec = "tiny" if model == "tiny" else str(llama_dir)
    folder = tmp_path / "report"
    text = shown(80, "report", spec, "--text", TEXT, "--out", str(folder))
    result = GradsResult.from_json(json.loads((folder / "report.json").read_text()))
    for width, seen in ((80, text), (120, printed([findings_table(result)], 120, monkeypatch))):
        lines = seen.splitlines()
        assert all(len(line) <= width for line in lines), max(lines, key=len)
        for _, value in findings(result)[1:]:
            assert all(whole(word, seen) for word in words_of(value)), value
