"""The options the analysis commands share, declared once, and the requests built from them.

A `Shared` names one option: its parameter name, its `Annotated` alias (lninspect.cli.options)
and the request field it fills. `@shared(*groups)` adds the options of those groups to a
command's signature, which is what Typer reads (as for any function it is given; Typer's
public API only, no Click), and hands the command their values as one `Given`, whose methods
build the requests (RunOptions, SpikeOptions, CorpusOptions, Outputs): the only place they
are built. Adding a shared option is its alias, one `Shared` in a group below, and the
field of the request it fills (its default is that field's default).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from lninspect.cli import map_options as maps
from lninspect.cli import options as opt
from lninspect.cli.commands import Outputs
from lninspect.options import (
    MAX_DIM,
    CorpusOptions,
    MapOptions,
    RunOptions,
    SpikeOptions,
    parse_indices,
    parse_layers,
)

REQUESTS: dict[str, type] = {
    "run": RunOptions,
    "spikes": SpikeOptions,
    "corpus": CorpusOptions,
    "outputs": Outputs,
    "maps": MapOptions,
}


def _layers(value: str | None) -> tuple[int, ...] | None:
    return parse_layers(value) if value else None  # checked while parsing (LayerFilterOpt)


def _dims(value: str | None) -> tuple[int, ...] | None:
    return parse_indices(value, "dimension", MAX_DIM) if value else None  # checked already


def _names(value: list[str] | None) -> tuple[str, ...]:
    return tuple(value or ())


FROM_FIELD: Any = object()  # a Shared's default is its request field's


@dataclass(frozen=True)
class Shared:
    """One shared option: the parameter `name`, its `Annotated` alias, the requests whose
    field it fills (`into`, the field `field` or `name`), and the conversion to that field."""

    name: str
    alias: Any
    into: tuple[str, ...]
    field: str | None = None
    convert: Callable[[Any], Any] | None = None  # None: the value as it is
    default: Any = FROM_FIELD  # the default of the request's field, unless given

    def default_value(self) -> Any:
        if self.default is not FROM_FIELD:
            return self.default
        request = REQUESTS[self.into[0]]
        found = {f.name: f for f in dataclasses.fields(request)}[self.field or self.name]
        return found.default


# The groups; a command takes those it needs (help lists their options in this order).
MODEL = (
    Shared("device", opt.DeviceOpt, ("run",)),
    Shared("dtype", opt.DTypeOpt, ("run",)),
    Shared("revision", opt.RevisionOpt, ("run",)),
    Shared("gguf_file", opt.GgufFileOpt, ("run",)),
    Shared("trust_remote_code", opt.TrustOpt, ("run",)),
    Shared("seed", opt.SeedOpt, ("run",)),
    Shared("device_map", opt.DeviceMapOpt, ("run",)),
    Shared("max_memory", opt.MaxMemoryOpt, ("run",)),
    Shared("norm_class", opt.NormClassOpt, ("run",), "norm_classes", _names, None),
)
TEXT = (
    Shared("text", opt.TextOpt, ("run",)),
    Shared("encoding", opt.EncodingOpt, ("run", "corpus")),
    Shared("max_tokens", opt.MaxTokensOpt, ("run",)),
    Shared("bos", opt.BosOpt, ("run",)),
    Shared("chat_template", opt.ChatTemplateOpt, ("run",)),
    Shared("stride", opt.StrideOpt, ("run",)),
    Shared("layers", opt.LayerFilterOpt, ("run",), convert=_layers),
    Shared("reductions", opt.ReductionsOpt, ("run",)),
)
ONE_FILE = (Shared("file", opt.FileOpt, ("run",)),)
CORPUS = (  # stats: several --file, or a glob, make a corpus (lninspect.options.CorpusOptions)
    Shared("file", opt.FilesOpt, ("corpus",), "files", _names, None),
    Shared("lines", opt.LinesOpt, ("corpus",)),
    Shared("field", opt.FieldOpt, ("corpus",)),
    Shared("seq_len", opt.SeqLenOpt, ("corpus",)),
    Shared("batch_size", opt.BatchSizeOpt, ("corpus",)),
    Shared("max_sequences", opt.MaxSequencesOpt, ("corpus",)),
)
SPIKES = (
    Shared("spike_abs", opt.SpikeAbsOpt, ("spikes",)),
    Shared("spike_ratio", opt.SpikeRatioOpt, ("spikes",)),
    Shared("spike_z", opt.SpikeZOpt, ("spikes",)),
    Shared("top_k", opt.TopKOpt, ("spikes",)),
)
ABLATE = (
    Shared("ablate_spikes", opt.AblateOpt, (), default=False),
    Shared("ablate_file", opt.AblateFileOpt, ("spikes",)),
    Shared("ablate_dims", opt.AblateDimsOpt, ("spikes",), convert=_dims, default=None),
    Shared("ablate_layer", opt.AblateLayerOpt, ("spikes",)),
)
NORM_MAP = (  # stats, report: lninspect.options.MapOptions
    Shared("map", maps.MapOpt, ("maps",), "sample"),
    Shared("map_size", maps.MapSizeOpt, ("maps",), "size"),
    Shared("freeze_scale", maps.FreezeOpt, ("maps",), "freeze"),
    Shared("calibration_file", maps.CalibrationFileOpt, ("maps",)),
)
FIGURES = (  # Outputs.figures is --out when --plot is given
    Shared("plot", opt.PlotOpt, (), default=False),
    Shared("out_dir", opt.OutOpt, (), default=None),
)
JSON = (Shared("json", opt.JsonOpt, ("outputs",)),)
FORCE = (Shared("force", opt.ForceOpt, ("outputs",)),)
QUIET = (Shared("quiet", opt.QuietOpt, ("outputs",)),)
WIDE = (Shared("wide", opt.WideOpt, ("outputs",)),)
PRINTED = (*JSON, *FORCE, *QUIET, *WIDE)  # the commands that print tables and write JSON


@dataclass(frozen=True)
class Given:
    """The values of a command's shared options, each an attribute (`given.seq_len`), and the
    requests built from them."""

    values: Mapping[str, Any]
    declared: tuple[Shared, ...]

    def __getattr__(self, name: str) -> Any:  # only for names that are not the class's own
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def fields(self, request: str) -> dict[str, Any]:
        """The request's fields that this command's options fill, converted."""
        return {
            d.field or d.name: d.convert(value) if d.convert else value
            for d in self.declared
            if request in d.into
            for value in (self.values[d.name],)
        }

    def run(self, **own: Any) -> RunOptions:
        """RunOptions from the shared options; `own`: the command's (the model, a file)."""
        return RunOptions(**(self.fields("run") | own))

    def spikes(self) -> SpikeOptions:
        return SpikeOptions(**self.fields("spikes"))

    def maps(self) -> MapOptions:
        return MapOptions(**self.fields("maps"))

    def corpus(self) -> CorpusOptions:
        return CorpusOptions(**self.fields("corpus"))

    def outputs(self, **own: Any) -> Outputs:
        figures = opt.figures_folder(self.values.get("plot", False), self.values.get("out_dir"))
        return Outputs(**(self.fields("outputs") | {"figures": figures} | own))


