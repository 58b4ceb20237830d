"""Where each norm sits, from one small probe forward pass of the whole model.

Names mislead: `post_attention_layernorm` feeds the MLP in LLaMA but normalizes the
attention output in Gemma 2 and OLMo 2, `ln_1` feeds both sub-layers in GPT-J. So the
probe follows the tensors instead. During one forward pass on a few token ids:

- every module's forward pre-hook records which norm outputs it receives (its consumers);
- a TorchFunctionMode follows each norm's input and output through views and casts and
  records which of them enter an addition: a pre norm's input is the residual stream,
  which the addition after the sub-layer still uses; a post norm's output joins the stream
  (or, in the last post-LN block, nothing but the norm uses its input);
- attention / MLP sub-layers are told apart by their attribute and class names, and the
  last one to finish before a norm runs is the one a post norm belongs to.

Labelled tensors are kept alive until the pass ends, so their storage cannot be reused and
identifies them (and every view of them) without ambiguity.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as module_globals
from torch.overrides import TorchFunctionMode

from lninspect.roles import sublayer_kind

PROBE_TOKENS = 4
ADDS = {"add", "add_", "__add__", "__radd__", "__iadd__"}
CASTS = {"to", "type_as", "float", "half", "bfloat16", "contiguous", "clone", "dropout"}


@dataclass
class Flow:
    """What the probe saw of one norm: when it ran and where its output went."""

    order: int  # position of its first call among the norm calls
    consumers: set[str] = field(default_factory=set)  # modules that received its output
    input_added: bool = False  # its input (or a view or cast of it) entered an addition
    output_added: bool = False  # its output (or a view or cast of it) entered an addition
    input_summed: bool = False  # its input is the result of an addition (post-LN: x + f(x))
    after: str | None = None  # the last attention / MLP sub-layer to finish before it ran
    width: int | None = None  # the size of the last axis of its first input


@dataclass
class Seen:
    """A leaf module that is not a hooked norm, on its first call of the probe pass: one
    floating-point tensor in, one of the same shape out (what a norm would look like)."""

    name: str
    module: nn.Module
    x: torch.Tensor
    y: torch.Tensor


def module_sublayer(name: str, module: nn.Module) -> str | None:
    """ "attn" or "mlp" from the module's attribute and class names (lninspect.roles), else None."""
    return sublayer_kind(name.rsplit(".", 1)[-1], type(module).__name__)


