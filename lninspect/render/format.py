"""How numbers, names and tokens are written in tables, figures and the report (no torch)."""

from __future__ import annotations

import re
import textwrap

import numpy as np
from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from lninspect.escape import visible
from lninspect.results import ModelInfo, NormsResult, StatsResult
from lninspect.results.aggregate import AggregateResult
from lninspect.streams import Location


def fmt(value: float) -> str:
    """A number in 3 significant digits, compact; non-finite values as they are."""
    if not np.isfinite(value):
        return str(value)
    return f"{value:.3g}"


# The one abbreviation rule of module names in tables and figures (JSON and --wide keep the
# full name): the words that name a sub-layer written short, the words that only say "norm"
# dropped where a word of two letters or more remains, the container of the blocks dropped
# (`model.layers.12.post_attention_layernorm` -> `12.post_attn`), a norm outside the blocks
# that is left with no name of its own called `final` (`model.norm`, `transformer.ln_f`).
WORD_ABBREVIATIONS = {
    "input": "in",
    "attention": "attn",
    "self": "",
    "feedforward": "ffn",
    "feed": "",
    "forward": "ffn",
    "embeddings": "embed",
    "word": "",
}
NORM_WORDS = frozenset({"layernorm", "layer", "norm", "ln", "rmsnorm", "final", "f"})


def short_names(names: list[str]) -> list[str]:
    """Each name by the abbreviation rule above; the names with only their shared dotted
    prefix dropped (`transformer.h.0.ln_1` -> `h.0.ln_1`) where the rule would make two equal;
    control characters made visible (a log's names may hold any)."""
    short = [_abbreviate(name) for name in names]
    kept = short if len(set(short)) == len(set(names)) else _without_common_prefix(names)
    return [visible(name) for name in kept]


def table_names(names: list[str], wide: bool = False) -> list[str]:
    """The names a table shows: short (the rule above), or in full with `wide`."""
    return [visible(name) for name in names] if wide else short_names(names)


def _without_common_prefix(names: list[str]) -> list[str]:
    parts = [name.split(".") for name in names]
    common = 0
    while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    return [visible(".".join(p[common:])) for p in parts]


def _abbreviate(name: str) -> str:
    parts = name.split(".")
    index = next((i for i, p in enumerate(parts) if p.isdigit()), None)
    layer, inner = ([], parts) if index is None else ([parts[index]], parts[index + 1 :])
    if index is not None and not inner:  # the block itself
        return name
    if index is None:
        inner = parts[-1:]  # outside the blocks: the leaf names it
    words = [_abbreviate_part(p) for p in inner]
    if index is None and words[-1] == "":
        words[-1] = "final"
    if index is not None and words[-1] in ("", "final"):  # OPT's in-block `final_layer_norm`
        words[-1] = inner[-1]
    return ".".join(layer + [w for w in words if w])


def _abbreviate_part(part: str) -> str:
    """`post_attention_layernorm` -> `post_attn`, `ln_1` -> `ln_1`, `q_norm` -> `q_norm`."""
    words = [w for w in (WORD_ABBREVIATIONS.get(w, w) for w in part.split("_")) if w]
    kept = [w for w in words if w not in NORM_WORDS]
    numbered = any(w.isdigit() for w in kept)  # `ln_1_post`: `1` alone would not say ln_1
    if any(len(w) >= 2 and not w.isdigit() for w in kept) and not numbered:
        return "_".join(kept)
    if words and all(w in NORM_WORDS for w in words):  # nothing but norm words: `norm`, `ln_f`
        return "final" if "final" in words or words[-1] == "f" else ""
    return "_".join(words)


def token_label(result: StatsResult, sequence: int, token: int, width: int = 12) -> str:
    """`t12 ' fox'` (with `s1 ` in front when there are several sequences)."""
    pieces = result.input.tokens
    text = ""
    if sequence < len(pieces) and token < len(pieces[sequence]):
        text = " " + token_text(pieces[sequence][token], width)
    prefix = f"s{sequence} " if result.input.num_sequences > 1 else ""
    return f"{prefix}t{token}{text}"


def token_text(piece: str, width: int = 12) -> str:
    """A token's repr in at most `width` characters, cut with … (a table cell of fixed
    width, which then never wraps inside the token)."""
    text = repr(piece)
    return text if len(text) <= width else text[: width - 1] + "…"


# A token as token_label writes it inside a sentence: `t4 ' jumps'`, `t7 'a long…`.
TOKEN_LABEL = re.compile(r"\bt\d+ (?:'(?:[^'\\]|\\.)*?['…]|\"(?:[^\"\\]|\\.)*?[\"…])")
GLUE = "\ue000"  # a space inside a token's text while a sentence is split into words


def words_of(text: str) -> list[str]:
    """`text` split at its white space, but never inside a token's text (token_label's
    `t4 ' jumps'` is one word), so that it wraps between words only."""
    glued = TOKEN_LABEL.sub(lambda m: m.group().replace(" ", GLUE), text)
    return [word.replace(GLUE, " ") for word in glued.split()]


def place_label(result: StatsResult, at: Location, dim: int | None = None, width: int = 12) -> str:
    """`t66 '<bos>' h0 d163`: a Location (and a hidden dimension) as every table and caption
    writes it; the head only for a norm that sees heads."""
    head = f" h{at.head}" if at.head is not None else ""
    where = f" d{dim}" if dim is not None else ""
    return f"{token_label(result, at.sequence, at.token, width)}{head}{where}"


