"""Corpus throughput: tokens/s of `lninspect stats --file` against bare batched forward passes.

    .venv/bin/python benchmarks/throughput.py                      # random:gpt2, CPU
    .venv/bin/python benchmarks/throughput.py --device cuda --seq-len 1024 --batch-size 16
    /tmp/tlvenv/bin/python benchmarks/throughput.py --peer   # + TransformerLens (see docs)

lninspect: the whole corpus path after loading: read the files, tokenize, pack, batch,
forward inside `capture`, drain and aggregate every batch, build the result. Bare: the same
batches (tokenized beforehand, already on the device) through the same model call,
`logits_to_keep=1` included, under inference mode. "capture hooks only" runs the bare
batches inside `capture` and drops the records: the hooks' own cost (benchmarks/overhead.py),
apart from what reading and aggregating add. Median of interleaved repeats; goal: ratio
>= 0.95. With --peer (in a venv where TransformerLens is installed, never a dependency of
lninspect): TransformerLens 4's TransformerBridge over a copy of the same model,
`run_with_cache` restricted to its LayerNorm hooks against its own bare forward, on the
same batches. Printed only.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lninspect.corpus.aggregator import Aggregator
from lninspect.corpus.job import encoder, forward_kwargs, sequence_length, stream
from lninspect.corpus.reader import CorpusReader
from lninspect.hooks.capture import capture
from lninspect.jobs import model_norms
from lninspect.model.loading import LoadedModel, load_model
from lninspect.options import CorpusOptions

GOAL = 0.95
WORDS = (
    "the of and to in is that for it as with was on be by this are from at or an "
    "normalization layer token model residual stream attention block weight scale mean "
    "variance language transformer output input hidden dimension sequence"
).split()


def write_corpus(folder: Path, documents: int, words: int, seed: int = 0) -> list[Path]:
    """Plain-text files of random English words, one document per line."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(4):
        lines = [" ".join(rng.choice(WORDS, size=words)) for _ in range(documents // 4)]
        path = folder / f"part{i}.txt"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], int], device: torch.device) -> tuple[float, int]:
    """(seconds, tokens) of one run."""
    synchronize(device)
    start = time.perf_counter()
    tokens = fn()
    synchronize(device)
    return time.perf_counter() - start, tokens


def corpus_reader(loaded: LoadedModel, paths: list[Path], options: CorpusOptions) -> CorpusReader:
    """The reader that `lninspect stats --file` builds for this model."""
    eos = getattr(loaded.tokenizer.hf, "eos_token_id", None) if loaded.tokenizer.hf else None
    return CorpusReader(
        paths, options, encoder(loaded.tokenizer), eos, loaded.model.config.vocab_size
    )


def make_runs(
    loaded: LoadedModel,
    paths: list[Path],
    options: CorpusOptions,
    seq_len: int,
    batches: list[torch.Tensor],
    reductions: str = "auto",
) -> dict[str, Callable[[], int]]:
    """The bare forward passes over `batches` and the lninspect corpus run that makes them."""
    model, device = loaded.model, loaded.device
    norms = model_norms(loaded)
    extra = forward_kwargs(model)

    def bare() -> int:
        with torch.inference_mode():
            for ids in batches:
                model(input_ids=ids, use_cache=False, **extra)
        return sum(b.numel() for b in batches)

    def hooks_only() -> int:  # capture's hooks, records dropped: what aggregation adds is the rest
        with torch.inference_mode(), capture(model, norms, reductions=reductions) as cap:
            for ids in batches:
                model(input_ids=ids, use_cache=False, **extra)
                cap.drain()
        return sum(b.numel() for b in batches)

    def lninspect() -> int:
        aggregator = Aggregator(norms, seq_len, device)
        reader = corpus_reader(loaded, paths, options)
        batches = reader.batches(seq_len, options.batch)
        stream(loaded, aggregator, batches, None, lambda _: None, reductions=reductions)
        aggregator.norm_results()
        return aggregator.tokens

    return {
        "bare forward": bare,
        "capture hooks only": hooks_only,
        "lninspect stats --file": lninspect,
    }


