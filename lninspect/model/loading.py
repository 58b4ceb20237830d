"""Load a causal LM and its tokenizer from a hub id, a local directory, a `.gguf` file,
`random:ARCH` or the bundled `tiny` model, always through transformers' own loading code."""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lninspect.errors import EXIT_RUNTIME, LninspectError, first_line
from lninspect.model.causal import check_causal
from lninspect.model.checks import (
    check_fields,
    check_folder,
    dimension,
    estimated_parameters,
)
from lninspect.model.device_map import (
    check_device_map,
    dispatched,
    from_pretrained_kwargs,
    memory_budget,
    parse_max_memory,
)
from lninspect.model.gguf import check_gguf, quiet_gguf
from lninspect.model.memory import Need, check_fits, parameter_bytes, size
from lninspect.model.sources import (
    ALTERNATIVES,
    Source,
    default_model,
    hub_answers,
    hub_offline,
    is_cached,
    locate,
    unreachable,
)
from lninspect.model.tokenizer import Tokenizer, load_tokenizer
from lninspect.options import DType, choices, is_device_name
from lninspect.results import ModelInfo

MAX_BUILT_LAYERS = 2048  # deeper configs are sized from their numbers alone (not built)
# The gpt2 family's shapes (n_embd, n_layer, n_head), so that random:gpt2* needs no download.
GPT2_FAMILY = {
    "gpt2": (768, 12, 12),
    "gpt2-medium": (1024, 24, 16),
    "gpt2-large": (1280, 36, 20),
    "gpt2-xl": (1600, 48, 25),
}
DTYPES = {name: getattr(torch, name) for name in choices(DType)}


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
    gguf_file: str | None = None,
    layers: tuple[int, ...] | None = None,
    tokenizer: bool = True,
    init_once: bool = False,
) -> LoadedModel:
    """Load `spec` (hub id, directory, .gguf file, random:ARCH or tiny; None: the default) in
    eval mode. A GGUF file (`spec`, or `gguf_file` in the folder `spec`) is dequantized to
    float by transformers, which needs the `gguf` package.

    `layers` (--layers) are checked against the config's depth before any weight loads;
    `tokenizer=False` (lninspect norms: nothing is encoded) skips the tokenizer;
    `init_once` (lninspect norms: no weight value is shown but the norms') builds random:
    weights by the model's own init alone (lninspect.model.loading._random_model).

    `device_map` (with `max_memory`) spreads the layers over devices through accelerate
    (lninspect.model.device_map); `device` is then not used.

    transformers' progress bars are switched off (lninspect keeps stderr for one-line
    notes); its warnings, e.g. about weights missing from a checkpoint, still show.
    """
    from transformers.utils import logging as transformers_logging

    if not 0 <= seed < 1 << 64:  # torch.manual_seed's range, checked before loading
        raise LninspectError(f"seed={seed} is outside 0..2**64-1")
    transformers_logging.disable_progress_bar()
    _logs_as_notes(transformers_logging.get_logger())
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    check_device_map(device_map, max_memory)
    for name in parse_max_memory(max_memory) or {}:  # the documented answer, not accelerate's
        if name not in ("cpu", "disk"):
            resolve_device(f"cuda:{name}" if isinstance(name, int) else str(name))
    notes: list[str] = []
    if spec is None:
        spec, why = default_model()
        notes.append(f"model: {spec} ({why})")
    source = locate(spec, revision, gguf_file)
    if revision is not None and source.kind != "hub":
        notes.append(f"revision={revision} ignored: '{spec}' is not a Hugging Face Hub model")
        revision = None
    if source.kind == "gguf":
        check_gguf(source)
    if source.kind == "random":
        if device_map is not None:
            raise LninspectError("device_map= needs a model with weight files, not random:")
        config = _random_config(source.path, trust_remote_code)
    else:
        if source.kind == "hub" and source.local_only and not hub_offline():
            notes.append(f"the Hugging Face Hub cannot be reached: using the cached '{spec}'")
        config = _config(source, revision, trust_remote_code)
    check_fields(lambda name: getattr(config, name, None), spec)
    check_layer_range(spec, _config_depth(config), layers)
    _check_parameter_memory(
        spec, config, (torch_dtype, trust_remote_code), torch_device, device_map, max_memory
    )
    if source.kind == "random":
        torch.manual_seed(seed)
        with _readable(spec):
            model = _random_model(config, trust_remote_code, init_once)
    else:
        kwargs = {
            "revision": revision,
            "local_files_only": source.local_only or None,
            "gguf_file": source.gguf_file,
            **from_pretrained_kwargs(device_map, max_memory),
        }
        with _readable(spec), quiet_gguf(source.kind == "gguf"):
            model, loading = _auto_model().from_pretrained(
                source.path,
                config=config,
                dtype=torch_dtype,
                trust_remote_code=trust_remote_code,
                output_loading_info=True,
                **{k: v for k, v in kwargs.items() if v is not None},
            )
        _check_complete(spec, loading)
    if device_map is None:
        model = model.to(device=torch_device, dtype=torch_dtype).eval()
    else:  # accelerate placed the layers; inputs go where the embeddings are
        torch_device, placed = dispatched(model.eval())
        notes.append(placed)
    check_causal(model, spec, torch_device)
    # random: weights have no files; a tokenizer of that name is only taken from the cache
    text_tokenizer = (
        load_tokenizer(
            source.path,
            revision,
            trust_remote_code,
            notes,
            local_only=source.local_only or source.kind == "random",
            gguf_file=source.gguf_file,
        )
        if tokenizer
        else Tokenizer(None)
    )
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
    return LoadedModel(
        model=model, tokenizer=text_tokenizer, info=info, context=context, notes=notes
    )


