"""Find the normalization modules of a model, with their layer, role, placement, eps and weight.

Three steps, each checked against the module's behaviour rather than its name alone:

1. Candidates: nn.LayerNorm / nn.RMSNorm, leaf modules whose class name ends in
   LayerNorm / RMSNorm (custom norms: nanoGPT's, LlamaRMSNorm, OlmoLayerNorm, ...), and
   instances of the classes the caller names (`include=`, `--norm-class`).
2. Where each sits (lninspect.norms.dataflow): one probe forward pass on a few token ids shows
   which sub-layers a norm feeds and whether its output joins the residual stream. Models
   the probe cannot run (no `config.vocab_size`, or the pass fails) fall back on module
   names, and `discover` says so in a one-line note. The same pass finds the modules that
   look like norms but are not candidates: leaf modules whose output is unchanged when
   their input is scaled (formula.scale_invariant); a note names them.
3. What each computes (lninspect.norms.formula): LayerNorm or RMSNorm, gain w or 1 + w
   (Gemma), scalar or vector, the axes it reduces; eps is read from the module (`eps`,
   `variance_epsilon`, ...) and measured when it keeps none (OLMo). A module whose formula
   cannot be measured gets a note saying why; an eps assumed (DEFAULT_EPS) gets one too.

Roles and placements are listed and explained in lninspect.roles.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from lninspect.errors import LninspectError
from lninspect.norms.dataflow import (
    Flow,
    Seen,
    one_thread,
    probe_input,
    trace,
)
from lninspect.norms.formula import (
    Formula,
    ProbeFailed,
    affine_names,
    measure_formula,
    scale_invariant,
    why_not_a_norm,
)
from lninspect.norms.placing import layer_index, place
from lninspect.results import NormDescription, WeightSummary
from lninspect.roles import stream_of

# Attribute names under which norm implementations keep their epsilon.
EPS_ATTRIBUTES = ("eps", "variance_epsilon", "epsilon", "layer_norm_eps", "layer_norm_epsilon")
DEFAULT_EPS = 1e-5  # F.layer_norm's default, for norms whose eps can be neither read nor measured
NORM_CLASS_SUFFIXES = ("layernorm", "rmsnorm", "layernorm1p")
# config.model_type of the architectures tested in tests/test_architectures.py.
KNOWN_ARCHITECTURES = {
    "gpt2",
    "gpt_neo",
    "gptj",
    "gpt_neox",
    "opt",
    "bloom",
    "falcon",
    "phi",
    "phi3",
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3_text",
    "olmo",
    "olmo2",
    "gpt_bigcode",
    "stablelm",
    "cohere",
}


@dataclass(frozen=True, eq=False)
class NormInfo:
    """One normalization module found in a model."""

    name: str  # dotted path from the model root
    module: nn.Module
    kind: str  # "layernorm" or "rmsnorm", as measured (the class name when it cannot run)
    layer: int | None  # index in the stack of blocks, None outside it
    role: str  # one of lninspect.roles.ROLES
    eps: float
    eps_known: bool  # False when eps was neither found nor measured and DEFAULT_EPS is assumed
    reduced_dims: int  # how many trailing axes the norm reduces over (normalized_shape)
    placement: str = "pre"  # one of lninspect.roles.PLACEMENTS
    reads: str = "residual"  # what it normalizes: one of lninspect.roles.STREAMS
    weight_offset: float = 0.0  # 1.0 for norms that multiply by 1 + weight (Gemma)
    gain: str | None = "weight"  # the name of its gain parameter (0-d or a vector), if any

    @property
    def type(self) -> str:
        return type(self.module).__name__

    def describe(
        self, weight: WeightSummary | None = None, summarise: bool = True
    ) -> NormDescription:
        """The module as plain data, for results and JSON.

        `weight`: the weight's summary when already made (a model's norms are summarised
        together: lninspect.hooks.transfer.descriptions); made here otherwise, unless not
        `summarise` (then None).
        """
        if weight is None and summarise and (w := self.effective_weight()) is not None:
            weight = weight_summary(weight_numbers(w[None])[0].tolist())
        return NormDescription(
            name=self.name,
            type=self.type,
            kind=self.kind,
            layer=self.layer,
            role=self.role,
            placement=self.placement,
            reads=self.reads,
            eps=self.eps,
            weight=weight,
        )

    def effective_weight(self) -> torch.Tensor | None:
        """The gain the output is multiplied by (1 + w for Gemma); None for a norm without one."""
        weight = self.gain_tensor()
        return None if weight is None else weight.detach().float() + self.weight_offset

    def gain_tensor(self) -> torch.Tensor | None:
        """The module's gain parameter as it is (`weight`, or a ScaleNorm's scalar `g`)."""
        weight = getattr(self.module, self.gain, None) if self.gain else None
        return weight if isinstance(weight, torch.Tensor) else None


def weight_numbers(weights: torch.Tensor) -> torch.Tensor:
    """Mean, std, min, max and count of negative entries of each of n weights (n, ...), a
    0-d gain being one entry: (n, 5) float64 on their device, in a few kernels for all n
    and no host sync."""
    flat = weights.reshape(len(weights), -1).float()
    negative = (flat < 0).sum(1).to(flat.dtype)  # exact in float32 up to 2^24 entries
    columns = [flat.mean(1), flat.std(1, correction=0), flat.amin(1), flat.amax(1), negative]
    return torch.stack(columns, dim=1).double()


def weight_summary(numbers: Sequence[float]) -> WeightSummary:
    """A WeightSummary from one row of `weight_numbers`, read to the host."""
    mean, std, low, high, negative = numbers
    return WeightSummary(mean=mean, std=std, min=low, max=high, negative=int(negative))


@dataclass
class Discovery:
    """The norms of a model, and one-line notes on how they were found."""

    norms: list[NormInfo]
    notes: list[str] = field(default_factory=list)


def is_norm(module: nn.Module, include: tuple[type[nn.Module], ...] = ()) -> bool:
    """LayerNorm / RMSNorm, an instance of an `include` class, or a leaf module whose class
    name says it is a norm."""
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm, *include)):
        return True
    name = type(module).__name__.lower()
    has_children = next(module.children(), None) is not None
    return not has_children and name.endswith(NORM_CLASS_SUFFIXES)


def find_norms(model: nn.Module, include: Iterable[type[nn.Module]] = ()) -> list[NormInfo]:
    """Every normalization module of `model`, in registration order; `include`: classes of
    the model's own norms that discovery does not recognise (a ScaleNorm)."""
    return discover(model, include).norms


