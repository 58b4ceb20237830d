"""`lninspect report`: the folder of figures, report.json and a self-contained index.html."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lninspect.cli import app
from lninspect.errors import LninspectError
from lninspect.render import report
from lninspect.render.catalog import BY_NAME
from lninspect.render.interactive import INTERACTIVE_HTML
from lninspect.render.report import INDEX_HTML, REPORT_FILES, REPORT_JSON, write_report
from lninspect.results import GradsResult
from lninspect.results.one_text import GRADS_SCHEMA
from tests.conftest import words

runner = CliRunner()
TEXT = 'The quick brown fox <script>alert("x")</script> jumps over the lazy dog.'

# what a report without --map / --freeze-scale writes
WRITTEN = [n for n in REPORT_FILES if n not in BY_NAME or not BY_NAME[n].option]


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200", "HF_HUB_OFFLINE": "1"})


class Page(HTMLParser):
    """Every tag with its attributes, and the visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def report_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("report") / "out"
    result = invoke(
        "report",
        str(tiny_model_dir),
        "--text",
        TEXT,
        "--spike-z",
        "2",
        "--top-k",
        "4",
        "--out",
        str(folder),
        "--json",
        str(folder.parent / "copy.json"),  # the document also where --json says
    )
    assert result.exit_code == 0, result.output
    return result, folder


def test_report_writes_every_file_and_nothing_else(report_run):
    result, folder = report_run
    assert sorted(p.name for p in folder.iterdir()) == sorted(WRITTEN)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # staging removed
    assert "largest spike" in words(result.stdout) and "index.html" in result.stderr
    assert "z-rule outliers kept by the norms" in words(result.stdout)


def test_report_pngs_decode_and_are_not_blank(report_run):
    _, folder = report_run
    for path in folder.glob("*.png"):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 800 and image.height >= 500
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
        # tiny has no massive activation: that figure is the message that says so
        dark = 0.005 if path.name == "stats-spike-roles.png" else 0.01
        assert pixels.std() > 10 and (pixels < 128).mean() > dark, path.name


def test_report_json_is_the_grads_result_with_spikes(report_run):
    _, folder = report_run
    doc = json.loads((folder / REPORT_JSON).read_text())
    assert doc["schema"] == GRADS_SCHEMA
    assert json.loads((folder.parent / "copy.json").read_text()) == doc
    assert doc["spike_z"] == 2 and doc["top_k"] == 4
    result = GradsResult.from_json(doc)
    assert any(n.spikes for n in result.norms) and all(n.grad for n in result.norms)


def test_index_html_is_self_contained_and_escaped(report_run, tiny_model_dir: Path):
    _, folder = report_run
    page = (folder / INDEX_HTML).read_text(encoding="utf-8")
    parser = Page()
    parser.feed(page)
    parser.close()
    tags = [tag for tag, _ in parser.tags]
    assert "script" not in tags and "link" not in tags and "style" in tags
    images = [attrs["src"] for tag, attrs in parser.tags if tag == "img"]
    pngs = {p.read_bytes() for p in folder.glob("*.png")}
    assert len(images) == len(pngs) == 14  # the scale's spread is always drawn
    assert {base64.b64decode(src.removeprefix("data:image/png;base64,")) for src in images} == pngs
    links = [v for _, attrs in parser.tags for k, v in attrs.items() if k in ("src", "href")]
    # no external resources; one link to the interactive page beside it
    assert all(v.startswith(("data:", "#")) or v == INTERACTIVE_HTML for v in links)
    assert (folder / INTERACTIVE_HTML).read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    text = " ".join(parser.text)
    assert str(tiny_model_dir) in text and "loss" in text and "largest spike" in text
    assert '<script>alert("x")</script>' in text  # shown as text...
    assert "&lt;script&gt;" in page and "<script>" not in page  # ...because it was escaped


def test_a_non_empty_folder_is_refused_before_the_model_loads(tmp_path: Path):
    folder = tmp_path / "busy"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    result = invoke("report", str(tmp_path / "no-such-model"), "--out", str(folder))
    assert result.exit_code == 2
    assert "not empty" in result.stderr and "--force" in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    a_file = invoke("report", "--out", str(folder / "notes.txt"))
    assert a_file.exit_code == 2 and "is a file" in a_file.stderr


def test_force_replaces_same_names_and_leaves_others(report_run, tmp_path: Path):
    _, source = report_run
    result = GradsResult.from_json(json.loads((source / REPORT_JSON).read_text()))
    folder = tmp_path / "forced"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / INDEX_HTML).write_text("old")
    with pytest.raises(LninspectError, match="force=True"):
        report.check_report_folder(folder, force=False)
    report.check_report_folder(folder, force=True)
    paths = write_report(result, folder)
    assert sorted(p.name for p in paths) == sorted(WRITTEN)
    assert (folder / "notes.txt").read_text() == "mine"
    assert (folder / INDEX_HTML).read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_an_interrupted_report_leaves_no_file(report_run, tmp_path: Path, monkeypatch):
    _, source = report_run
    result = GradsResult.from_json(json.loads((source / REPORT_JSON).read_text()))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "save_report_figures", interrupted)
    folder = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        write_report(result, folder)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor the staging folder


def test_every_figure_the_report_writes_has_a_caption():
    figures = [name for name in WRITTEN if name.endswith(".png")]
    assert figures and all(BY_NAME[name].heading and BY_NAME[name].caption for name in figures)


def test_the_library_writes_the_report_folder_the_cli_writes(report_run, tmp_path: Path):
    """lninspect.reports.write_report_folder: the same files and document as `report`, the
    run's notes told as they come; a folder it may not write is refused before the model."""
    from lninspect.options import RunOptions, SpikeOptions
    from lninspect.reports import write_report_folder

    _, cli_folder = report_run
    cli_doc = json.loads((cli_folder / REPORT_JSON).read_text())
    run = RunOptions(model=cli_doc["model"]["name"], text=TEXT)
    notes: list[str] = []
    result, paths = write_report_folder(
        run, tmp_path / "out", spikes=SpikeOptions(spike_z=2, top_k=4), notes=notes.append
    )
    assert sorted(p.name for p in paths) == sorted(WRITTEN) and notes == result.notes
    assert json.loads((tmp_path / "out" / REPORT_JSON).read_text()) == cli_doc
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / INDEX_HTML).write_text("theirs")
    with pytest.raises(LninspectError, match="force"):
        write_report_folder(RunOptions(model=str(tmp_path / "no-such-model")), busy)