def _logs_as_notes(logger: Any) -> None:
    """When the CLI shows transformers' records as notes (a handler with `displaced`), its
    own stderr handler steps aside until the command ends (its report holds raw escapes)."""
    ours = [h for h in logger.handlers if isinstance(getattr(h, "displaced", None), list)]
    if ours:
        for other in [h for h in logger.handlers if h not in ours]:
            logger.removeHandler(other)
            ours[0].displaced.append(other)


def _random_model(config: Any, trust_remote_code: bool, init_once: bool) -> Any:
    """A model of random weights. Its layers' constructors initialise every weight, then
    transformers' `init_weights` does it again (gpt2-xl: 45 s and 16 s of normal_ on 2 cores);
    `init_once` skips the first (transformers' no_init_weights), so every weight is still
    drawn by the model's own init, once: other values for a seed, the same norms."""
    from transformers.initialization import no_init_weights

    if not init_once:
        return _auto_model().from_config(config, trust_remote_code=trust_remote_code)
    with no_init_weights():
        model = _auto_model().from_config(config, trust_remote_code=trust_remote_code)
    model.init_weights()
    return model


def _auto_model() -> Any:
    """transformers' AutoModelForCausalLM: it imports only the modeling module a config names."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM


def _config(source: Source, revision: str | None, trust_remote_code: bool) -> Any:
    """The model's config, read before any weight is (to size the model first)."""
    from transformers import AutoConfig

    if source.kind == "local":
        check_folder(Path(source.path), source.spec)
    with _readable(source.spec):
        return AutoConfig.from_pretrained(
            source.path,
            revision=revision,
            trust_remote_code=trust_remote_code,
            **({"local_files_only": True} if source.local_only else {}),
            **({"gguf_file": source.gguf_file} if source.gguf_file else {}),
        )


def _check_parameter_memory(
    spec: str,
    config: Any,
    build: tuple[torch.dtype, bool],
    device: torch.device,
    device_map: str | None,
    max_memory: str | None,
) -> None:
    """Refuse, before any weight is allocated, a model larger than the memory there is.

    The config's numbers give an estimate first; only a model that fits by it, and of at
    most MAX_BUILT_LAYERS layers, is built on the meta device for the exact count.
    `build`: the dtype and whether its own code may run (--trust-remote-code).
    """
    dtype, trust_remote_code = build
    item = torch.empty((), dtype=dtype).element_size()
    need = Need(parameters=estimated_parameters(config) * item)
    if device_map is None:
        _fits(need, device, spec)
    if (dimension(config, "layers") or 0) <= MAX_BUILT_LAYERS:
        with _readable(spec):
            need = Need(
                parameters=parameter_bytes(
                    lambda: _auto_model().from_config(
                        config, dtype=dtype, trust_remote_code=trust_remote_code
                    ),
                    dtype,
                )
            )
    if device_map is None:
        _fits(need, device, spec)
        return
    budget = memory_budget(max_memory)
    if budget is not None and budget < need.parameters:
        raise LninspectError(
            f"model '{spec}' needs ~{size(need.parameters)} of parameters, but max_memory= "
            f"gives {size(budget)} in all: raise the limits"
        )


