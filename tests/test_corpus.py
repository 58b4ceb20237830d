"""Corpus mode: reading and cutting a corpus, streaming aggregation, the CLI and --device-map."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lninspect.cli import app
from lninspect.corpus.aggregator import DENOMINATOR_EDGES, Aggregator
from lninspect.corpus.reader import CorpusReader, expand_files
from lninspect.errors import LninspectError
from lninspect.hooks.capture import capture
from lninspect.norms.discovery import find_norms
from lninspect.options import CorpusOptions
from lninspect.results.aggregate import AGGREGATE_SCHEMA, AggregateResult, Histogram, Moments
from lninspect.results.one_text import STATS_SCHEMA
from lninspect.statistics import AGGREGATED_KEYS

runner = CliRunner()
LINES = [
    "the quick brown fox jumps over the lazy dog",
    "layer norm keeps every token steady",
    "a language model predicts the next token",
]


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200", "HF_HUB_OFFLINE": "1"})


def write_corpus(folder: Path, files: int = 3, lines: int = 6) -> list[Path]:
    paths = []
    for i in range(files):
        path = folder / f"doc{i}.txt"
        path.write_text("\n".join(LINES[(i + j) % 3] for j in range(lines)) + "\n")
        paths.append(path)
    return paths


def chars(text: str) -> list[int]:
    return [ord(c) for c in text]


# Reading -----------------------------------------------------------------------------------


def test_globs_expand_sorted_without_repeats(tmp_path: Path):
    paths = write_corpus(tmp_path)
    found = expand_files([str(tmp_path / "doc*.txt"), str(paths[0])])
    assert found == paths
    with pytest.raises(LninspectError, match="matches no file"):
        expand_files([str(tmp_path / "*.jsonl")])
    with pytest.raises(LninspectError, match="directory"):
        expand_files([str(tmp_path)])
    with pytest.raises(LninspectError, match="does not exist"):
        expand_files([str(tmp_path / "missing.txt")])


def test_documents_are_files_lines_or_jsonl_fields(tmp_path: Path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("one\n\ntwo\n")
    b.write_text("three\n")
    whole = CorpusReader([a, b], CorpusOptions(), chars)
    assert list(whole.documents()) == ["one\n\ntwo\n", "three\n"]
    lines = CorpusReader([a, b], CorpusOptions(lines=True), chars)
    assert [d.strip() for d in lines.documents()] == ["one", "two", "three"]
    assert lines.document_count == 3 and lines.bytes_read == lines.total_bytes
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"text": "x y"}\n\n{"text": "z", "id": 2}\n')
    assert list(CorpusReader([jsonl], CorpusOptions(field="text"), chars).documents()) == [
        "x y",
        "z",
    ]
    for bad, message in (
        ('{"body": "x"}', "no field 'text'"),
        ("not json", "not a JSON line"),
        ('{"text": 3}', "is int, not text"),
    ):
        jsonl.write_text('{"text": "fine"}\n' + bad + "\n")
        with pytest.raises(LninspectError, match=f"c.jsonl:2: .*{message}"):
            list(CorpusReader([jsonl], CorpusOptions(field="text"), chars).documents())


def test_a_document_that_never_ends_is_refused(tmp_path: Path, monkeypatch):
    from lninspect.corpus import reader

    monkeypatch.setattr(reader, "MAX_DOCUMENT_CHARS", 50)  # as /dev/zero, within the test
    path = tmp_path / "a.txt"
    path.write_text("short line\n" + "x" * 80 + "\n")
    with pytest.raises(LninspectError, match="a.txt': a document longer than 50 characters"):
        list(CorpusReader([path], CorpusOptions(), chars).documents())
    lines = CorpusReader([path], CorpusOptions(lines=True), chars).documents()
    assert next(lines) == "short line"
    with pytest.raises(LninspectError, match="a.txt:2: a document longer than 50 .* lines"):
        next(lines)


def test_documents_are_packed_with_eos_and_cut_into_sequences(tmp_path: Path):
    path = tmp_path / "a.txt"
    path.write_text("abc\ndefgh\n")
    reader = CorpusReader([path], CorpusOptions(lines=True), chars, eos=0)
    sequences = [s.tolist() for s in reader.sequences(4)]
    assert sequences == [chars("abc") + [0], chars("defg"), chars("h") + [0]]
    batches = list(reader.batches(seq_len=4, batch_size=8))
    assert [b.shape for b in batches] == [(2, 4), (1, 2)]  # the short one in a batch of its own


def test_ranks_share_the_sequences_of_one_process(tmp_path: Path):
    paths = write_corpus(tmp_path)
    options = CorpusOptions(lines=True, max_sequences=7)

    def rows(rank: int, world: int) -> list[list[int]]:
        reader = CorpusReader(paths, options, chars)
        return [row.tolist() for b in reader.batches(8, 2, rank, world) for row in b]

    single = rows(0, 1)
    assert len(single) == 7
    shards = rows(0, 2) + rows(1, 2)
    assert sorted(shards) == sorted(single) and rows(0, 2) == single[0::2]


def test_vocabulary_is_checked_while_reading(tmp_path: Path):
    path = tmp_path / "a.txt"
    path.write_text("é")
    with pytest.raises(LninspectError, match="outside the model's vocabulary"):
        list(CorpusReader([path], CorpusOptions(), chars, vocab_size=128).sequences(4))


def test_corpus_mode_is_asked_for_by_its_options():
    assert not CorpusOptions(files=("a.txt",)).requested
    assert CorpusOptions(files=("a.txt", "b.txt")).requested
    assert CorpusOptions(files=("data/*.txt",)).requested
    assert CorpusOptions(files=("a.txt",), seq_len=64).requested
    assert CorpusOptions(files=("a.txt",), batch_size=8).requested


# Aggregation -------------------------------------------------------------------------------


def captured_batches(model: torch.nn.Module, batches: list[torch.Tensor]):
    """Per-call records of every batch, drained after each, and the same kept in full."""
    norms = find_norms(model)
    drained = []
    with torch.inference_mode(), capture(model, norms) as cap:
        for ids in batches:
            model(ids)
            drained.append(cap.drain())
            assert all(not calls for calls in cap._hooks.forward.values())  # nothing kept
    return norms, drained


def test_aggregates_match_numpy_on_every_token(tiny_model: torch.nn.Module):
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 300, (3, 12), generator=generator) for _ in range(3)]
    batches.append(torch.randint(0, 300, (1, 5), generator=generator))  # a short last sequence
    norms, drained = captured_batches(tiny_model, batches)
    aggregator = Aggregator(norms, positions=12, device=torch.device("cpu"))
    size = sum(t.numel() for t in (aggregator.count, aggregator.mean, aggregator.m2))
    for records, ids in zip(drained, batches, strict=True):
        aggregator.update(records, tuple(ids.shape))
    assert sum(t.numel() for t in (aggregator.count, aggregator.mean, aggregator.m2)) == size
    assert (aggregator.sequences, aggregator.tokens) == (10, 113)
    result = aggregator.norm_results()
    for norm in result:
        per_batch = [r[norm.name][0]["std"].numpy().astype(np.float64) for r in drained]
        for position in (0, 4, 11):
            values = np.concatenate([b[:, position] for b in per_batch if b.shape[1] > position])
            moments = norm.positions["std"]
            assert moments.count[position] == len(values)
            np.testing.assert_allclose(moments.mean[position], values.mean(), rtol=1e-12)
            np.testing.assert_allclose(moments.std[position], values.std(), rtol=1e-9)
            assert moments.min[position] == values.min() and moments.max[position] == values.max()
        every = np.concatenate([b.ravel() for b in per_batch])
        assert norm.denominator_hist.total == every.size
        assert abs(norm.denominator_hist.quantile(0.5) / np.median(every) - 1) < 0.06
        assert norm.calls == len(batches)


def test_non_finite_values_are_counted_and_left_out():
    norms = find_norms(torch.nn.Sequential(torch.nn.LayerNorm(4)))
    aggregator = Aggregator(norms, positions=3, device=torch.device("cpu"))
    std = torch.tensor([[1.0, float("nan"), 2.0], [3.0, 4.0, float("inf")]])
    record = {k: std.clone() for k in AGGREGATED_KEYS}
    aggregator.update({norms[0].name: [record]}, (2, 3))
    moments = aggregator.norm_results()[0].positions["std"]
    assert moments.nonfinite == 2
    assert moments.count.tolist() == [2, 1, 1]
    np.testing.assert_allclose(moments.mean, [2.0, 4.0, 2.0])
    assert aggregator.norm_results()[0].denominator_hist.total == 4


def test_moments_pool_positions_like_one_sample():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(50, 6))
    moments = Moments(
        count=np.full(6, 50),
        mean=values.mean(0),
        m2=((values - values.mean(0)) ** 2).sum(0),
        min=values.min(0),
        max=values.max(0),
    )
    count, mean, std = moments.pooled(1)
    assert count == 250
    np.testing.assert_allclose([mean, std], [values[:, 1:].mean(), values[:, 1:].std()])


def test_histogram_quantiles_interpolate_in_log_bins():
    values = np.logspace(-2, 2, 1001)
    counts, _ = np.histogram(values, DENOMINATOR_EDGES)
    hist = Histogram(edges=DENOMINATOR_EDGES, counts=counts)
    for q in (0.1, 0.5, 0.9):
        assert abs(hist.quantile(q) / np.quantile(values, q) - 1) < 0.06
    assert np.isnan(Histogram(edges=DENOMINATOR_EDGES, counts=counts * 0).quantile(0.5))


# End to end --------------------------------------------------------------------------------


def test_cli_corpus_json_round_trips(tiny_model_dir: Path, tmp_path: Path):
    write_corpus(tmp_path)
    path, png = tmp_path / "agg.json", tmp_path / "png"
    result = invoke(
        "stats",
        str(tiny_model_dir),
        "--file",
        str(tmp_path / "doc*.txt"),
        "--lines",
        "--seq-len",
        "16",
        "--batch-size",
        "4",
        "--spikes",
        "--json",
        str(path),
        "--plot",
        "--out",
        str(png),
    )
    assert result.exit_code == 0, result.output
    assert "0.ln_1" in result.stdout and "pos 0" in result.stdout
    assert "spikes/token" in result.stdout
    doc = json.loads(path.read_text())
    assert doc["schema"] == AGGREGATE_SCHEMA
    assert doc["corpus"]["documents"] == 18 and doc["corpus"]["seq_len"] == 16
    first = doc["norms"][0]
    assert set(first["positions"]) == {*AGGREGATED_KEYS, "spike_count"}
    assert set(first["positions"]["std"]) == {"count", "mean", "m2", "min", "max", "nonfinite"}
    assert len(first["positions"]["std"]["mean"]) == 16
    assert sum(first["positions"]["std"]["count"]) == doc["corpus"]["tokens"]
    loaded = AggregateResult.from_json(doc)
    assert loaded.to_json() == doc
    image = np.asarray(Image.open(io.BytesIO((png / "corpus-std-per-position.png").read_bytes())))
    assert image.std() > 0


def test_one_file_alone_keeps_single_text_mode(tiny_model_dir: Path, tmp_path: Path):
    (tmp_path / "one.txt").write_text(LINES[0])
    result = invoke(
        "stats", str(tiny_model_dir), "--file", str(tmp_path / "one.txt"), "--json", "-"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["schema"] == STATS_SCHEMA


def test_corpus_mode_refuses_text_and_empty_corpora(tiny_model_dir: Path, tmp_path: Path):
    paths = write_corpus(tmp_path, files=2)
    both = invoke(
        "stats",
        str(tiny_model_dir),
        "--text",
        "hi",
        "--file",
        str(paths[0]),
        "--file",
        str(paths[1]),
    )
    assert both.exit_code == 2 and "not both" in both.output
    (tmp_path / "empty.txt").write_text("\n\n")
    empty = invoke("stats", str(tiny_model_dir), "--file", str(tmp_path / "empty.txt"), "--lines")
    assert empty.exit_code == 2 and "no text" in empty.output


def test_device_map_goes_through_accelerate(tiny_model_dir: Path, tmp_path: Path):
    pytest.importorskip("accelerate")
    write_corpus(tmp_path, files=2)
    path = tmp_path / "agg.json"
    result = invoke(
        "stats",
        str(tiny_model_dir),
        "--file",
        str(tmp_path / "doc*.txt"),
        "--seq-len",
        "16",
        "--device-map",
        "auto",
        "--max-memory",
        "cpu=1GiB",
        "--json",
        str(path),
    )
    assert result.exit_code == 0, result.output
    assert "device map" in result.output
    plain = tmp_path / "plain.json"
    assert (
        invoke(
            "stats",
            str(tiny_model_dir),
            "--file",
            str(tmp_path / "doc*.txt"),
            "--seq-len",
            "16",
            "--device",
            "cpu",
            "--json",
            str(plain),
        ).exit_code
        == 0
    )
    mapped, single = json.loads(path.read_text()), json.loads(plain.read_text())
    np.testing.assert_allclose(
        mapped["norms"][2]["positions"]["std"]["mean"],
        single["norms"][2]["positions"]["std"]["mean"],
        rtol=1e-6,
    )
    refused = invoke(
        "stats", "random:gpt2", "--file", str(tmp_path / "doc*.txt"), "--device-map", "auto"
    )
    assert refused.exit_code == 2 and "random:" in refused.output


def test_progress_a_bar_on_a_terminal_lines_on_a_pipe():
    from rich.console import Console

    from lninspect.cli.progress import CorpusProgress, StepProgress

    for terminal, enabled, shown in ((True, True, True), (False, True, True), (True, False, False)):
        buffer = io.StringIO()
        console = Console(file=buffer, force_terminal=terminal, width=150)
        with CorpusProgress(console, enabled=enabled, delay=0.0, interval=0.0) as progress:
            progress.update(tokens=4096, bytes_read=50, total_bytes=100)
        assert ("tok/s" in buffer.getvalue()) == shown, (terminal, enabled)
    now = [0.0]  # an injected clock: step k happens at second k
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=80)
    with StepProgress(console, delay=0.0, interval=3.0, clock=lambda: now[0]) as steps:
        for step in range(1, 13):
            now[0] = float(step)
            steps.update(step, 12, "seed 0: pre-LN")
    lines = buffer.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["3", "6", "9", "12"]  # every 3 seconds
    assert lines[0] == "3 of 12 steps (25%) · seed 0: pre-LN · 0:03 elapsed"
    assert all("elapsed" in line and "\x1b" not in line for line in lines)  # plain text


def test_one_document_is_not_read_in_full_at_the_first_batch(tmp_path: Path):
    from lninspect.corpus.reader import CorpusReader
    from lninspect.options import CorpusOptions

    path = tmp_path / "one.txt"
    path.write_text("abcdefgh" * 64)
    reader = CorpusReader([path], CorpusOptions(files=(str(path),)), lambda t: list(t.encode()))
    sequences = reader.sequences(64)
    next(sequences)
    assert 0 < reader.bytes_read < reader.total_bytes / 2
    list(sequences)
    assert reader.bytes_read == reader.total_bytes


@pytest.mark.parametrize("bos", ["auto", "yes", "no"])
def test_bos_applies_to_every_document_of_a_corpus(tiny_model_dir: Path, tmp_path: Path, bos: str):
    """--bos in corpus mode: each document's ids are those of a one-text run (the first token
    of every document, and so of every sequence that starts one, is the BOS with `yes`)."""
    from lninspect.corpus.job import encoder
    from lninspect.model.tokenizer import Tokenizer
    from lninspect.options import RunOptions
    from tests.conftest import build_tokenizer

    tokenizer = build_tokenizer()
    lines = ["The quick brown fox", "jumps over", "the lazy dog"]
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(lines) + "\n")
    plain = [tokenizer(line)["input_ids"] for line in lines]  # this tokenizer adds no BOS
    first = tokenizer.bos_token_id
    want = {"auto": plain, "no": plain, "yes": [[first, *ids] for ids in plain]}[bos]
    encode = encoder(Tokenizer(tokenizer), RunOptions(model="tiny", bos=bos))
    reader = CorpusReader([corpus], CorpusOptions(lines=True), encode)
    assert list(reader.token_ids()) == want
    result = CliRunner().invoke(
        app,
        ["stats", str(tiny_model_dir), "--file", str(corpus), "--lines", "--bos", bos]
        + ["--seq-len", "8", "--json", "-", "-q"],
    )
    assert result.exit_code == 0, result.output
    eos = 0 if tokenizer.eos_token_id is None else 1  # each document ends with one
    assert json.loads(result.stdout)["corpus"]["tokens"] == sum(len(ids) + eos for ids in want)
