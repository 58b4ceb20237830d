"""Load a causal LM and its tokenizer from a hub id, a local directory, `random:ARCH`
or the bundled `tiny` model, always through transformers' own loading code."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lninspect.errors import EXIT_RUNTIME, LninspectError
from lninspect.model.device_map import dispatched, from_pretrained_kwargs
from lninspect.model.sources import ALTERNATIVES, default_model, hub_offline, locate
from lninspect.options import is_device_name
from lninspect.results import ModelInfo

# The gpt2 family's shapes (n_embd, n_layer, n_head), so that random:gpt2* needs no download.
GPT2_FAMILY = {
    "gpt2": (768, 12, 12),
    "gpt2-medium": (1024, 24, 16),
    "gpt2-large": (1280, 36, 20),
    "gpt2-xl": (1600, 48, 25),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Tokenizer:
    """Text to token ids and back to readable pieces; `hf` is None for the byte fallback."""

    hf: Any | None

    def encode(self, text: str, special_tokens: bool = True) -> list[int]:
        """Token ids of `text`, with the model's special tokens (BOS) unless told not to."""
        if self.hf is None:
            return list(text.encode("utf-8"))
        return list(self.hf(text, add_special_tokens=special_tokens)["input_ids"])

    def pieces(self, ids: list[int]) -> list[str]:
        """One readable string per token id."""
        if self.hf is None:
            return [chr(i) if 32 <= i < 127 else f"<{i:02x}>" for i in ids]
        return [self.hf.decode([i]) for i in ids]


@dataclass
class LoadedModel:
    """A model ready to run, with what the outputs say about it."""

    model: nn.Module
    tokenizer: Tokenizer
    info: ModelInfo
    context: int | None  # the longest sequence the model accepts, when its config says
    notes: list[str] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return torch.device(self.info.device)


def load_model(
    spec: str | None,
    *,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    seed: int = 0,
    device_map: str | None = None,
    max_memory: str | None = None,
) -> LoadedModel:
    """Load `spec` (hub id, directory, random:ARCH or tiny; None: the default) in eval mode.

    `device_map` (with `max_memory`) spreads the layers over devices through accelerate
    (lninspect.model.device_map); `device` is then not used.

    transformers' progress bars are switched off (lninspect keeps stderr for one-line
    notes); its warnings, e.g. about weights missing from a checkpoint, still show.
    """
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    notes: list[str] = []
    if spec is None:
        spec, why = default_model()
        notes.append(f"model: {spec} ({why})")
    source = locate(spec, revision)
    if source.kind == "random":
        if device_map is not None:
            raise LninspectError("--device-map needs a model with weight files, not random:")
        config = _random_config(source.path, trust_remote_code)
        torch.manual_seed(seed)
        model = _from_pretrained("from_config", config, trust_remote_code=trust_remote_code)
    else:
        if source.kind == "hub" and source.local_only and not hub_offline():
            notes.append(f"the Hugging Face Hub cannot be reached: using the cached '{spec}'")
        model = _from_pretrained(
            "from_pretrained",
            source.path,
            revision=revision,
            dtype=torch_dtype,
            trust_remote_code=trust_remote_code,
            local_files_only=source.local_only or None,
            **from_pretrained_kwargs(device_map, max_memory),
        )
    if device_map is None:
        model = model.to(device=torch_device, dtype=torch_dtype).eval()
    else:  # accelerate placed the layers; inputs go where the embeddings are
        torch_device, placed = dispatched(model.eval())
        notes.append(placed)
    # random: weights have no files; a tokenizer of that name is only taken from the cache
    tokenizer = _load_tokenizer(
        source.path,
        revision,
        trust_remote_code,
        notes,
        local_only=source.local_only or source.kind == "random",
    )
    config = model.config
    info = ModelInfo(
        name=spec,
        source=source.kind,
        cls=type(model).__name__,
        dtype=dtype,
        device=str(torch_device),
        num_layers=getattr(config, "num_hidden_layers", None),
        hidden_size=getattr(config, "hidden_size", None),
    )
    context = getattr(config, "max_position_embeddings", None)
    return LoadedModel(model=model, tokenizer=tokenizer, info=info, context=context, notes=notes)


