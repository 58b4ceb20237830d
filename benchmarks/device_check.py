"""Exactness on an accelerator: every statistic on CUDA against the CPU and float64.

    python benchmarks/device_check.py --device cuda          # on a machine with a GPU
    python benchmarks/device_check.py --device cpu --model tiny   # a smoke run anywhere

For each model: the same tokens through the same weights (a) on the CPU in float32 with the
eager reductions, the reference run; (b) on the device in float32, eager and compiled
reductions; (c) on the device in bfloat16 with the compiled reductions, against float64
statistics of the very bf16 activations the norms saw (kept by an independent recorder).
Forward statistics and gradient norms; prints the largest relative error of each and
whether it is within the tolerance the CPU tests use (1e-5). On CUDA it also runs the hooks
under `torch.cuda.set_sync_debug_mode("error")`, so any host synchronisation inside a hook
fails the check. Needs no pytest.
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import numpy as np
import torch

from lninspect import capture, find_norms
from lninspect.model.loading import load_model

RTOL = 1e-5
SIDES = ("input", "output", "grad")


def run(model: torch.nn.Module, ids: torch.Tensor, reductions: str, keep: bool = False) -> Any:
    """Captured statistics (with gradients) of one forward + backward; optionally the
    norms' full inputs and outputs, kept by plain hooks that lninspect does not use."""
    norms = find_norms(model)
    kept: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    if keep:
        for info in norms:
            handles.append(
                info.module.register_forward_hook(
                    lambda m, a, o, name=info.name: kept.__setitem__(
                        name, (a[0].detach(), o.detach())
                    )
                )
            )
    model.zero_grad(set_to_none=True)
    with capture(model, norms, grads=True, reductions=reductions) as cap:
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    for handle in handles:
        handle.remove()
    return cap.result(), kept


def largest_error(got: Any, want: Any) -> float:
    """The largest relative error over every array of every norm (NaN where both are NaN)."""
    worst = 0.0
    for a, b in zip(got.norms, want.norms, strict=True):
        for side in SIDES:
            for key, value in vars(getattr(b, side)).items():
                if value is None or value.dtype.kind in "iu":
                    continue
                other = np.asarray(getattr(getattr(a, side), key), np.float64)
                value = np.asarray(value, np.float64)
                finite = np.isfinite(value) & np.isfinite(other)
                scale = max(np.abs(value[finite]).max(initial=0), 1e-30)
                worst = max(
                    worst, float(np.abs(other[finite] - value[finite]).max(initial=0) / scale)
                )
    return worst


def float64_error(result: Any, kept: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> float:
    """The largest relative error of the forward statistics against float64 recomputation."""
    worst = 0.0
    for norm in result.norms:
        x, y = (t.double().cpu() for t in kept[norm.name])
        mean, var = x.mean(-1), x.var(-1, correction=0)
        want = {
            "input.mean": mean,
            "input.std": (var + norm.eps).sqrt(),
            "input.rms": (x.square().mean(-1) + norm.eps).sqrt(),
            "input.absmax": x.abs().amax(-1),
            "output.mean": y.mean(-1),
            "output.std": y.std(-1, correction=0),
        }
        for path, reference in want.items():
            side, key = path.split(".")
            got = np.asarray(getattr(getattr(norm, side), key), np.float64)
            ref = reference.numpy()
            worst = max(worst, float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30)))
    return worst


def hooks_never_sync(model: torch.nn.Module, ids: torch.Tensor) -> str:
    """Run the captured forward + backward with every hook call under sync debug mode "error".

    The warm run first (compiling may query the device); then a synchronising op inside a
    reduction raises. Returns "ok" or the error.
    """
    from lninspect.hooks import fused

    run(model, ids, "auto")
    originals = fused.Reductions.stats, fused.Reductions.grad

    def strict(method: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            torch.cuda.set_sync_debug_mode("error")
            try:
                return method(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode("default")

        return wrapped

    fused.Reductions.stats, fused.Reductions.grad = strict(originals[0]), strict(originals[1])
    try:
        run(model, ids, "auto")
        return "ok"
    except RuntimeError as exc:
        return f"a hook synchronised: {exc}"
    finally:
        fused.Reductions.stats, fused.Reductions.grad = originals


def check(name: str, device: str, tokens: int) -> list[tuple[str, float]]:
    loaded = load_model(name, device="cpu", dtype="float32")
    vocab = loaded.model.config.vocab_size
    ids = torch.randint(0, vocab, (2, tokens), generator=torch.Generator().manual_seed(0))
    reference, _ = run(loaded.model, ids, "eager")
    rows = []
    on_device = copy.deepcopy(loaded.model).to(device)
    for reductions in ("eager", "compiled"):
        result, _ = run(on_device, ids.to(device), reductions)
        rows.append(
            (f"{name} float32 {device} {reductions} vs cpu", largest_error(result, reference))
        )
    bf16 = on_device.to(torch.bfloat16)
    result, kept = run(bf16, ids.to(device), "compiled", keep=True)
    rows.append(
        (
            f"{name} bfloat16 {device} compiled vs float64 of its activations",
            float64_error(result, kept),
        )
    )
    if device.startswith("cuda"):
        print(f"{name}: no host sync inside the hooks: {hooks_never_sync(bf16, ids.to(device))}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", action="append", help="default: tiny and random:gpt2")
    parser.add_argument("--tokens", type=int, default=256)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__} · {args.device}"
        + (f" · {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else "")
    )
    failed = False
    for name in args.model or ["tiny", "random:gpt2"]:
        for label, error in check(name, args.device, args.tokens):
            verdict = "ok" if error <= RTOL else "OFF"
            failed |= error > RTOL
            print(f"{label:<72}{error:>10.2e}  {verdict}")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
