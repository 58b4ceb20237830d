"""Tables at 80 columns (issue 33, item 7): a long model path is shortened in the middle,
never folded or cut at its end, and the columns beside it keep their names and numbers."""

from __future__ import annotations

import io
from dataclasses import fields

from rich.console import Console

from lninspect.render.compare_tables import models_table
from lninspect.render.format import middle
from lninspect.render.report import findings_table
from lninspect.results.compare import ComparedModel, CompareResult
from lninspect.results.one_text import GradsResult, StatsResult
from tests.test_stats_plots import synthetic

PATH = "/very/long/path/to/some/checkpoints/llama-finetune-run-0042/checkpoint-12000/model.gguf"


def text_at_80(renderable) -> str:
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_middle_keeps_both_ends_at_folder_boundaries():
    assert middle(PATH, 200) == PATH
    assert middle(PATH, 30) == "/very/long/path/…/model.gguf"
    assert middle("org/a-very-long-model-name-here", 12) == "…l-name-here"


def test_the_compare_models_table_keeps_class_layers_tokens_and_loss():
    models = [
        ComparedModel(spec, spec, None, "local", "LlamaForCausalLM", 30, 1024, 4.5)
        for spec in (PATH, "HuggingFaceTB/SmolLM2-135M-Instruct")
    ]
    text = text_at_80(models_table(CompareResult("tokens", "names", models, [], [])))
    assert "layers" in text and "tokens" in text and "loss" in text
    assert text.count("LlamaForCausalLM") == 2 and "1024" in text and "4.5" in text
    assert "…/model.gguf" in text and "/very/" in text and "…/SmolLM2-135M-Instruct" in text


def test_the_report_findings_shorten_the_model_path_in_the_middle():
    stats = synthetic()
    base = {f.name: getattr(stats, f.name) for f in fields(StatsResult) if f.name != "schema"}
    result = GradsResult(**base, loss=1.0)
    result.model.name = PATH
    lines = text_at_80(findings_table(result)).splitlines()
    row = next(line for line in lines if line.strip().startswith("model "))
    assert "/very/long/" in row and row.rstrip().endswith("…/model.gguf")
