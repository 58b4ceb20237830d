"""--map over a corpus: every sampled pair is the float64 map at its coordinates in the
corpus's sequences, the sample keeps its size whatever the corpus's length, and the CLI
writes the map's table and figures (`stats --file --map --plot`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from lninspect.cli import app
from lninspect.corpus.job import encoder, run_corpus_stats
from lninspect.corpus.reader import CorpusReader, expand_files
from lninspect.jobs import load
from lninspect.options import CorpusOptions, MapOptions, RunOptions
from lninspect.render.catalog import CORPUS, names_of
from tests.test_map import FLOAT32, inputs_float64

WORDS = "the quick brown fox jumps over lazy dog layer norm keeps every token steady".split()
SEQ_LEN = 16


def write_corpus(folder: Path, lines: int) -> str:
    rng = np.random.default_rng(0)
    text = [" ".join(rng.choice(WORDS, size=rng.integers(3, 15))) for _ in range(lines)]
    (folder / "part.txt").write_text("\n".join(text) + "\n")
    return str(folder / "part.txt")


def corpus_sequences(model_dir: Path, corpus: CorpusOptions) -> list[np.ndarray]:
    """The corpus's sequences in the order the job numbers them (one process)."""
    loaded = load(RunOptions(model=str(model_dir), device="cpu"))
    eos = loaded.tokenizer.hf.eos_token_id if loaded.tokenizer.hf is not None else None
    reader = CorpusReader(expand_files(corpus.files), corpus, encoder(loaded.tokenizer), eos)
    return [row for batch in reader.batches(SEQ_LEN, corpus.batch) for row in batch]


def assert_pairs_exact(model_dir: Path, sequences: list[np.ndarray], norms: list[dict]) -> None:
    """Each pair of each norm's `map` (JSON) against x and ŷ = (x - mean) / sqrt(var + eps)
    recomputed in float64 from the model's input to that norm in its sequence."""
    model = load(RunOptions(model=str(model_dir), device="cpu")).model
    found, handles = inputs_float64(model)
    try:
        with torch.no_grad():
            for ids in sequences:
                model(input_ids=torch.tensor(ids)[None])
    finally:
        for handle in handles:
            handle.remove()
    for norm in norms:
        sample = norm["map"]
        module = norm["name"].removeprefix("model.")
        calls = found[module] if module in found else found[norm["name"]]
        x = [call[0] for call in calls]  # (tokens, d) float64 per sequence
        at = np.stack([x[s][t] for s, t in zip(sample["sequence"], sample["token"], strict=True)])
        expected_x = at[np.arange(len(at)), sample["dim"]]
        np.testing.assert_allclose(sample["x"], expected_x, rtol=FLOAT32, atol=1e-6)
        expected_y = (expected_x - at.mean(-1)) / np.sqrt(at.var(-1) + 1e-5)
        np.testing.assert_allclose(sample["y"], expected_y, rtol=FLOAT32, atol=FLOAT32)


def corpus_options(pattern: str, batch: int = 3) -> CorpusOptions:
    return CorpusOptions(files=(pattern,), lines=True, seq_len=SEQ_LEN, batch_size=batch)


def test_each_pair_is_the_float64_map_of_its_sequence(tiny_model_dir: Path, tmp_path: Path):
    corpus = corpus_options(write_corpus(tmp_path, 40))
    run = RunOptions(model=str(tiny_model_dir), device="cpu", text=None)
    maps = MapOptions(sample=True, size=64, per_token=2)
    result = run_corpus_stats(run, corpus, maps=maps)
    document = json.loads(json.dumps(result.to_json()))
    norms = document["norms"]
    assert all(n["map"]["tails"] == 32 and len(n["map"]["x"]) == 64 for n in norms)
    sequences = corpus_sequences(tiny_model_dir, corpus)
    assert len(sequences) == result.corpus.sequences > 3 * corpus.batch  # several batches
    drawn = {int(s) for n in norms for s in n["map"]["sequence"]}
    assert max(drawn) >= corpus.batch  # pairs from later batches were kept
    assert_pairs_exact(tiny_model_dir, sequences, norms)
    assert all(n["map"]["alpha"] > 0 for n in norms)


def test_the_sample_keeps_its_size_whatever_the_corpus(tiny_model_dir: Path, tmp_path: Path):
    run = RunOptions(model=str(tiny_model_dir), device="cpu")
    maps = MapOptions(sample=True, size=50)
    sizes = []
    for lines in (20, 80):
        folder = tmp_path / str(lines)
        folder.mkdir()
        result = run_corpus_stats(run, corpus_options(write_corpus(folder, lines)), maps=maps)
        sizes.append({n.map.x.size for n in result.norms if n.map is not None})
        assert result.norms[0].map is not None
    assert sizes == [{50}, {50}]


def test_stats_file_map_writes_its_table_and_figures(tiny_model_dir: Path, tmp_path: Path):
    pattern = write_corpus(tmp_path, 20)
    out = tmp_path / "figures"
    args = ["stats", str(tiny_model_dir), "--file", pattern, "--lines", "--seq-len", "16"]
    done = CliRunner().invoke(
        app,
        [*args, "--map", "--map-size", "40", "--plot", "--out", str(out)],
        env={"COLUMNS": "200", "HF_HUB_OFFLINE": "1"},
    )
    assert done.exit_code == 0, done.output
    assert "the norm's map" in done.output and "40 (20)" in done.output
    written = {p.name for p in out.iterdir()}
    assert written <= set(names_of(CORPUS))
    assert {"map-fits-by-layer.png", "map-attn-pre-residual.png"} <= written
    plain = CliRunner().invoke(app, [*args, "--freeze-scale"], env={"HF_HUB_OFFLINE": "1"})
    assert plain.exit_code == 2 and "--freeze-scale" in plain.output
