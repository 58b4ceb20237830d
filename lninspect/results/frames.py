"""Results as pandas DataFrames in long format, one row per number (no torch).

pandas is an optional extra (`pip install lninspect[pandas]`), imported only here, when a
frame is asked for. A run's result: one row per (module, sequence, token, statistic), with
the token's text; positions that hold no token (padding, a shorter call) are left out. A
corpus aggregate: one row per (module, position, statistic, moment).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from lninspect.errors import LninspectError
from lninspect.host_memory import host_available, size
from lninspect.statistics import STATISTICS

if TYPE_CHECKING:
    import pandas as pd

    from lninspect.results.aggregate import AggregateResult
    from lninspect.results.one_text import NormStats, StatsResult

STATS_COLUMNS = ("module", "layer", "role", "sequence", "token", "token_text", "statistic")
AGGREGATE_COLUMNS = ("module", "layer", "role", "position", "statistic", "moment")
MOMENTS = ("count", "mean", "std", "min", "max")


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as error:
        raise LninspectError(
            "DataFrames need pandas: pip install 'lninspect[pandas]'", 2
        ) from error
    return pandas


def stats_frame(result: StatsResult, tokenizer: Any = None) -> pd.DataFrame:
    """Columns: module, layer, role, sequence, token (its position), token_text, statistic
    (lninspect.statistics keys: mean, std, rms, ..., out_mean, out_std, grad_*), value;
    `head` too for norms that see heads (per-token arrays of (sequences, tokens, heads)).

    token_text: the result's token texts (a run of the CLI or jobs), else its token ids
    (capture() records them) read by `tokenizer` (lninspect's, or a transformers one), else ""."""
    pd = _pandas()
    check_frame_fits(result)
    texts = token_texts(result, tokenizer)
    parts = [_norm_rows(result, norm, texts) for norm in result.norms]
    frame = pd.DataFrame({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    if "head" in frame and (frame["head"] < 0).all():
        frame = frame.drop(columns="head")
    return frame


FRAME_ROW_BYTES = 400  # peak while a frame is built, per row (394 measured, 737,280 rows)


def check_frame_fits(result: StatsResult) -> None:
    """Refuse, with the numbers, a frame whose building would need more memory than the
    host has available (its rows counted first: norms x present tokens x statistics)."""
    rows = sum(_row_count(norm) for norm in result.norms)
    need, free = rows * FRAME_ROW_BYTES, host_available()
    if free is not None and need > free:
        raise LninspectError(
            f"to_dataframe(): {rows:,} rows ({len(result.norms)} norms x "
            f"{result.input.num_tokens:,} tokens x their statistics) need ~{size(need)} to "
            f"build, but only {size(free)} of memory is available; take fewer tokens, or "
            "keep fewer norms in result.norms"
        )


def _row_count(norm: NormStats) -> int:
    present = int((norm.input.absmax_dim >= 0).sum())
    blocks = {"input": norm.input, "output": norm.output, "grad": norm.grad}
    found = [s for s in STATISTICS if getattr(blocks[s.side], s.field, None) is not None]
    return present * len(found)


def token_texts(result: StatsResult, tokenizer: Any = None) -> list[list[str]]:
    """Each sequence's token texts: the result's own, or its token ids read by `tokenizer`."""
    if result.input.tokens or tokenizer is None:
        return result.input.tokens
    pieces = getattr(tokenizer, "pieces", None)  # lninspect's Tokenizer; else transformers'
    if callable(pieces):
        return [pieces(row) for row in result.input.token_ids]
    return [[tokenizer.decode([i]) for i in row] for row in result.input.token_ids]


def _norm_rows(
    result: StatsResult, norm: NormStats, texts: list[list[str]]
) -> dict[str, np.ndarray]:
    present = norm.input.absmax_dim >= 0  # -1: no token there (padding, a shorter call)
    index = np.nonzero(present)
    sequence, token = index[0], index[1] if len(index) > 1 else np.zeros_like(index[0])
    head = index[2] if len(index) > 2 else np.full_like(sequence, -1)
    position = _positions(result, sequence, token)
    pairs = zip(sequence.tolist(), token.tolist(), strict=True)
    text = np.array([_text(texts, s, t) for s, t in pairs], dtype=object)
    blocks = {"input": norm.input, "output": norm.output, "grad": norm.grad}
    columns: dict[str, list[np.ndarray]] = {k: [] for k in (*STATS_COLUMNS, "head", "value")}
    for statistic in STATISTICS:
        values = getattr(blocks[statistic.side], statistic.field, None)
        if values is None:
            continue
        columns["value"].append(np.asarray(values, dtype=np.float64)[index])
        columns["statistic"].append(np.full(len(sequence), statistic.key, object))
        for key, column in (
            ("sequence", sequence),
            ("token", position),
            ("token_text", text),
            ("head", head),
        ):
            columns[key].append(column)
    count = sum(len(v) for v in columns["value"])
    out = {k: np.concatenate(v) for k, v in columns.items() if v}
    out["module"] = np.full(count, norm.name, object)
    out["layer"] = np.full(count, -1 if norm.layer is None else norm.layer)
    out["role"] = np.full(count, norm.role, object)
    return {k: out[k] for k in (*STATS_COLUMNS, "head", "value")}


def _positions(result: StatsResult, sequence: np.ndarray, token: np.ndarray) -> np.ndarray:
    """Each token's position: its index, or the call's own positions under a KV cache."""
    rows = result.input.positions
    if rows is None:
        return token
    return np.array([rows[s][t] for s, t in zip(sequence, token, strict=True)], dtype=np.int64)


def _text(texts: list[list[str]], sequence: int, token: int) -> str:
    if sequence < len(texts) and token < len(texts[sequence]):
        return texts[sequence][token]
    return ""


def aggregate_frame(result: AggregateResult) -> pd.DataFrame:
    """Columns: module, layer, role, position, statistic, moment (count, mean, std, min,
    max over the corpus's tokens at that position), value; positions no token reached
    (count 0) are left out."""
    pd = _pandas()
    rows: dict[str, list[Any]] = {k: [] for k in (*AGGREGATE_COLUMNS, "value")}
    for norm in result.norms:
        for key, moments in norm.positions.items():
            seen = np.nonzero(moments.count > 0)[0]
            for moment in MOMENTS:
                values = np.asarray(getattr(moments, moment), dtype=np.float64)[seen]
                rows["value"].extend(values)
                rows["position"].extend(seen)
                rows["moment"].extend([moment] * len(seen))
                rows["statistic"].extend([key] * len(seen))
                rows["module"].extend([norm.name] * len(seen))
                rows["layer"].extend([-1 if norm.layer is None else norm.layer] * len(seen))
                rows["role"].extend([norm.role] * len(seen))
    return pd.DataFrame(rows)
