"""`torchrun --nproc_per_node 2` on the CPU (gloo) gives the aggregates of one process, and a
map sample (--map) whose every pair is exact at its place in the corpus's sequences."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lninspect.cli import app
from lninspect.options import CorpusOptions
from tests import processes
from tests.test_corpus_map import assert_pairs_exact, corpus_sequences

pytest.importorskip("torch.distributed")
WORDS = "the quick brown fox jumps over lazy dog layer norm keeps every token steady".split()


def torchrun() -> list[str]:
    script = Path(sys.executable).with_name("torchrun")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "torch.distributed.run"]


def write_corpus(folder: Path) -> str:
    rng = np.random.default_rng(0)
    for i in range(3):
        lines = [" ".join(rng.choice(WORDS, size=rng.integers(3, 15))) for _ in range(12)]
        (folder / f"part{i}.txt").write_text("\n".join(lines) + "\n")
    return str(folder / "part*.txt")


def test_two_processes_equal_one(tiny_model_dir: Path, tmp_path: Path):
    if not shutil.which("torchrun") and not Path(sys.executable).with_name("torchrun").exists():
        pytest.skip("torchrun is not installed")
    corpus = write_corpus(tmp_path)
    args = [
        "stats",
        str(tiny_model_dir),
        "--file",
        corpus,
        "--lines",
        "--seq-len",
        "16",
        "--batch-size",
        "3",
        "--device",
        "cpu",
        "--spikes",
        "--map",
        "--map-size",
        "64",
    ]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env |= {"HF_HUB_OFFLINE": "1", "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    two = tmp_path / "two.json"
    done = processes.run(
        [
            *torchrun(),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "lninspect",
            *args,
            "--json",
            str(two),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split().count("0.ln_1") == 2  # rank 0 alone prints (two tables)

    one = tmp_path / "one.json"
    single = CliRunner().invoke(app, [*args, "--json", str(one)], env=env)
    assert single.exit_code == 0, single.output
    assert_same(json.loads(two.read_text()), json.loads(one.read_text()))
    assert_map_merged(tiny_model_dir, corpus, json.loads(two.read_text()))


def assert_map_merged(model_dir: Path, pattern: str, two: dict) -> None:
    """The ranks' samples merged into one of the sample's size, drawn from both ranks'
    sequences (rank r's i-th is the corpus's r + 2i), each pair exact at its place."""
    norms = two["norms"]
    assert all(len(n["map"]["x"]) == 64 and n["map"]["tails"] == 32 for n in norms)
    parities = {int(s) % 2 for n in norms for s in n["map"]["sequence"]}
    assert parities == {0, 1}
    options = CorpusOptions(files=(pattern,), lines=True, seq_len=16, batch_size=3)
    assert_pairs_exact(model_dir, corpus_sequences(model_dir, options), norms)


def assert_same(two: dict, one: dict) -> None:
    """Equal aggregates: counts exactly, moments to 1e-6, histograms but for a value on an edge."""
    assert two["corpus"]["world_size"] == 2 and one["corpus"]["world_size"] == 1
    for key in ("documents", "sequences", "tokens"):
        assert two["corpus"][key] == one["corpus"][key]
    for a, b in zip(two["norms"], one["norms"], strict=True):
        assert a["name"] == b["name"]
        for hist in ("denominator_hist", "spike_count_hist"):  # a value may sit on a bin edge
            counts = [np.array(h[hist]["counts"]) for h in (a, b)]
            assert counts[0].sum() == counts[1].sum() and abs(counts[0] - counts[1]).sum() <= 2
        for key, moments in b["positions"].items():
            assert a["positions"][key]["count"] == moments["count"]
            for field in ("mean", "m2", "min", "max"):
                np.testing.assert_allclose(
                    np.array(a["positions"][key][field], dtype=float),
                    np.array(moments[field], dtype=float),
                    rtol=1e-6,
                    atol=1e-6,
                    err_msg=f"{a['name']} {key}",
                )
