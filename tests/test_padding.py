"""Padding and generation: pad positions (attention mask 0) are left out of every statistic
and counted apart; generation with a KV cache gives one record per call, at its positions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lninspect import capture
from tests.conftest import tiny_gpt2

IDS = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


@pytest.fixture(scope="module")
def model():
    return tiny_gpt2()


@pytest.mark.parametrize("given", [False, True])
def test_padding_is_left_out_and_counted_apart(model, given: bool):
    with capture(model, grads=True, attention_mask=MASK if given else None) as cap:
        logits = model(IDS, **({} if given else {"attention_mask": MASK})).logits
        logits[MASK.bool()].sum().backward()
    result = cap.result()
    assert (result.input.num_tokens, result.input.padding) == (8, 2)
    everything = torch.ones_like(MASK)  # the same batch, nothing masked (the given mask wins)
    with capture(model, grads=True, attention_mask=everything) as plain:
        model(IDS, attention_mask=MASK).logits[MASK.bool()].sum().backward()
    unmasked = plain.result()
    assert unmasked.input.num_tokens == 10 and unmasked.input.padding is None
    real = MASK.bool().numpy()
    for norm, reference in zip(result.norms, unmasked.norms, strict=True):
        for block, want in ((norm.input, reference.input), (norm.output, reference.output)):
            for key in ("mean", "std"):
                got = getattr(block, key)
                assert np.isnan(got[~real]).all()
                np.testing.assert_array_equal(got[real], getattr(want, key)[real])
        assert (norm.input.absmax_dim[~real] == -1).all()
        assert norm.grad is not None and np.isnan(norm.grad.output_norm[~real]).all()
        assert np.isfinite(norm.grad.output_norm[real]).all()


def test_generation_gives_one_record_per_call_at_its_positions(model):
    prompt = IDS[:1]
    with capture(model) as cap:
        out = model.generate(prompt, max_new_tokens=3, do_sample=False, pad_token_id=0)
    result = cap.result()
    assert result.input.num_sequences == 3 and result.input.num_tokens == 7
    assert result.input.positions == [[0, 1, 2, 3, 4], [5], [6]]
    with capture(model) as full:  # the reference: one forward pass over the same tokens
        model(out[:, :-1])
    whole = full.result()
    for norm, reference in zip(result.norms, whole.norms, strict=True):
        rows = [norm.input.std[i, : len(p)] for i, p in enumerate(result.input.positions)]
        np.testing.assert_allclose(np.concatenate(rows), reference.input.std[0], rtol=1e-4)
        assert np.isnan(norm.input.std[1:, 1:]).all()  # the shorter calls' missing tokens


def _token_ids(*args: str) -> list[int]:
    import json

    from typer.testing import CliRunner

    from lninspect.cli import app

    result = CliRunner().invoke(app, ["stats", *args, "--json", "-", "-q"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["input"]["token_ids"][0]


def test_bos_and_chat_template(tiny_model_dir, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from lninspect.cli import app
    from tests.conftest import build_tokenizer

    model, text = str(tiny_model_dir), "The quick brown fox"
    tokenizer = build_tokenizer()
    bos = tokenizer.bos_token_id
    auto = _token_ids(model, "--text", text)
    assert auto[0] != bos  # this tokenizer adds none
    assert _token_ids(model, "--text", text, "--bos", "yes") == [bos, *auto]
    assert _token_ids(model, "--text", text, "--bos", "no") == auto
    refused = CliRunner().invoke(app, ["stats", model, "--text", text, "--chat-template"])
    assert refused.exit_code == 2 and "no chat template" in refused.output
    assert refused.output.count("\n") == 1
    chat = tmp_path / "chat"
    shutil.copytree(tiny_model_dir, chat)
    tokenizer.chat_template = (
        "{% for m in messages %}<|endoftext|>user: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    tokenizer.save_pretrained(chat)
    turn = "<|endoftext|>user: The quick brown fox\nassistant:"
    want = tokenizer(turn, add_special_tokens=False)["input_ids"]
    assert _token_ids(str(chat), "--text", text, "--chat-template") == want
    assert want[0] == bos and _token_ids(str(chat), "--text", text, "--bos", "no") == auto
