"""Several models' results on one text made comparable: norms matched across models, the
numbers of each, and the largest differences (lninspect.results.compare). No torch.

Matching (said in the result and in every output): by module name when every model has the
same norms (checkpoints of one model, a base model and its fine-tune), otherwise by role and
relative depth. Values per token are compared only when every model saw the same token ids.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from lninspect.derived import largest_abs, nan_median
from lninspect.derived import per_token as token_values
from lninspect.results import GradsResult, NormStats
from lninspect.results.compare import (
    TOKEN_DENOMINATOR,
    ComparedModel,
    CompareResult,
    Difference,
    MatchedRow,
    NormValues,
)
from lninspect.statistics import SUMMARIES
from lninspect.streams import group_of, token_row
from lninspect.trends import float32_digits

MAX_DIFFERENCES = 50


def relative_depth(norm: NormStats, layers: int | None) -> float:
    """layer / (layers - 1); an embedding norm sits at 0, a final (or other outside) one at 1."""
    if norm.layer is None:
        return 0.0 if norm.role == "embed" else 1.0
    return norm.layer / (layers - 1) if layers and layers > 1 else 0.0


def _layers(result: GradsResult) -> int | None:
    layers = [n.layer for n in result.norms if n.layer is not None]
    return result.model.num_layers or (max(layers) + 1 if layers else None)


def norm_values(result: GradsResult, norm: NormStats, per_token: bool) -> NormValues:
    spikes = [abs(s.z) for s in norm.spikes or [] if math.isfinite(s.z)]
    peak = largest_abs(norm)
    medians = {
        s.key: float32_digits(nan_median(values)) if values is not None else math.nan
        for s in SUMMARIES
        if not s.peak
        for values in (token_values(norm, s.of),)
    }
    return NormValues(
        name=norm.name,
        layer=norm.layer,
        depth=relative_depth(norm, _layers(result)),
        absmax=float32_digits(peak.value),
        absmax_dim=peak.dim,
        max_abs_z=float32_digits(max(spikes)) if spikes else math.nan,
        tokens=[float32_digits(v) for v in token_row(norm, norm.denominator)]
        if per_token
        else None,
        medians=medians,
    )


def match_rows(results: Sequence[GradsResult]) -> tuple[list[list[NormStats]], str]:
    """Per norm of the first model, the matched norm of every model; and how they matched."""
    names = [[n.name for n in r.norms] for r in results]
    if all(n == names[0] for n in names):
        return [[r.norms[i] for r in results] for i in range(len(names[0]))], "names"
    rows = []
    for norm in results[0].norms:
        depth = relative_depth(norm, _layers(results[0]))
        row = [norm]
        for other in results[1:]:
            same_role = [n for n in other.norms if group_of(n) == group_of(norm)]
            if not same_role:
                break
            row.append(min(same_role, key=lambda n: abs(relative_depth(n, _layers(other)) - depth)))
        else:
            rows.append(row)
    return rows, "relative depth"


def compare_results(results: Sequence[GradsResult], specs: Sequence[str]) -> CompareResult:
    """The CompareResult of `results` (one per spec, on the same text, the first the reference)."""
    ids = [r.input.token_ids for r in results]
    same_tokens = bool(ids[0]) and all(i == ids[0] for i in ids)
    matched, matching = match_rows(results)
    rows = [
        MatchedRow(
            role=row[0].role,
            placement=row[0].placement,
            reads=row[0].reads,
            depth=relative_depth(row[0], _layers(results[0])),
            models=[norm_values(r, n, same_tokens) for r, n in zip(results, row, strict=True)],
        )
        for row in matched
    ]
    models = [_model(r, spec) for r, spec in zip(results, specs, strict=True)]
    return CompareResult(
        mode="tokens" if same_tokens else "layers",
        matching=matching,
        models=models,
        rows=rows,
        differences=differences(rows, same_tokens),
        tokens=results[0].input.tokens[0] if same_tokens and results[0].input.tokens else [],
        notes=_notes(models, same_tokens, matching, len(matched), results)
        + _identical_notes(models, rows),
    )


def _model(result: GradsResult, spec: str) -> ComparedModel:
    name, revision = split_revision(spec)
    return ComparedModel(
        spec=spec,
        name=result.model.name,
        revision=revision,
        source=result.model.source,
        cls=result.model.cls,
        num_layers=_layers(result),
        num_tokens=result.input.num_tokens,
        loss=result.loss,
    )


def split_revision(spec: str) -> tuple[str, str | None]:
    """`id@revision` -> (id, revision); a spec without `@`, or a local path, has none."""
    name, at, revision = spec.rpartition("@")
    if not at or not name or not revision or "/" in revision or os.path.exists(spec):
        return spec, None
    return name, revision


def _notes(
    models: list[ComparedModel],
    same_tokens: bool,
    matching: str,
    rows: int,
    results: Sequence[GradsResult],
) -> list[str]:
    notes = []
    if not same_tokens:
        counts = ", ".join(str(m.num_tokens) for m in models)
        notes.append(
            f"the models tokenize the text differently ({counts} tokens): compared per "
            "layer, each on the medians over its own tokens, not token by token"
        )
    if matching != "names":
        notes.append(
            f"the models' norms differ ({_how_norms_differ(results)}): matched by role and "
            f"relative depth (layer / (layers - 1)); {rows} rows, one per norm of "
            f"{models[0].spec}"
        )
    return notes + _model_notes(models, results)


def _how_norms_differ(results: Sequence[GradsResult]) -> str:
    """What differs between the models' norms: their depth, their number, or a name
    (`'h.0.ln_1' in A is 'h.0.norm_1' in B`)."""
    depths = [_layers(r) for r in results]
    if len(set(depths)) > 1:
        return " vs ".join(str(d) for d in depths) + " layers"
    counts = [len(r.norms) for r in results]
    if len(set(counts)) > 1:
        return " vs ".join(str(c) for c in counts) + " norms"
    first = [n.name for n in results[0].norms]
    for m, other in enumerate(results[1:], 1):
        for a, b in zip(first, (n.name for n in other.norms), strict=True):
            if a != b:
                return f"{len(first)} norms each, but {a!r} in A is {b!r} in {chr(65 + m)}"
    return "the same names"  # not reached: match_rows matched by name then


def _identical_notes(models: list[ComparedModel], rows: list[MatchedRow]) -> list[str]:
    """A note for every model whose numbers are A's on every norm (the same model twice)."""
    return [
        f"{chr(65 + m)} ({model.spec}) gives exactly the numbers of A ({models[0].spec}) on "
        "every norm: no differences to list (the same model twice?)"
        for m, model in enumerate(models[1:], 1)
        if rows and all(_numbers(row.models[m]) == _numbers(row.models[0]) for row in rows)
    ]