def _check_complete(spec: str, loading: dict[str, Any]) -> None:
    """Refuse a checkpoint that lacks weights the config asks for (transformers would fill
    them with random numbers and only warn): the config and the weights do not match."""
    missing = sorted(loading.get("missing_keys") or [])
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        shown = ", ".join(missing[:3]) + more
        raise LninspectError(
            f"model '{spec}': the checkpoint lacks {len(missing)} weights the config asks for "
            f"({shown}); they would be random: the config does not match the weights"
        )


def _fits(need: Need, device: torch.device, spec: str) -> None:
    hint = "a smaller model or dtype=, another device=, or device_map= to spread it"
    check_fits(need, device, f"model '{spec}'", hint)


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
    """The config of `arch`: built in for the gpt2 family, else from the cache, else from the
    hub when it answers within seconds (never a download that retries for half a minute)."""
    from transformers import AutoConfig, GPT2Config

    if arch in GPT2_FAMILY:
        n_embd, n_layer, n_head = GPT2_FAMILY[arch]
        return GPT2Config(n_embd=n_embd, n_layer=n_layer, n_head=n_head)
    cached = os.path.isdir(arch) or is_cached(arch)
    if not (cached or hub_offline() or hub_answers(arch)):
        raise LninspectError(
            f"unknown architecture 'random:{arch}': its config is not built in "
            f"({', '.join(GPT2_FAMILY)}), not in the Hugging Face cache, and {unreachable()}"
        )
    local = cached or hub_offline()
    try:
        return AutoConfig.from_pretrained(
            arch,
            trust_remote_code=trust_remote_code,
            **({"local_files_only": True} if local else {}),
        )
    except (OSError, ValueError) as exc:
        if "trust_remote_code" in str(exc):
            raise _needs_code(arch) from exc
        raise LninspectError(
            f"unknown architecture 'random:{arch}': its config is neither built in "
            f"({', '.join(GPT2_FAMILY)}) nor in the Hugging Face cache ({first_line(exc)})"
        ) from exc


@contextmanager
def _readable(what: str) -> Iterator[None]:
    """transformers' loading errors as one readable line each (LninspectError); what a
    model's own code prints goes to stderr (stdout may carry the JSON, `--json -`)."""
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError

    try:
        with redirect_stdout(sys.stderr):
            yield
    except LninspectError:
        raise
    except StrictDataclassError as exc:  # a config transformers' validators refuse
        raise LninspectError(
            f"cannot load model '{what}': its config is not valid "
            f"({first_line(exc.__cause__ or exc)})"
        ) from exc
    except SafetensorError as exc:  # a truncated or overwritten model.safetensors
        raise LninspectError(
            f"cannot load model '{what}': its safetensors weights are damaged "
            f"({first_line(exc)}); download or save them again"
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
        raise _needs_code(what) from exc
    except (OSError, KeyError) as exc:
        raise _cannot_load(what, exc) from exc
    except RuntimeError as exc:  # e.g. mismatched shapes, or out of memory
        if "PytorchStreamReader" in str(exc):  # torch.load on a truncated .bin
            raise LninspectError(
                f"cannot load model '{what}': its .bin weights are damaged (not "
                "a complete torch archive); download or save them again"
            ) from exc
        raise LninspectError(
            f"cannot load model '{what}': {first_line(exc)}", EXIT_RUNTIME
        ) from exc


def _needs_code(what: str) -> LninspectError:
    return LninspectError(
        f"model '{what}' needs its own Python code to load, and "
        "lninspect runs none unless you pass trust_remote_code=True "
        "(only for a source you trust)"
    )


def _cannot_load(what: Any, exc: Exception) -> LninspectError:
    name = what if isinstance(what, str) else type(what).__name__
    return LninspectError(f"cannot load model '{name}': {first_line(exc)}; {ALTERNATIVES}")


def _config_depth(config: Any) -> int | None:
    """The number of blocks a config states (num_hidden_layers, n_layer), else None."""
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_layer_range(name: str, count: int | None, layers: tuple[int, ...] | None) -> None:
    """Refuse --layers past the model's `count` blocks (nothing to check without either)."""
    from lninspect.derived import layer_span

    outside = [layer for layer in layers or () if count and layer >= count]
    if count and outside:
        raise LninspectError(
            f"layers={layer_span(outside, ',')} is out of range: model "
            f"'{name}' has {count} layers (0-{count - 1})"
        )
