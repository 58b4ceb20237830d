"""--freeze-scale: the frozen loss against an independent implementation (a forward hook that
returns γ·(x - c)/k + β computed in float64), the configurations riding in the batch, the
constants from calibration and the JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lninspect import capture
from lninspect.hooks.freeze import (
    Frozen,
    calibration_scales,
    configurations,
    constants_of,
    frozen_losses,
    measure_freezing,
)
from lninspect.norms.discovery import find_norms
from lninspect.render.map_plots import plot_freeze
from lninspect.results import StatsResult
from tests.conftest import tiny_gpt2

RELATIVE = 1e-5  # float32 forward passes of the same model, one with a float64 norm


def reference_loss(model, ids: torch.Tensor, frozen: dict[str, tuple[float, float]], classes):
    """The loss with each norm in `frozen` giving γ·(x - c)/k + β in float64, k = (first,
    rest) by position when `classes`, else rest everywhere."""

    def hook_for(module: torch.nn.LayerNorm, first: float, rest: float):
        def hook(_: torch.nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor):
            x = args[0].double()
            k = torch.full(x.shape[:-1], rest, dtype=torch.float64)
            if classes:
                k[:, 0] = first
            centred = x - x.mean(-1, keepdim=True)
            y = module.weight.double() * centred / k[..., None] + module.bias.double()
            return y.to(output.dtype)

        return hook

    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_hook(hook_for(modules[name], *k))
        for name, k in frozen.items()
    ]
    try:
        with torch.no_grad():
            logits = model(input_ids=ids).logits.double()
    finally:
        for h in handles:
            h.remove()
    return float(F.cross_entropy(logits[0, :-1], ids[0, 1:]))


@pytest.fixture(scope="module")
def model():
    return tiny_gpt2(n_layer=2)


def test_frozen_losses_match_a_float64_hook(model) -> None:
    norms = find_norms(model)
    torch.manual_seed(2)
    ids = torch.randint(1, 300, (1, 14))
    constants = {n.name: (0.5 + i, 0.8 + 0.1 * i) for i, n in enumerate(norms)}
    names = [n.name for n in norms]
    configs = [
        Frozen((), "median"),
        Frozen((names[0],), "median"),
        Frozen((names[0],), "classes"),
        Frozen((names[1], names[3]), "classes"),
        Frozen(tuple(names), "median"),
    ]
    got = frozen_losses(model, norms, ids, configs, constants, rows=2)  # 3 passes of <= 2 rows
    for config, loss in zip(configs, got, strict=True):
        chosen = {name: constants[name] for name in config.norms}
        want = reference_loss(model, ids, chosen, config.variant == "classes")
        assert loss == pytest.approx(want, rel=RELATIVE)
    assert got[1] != got[0] and got[2] != got[1]  # freezing does something


def test_calibration_constants_are_the_medians_of_s(model) -> None:
    norms = find_norms(model)
    texts = [torch.randint(1, 300, (1, n)) for n in (9, 12, 7)]
    scales = calibration_scales(model, norms, texts)
    constants = constants_of(scales)
    for norm in norms:
        firsts, rests = [], []
        for ids in texts:
            with capture(model, [norm]) as cap, torch.no_grad():
                model(input_ids=ids)
            s = cap.result().norms[0].denominator[0].astype(np.float64)
            firsts.append(s[0])
            rests.extend(s[1:])
        first, rest = constants[norm.name]
        assert first == pytest.approx(np.median(firsts), rel=1e-5)
        assert rest == pytest.approx(np.median(rests), rel=1e-5)


def test_measure_freezing_and_its_json(model) -> None:
    norms = find_norms(model)
    torch.manual_seed(3)
    sequences = [torch.randint(1, 300, (1, 12))]
    calibration = [torch.randint(1, 300, (1, 10)) for _ in range(4)]
    seen: list[tuple[int, int]] = []
    freeze, per_norm = measure_freezing(
        model, norms, sequences, calibration, lambda d, t: seen.append((d, t))
    )
    assert seen[-1] == (5, 5) and freeze.texts == 4 and len(freeze.losses) == 4
    configs, groups = configurations(norms)
    assert len(configs) == 2 * (len(norms) + len(groups) + 1)
    assert [g.role for g in freeze.groups] == ["attn", "mlp", "final"]
    # one norm alone, against the reference with the constants of every calibration text
    name = norms[0].name
    k = (per_norm[name].first, per_norm[name].constant)
    want = reference_loss(model, sequences[0], {name: k}, True)
    assert per_norm[name].classes.change == pytest.approx(want - freeze.loss, abs=1e-5)
    assert len(per_norm[name].median.changes) == 4
    with capture(model) as cap, torch.no_grad():
        model(input_ids=sequences[0])
    result = cap.result()
    result.freeze = freeze
    for norm in result.norms:
        norm.freeze = per_norm[norm.name]
    doc = json.loads(json.dumps(result.to_json()))
    assert set(doc["norms"][0]["freeze"]) >= {"median", "classes"}
    assert set(doc["freeze"]) >= {"groups", "all", "loss", "moved"}
    again = StatsResult.from_json(doc)
    assert again.freeze is not None and again.freeze.all.median.change == freeze.all.median.change
    figure = plot_freeze(result)
    panel = figure.axes[0]
    assert panel.get_title().startswith("one constant") and panel.containers  # error bars
    assert {t.get_text() for t in panel.get_xticklabels()} >= {"0", "1", "final"}


def test_a_piped_freeze_run_says_how_far_it_got(monkeypatch):
    """--freeze-scale runs every configuration on each text: a line per text on a pipe."""
    from typer.testing import CliRunner

    from lninspect.cli import app, progress

    monkeypatch.setattr(progress, "DELAY_SECONDS", 0.0)
    monkeypatch.setattr(progress, "PIPE_INTERVAL", 0.0)
    args = ["stats", "tiny", "--text", "A short text to freeze.", "--freeze-scale"]
    shown = CliRunner().invoke(app, args, env={"HF_HUB_OFFLINE": "1", "COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    lines = [line for line in shown.stderr.splitlines() if " texts (" in line]
    assert len(lines) == 9 and lines[-1].startswith("9 of 9 texts (100%) · freezing s"), lines