def peer_runs(
    loaded: LoadedModel, batches: list[torch.Tensor], folder: Path
) -> dict[str, Callable[[], int]]:
    """TransformerLens 4 (TransformerBridge over a copy of the same HF model, eager attention as
    it requires): its bare forward, and run_with_cache restricted to its LayerNorm hooks."""
    from transformer_lens.model_bridge import TransformerBridge

    model = copy.deepcopy(loaded.model)
    model.config.save_pretrained(folder)
    tokenizer = loaded.tokenizer.hf if loaded.tokenizer.hf is not None else _byte_tokenizer()
    bridge = TransformerBridge.boot_transformers(
        str(folder), hf_model=model, tokenizer=tokenizer, device=str(loaded.device)
    )
    ln_hooks = [name for name in bridge.hook_dict if ".ln" in name or name.startswith("ln_final")]
    tokens = sum(b.numel() for b in batches)

    def bare() -> int:
        with torch.inference_mode():
            for ids in batches:
                bridge(ids)
        return tokens

    def cached() -> int:
        with torch.inference_mode():
            for ids in batches:
                bridge.run_with_cache(ids, names_filter=lambda name: name in ln_hooks)
        return tokens

    return {
        "TransformerLens bare forward": bare,
        f"TransformerLens run_with_cache({len(ln_hooks)} LN hooks)": cached,
    }


def _byte_tokenizer() -> Any:
    """A stand-in tokenizer for a bridge over a model without one (the ids are given anyway)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {chr(i): i for i in range(256)}
    inner = Tokenizer(models.WordLevel(vocab, unk_token=chr(0)))
    inner.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=inner, eos_token=chr(0), unk_token=chr(0))


def measure(
    runs: dict[str, Callable[[], int]], device: torch.device, repeats: int
) -> dict[str, float]:
    """Median tokens/s per run; repeats interleave the runs so that they share the drift."""
    for fn in runs.values():  # warm-up
        fn()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            seconds, tokens = timed(fn, device)
            rates[name].append(tokens / seconds)
    return {name: statistics.median(values) for name, values in rates.items()}


def report(rates: dict[str, float]) -> None:
    print(f"{'run':<48}{'tokens/s':>12}")
    for name, rate in rates.items():
        print(f"{name:<48}{rate:>12,.0f}")
    ratio = rates["lninspect stats --file"] / rates["bare forward"]
    hooks = rates["capture hooks only"] / rates["bare forward"]
    print(f"\n{'capture hooks only / bare':<48}{hooks:>12.3f}")
    print(
        f"{'lninspect / bare':<48}{ratio:>12.3f}   goal >= {GOAL}: "
        f"{'ok' if ratio >= GOAL else 'MISSED'}"
    )
    cached = [name for name in rates if name.startswith("TransformerLens run_with_cache")]
    if cached:
        peer = rates[cached[0]] / rates["TransformerLens bare forward"]
        print(f"{'TransformerLens cached / its bare':<48}{peer:>12.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:gpt2")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--reductions", default="auto", choices=("auto", "eager", "compiled"))
    parser.add_argument("--peer", action="store_true", help="also time TransformerLens")
    args = parser.parse_args()

    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    seq_len = sequence_length(loaded, args.seq_len)
    options = CorpusOptions(lines=True, batch_size=args.batch_size, max_sequences=args.sequences)
    with tempfile.TemporaryDirectory() as folder:
        paths = write_corpus(Path(folder), documents=4 * args.sequences, words=seq_len // 2)
        batches = [
            torch.from_numpy(b).to(loaded.device)
            for b in corpus_reader(loaded, paths, options).batches(seq_len, options.batch)
        ]
        runs = make_runs(loaded, paths, options, seq_len, batches, args.reductions)
        if args.peer:
            peer_folder = Path(folder) / "peer"
            runs |= peer_runs(loaded, batches, peer_folder)
        print(
            f"{args.model} · {loaded.info.cls} · {args.dtype} on {loaded.device} · "
            f"{args.sequences} sequences x {seq_len} tokens, batches of {args.batch_size} · "
            f"reductions {args.reductions} · "
            f"{torch.get_num_threads()} threads · torch {torch.__version__}"
        )
        report(measure(runs, loaded.device, args.repeats))


if __name__ == "__main__":
    main()
