"""A model's tokenizer, or a byte-level fallback: text to token ids (with the run's BOS and
chat-template choices) and back to readable pieces."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from lninspect.errors import LninspectError, first_line
from lninspect.model.chat import BoundedRenderer


@dataclass
class Tokenizer:
    """Text to token ids and back to readable pieces; `hf` is None for the byte fallback."""

    hf: Any | None
    chat: BoundedRenderer | None = field(default=None, repr=False, compare=False)

    def encode(self, text: str, special_tokens: bool = True) -> list[int]:
        """Token ids of `text`, with the model's special tokens (BOS) unless told not to."""
        if self.hf is None:
            return list(text.encode("utf-8"))
        # verbose=False: no warning that the ids exceed the model's length (lninspect cuts them)
        return list(self.hf(text, add_special_tokens=special_tokens, verbose=False)["input_ids"])

    def encode_text(self, text: str, bos: str = "auto", chat_template: bool = False) -> list[int]:
        """Token ids of a run's text: `bos` auto (the tokenizer's own choice), yes (a BOS
        first, added when the tokenizer adds none) or no (a leading BOS removed);
        `chat_template`: the text as one user turn of the tokenizer's chat template."""
        if chat_template:
            template = getattr(self.hf, "chat_template", None)
            if not template or self.hf is None:
                raise LninspectError("chat_template=True: the tokenizer has no chat template")
            if self.chat is None:
                self.chat = BoundedRenderer(self._apply_chat_template)
            text = self.chat(text)
        ids = self.encode(text, special_tokens=not chat_template)
        first = getattr(self.hf, "bos_token_id", None)
        if bos == "yes" and (not ids or ids[0] != first):
            if first is None:
                raise LninspectError("bos=yes: the tokenizer has no BOS token")
            ids = [first, *ids]
        elif bos == "no" and ids and first is not None and ids[0] == first:
            ids = ids[1:]
        return ids

    def _apply_chat_template(self, text: str) -> str:
        """The text as one user turn of the chat template (run in BoundedRenderer's child)."""
        assert self.hf is not None
        turn = [{"role": "user", "content": text}]
        return str(self.hf.apply_chat_template(turn, tokenize=False, add_generation_prompt=True))

    def pieces(self, ids: list[int]) -> list[str]:
        """One readable string per token id."""
        if self.hf is None:
            return [chr(i) if 32 <= i < 127 else f"<{i:02x}>" for i in ids]
        return [self.hf.decode([i]) for i in ids]


def load_tokenizer(
    source: str,
    revision: str | None,
    trust_remote_code: bool,
    notes: list[str],
    local_only: bool,
    gguf_file: str | None = None,
) -> Tokenizer:
    """The model's own tokenizer (a GGUF file holds one), or a byte-level fallback (said in
    `notes`)."""
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(
            source,
            revision=revision,
            local_files_only=local_only,
            trust_remote_code=trust_remote_code,
            **({"gguf_file": gguf_file} if gguf_file else {}),
        )
        # transformers 5 builds an empty tokenizer from a config alone: that is none either
        if hf("a b", add_special_tokens=False)["input_ids"]:
            return Tokenizer(hf)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        if os.path.isfile(os.path.join(source, "tokenizer.json")):  # one is there, damaged
            raise LninspectError(
                f"cannot load the tokenizer of '{source}': its tokenizer.json is damaged "
                f"({first_line(exc)[:120]})"
            ) from exc
    notes.append(
        f"no tokenizer found for '{source}': using a byte-level fallback "
        "(token ids are the UTF-8 bytes of the text)"
    )
    return Tokenizer(None)