def discover(model: nn.Module, include: Iterable[type[nn.Module]] = ()) -> Discovery:
    """The norms of `model` with their roles, and notes on how they were found: generic
    discovery, modules that look like norms but are not hooked, formulas not measured."""
    classes = tuple(include)
    found = [(n, m) for n, m in model.named_modules() if is_norm(m, classes)]
    with one_thread():  # tiny tensors only (see one_thread)
        flows, seen, why_not = _probe(model, found)
        _check_classes(model, classes, flows)
        modules = dict(model.named_modules())
        described = [_describe(name, module, modules, flows, model) for name, module in found]
        unhooked = _unhooked(seen)
    notes = _notes(model, why_not) if found else []
    notes += summarized([(norm.name, note) for norm, note in described if note]) + unhooked
    return Discovery(norms=[norm for norm, _ in described], notes=notes)


STANDS_IN = "stands_in_for_norm"  # the class attribute of a norm's stand-in (_check_classes)


class NotANorm(LninspectError):
    """A class given as a norm (include=, --norm-class) that the normalization probe refuses."""

    def __init__(self, cls: type, name: str, why: str) -> None:
        self.cls_name, self.why = cls.__name__, f"{why} ({name})"
        super().__init__(
            f"include=({cls.__name__},): {cls.__name__} is not a normalization module: {self.why}"
        )


def _check_classes(model: nn.Module, classes: tuple[type, ...], flows: dict[str, Flow]) -> None:
    """Each class of `include` must pass the normalization probe (formula.why_not_a_norm) on
    its first module that is not a norm already; NotANorm says what the probe saw. A class
    that stands in for a norm without normalizing (DyT's tanh) says so with a class attribute
    `stands_in_for_norm = True`, and is hooked as it is."""
    for cls in classes:
        if getattr(cls, STANDS_IN, False) is True:
            continue
        instances = (n for n, m in model.named_modules() if not is_norm(m) and isinstance(m, cls))
        name = next(instances, None)
        if name is None:
            continue
        module = model.get_submodule(name)
        flow = flows.get(name)
        width = flow.width if flow is not None and flow.width else _hidden_size(model)
        why = why_not_a_norm(module, width)
        if why is not None:
            raise NotANorm(cls, name or "the model itself", why)


def summarized(notes: Sequence[tuple[str, str]]) -> list[str]:
    """Notes on modules, "name: what": one line per module, or, for what more than
    UNHOOKED_SHOWN modules share, one line with their count and the first few names."""
    by_what: dict[str, list[str]] = {}
    for name, what in notes:
        by_what.setdefault(what, []).append(name)
    lines = []
    for what, names in by_what.items():
        if len(names) <= UNHOOKED_SHOWN:
            lines += [f"{name}: {what}" for name in names]
        else:
            shown = ", ".join(names[:UNHOOKED_SHOWN])
            lines.append(f"{len(names)} modules ({shown}, ...): {what}")
    return lines


