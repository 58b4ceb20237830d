"""The one table from the library's parameters to the CLI's flags.

The library names what its caller passed as Python does, `max_tokens=0`, `force=True`,
`include=(ScaleNorm,)`, or a bare `stride=` for the parameter itself (lninspect.errors); the
CLI shows its errors and notes with the flags the user typed instead: `--max-tokens 0`,
`--force`, `--norm-class ScaleNorm`, `--stride`.
"""

from __future__ import annotations

import re

FLAGS: dict[str, str] = {
    "baseline": "--baseline",
    "batch": "--batch",
    "batch_size": "--batch-size",
    "bos": "--bos",
    "chat_template": "--chat-template",
    "d_model": "--d-model",
    "device": "--device",
    "device_map": "--device-map",
    "dropout": "--dropout",
    "dtype": "--dtype",
    "encoding": "--encoding",
    "eval_every": "--eval-every",
    "field": "--field",
    "file": "--file",
    "files": "--file",
    "force": "--force",
    "gguf_file": "--gguf-file",
    "heads": "--heads",
    "include": "--norm-class",
    "init": "--init",
    "json": "--json",
    "layers": "--layers",
    "layouts": "--placements",
    "lines": "--lines",
    "loss": "--loss",
    "lrs": "--lr",
    "max_memory": "--max-memory",
    "max_sequences": "--max-sequences",
    "max_tokens": "--max-tokens",
    "mlp_ratio": "--mlp-ratio",
    "norm": "--norm",
    "norm_classes": "--norm-class",
    "out": "--out",
    "revision": "--revision",
    "seed": "--seed",
    "seeds": "--seeds",
    "seq_len": "--seq-len",
    "stats_every": "--stats-every",
    "steps": "--steps",
    "stride": "--stride",
    "target": "--target",
    "text": "--text",
    "trust_remote_code": "--trust-remote-code",
    "warmup": "--warmup",
}

# `name=`, not inside a word, a path, another option or a call (`watch(text=...)`); then
# `True` (a flag that takes no value) or a tuple (a flag given once per item)
_MENTION = re.compile(
    r"(?<![\w./=-])(?<!\w\()(" + "|".join(sorted(FLAGS, key=len, reverse=True)) + r")="
    r"(?:(True\b)|\(([^()]*)\))?"
)
_VALUE_START = re.compile(r"[\w'\"*/~.[-]")


def as_flags(message: str) -> str:
    """A library message in the CLI's words: `max_tokens=0` -> `--max-tokens 0`."""

    def flag(match: re.Match[str]) -> str:
        name = FLAGS[match[1]]
        if match[3] is not None:
            items = [item.strip() for item in match[3].split(",")]
            return " ".join(f"{name} {item}" for item in items if item)
        follows = message[match.end() : match.end() + 1]
        valued = not match[2] and _VALUE_START.match(follows) is not None
        return f"{name} " if valued else name

    return _MENTION.sub(flag, message)