def probe_input(model: nn.Module) -> torch.Tensor | None:
    """A (1, PROBE_TOKENS) batch of token ids when the model's config gives a vocabulary."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if not isinstance(vocab, int) or vocab < 1:
        return None
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if device.type == "meta":  # no storage to follow
        return None
    return (torch.arange(PROBE_TOKENS, device=device) % vocab).unsqueeze(0)


def trace(
    model: nn.Module, norms: Sequence[tuple[str, nn.Module]], ids: torch.Tensor
) -> tuple[dict[str, Flow], list[Seen]]:
    """Run `model(ids)` once, in eval mode and without gradients, and follow every norm;
    also the other leaf modules that map one tensor to one of its shape (`Seen`).

    The forward hooks already on the model (a `capture` block around this one, the user's
    own) are set aside for the pass, so that none of them sees the probe's tokens.
    """
    tracer = _Tracer({module: name for name, module in norms})
    training = {m: m.training for m in model.modules()}
    handles = []
    with _forward_hooks_set_aside(model), one_thread():
        try:
            model.eval()
            for name, module in model.named_modules():
                handles.append(
                    module.register_forward_pre_hook(tracer.enter(name), with_kwargs=True)
                )
                handles.append(module.register_forward_hook(tracer.leave(name, module)))
            with torch.no_grad(), tracer:
                model(ids, **_no_cache(model))
        finally:
            for handle in handles:
                handle.remove()
            for module, flag in training.items():
                module.training = flag
    return tracer.flows, [*tracer.seen.values()]


# Where nn.Module keeps its forward hooks (per module, and for every module), as torch 2.x
# names them; a name this torch does not have is left alone.
_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
)
_GLOBAL_HOOK_DICTS = tuple(f"_global{name}" for name in _HOOK_DICTS)


@contextmanager
def _forward_hooks_set_aside(model: nn.Module) -> Iterator[None]:
    """Run the block with every module's forward hooks (and the global ones) switched off.

    Each hook dictionary is swapped for an empty one and the very same object put back at
    the end, so the handles their owners hold stay valid.
    """
    saved: list[tuple[Any, str, Any]] = []
    owners: list[Any] = [*model.modules()]
    try:
        for owner in owners:
            for name in _HOOK_DICTS:
                if isinstance(owner.__dict__.get(name), dict):
                    saved.append((owner, name, owner.__dict__[name]))
                    owner.__dict__[name] = OrderedDict()
        for name in _GLOBAL_HOOK_DICTS:
            if isinstance(getattr(module_globals, name, None), dict):
                saved.append((module_globals, name, getattr(module_globals, name)))
                setattr(module_globals, name, OrderedDict())
        yield
    finally:
        for owner, name, hooks in saved:
            if owner is module_globals:
                setattr(owner, name, hooks)
            else:
                owner.__dict__[name] = hooks


@contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread for probes: their tensors are tiny, and on a busy machine the
    threads of a pool wait for each other (measured: the 4-token pass of the bundled model,
    median of 5, took 1.6 s with 2 threads on 2 shared, busy cores and 0.04 s with one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Tracer(TorchFunctionMode):
    """Hooks and a torch function mode that label norm outputs and watch where they go."""

    def __init__(self, norm_names: dict[nn.Module, str]) -> None:
        super().__init__()
        self.norm_names = norm_names
        self.flows: dict[str, Flow] = {}
        # storage address -> {(norm name, "input" or "output")}
        self.labels: dict[int, set[tuple[str, str]]] = {}
        self.alive: list[torch.Tensor] = []  # keeps labelled storage from being reused
        self.sums: set[int] = set()  # storage of the results of additions (and their casts)
        self.last_sublayer: str | None = None
        self.seen: dict[str, Seen] = {}

    def label(self, value: Any) -> set[tuple[str, str]]:
        if isinstance(value, torch.Tensor) and value.numel():
            return self.labels.get(_ptr(value), set())
        return set()

    def summed(self, value: Any) -> bool:
        return isinstance(value, torch.Tensor) and value.numel() > 0 and _ptr(value) in self.sums

    def mark_sum(self, value: Any) -> None:
        if isinstance(value, torch.Tensor) and value.numel():
            self.sums.add(_ptr(value))
            self.alive.append(value)

    def mark(self, value: Any, labels: set[tuple[str, str]]) -> None:
        if labels and isinstance(value, torch.Tensor) and value.numel():
            self.labels.setdefault(_ptr(value), set()).update(labels)
            self.alive.append(value)

    def enter(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            norm = self.norm_names.get(module)
            if norm is not None and norm not in self.flows:
                self.flows[norm] = Flow(order=len(self.flows), after=self.last_sublayer)
            for value in (*args, *kwargs.values()):
                for source, side in self.label(value):
                    if side == "output" and source != norm:
                        self.flows[source].consumers.add(name)
            if norm is not None:
                x = _first_tensor((*args, *kwargs.values()))
                flow = self.flows[norm]
                flow.width = flow.width or _width(x)
                flow.input_summed = flow.input_summed or self.summed(x)
                self.mark(x, {(norm, "input")})

        return hook

    def leave(self, name: str, module: nn.Module) -> Any:
        norm, kind = self.norm_names.get(module), module_sublayer(name, module)

        leaf = next(module.children(), None) is None

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if norm is not None:
                self.mark(_first_tensor((output,)), {(norm, "output")})
                return
            if kind is not None:
                self.last_sublayer = name
            if leaf and name not in self.seen and _one_to_one(args, output):
                self.seen[name] = Seen(name, module, args[0], output)

        return hook

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        op = getattr(func, "__name__", "")
        if op in ADDS:
            for value in args:
                for source, side in self.label(value):
                    setattr(self.flows[source], f"{side}_added", True)
            self.mark_sum(out)
        elif op in CASTS and args:
            self.mark(out, self.label(args[0]))
            if self.summed(args[0]):
                self.mark_sum(out)
        return out


def _ptr(value: torch.Tensor) -> int:
    return value.untyped_storage().data_ptr()


def _first_tensor(values: tuple) -> torch.Tensor | None:
    """The first tensor among `values`, looking one level into tuples (module outputs)."""
    for value in values:
        if isinstance(value, (tuple, list)) and value:
            value = value[0]
        if isinstance(value, torch.Tensor):
            return value
    return None


def _width(x: torch.Tensor | None) -> int | None:
    return int(x.shape[-1]) if x is not None and x.ndim else None


def _one_to_one(args: tuple, output: Any) -> bool:
    """One floating-point tensor in (with tokens: at least 2-d), one of its shape out."""
    if (
        len(args) != 1
        or not isinstance(args[0], torch.Tensor)
        or not isinstance(output, torch.Tensor)
    ):
        return False
    x = args[0]
    return x.is_floating_point() and x.ndim >= 2 and output.shape == x.shape


def _no_cache(model: nn.Module) -> dict[str, Any]:
    """use_cache=False where the forward takes it: the probe needs no key/value cache."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"use_cache": False} if "use_cache" in parameters else {}