def _probe(
    model: nn.Module, found: Sequence[tuple[str, nn.Module]]
) -> tuple[dict[str, Flow], list[Seen], str | None]:
    """The dataflow of one probe pass, or ({}, [], why it could not run)."""
    ids = probe_input(model)
    if ids is None:
        return {}, [], "no probe forward pass: the model has no config.vocab_size"
    try:
        flows, seen = trace(model, found, ids)
    except Exception as exc:  # noqa: BLE001 - any model may refuse a probe; names remain
        first_line = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        return {}, [], f"the probe forward pass failed: {first_line}"
    return flows, seen, None


UNHOOKED_SHOWN = 3  # module names a note lists before "..."


def _unhooked(seen: Sequence[Seen]) -> list[str]:
    """One note naming the modules that look like norms (formula.scale_invariant) but are
    not hooked, and their classes for --norm-class."""
    with torch.no_grad():
        looks = [s for s in seen if scale_invariant(s.module, s.x, s.y)]
    if not looks:
        return []
    names = ", ".join(s.name for s in looks[:UNHOOKED_SHOWN])
    more = ", ..." if len(looks) > UNHOOKED_SHOWN else ""
    classes = sorted({type(s.module).__name__ for s in looks})
    verb = "looks" if len(looks) == 1 else "look"
    include = ", ".join(classes) + ("," if len(classes) == 1 else "")  # as a Python tuple
    return [
        f"{len(looks)} module{'s' if len(looks) > 1 else ''} {verb} like norms but were not "
        f"hooked: {names}{more}; pass include=({include})"
    ]


def _notes(model: nn.Module, why_not: str | None) -> list[str]:
    config = getattr(model, "config", None)
    arch = getattr(config, "model_type", None) or type(model).__name__
    known = arch in KNOWN_ARCHITECTURES or type(model).__module__.startswith("lninspect.")
    how = (
        "roles from a probe forward pass"
        if why_not is None
        else f"roles guessed from module names ({why_not})"
    )
    if not known:
        return [
            f"{arch}: an architecture lninspect is not tested on; norms found by generic "
            f"discovery, {how}"
        ]
    return [] if why_not is None else [how[0].upper() + how[1:]]


def _describe(
    name: str,
    module: nn.Module,
    modules: dict[str, nn.Module],
    flows: dict[str, Flow],
    model: nn.Module,
) -> tuple[NormInfo, str | None]:
    """The norm, and a note (without its name) when its formula could not be measured or its
    eps is assumed."""
    eps = _read_eps(module)
    stated = _stated_dims(module)
    flow = flows.get(name)
    width = flow.width if flow is not None and flow.width else _hidden_size(model)
    formula: Formula | None = None
    note: str | None = None
    try:
        formula = measure_formula(module, eps, stated, width)
    except ProbeFailed as why:
        note = f"formula not measured ({why}); its kind is read from its class name"
    known = eps if eps is not None else formula.eps if formula is not None else None
    if formula is not None:
        note = None if known is not None else f"eps {DEFAULT_EPS:g} assumed"
    layer = layer_index(name)
    role, placement = place(name, layer, modules, flows)
    flow = flows.get(name)
    reads = stream_of(role, placement, flow.input_summed if flow is not None else None)
    norm = NormInfo(
        name=name,
        module=module,
        kind=formula.kind if formula else _kind_by_name(module),
        layer=layer,
        role=role,
        eps=known if known is not None else DEFAULT_EPS,
        eps_known=known is not None,
        reduced_dims=formula.reduced_dims if formula else stated or 1,
        placement=placement,
        reads=reads,
        weight_offset=formula.weight_offset if formula else _offset_by_name(module),
        gain=affine_names(module)[0],
    )
    if note is not None and not norm.eps_known and formula is None:
        note += f", eps {DEFAULT_EPS:g} assumed"
    return norm, note


def _hidden_size(model: nn.Module) -> int | None:
    """config.hidden_size (n_embd, d_model, ...) when the model has a config that says it."""
    size = getattr(getattr(model, "config", None), "hidden_size", None)
    return size if isinstance(size, int) and size > 0 else None


def _kind_by_name(module: nn.Module) -> str:
    is_rms = isinstance(module, nn.RMSNorm) or type(module).__name__.lower().endswith("rmsnorm")
    return "rmsnorm" if is_rms else "layernorm"


def _offset_by_name(module: nn.Module) -> float:
    name = type(module).__name__.lower()
    return 1.0 if name.startswith("gemma") and name.endswith("rmsnorm") else 0.0


def _stated_dims(module: nn.Module) -> int | None:
    shape = getattr(module, "normalized_shape", None)
    if isinstance(shape, int):
        return 1
    return len(shape) if isinstance(shape, (tuple, list)) and shape else None


def _read_eps(module: nn.Module) -> float | None:
    for attribute in EPS_ATTRIBUTES:
        value = getattr(module, attribute, None)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    if isinstance(module, nn.RMSNorm):  # eps=None: the machine epsilon of the weight's dtype
        weight = module.weight
        return torch.finfo(weight.dtype if weight is not None else torch.float32).eps
    return None