Command = TypeVar("Command", bound=Callable[..., None])


def shared(*groups: tuple[Shared, ...]) -> Callable[[Command], Command]:
    """Add the options of `groups` to a command, which receives their values as `given`.

    The command's own parameters come first (its arguments, its own options), the shared
    ones after them, in the order of `groups`.
    """
    declared = tuple(d for group in groups for d in group)
    taken = {*dir(Given), *(f.name for f in dataclasses.fields(Given))}
    hidden = [d.name for d in declared if d.name in taken]
    if hidden:  # read as given.NAME, an option may not share a name with Given's own
        raise TypeError(f"options named as Given's attributes: {', '.join(hidden)}")

    def decorate(command: Command) -> Command:
        own = inspect.signature(command, eval_str=True).parameters
        added = [
            inspect.Parameter(
                d.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=d.default_value(),
                annotation=d.alias,
            )
            for d in declared
        ]
        kept = [p for name, p in own.items() if name != "given"]
        signature = inspect.Signature([*kept, *added])

        @functools.wraps(command)
        def with_options(*args: Any, **kwargs: Any) -> None:
            values = {d.name: kwargs.pop(d.name) for d in declared}
            command(*args, given=Given(values, declared), **kwargs)

        with_options.__signature__ = signature  # type: ignore[attr-defined]
        with_options.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        return with_options  # type: ignore[return-value]

    return decorate
