"""A chat template rendered under bounds (issue 34): memory, time and output size, and its
errors one sentence with exit 2 (they were `unexpected ...`, exit 1)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import build_tokenizer

from lninspect.errors import EXIT_USAGE, LninspectError
from lninspect.model import chat
from lninspect.model.tokenizer import Tokenizer
from tests.test_hostile import assert_error, invoke

HOSTILE = {
    "6 GB in one multiplication": (
        "{{ 'x' * 6000000000 }}",
        "MemoryError: it needs more than 1024 MiB",
    ),
    "a sandbox escape": (
        "{{ ''.__class__.__mro__ }}",
        "SecurityError: access to attribute '__class__' of 'str' object is unsafe",
    ),
    "a syntax error": ("{% for m in messages %}", "TemplateSyntaxError: Unexpected end of"),
    "raise_exception": (
        "{{ raise_exception('only system turns') }}",
        "TemplateError: only system turns",
    ),
    "output past the cap": (
        "{% for i in range(90000) %}{{ 'y' * 100 }}{% endfor %}",
        "it renders 9,000,000 characters, more than 1,048,594",
    ),
}


def tokenizer(template: str) -> Tokenizer:
    hf = build_tokenizer()
    hf.chat_template = template
    return Tokenizer(hf)


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_template_is_one_sentence_exit_2(case: str):
    template, message = HOSTILE[case]
    with pytest.raises(LninspectError) as caught:
        tokenizer(template).encode_text("some text", chat_template=True)
    assert caught.value.exit_code == EXIT_USAGE
    assert str(caught.value).startswith("the tokenizer's chat template cannot be rendered: ")
    assert message in str(caught.value), str(caught.value)


def test_nested_loops_are_stopped_by_the_deadline(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(chat, "SECONDS", 1)
    loops = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    # 10**10 steps would take hours: that it returns at all is the deadline at work
    with pytest.raises(LninspectError, match="cannot be rendered: the render died|longer than"):
        tokenizer(loops).encode_text("some text", chat_template=True)


def test_a_good_template_renders_as_transformers_does():
    template = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}{{ eos_token }}"
    hf = build_tokenizer()
    hf.chat_template = template
    turn = [{"role": "user", "content": "The fox"}]
    want = hf(hf.apply_chat_template(turn, tokenize=False), add_special_tokens=False)
    assert Tokenizer(hf).encode_text("The fox", chat_template=True) == want["input_ids"]


def test_the_cli_says_the_templates_error(tiny_model_dir: Path, tmp_path: Path):
    folder = tmp_path / "chat"
    shutil.copytree(tiny_model_dir, folder)
    hf = build_tokenizer()
    hf.chat_template = "{% if %}"
    hf.save_pretrained(folder)
    result = invoke("stats", folder, "--text", "The fox", "--chat-template", "--device", "cpu")
    assert_error(result, EXIT_USAGE, "chat template cannot be rendered: TemplateSyntaxError")


def test_one_child_renders_every_text_and_is_replaced_after_a_failure(
    monkeypatch: pytest.MonkeyPatch,
):
    """A corpus renders one text per document: one fork for all (a fork each cost ~140 ms
    with a model loaded); a child that ran out of time is killed and reaped."""
    monkeypatch.setattr(chat, "SECONDS", 1)
    template = (
        "{% if messages[0]['content'] == 'spin' %}{% for i in range(100000) %}"
        "{% for j in range(100000) %}{% endfor %}{% endfor %}{% endif %}"
        "[{{ messages[0]['content'] }}]"
    )
    hf = build_tokenizer()
    hf.chat_template = template
    tok = Tokenizer(hf)
    want = [hf(f"[doc {i}]", add_special_tokens=False)["input_ids"] for i in range(20)]
    assert [tok.encode_text(f"doc {i}", chat_template=True) for i in range(20)] == want
    assert tok.chat is not None and tok.chat.worker is not None
    first = tok.chat.worker[0]
    with pytest.raises(LninspectError, match="out of its memory or time"):
        tok.encode_text("spin", chat_template=True)
    assert tok.chat.worker is None
    with pytest.raises(ChildProcessError):
        os.waitpid(first, os.WNOHANG)  # killed and reaped: no zombie
    assert tok.encode_text("doc 3", chat_template=True) == want[3]
    assert tok.chat.worker is not None and tok.chat.worker[0] != first
    tok.chat.close()
