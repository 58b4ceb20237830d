"""Hostile watch logs and watchers of issue 34: series built in one pass and bounded, restarted
steps, out-of-range numbers, a log opened once, a step that raised."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lninspect import trends
from lninspect.errors import LninspectError
from lninspect.results.watch import read_log
from tests.test_hostile import invoke

QUANTILE_KEYS = ("q05", "q25", "q50", "q75", "q95", "max")


def norm(name: str, value: float = 1.0, layer: int = 0) -> dict[str, object]:
    block = {k: value for k in QUANTILE_KEYS}
    return {
        "name": name,
        "layer": layer,
        "role": "attn_in",
        "absmax": value,
        "absmax_dim": 0,
        **{k: block for k in ("input_denominator", "output_std", "grad_scale")},
    }


def record(step: int, *norms: dict[str, object]) -> dict[str, object]:
    doc = {"schema": "lninspect.watch/1", "step": step, "loss": 1.0, "lr": 0.1, "tokens": 8}
    return {**doc, "norms": list(norms), "params": []}


def write_log(path: Path, *records: dict[str, object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# 1. Series in one pass, bounded -------------------------------------------------------------


class CountedList(list):
    """A list that counts how often it is iterated."""

    reads = 0

    def __iter__(self):
        CountedList.reads += 1
        return super().__iter__()


def test_series_read_each_record_a_fixed_number_of_times(tmp_path: Path):
    log = read_log(
        write_log(tmp_path / "log.jsonl", *[record(i, norm(f"h.{i}")) for i in range(200)])
    )
    for r in log.records:
        r.norms = CountedList(r.norms)
    CountedList.reads = 0
    series = trends.norm_series(log)
    assert CountedList.reads <= 2 * len(log.records)  # was once per name per record: 40,000
    assert [s.name for s in series][:2] == ["h.0", "h.1"]
    assert (
        np.isnan(series[1].values["input_denominator"][0])
        and series[1].values["input_denominator"][1] == 1
    )


def test_too_many_norm_names_or_cells_are_refused_with_the_numbers(monkeypatch, tmp_path: Path):
    log = write_log(tmp_path / "log.jsonl", *[record(i, norm(f"h.{i}")) for i in range(30)])
    monkeypatch.setattr(trends, "MAX_NORM_NAMES", 20)
    result = invoke("run", log)
    assert result.exit_code == 2, result.output
    assert "names 30 different norms, more than the 20" in result.output
    assert len(result.output.strip().splitlines()) == 1
    monkeypatch.setattr(trends, "MAX_NORM_NAMES", 100)
    monkeypatch.setattr(trends, "MAX_SERIES_CELLS", 800)
    with pytest.raises(LninspectError, match="30 norms over 30 records: 900 values per statistic"):
        trends.norm_series(read_log(log))


# 2. A log whose steps restart ---------------------------------------------------------------


def test_restarted_steps_keep_every_record_in_file_order(tmp_path: Path):
    values = [1.0, 1.1, 1.2, 1.3, 9.0, 1.3]
    steps = [0, 1, 2, 0, 1, 2]
    log = read_log(
        write_log(
            tmp_path / "log.jsonl",
            *[record(s, norm("a", v)) for s, v in zip(steps, values, strict=True)],
        )
    )
    (series,) = trends.norm_series(log)
    assert series.values["input_denominator"].tolist() == values  # was NaN, NaN, NaN, 1.3, 9.0, 1.3
    x, label = trends.record_axis(log)
    assert x.tolist() == [1, 2, 3, 4, 5, 6] and label == trends.RECORD_AXIS
    found = [j for j in trends.jumps(log) if j.statistic == "input_denominator"]
    assert {(j.step, j.record, j.after) for j in found} == {(1, 4, 9.0), (2, 5, 1.3)}
    increasing = read_log(
        write_log(tmp_path / "up.jsonl", record(3, norm("a")), record(7, norm("a")))
    )
    assert trends.record_axis(increasing)[0].tolist() == [3, 7]


def test_the_figures_of_a_restarted_log_are_drawn_over_records(tmp_path: Path):
    from matplotlib.figure import Figure

    from lninspect.render.run_plots import plot_input_denominator_heatmap, plot_loss

    log = read_log(
        write_log(tmp_path / "log.jsonl", *[record(s, norm("a", 1 + s)) for s in (0, 1, 0, 1)])
    )
    heat = plot_input_denominator_heatmap(log, Figure().add_subplot())
    loss = plot_loss(log, trends.jumps(log), Figure().add_subplot())
    assert heat.get_xlabel() == loss.get_xlabel() == trends.RECORD_AXIS
    assert loss.lines[0].get_xdata().tolist() == [1, 2, 3, 4]


# 3. Numbers out of range --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"layer": 10**400}, "norms[0].layer: 100000000000...(401 digits) is outside the 64-bit"),
        ({"layer": 2**70}, "norms[0].layer: 1180591620717411303424 is outside the 64-bit"),
        ({"layer": 70_000}, "norms[0].layer: 70000 is outside 0..65535"),
        ({"absmax": -(10**400)}, "norms[0].absmax: -10000000000...(401 digits) is beyond"),
        ({"absmax_dim": -7}, "norms[0].absmax_dim: -7 is outside -1.."),
        (
            {"input_denominator": {**dict.fromkeys(QUANTILE_KEYS, 1.0), "q50": 10**309}},
            "input_denominator.q50",
        ),
    ],
)
def test_numbers_out_of_range_name_file_line_field_value(tmp_path: Path, change, message):
    bad = {**norm("a"), **change}
    log = write_log(tmp_path / "log.jsonl", record(0, norm("a")), record(1, bad))
    result = invoke("run", log)
    assert result.exit_code == 2, result.output
    assert f"'{log}' line 2 is not a lninspect.watch/" in result.output
    assert message in result.output.replace("\n", " ")


def test_a_huge_record_field_is_refused(tmp_path: Path):
    log = write_log(tmp_path / "log.jsonl", {**record(0), "tokens": 10**400})
    with pytest.raises(
        LninspectError, match=r"line 1 .*\(tokens: 100000000000\.\.\.\(401 digits\)"
    ):
        read_log(log)


# 6. A log opened once; a step that raised still counts ---------------------------------------


def test_a_new_log_is_opened_by_one_watcher_only(monkeypatch, tmp_path: Path):
    from lninspect.monitor.sinks import JsonlSink

    first = JsonlSink(tmp_path, resume=False)
    try:
        with pytest.raises(LninspectError, match="being written by another watcher"):
            JsonlSink(tmp_path, resume=True)
        monkeypatch.setattr(Path, "exists", lambda self: False)  # both checked before either opened
        with pytest.raises(LninspectError, match="already exists: pass resume=True"):
            JsonlSink(tmp_path, resume=False)
    finally:
        first.close()
    JsonlSink(tmp_path, resume=True).close()  # the lock goes with the first watcher


def test_a_step_that_raised_keeps_the_later_step_numbers(tmp_path: Path):
    import torch

    import lninspect
    from tests.test_hostile_limits import _ref_model

    model, ids = _ref_model(), torch.randint(0, 64, (1, 8))
    with lninspect.watch(model, every=1, log_dir=tmp_path) as w:
        for loss in (1.0, "abc", 3.0):
            model.loss(ids).backward()
            if loss == "abc":
                with pytest.raises(
                    LninspectError, match=r"step\(loss='abc'\): loss must be a number"
                ):
                    w.step(loss=loss)
            else:
                w.step(loss=loss)
    found = read_log(tmp_path)
    assert [(r.step, r.loss) for r in found.records] == [(0, 1.0), (2, 3.0)]