def resolve_device(device: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an unavailable device is a usage error."""
    if not is_device_name(device):
        raise LninspectError(f"unknown device '{device}': use auto, cpu, cuda, cuda:N or mps")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if device.startswith("cuda"):
        count = torch.cuda.device_count()
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            raise LninspectError(f"device '{device}' is not available ({count} CUDA devices)")
    if device == "mps" and not torch.backends.mps.is_available():
        raise LninspectError("device 'mps' is not available on this machine")
    return torch.device(device)


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise LninspectError(f"unknown dtype '{dtype}': use {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _random_config(arch: str, trust_remote_code: bool) -> Any:
    """The config of `arch`: known offline for the gpt2 family, else from cache or disk."""
    from transformers import AutoConfig, GPT2Config

    if arch in GPT2_FAMILY:
        n_embd, n_layer, n_head = GPT2_FAMILY[arch]
        return GPT2Config(n_embd=n_embd, n_layer=n_layer, n_head=n_head)
    try:
        return AutoConfig.from_pretrained(arch, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise LninspectError(
            f"unknown architecture 'random:{arch}': its config is neither built in "
            f"({', '.join(GPT2_FAMILY)}) nor in the Hugging Face cache ({_first_line(exc)})"
        ) from exc


def _from_pretrained(how: str, what: Any, **kwargs: Any) -> nn.Module:
    """AutoModelForCausalLM.from_pretrained / from_config with errors made readable."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return getattr(AutoModelForCausalLM, how)(what, **kwargs)
    except SafetensorError as exc:  # a truncated or overwritten model.safetensors
        raise LninspectError(
            f"cannot load model '{what}': its safetensors weights are damaged "
            f"({_first_line(exc)}); download or save them again"
        ) from exc
    except pickle.UnpicklingError as exc:  # torch.load(weights_only=True) met more than tensors
        raise LninspectError(
            f"cannot load model '{what}': its .bin weights hold more than tensors, so "
            "torch.load(weights_only=True) refused them and nothing in them ran; use a "
            "safetensors copy from a trusted source"
        ) from exc
    except ValueError as exc:
        if "trust_remote_code" not in str(exc):
            raise _cannot_load(what, exc) from exc
        raise LninspectError(
            f"model '{what}' needs its own Python code to load, and "
            "lninspect runs none unless you pass --trust-remote-code "
            "(only for a source you trust)"
        ) from exc
    except (OSError, KeyError) as exc:
        raise _cannot_load(what, exc) from exc
    except RuntimeError as exc:  # e.g. mismatched shapes, or out of memory
        if "PytorchStreamReader" in str(exc):  # torch.load on a truncated .bin
            raise LninspectError(
                f"cannot load model '{what}': its .bin weights are damaged (not "
                "a complete torch archive); download or save them again"
            ) from exc
        raise LninspectError(
            f"cannot load model '{what}': {_first_line(exc)}", EXIT_RUNTIME
        ) from exc


def _cannot_load(what: Any, exc: Exception) -> LninspectError:
    name = what if isinstance(what, str) else type(what).__name__
    return LninspectError(f"cannot load model '{name}': {_first_line(exc)}; {ALTERNATIVES}")


def _load_tokenizer(
    source: str, revision: str | None, trust_remote_code: bool, notes: list[str], local_only: bool
) -> Tokenizer:
    """The model's own tokenizer, or a byte-level fallback (said in `notes`)."""
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(
            source,
            revision=revision,
            local_files_only=local_only,
            trust_remote_code=trust_remote_code,
        )
        # transformers 5 builds an empty tokenizer from a config alone: that is none either
        if hf("a b", add_special_tokens=False)["input_ids"]:
            return Tokenizer(hf)
    except (OSError, ValueError, TypeError, KeyError):
        pass
    notes.append(
        f"no tokenizer found for '{source}': using a byte-level fallback "
        "(token ids are the UTF-8 bytes of the text)"
    )
    return Tokenizer(None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
