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
