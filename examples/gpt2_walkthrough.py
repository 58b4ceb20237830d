"""A notebook-style walk through GPT-2's LayerNorm statistics, with the Python API.

Uses gpt2 from the Hugging Face cache when it is there, otherwise the model bundled with
lninspect (`tiny`, a small trained GPT-2), so it runs offline. Each step prints what it shows.

    .venv/bin/python examples/gpt2_walkthrough.py [MODEL]
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from lninspect import capture, load_model
from lninspect.model.text import SAMPLE_TEXT


def main(spec: str) -> None:
    # 1. Load the model and its tokenizer with the same code path as the CLI.
    loaded = load_model(spec, device="cpu")
    ids = loaded.tokenizer.encode(SAMPLE_TEXT)
    print(f"{loaded.info.name}: {loaded.info.cls}, {len(ids)} tokens", *loaded.notes, sep="\n")

    # 2. One forward pass inside `capture`: every norm reduces to per-token statistics.
    with torch.inference_mode(), capture(loaded.model) as cap:
        loaded.model(torch.tensor([ids]))
    result = cap.result()
    print(f"{len(result.norms)} norms, each with {result.norms[0].input.std.size} per-token stds")

    # 3. The residual stream grows with depth: the median std at ln_1 layer by layer.
    ln_1 = [n for n in result.norms if n.role == "attn"]
    print("median std at ln_1 per layer:", " ".join(f"{np.median(n.input.std):.3g}" for n in ln_1))

    # 4. The first token is special in trained GPT-2 (very large activations there).
    last = ln_1[-1].input
    print(
        f"last ln_1: first token std {last.std[0, 0]:.3g}, others median "
        f"{np.median(last.std[0, 1:]):.3g}; largest |x| {last.absmax.max():.3g} in dim "
        f"{last.absmax_dim.flat[last.absmax.argmax()]}"
    )

    # 5. LayerNorm hands on a steady scale: the output std of ln_f per token.
    ln_f = result.norms[-1]
    print(
        f"{ln_f.name}: output std median {np.median(ln_f.output.std):.3g}, "
        f"input std median {np.median(ln_f.input.std):.3g}"
    )


if __name__ == "__main__":
    from lninspect.model.sources import default_model

    main(sys.argv[1] if len(sys.argv) > 1 else default_model()[0])
