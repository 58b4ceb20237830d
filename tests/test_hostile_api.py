"""Hostile inputs through the Python API, issue 34: attention masks of the wrong shape or
without a real token, classes that are not norms, a frame too large for memory."""

from __future__ import annotations

import pytest
import torch

from lninspect import capture
from lninspect.errors import LninspectError
from tests.conftest import tiny_gpt2

IDS = torch.arange(5, 24)[None]  # (1, 19)


@pytest.fixture(scope="module")
def model():
    return tiny_gpt2()


# 4. Attention masks -------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 19), (1, 3), (1, 30), (19,)])
def test_a_mask_of_another_shape_is_refused_with_both_shapes(model, shape):
    mask = torch.ones(shape, dtype=torch.long)
    with pytest.raises(LninspectError) as caught:
        with torch.no_grad(), capture(model, attention_mask=mask):
            model(IDS)
    message = str(caught.value)
    assert message.startswith(f"capture(attention_mask=...) has shape {shape}")
    assert "input is (1, 19) (batch, tokens): give a mask of shape (1, 19)" in message


def test_a_forward_calls_mask_of_another_shape_is_refused(model):
    with pytest.raises(
        LninspectError, match=r"the forward call's attention_mask has shape \(1, 3\)"
    ):
        with torch.no_grad(), capture(model):
            model(IDS[:, :3], attention_mask=torch.ones(1, 3))  # fine
            model(IDS, attention_mask=torch.ones(1, 3))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_a_mask_without_a_real_token_is_refused(model):
    with torch.no_grad(), capture(model, attention_mask=torch.zeros(1, 19)) as cap:
        model(IDS)
    with pytest.raises(LninspectError, match=r"capture\(attention_mask=...\) is 0 at every token"):
        cap.result()
    half = torch.ones(1, 19)
    half[0, 10:] = 0
    with torch.no_grad(), capture(model, attention_mask=half) as cap:
        model(IDS)
    assert cap.result().input.num_tokens == 10


# 5. Classes given as norms ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "saw"),
    [
        ("Conv1D", "raised RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
        ("Embedding", "raised RuntimeError: Expected tensor for argument #1 'indices'"),
        ("Dropout", "changes when the input is scaled by 4 (it grows x4)"),
        ("object", "(the model itself)"),
    ],
)
def test_a_class_that_is_no_norm_is_refused_with_what_the_probe_saw(model, cls, saw):
    from lninspect.norms.discovery import find_norms

    classes = {type(m).__name__: type(m) for m in model.modules()} | {"object": object}
    with pytest.raises(LninspectError) as caught:
        find_norms(model, include=(classes[cls],))
    message = str(caught.value)
    assert message.startswith(f"include=({cls},): {cls} is not a normalization module: its ")
    assert saw in message


def test_norm_class_dropout_is_one_line_exit_2(tiny_model_dir):
    from tests.test_hostile import invoke

    result = invoke("norms", str(tiny_model_dir), "--norm-class", "Dropout")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert (
        len(lines) == 1
        and "--norm-class Dropout: not a normalization module: its output" in lines[0]
    )


class MaxNorm(torch.nn.Module):
    """x / max |x|: a normalizer (scale-invariant) whose formula is neither LN nor RMSNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.abs().amax(-1, keepdim=True)


def test_the_same_note_on_many_modules_is_one_line():
    from lninspect.norms.discovery import discover

    model = tiny_gpt2(n_layer=4)
    for block in model.transformer.h:
        block.ln_1, block.ln_2 = MaxNorm(), MaxNorm()
    found = discover(model, include=(MaxNorm,))
    assert len(found.norms) == 9
    (note,) = [n for n in found.notes if "formula not measured" in n]
    assert note.startswith("8 modules (transformer.h.0.ln_1, transformer.h.0.ln_2, ")
    assert note.endswith("its kind is read from its class name, eps 1e-05 assumed")


# 7. DataFrames: bounded, with the tokens' texts ---------------------------------------------


def test_a_frame_larger_than_free_memory_is_refused_with_the_numbers(model, monkeypatch):
    pytest.importorskip("pandas")
    from lninspect.results import frames

    with torch.no_grad(), capture(model) as cap:
        model(IDS)
    result = cap.result()
    rows = len(result.to_dataframe())
    monkeypatch.setattr(frames, "host_available", lambda: rows * frames.FRAME_ROW_BYTES - 1)
    with pytest.raises(LninspectError) as caught:
        result.to_dataframe()
    assert str(caught.value).startswith(
        f"to_dataframe(): {rows:,} rows ({len(result.norms)} norms x 19 tokens x their "
        "statistics) need ~"
    )
    assert "of memory is available" in str(caught.value)


class Pieces:
    def pieces(self, ids: list[int]) -> list[str]:
        return [f"<{i}>" for i in ids]


class Decoder:  # as a transformers tokenizer reads one id
    def decode(self, ids: list[int]) -> str:
        return f"[{ids[0]}]"


def test_a_captured_frame_has_its_tokens_text(model):
    pytest.importorskip("pandas")
    with torch.no_grad(), capture(model) as cap:
        model(IDS)
    result = cap.result()
    assert result.input.token_ids == [IDS[0].tolist()]
    frame = result.to_dataframe(Pieces())
    std = frame[(frame.statistic == "std") & (frame.module == "transformer.ln_f")]
    assert std.token_text.tolist() == [f"<{i}>" for i in IDS[0].tolist()]
    assert result.to_dataframe(Decoder()).token_text.iloc[0] == "[5]"
