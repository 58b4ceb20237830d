"""The figure catalog (lninspect.render.catalog): every figure that `--plot` of a command or a
report writes is one entry, drawn with the entry's title and shown with its caption, and every
entry is written somewhere."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from lninspect.render import catalog, figures
from lninspect.render.catalog import BY_NAME, FIGURES, FigureEntry
from lninspect.render.compare_report import write_compare_report
from lninspect.render.report import INDEX_HTML, write_report
from lninspect.results.aggregate import AggregateResult
from lninspect.results.compare import CompareResult
from lninspect.results.watch import read_log
from lninspect.trends import jumps
from tests.test_spike_render import synthetic

GOLDEN = Path(__file__).parent / "golden"


def golden(name: str) -> dict:
    return json.loads((GOLDEN / f"{name}.json").read_text())


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(file name, title drawn on it) of every figure saved while the test runs; the file
    is written empty (rendering the PNGs is tested with each figure, and takes minutes)."""
    seen: list[tuple[str, str]] = []

    def recording(figure: Figure, path: Path) -> Path:
        title = figure.get_suptitle() or figure.axes[0].get_title()
        seen.append((path.name, title))
        path.write_bytes(b"")
        return path

    monkeypatch.setattr(figures, "save_figure", recording)
    monkeypatch.setattr(catalog, "save_figure", recording)
    return seen


def _check(drawn: list[tuple[str, str]], place: str, *data: object) -> set[str]:
    """Every figure drawn is an entry of `place`, titled by it; every entry of `place` that
    applies to `data` was drawn, in the catalog's order."""
    expected = [e.name for e in catalog.figures_of(place) if e.drawn_for(*data)]
    assert [name for name, _ in drawn] == expected, place
    for name, title in drawn:
        assert title.startswith(BY_NAME[name].title_of(*data) + "\n"), name
    written = {name for name, _ in drawn}
    drawn.clear()
    return written


def test_every_figure_written_is_an_entry_titled_by_it_and_every_entry_is_written(
    drawn: list[tuple[str, str]], tmp_path: Path
):
    grads = synthetic()  # with spikes: every spike figure
    corpus = AggregateResult.from_json(golden("corpus"))
    compared = CompareResult.from_json(golden("compare"))
    assert compared.mode == "tokens" and any(n.order is not None for n in grads.norms)
    record = golden("watch")
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({**record, "step": s}) + "\n" for s in (1, 2, 3)))
    watched = read_log(log)
    found = jumps(watched, factor=4.0)
    written = set()
    for place, save, data in [
        (catalog.STATS, catalog.save_stats_figures, (grads,)),
        (catalog.GRADS, catalog.save_grads_figures, (grads,)),
        (catalog.CORPUS, catalog.save_corpus_figures, (corpus,)),
        (catalog.COMPARE, catalog.save_compare_figures, (compared,)),
    ]:
        folder = tmp_path / place.replace(" ", "_")
        folder.mkdir()
        paths = save(*data, folder)  # type: ignore[operator]
        assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths)
        written |= _check(drawn, place, *data)
    (tmp_path / "run").mkdir()
    catalog.save_run_figures(watched, found, tmp_path / "run")
    written |= _check(drawn, catalog.RUN, watched, found)
    write_report(grads, tmp_path / "report")
    written |= _check(drawn, catalog.REPORT, grads)
    write_compare_report([grads, grads], compared, tmp_path / "models")
    overlays = [name for name, _ in drawn if name.startswith("compare-")]
    assert overlays == list(catalog.names_of(catalog.MODELS_REPORT))
    # the map's figures are drawn only when asked for (--map, --freeze-scale): test_map.py
    asked = {entry.name for entry in FIGURES if entry.option}
    each_model = set(catalog.names_of(catalog.REPORT)) - asked
    assert {name for name, _ in drawn} == set(overlays) | each_model
    assert written == set(BY_NAME) - asked and len(BY_NAME) == len(FIGURES)  # none unused


class Figures(HTMLParser):
    """Per <figure>: its image's alt and its caption's text."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[dict[str, str]] = []
        self.inside: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "figure":
            self.found.append({"id": dict(attrs).get("id") or "", "caption": ""})
        elif tag == "img" and self.found:
            self.found[-1]["alt"] = dict(attrs).get("alt") or ""
        self.inside = tag if tag == "figcaption" else self.inside

    def handle_endtag(self, tag: str) -> None:
        self.inside = None if tag == "figcaption" else self.inside

    def handle_data(self, data: str) -> None:
        if self.inside == "figcaption":
            self.found[-1]["caption"] += data


def test_the_report_shows_each_figure_with_its_entrys_heading_and_caption(tmp_path: Path):
    grads = synthetic()
    paths = write_report(grads, tmp_path)
    page = Figures()
    page.feed((tmp_path / INDEX_HTML).read_text(encoding="utf-8"))
    pngs = [p.name for p in paths if p.suffix == ".png"]
    assert [f["id"] + ".png" for f in page.found] == pngs
    for shown in page.found:
        entry = BY_NAME[shown["id"] + ".png"]
        assert shown["alt"] == entry.heading
        assert entry.heading in shown["caption"] and entry.caption in shown["caption"]


def test_an_entry_of_the_report_needs_a_caption_and_a_known_place():
    def draw(result: object) -> Figure:
        return Figure()

    with pytest.raises(ValueError, match="heading and caption"):
        FigureEntry("new.png", "A new figure", draw, (catalog.REPORT,), "A new figure")
    with pytest.raises(ValueError, match="places"):
        FigureEntry("new.png", "A new figure", draw, ("stats",))
    assert FigureEntry("new.png", "A new figure", draw, (catalog.STATS,)).title_of(None)
