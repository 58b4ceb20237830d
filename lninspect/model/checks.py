"""A model's folder and config, checked once before transformers reads them (no torch).

A shard index may point outside its folder (`../../etc/passwd`): refused.

A config.json may be `null`, nested 100k deep, say `n_layer: "twelve"`, `2.5`, `-1` or
`1000000`; transformers then fails with a message cut short, builds a model with no
blocks, or spends minutes building a million of them. Each field below is read under any of
its names; a present field must be a positive integer of plausible size, and the parameter
count follows from them without building anything (`estimated_parameters`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from lninspect.errors import LninspectError

# meaning -> the names transformers' configs give it, and the largest value taken
FIELDS: dict[str, tuple[tuple[str, ...], int]] = {
    "layers": (("num_hidden_layers", "n_layer", "num_layers"), 100_000),
    "width": (("hidden_size", "n_embd", "d_model"), 1 << 20),
    "heads": (("num_attention_heads", "n_head"), 1 << 16),
    "kv_heads": (("num_key_value_heads",), 1 << 16),
    "mlp": (("intermediate_size", "n_inner", "ffn_dim"), 1 << 24),
    "vocab": (("vocab_size",), 1 << 24),
    "context": (("max_position_embeddings", "n_positions"), 1 << 24),
}
# the same meanings in a GGUF's metadata, after "{general.architecture}."
GGUF_KEYS = {
    "layers": "block_count",
    "width": "embedding_length",
    "heads": "attention.head_count",
    "kv_heads": "attention.head_count_kv",
    "mlp": "feed_forward_length",
    "vocab": "vocab_size",
    "context": "context_length",
}
PARTS = {"heads": "attention heads", "kv_heads": "key/value heads"}
# a norm's eps (0 is allowed: docs/errors.md, eps = 0)
EPS_NAMES = ("layer_norm_epsilon", "layer_norm_eps", "rms_norm_eps", "norm_eps", "norm_epsilon")
GGUF_EPS_KEYS = ("attention.layer_norm_epsilon", "attention.layer_norm_rms_epsilon")
MAX_CONFIG_BYTES = 16 << 20  # a config.json is a few kB


INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def check_folder(folder: Path, spec: str) -> None:
    """A local model folder: readable, its config.json and shard indexes sound."""
    if not os.access(folder, os.R_OK | os.X_OK):
        raise LninspectError(f"cannot read model folder '{spec}': permission denied")
    read_config_file(folder, spec)
    for weights in [*folder.glob("*.safetensors"), *folder.glob("*.bin")]:
        if not os.access(weights, os.R_OK):
            raise LninspectError(f"cannot load model '{spec}': '{weights.name}' is not readable")
    for name in INDEXES:
        _check_index(folder, folder / name, spec)


def _check_index(folder: Path, index: Path, spec: str) -> None:
    """Every shard an index names must be a file inside the folder."""
    if not index.is_file():
        return
    doc = _json(index, spec)
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict):
        raise LninspectError(f"model '{spec}': '{index.name}' has no weight_map object")
    root = os.path.realpath(folder)
    for shard in set(map(str, weight_map.values())):
        real = os.path.realpath(folder / shard)
        if os.path.commonpath([root, real]) != root:
            raise LninspectError(
                f"model '{spec}': '{index.name}' names a shard outside the folder "
                f"({shard[:60]!r}); refused"
            )


def _json(path: Path, spec: str) -> Any:
    """A JSON file of at most MAX_CONFIG_BYTES, or one sentence that says why it is not one."""
    what = f"cannot load model '{spec}': its {path.name}"
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise LninspectError(f"{what} cannot be read ({exc.strerror})") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise LninspectError(f"{what} is larger than {MAX_CONFIG_BYTES >> 20} MiB")
    try:
        return json.loads(data)
    except RecursionError:
        raise LninspectError(f"{what} is not valid JSON (nested too deeply)") from None
    except ValueError as exc:
        raise LninspectError(f"{what} is not valid JSON ({exc})") from exc


def read_config_file(folder: Path, spec: str) -> None:
    """Check a local folder's config.json before transformers reads it: a JSON object, not
    nested too deep, its fields valid (`check_fields`)."""
    path = folder / "config.json"
    if not path.exists():
        return  # transformers says what is missing
    doc = _json(path, spec)
    if not isinstance(doc, dict):
        raise LninspectError(
            f"cannot load model '{spec}': its config.json is not a model config (a JSON "
            "object is expected)"
        )
    check_fields(doc.get, spec)


def dimension(config: Any, meaning: str) -> int | None:
    """A config's number under any of its names (None: not given)."""
    names, _ = FIELDS[meaning]
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_fields(get: Any, spec: str) -> None:
    """Refuse (exit 2) a config field that is present but no positive integer of plausible
    size, a width that heads do not split, a negative eps; `get(name)` reads a field
    (dict.get, or getattr on a config object)."""
    names = {meaning: names for meaning, (names, _) in FIELDS.items()}
    check_numbers(get, names, f"model '{spec}': config field", EPS_NAMES)