def _numbers(values: NormValues) -> list[float | None]:
    """A norm's numbers in a comparable form (NaN, which is not equal to itself, as None)."""
    found = [values.absmax, values.max_abs_z, *values.medians.values(), *(values.tokens or ())]
    return [None if math.isnan(v) else v for v in found]


def _model_notes(models: list[ComparedModel], results: Sequence[GradsResult]) -> list[str]:
    """Every model's own notes (text cut to the context, tokenizer fallback, ...): once
    when all the models have it, else with the model's spec in front."""
    every = set.intersection(*(set(r.notes) for r in results)) if results else set()
    notes = [n for n in results[0].notes if n in every] if results else []
    for model, result in zip(models, results, strict=True):
        notes += [f"{model.spec}: {n}" for n in result.notes if n not in every]
    return list(dict.fromkeys(notes))


def differences(rows: list[MatchedRow], per_token: bool) -> list[Difference]:
    """Every model's ratio to the first model per row and statistic, largest change first;
    in "tokens" mode also the token of each row where the input std differs most."""
    found = []
    for i, row in enumerate(rows):
        reference = row.models[0]
        for m, values in enumerate(row.models[1:], 1):
            for key in (s.key for s in SUMMARIES if not s.signed):
                found += _difference(key, i, m, reference.value(key), values.value(key))
            if per_token and reference.tokens is not None and values.tokens is not None:
                found += _token_difference(i, m, reference.tokens, values.tokens)
    found.sort(key=lambda d: -abs(math.log(d.ratio)))
    return found[:MAX_DIFFERENCES]


def _difference(key: str, row: int, model: int, a: float, b: float) -> list[Difference]:
    if not (a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)) or a == b:
        return []  # not comparable, or no difference
    return [Difference(key, row, model, a, b, float32_digits(b / a))]


def _token_difference(row: int, model: int, a: list[float], b: list[float]) -> list[Difference]:
    ratio = np.asarray(b, dtype=np.float64) / np.asarray(a, dtype=np.float64)
    change = np.abs(np.log(np.where(ratio > 0, ratio, np.nan)))
    if not np.isfinite(change).any() or np.nanmax(change) == 0:
        return []  # not comparable, or the same on every token
    t = int(np.nanargmax(change))
    return [Difference(TOKEN_DENOMINATOR, row, model, a[t], b[t], float32_digits(ratio[t]), t)]