def model_name(m: ModelInfo) -> str:
    """`gpt2 (hub) · GPT2LMHeadModel`; a model handed to the API without a path is named by
    its class once: `LlamaForCausalLM (module)`."""
    cls = f" · {m.cls}" if m.cls != m.name else ""
    return f"{visible(m.name)} ({m.source}){cls}"


def header(result: NormsResult | StatsResult | AggregateResult) -> str:
    """One line saying what was inspected, on what, and where (for a corpus: how much text
    went through it)."""
    m = result.model
    line = f"{model_name(m)} · {m.dtype} · {m.device}"
    if isinstance(result, AggregateResult):
        c = result.corpus
        ranks = f" on {c.world_size} processes" if c.world_size > 1 else ""
        line += (
            f"{ranks} · {plural(len(c.files), 'file')}, {plural(c.documents, 'document')}, "
            f"{plural(c.sequences, 'sequence')} of ≤ {c.seq_len}, {c.tokens:,} tokens"
        )
    if isinstance(result, StatsResult):
        i = result.input
        sequences = plural(i.num_sequences, "sequence") + ", " if i.num_sequences != 1 else ""
        line += f" · {sequences}{plural(i.num_tokens, 'token')}"
    return line + f" · {plural(len(result.norms), 'norm')}"


def plural(count: int, noun: str) -> str:
    """`1 norm`, `2 norms`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def subtitle(model: str, text: str, width: int = 90) -> str:
    """`model · "text…"`: what every figure names under its title, in about `width` chars."""
    model, text = visible(model), visible(" ".join(text.split()))
    if len(model) > width // 2:  # a long path: keep its end, which names the model
        model = "…" + model[-(width // 2 - 1) :]
    width = max(20, width - len(model))
    snippet = " ".join(text.split())
    if len(snippet) > width:
        snippet = snippet[: width - 1] + "…"
    return f"{model} · \u201c{snippet}\u201d" if snippet else model


def figure_subtitle(result: StatsResult) -> str:
    """The model and the (start of the) text, for under every title."""
    text = "".join(result.input.tokens[0]) if result.input.tokens else ""
    return subtitle(f"{result.model.name} ({result.model.source})", text)


def titled(table: Table, title: str, caption: str | None = None) -> Group:
    """`table` with its title above and its caption below, as text that wraps at the
    terminal's width rather than at the table's (a narrow table would fold its title), and
    only between phrases: the title's ` · ` parts, the caption's `; ` parts."""
    parts: list[Phrases | Table] = [Phrases(title, " · ", "bold"), table]
    if caption:
        parts.append(Phrases(caption, "; ", "dim"))
    return Group(*parts)


class Phrases:
    """Text that breaks lines only between its phrases (at `separator`, which ends the line),
    and inside a phrase only where the phrase alone is wider than the console."""

    def __init__(self, text: str, separator: str, style: str = "") -> None:
        self.phrases = text.split(separator)
        self.separator, self.style = separator, style

    @classmethod
    def of(cls, phrases: list[str], separator: str, style: str = "") -> Phrases:
        """Phrases given one by one (a phrase may hold the separator: a token's repr)."""
        made = cls("", separator, style)
        made.phrases = phrases
        return made

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width, tail = max(1, options.max_width), self.separator.rstrip()
        joiner = self.separator[len(tail) :]
        line = ""
        for index, phrase in enumerate(self.phrases):
            piece = phrase + ("" if index == len(self.phrases) - 1 else tail)
            if line and len(line) + len(joiner) + len(piece) > width:
                yield Text(line, style=self.style)
                line = ""
            line = f"{line}{joiner}{piece}" if line else piece
            if len(line) > width:  # a phrase wider than the console: words wrap inside it
                *full, line = textwrap.wrap(line, width, break_on_hyphens=False)
                yield from (Text(f, style=self.style) for f in full)
        if line:
            yield Text(line, style=self.style)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        text = self.separator.join(self.phrases)
        return Measurement(min(len(text), max(map(len, self.phrases))), len(text))


def new_table() -> Table:
    """The tables' shared look: a rule under the header, two spaces between columns, no edge."""
    return Table(box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False, show_edge=False)


MIN_PATH = 16  # the narrowest a path is shortened to in a table


def middle(path: str, width: int) -> str:
    """`path` in at most `width` characters, cut in the middle at folder boundaries, where
    both ends name it: `/very/long/…/model.gguf` (a file name longer than that keeps its end)."""
    if len(path) <= width:
        return path
    parts = path.split("/")
    tail = parts[-1] if len(parts) > 1 else ""
    if len(tail) + 2 > width:
        return "…" + path[-(width - 1) :]
    head = ""
    for part in parts[:-1]:
        if len(head) + len(part) + 1 + len("…/") + len(tail) > width:
            break
        head += part + "/"
    return f"{head}…/{tail}"


class MiddlePath:
    """A table cell of a path (a model's) that is shortened in the middle (`middle`) to the
    width the table gives it, never folded or cut at its end; in full where it fits."""

    def __init__(self, path: str) -> None:
        self.path = visible(path)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text(middle(self.path, max(1, options.max_width)), no_wrap=True)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(min(len(self.path), MIN_PATH), len(self.path))