def check_gguf_fields(values: dict[str, Any], name: str) -> None:
    """The same checks on a GGUF file's metadata (`values`: its scalars by key), under the
    keys llama.cpp gives the numbers (`llama.attention.head_count`), before transformers
    builds a config of them (where 0 heads was a ZeroDivisionError)."""
    arch = values.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise LninspectError(
            f"GGUF file '{name}': metadata field 'general.architecture' is "
            f"{_shown(arch) if arch is not None else 'missing'}, not the name of a model type"
        )
    names: dict[str, tuple[str, ...]] = {m: (f"{arch}.{key}",) for m, key in GGUF_KEYS.items()}
    eps = tuple(f"{arch}.{key}" for key in GGUF_EPS_KEYS)
    check_numbers(values.get, names, f"GGUF file '{name}': metadata field", eps)


def check_numbers(
    get: Any, names: dict[str, tuple[str, ...]], where: str, eps: tuple[str, ...]
) -> None:
    """Each meaning's fields (`names`) within FIELDS' bounds, width split by heads, heads by
    key/value heads, eps a finite number >= 0; `where` starts each message."""
    for meaning, fields in names.items():
        largest = FIELDS[meaning][1]
        for name in fields:
            value = get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise LninspectError(f"{where} '{name}' is {_shown(value)}, not a whole number")
            if not 1 <= value <= largest:
                raise LninspectError(
                    f"{where} '{name}' is {value}, but a model's {meaning} must lie between "
                    f"1 and {largest:,}"
                )
    first = {m: next(((n, get(n)) for n in names[m] if get(n) is not None), None) for m in names}
    for whole, part in (("width", "heads"), ("heads", "kv_heads")):
        big, small = first[whole], first[part]
        if big and small and big[1] % small[1]:
            raise LninspectError(
                f"{where} '{big[0]}' is {big[1]}, which does not split into {small[1]} "
                f"{PARTS[part]} ('{small[0]}')"
            )
    for name in eps:
        value = get(name)
        if value is not None and not (_is_number(value) and 0 <= value < math.inf):
            raise LninspectError(f"{where} '{name}' is {_shown(value)}, not a number >= 0")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    """A value in a message: its repr when short, else its type."""
    return repr(value) if len(repr(value)) <= 30 else type(value).__name__


def estimated_parameters(config: Any) -> int:
    """Parameters of a decoder-only transformer from its config's numbers: embeddings, the
    blocks (attention 4h^2, a gated or plain MLP, norms) and an untied head."""
    h = dimension(config, "width") or 0
    layers = dimension(config, "layers") or 1
    mlp = dimension(config, "mlp") or 4 * h
    vocab = dimension(config, "vocab") or 0
    positions = getattr(config, "n_positions", None) or 0  # learned ones (GPT-2's wpe)
    gated = getattr(config, "hidden_act", "") in ("silu", "swiglu") or "llama" in str(
        getattr(config, "model_type", "")
    )
    block = 4 * h * h + (3 if gated else 2) * h * mlp + 4 * h
    tied = getattr(config, "tie_word_embeddings", True)
    return vocab * h * (1 if tied else 2) + positions * h + layers * block + h
