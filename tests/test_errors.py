"""Hard inputs and faults, through the CLI: one line on stderr, a documented exit code, no
traceback, and output folders left as they were (docs/errors.md)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_tokenizer, tiny_gpt2
from typer.testing import CliRunner

from lninspect.cli import app
from lninspect.render.catalog import GRADS, names_of
from lninspect.results.one_text import STATS_SCHEMA
from tests import processes

runner = CliRunner()
GRAD_FIGURES = names_of(GRADS)
TEXT = "The quick brown fox jumps over the lazy dog."
ENV = {"COLUMNS": "200", "HF_HUB_OFFLINE": "1"}


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], env=ENV)


def assert_error(result, code: int, message: str) -> None:
    """Exit `code`, and stderr is exactly one `error:` line holding `message`."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and errors == lines[-1:], result.stderr
    assert message in errors[0], errors[0]


def json_doc(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# Models with something wrong, saved once for the module -----------------------------------


def save(model, folder: Path, tokenizer: bool = True) -> Path:
    model.save_pretrained(folder)
    if tokenizer:
        build_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    vocab = len(build_tokenizer())
    hot = tiny_gpt2(vocab_size=vocab)
    with torch.no_grad():  # the first MLP writes ~1e5 into the stream: over float16's 65504
        hot.transformer.h[0].mlp.c_fc.weight.mul_(3000)
        hot.transformer.h[0].mlp.c_proj.weight.mul_(3000)
    eps0 = tiny_gpt2(vocab_size=vocab)
    eps0.config.layer_norm_epsilon = 0.0
    for module in eps0.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = 0.0
    with torch.no_grad():  # byte 'A' (65) at any position: a constant vector, so std = 0
        eps0.transformer.wpe.weight.zero_()
        eps0.transformer.wte.weight[65] = 0.5
    paths = {
        "hot": save(hot, root / "hot"),
        "eps0": save(eps0, root / "eps0", tokenizer=False),
        "truncated": save(tiny_gpt2(vocab_size=vocab), root / "truncated"),
    }
    weights = paths["truncated"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return paths


# Text -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, args, message",
    [
        (None, ["--text", ""], "the text is empty"),
        (None, ["--text", " \n\t "], "the text is only whitespace (4 characters)"),
        (None, ["--text", "a\0b"], "NUL character (at character 1)"),
        (None, ["--file", "missing.txt"], "does not exist"),
        (None, ["--file", "."], "is a directory"),
        (b"", ["--file", "t.txt"], "the text is empty"),
        (b"  \n\n", ["--file", "t.txt"], "only whitespace"),
        (
            b"caf\xe9 au lait",
            ["--file", "t.txt"],
            "not valid utf-8 text (byte 3); choose the encoding with --encoding",
        ),
        ("hello".encode("utf-16-le"), ["--file", "t.txt"], "NUL character"),
        (b"hello", ["--file", "t.txt", "--encoding", "klingon"], "unknown encoding 'klingon'"),
        (b"hello", ["--file", "t.txt", "--encoding", "base64"], "not a text encoding"),
    ],
)
def test_unusable_text_is_refused_before_the_model_loads(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    content: bytes | None,
    args: list[str],
    message: str,
):
    monkeypatch.chdir(tmp_path)
    if content is not None:
        Path("t.txt").write_bytes(content)
    result = invoke("stats", "no-such-model-is-loaded", *args, "--json", "out.json")
    assert_error(result, 2, message)
    assert len(result.stderr.strip().splitlines()) == 1
    assert not Path("out.json").exists()


def test_other_encodings_read_with_encoding(tiny_model_dir: Path, tmp_path: Path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café au lait".encode("latin-1"))
    assert_error(invoke("stats", tiny_model_dir, "--file", path), 2, "--encoding")
    doc = json_doc(
        invoke("stats", tiny_model_dir, "--file", path, "--encoding", "latin-1", "--json", "-")
    )
    same = json_doc(invoke("stats", tiny_model_dir, "--text", "café au lait", "--json", "-"))
    assert doc["input"]["token_ids"] == same["input"]["token_ids"]


def test_one_token_works_for_stats_and_is_refused_by_next_token_loss(tiny_model_dir: Path):
    doc = json_doc(invoke("stats", tiny_model_dir, "--text", "x", "--json", "-"))
    assert doc["input"]["num_tokens"] == 1
    assert all(np.shape(n["input"]["std"]) == (1, 1) for n in doc["norms"])
    assert_error(invoke("grads", tiny_model_dir, "--text", "x"), 2, "needs at least 2 tokens")


def test_emoji_and_mixed_scripts(tiny_model_dir: Path):
    text = "Grüße 👋🏽 мир 世界 مرحبا\u200d नमस्ते"
    doc = json_doc(invoke("stats", tiny_model_dir, "--text", text, "--json", "-"))
    n = doc["input"]["num_tokens"]
    assert n >= len(text.encode("utf-8")) // 4 and len(doc["input"]["token_ids"][0]) == n
    assert all(np.shape(norm["input"]["std"]) == (1, n) for norm in doc["norms"])


def test_text_longer_than_the_context_is_cut_with_a_note(tiny_model_dir: Path):
    result = invoke("stats", tiny_model_dir, "--text", TEXT * 10, "--json", "-")
    assert json_doc(result)["input"]["num_tokens"] == 64  # the tiny model's n_positions
    assert "kept the first 64 (the model's context)" in result.stderr


def test_stride_reads_a_bounded_text(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    from lninspect.model import tokens

    monkeypatch.setattr(tokens, "WHOLE_TEXT_CHARS", 200)  # as a stream that never ends
    path = tmp_path / "long.txt"
    path.write_text(TEXT * 20)
    args = ("stats", tiny_model_dir, "--file", path, "--max-tokens", "16", "--stride", "8")
    assert_error(invoke(*args), 2, "longer than 200 characters, the most --stride covers")
    path.write_text(TEXT)  # within the bound: it runs
    assert invoke(*args).exit_code == 0


def test_stride_covers_the_whole_text_in_windows(tiny_model_dir: Path):
    text = TEXT * 2  # 60 tokens of this tokenizer: within the context of 64
    plain = json_doc(
        invoke("stats", tiny_model_dir, "--text", text, "--max-tokens", "16", "--json", "-")
    )
    result = invoke(
        "stats",
        tiny_model_dir,
        "--text",
        text,
        "--max-tokens",
        "16",
        "--stride",
        "10",
        "--json",
        "-",
    )
    doc = json_doc(result)
    total = json_doc(invoke("stats", tiny_model_dir, "--text", text, "--json", "-"))
    ids = total["input"]["token_ids"][0]
    windows = doc["input"]["token_ids"]
    assert all(len(w) == 16 for w in windows) and doc["input"]["num_sequences"] == len(windows)
    assert windows[0] == ids[:16] and windows[1] == ids[10:26] and windows[-1] == ids[-16:]
    assert f"{len(windows)} windows of 16 tokens, one every 10" in result.stderr
    for norm, alone in zip(doc["norms"], plain["norms"], strict=True):
        assert np.shape(norm["input"]["std"]) == (len(windows), 16)
        np.testing.assert_allclose(norm["input"]["std"][0], alone["input"]["std"][0], rtol=1e-5)
    grads = json_doc(
        invoke(
            "grads",
            tiny_model_dir,
            "--text",
            text,
            "--max-tokens",
            "16",
            "--stride",
            "10",
            "--json",
            "-",
        )
    )
    assert np.shape(grads["norms"][0]["grad"]["input_norm"]) == (len(windows), 16)
    assert_error(
        invoke("stats", tiny_model_dir, "--text", text, "--max-tokens", "8", "--stride", "9"),
        2,
        "--stride 9 is longer than the window of 8 tokens",
    )


def test_a_huge_file_is_read_only_as_far_as_the_run_needs(tiny_model_dir: Path, tmp_path: Path):
    path = tmp_path / "huge.txt"
    head = (TEXT + "\n").encode() * 50_000  # 2.3 MB, then bytes that are not UTF-8
    path.write_bytes(head + b"\xff\xfe\xff")
    result = invoke("stats", tiny_model_dir, "--file", path, "--max-tokens", "8", "--json", "-")
    assert json_doc(result)["input"]["num_tokens"] == 8
    assert "is longer than the run can use: read only its first" in result.stderr
    short = tmp_path / "short.txt"  # bad bytes just after the part used, in the same chunk
    short.write_bytes(TEXT.encode() * 10 + b"\xff")
    assert (
        json_doc(
            invoke("stats", tiny_model_dir, "--file", short, "--max-tokens", "8", "--json", "-")
        )["input"]["num_tokens"]
        == 8
    )
    assert_error(invoke("stats", tiny_model_dir, "--file", short), 2, "byte 440")
    # --stride reads the whole text, so it reaches the bad bytes at the very end
    assert_error(
        invoke("stats", tiny_model_dir, "--file", path, "--max-tokens", "8", "--stride", "8"),
        2,
        f"not valid utf-8 text (byte {len(head)})",
    )


# Models -----------------------------------------------------------------------------------


def test_model_sources_that_cannot_load(tmp_path: Path, models: dict[str, Path]):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad-config").mkdir()
    (tmp_path / "bad-config" / "config.json").write_text("{not json")
    cases = [
        (["no-such-org/no-such-model"], "is not in the Hugging Face cache"),
        ([tmp_path / "empty"], "is a directory but holds no model (no config.json)"),
        ([tmp_path / "bad-config"], "cannot load model"),
        ([tmp_path / "missing-dir/"], "does not exist"),
        (["random:no-such-arch"], "unknown architecture 'random:no-such-arch'"),
        ([models["truncated"]], "its safetensors weights are damaged"),
    ]
    for args, message in cases:
        result = runner.invoke(
            app,
            ["stats", *map(str, args), "--text", "hi"],
            env={**ENV, "HF_HOME": str(tmp_path / "hf")},
        )
        assert_error(result, 2, message)


class Payload:
    """Unpickling this runs os.system: torch.load(weights_only=True) must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickled_weights_with_code_are_refused_and_never_run(tiny_model_dir: Path, tmp_path: Path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "config.json").write_bytes((tiny_model_dir / "config.json").read_bytes())
    weights = folder / "pytorch_model.bin"
    torch.save({"transformer.wte.weight": torch.zeros(1)}, weights)
    with zipfile.ZipFile(weights) as archive:  # swap the archive's pickle for the payload
        members = {name: archive.read(name) for name in archive.namelist()}
    pickled = next(name for name in members if name.endswith("data.pkl"))
    members[pickled] = pickle.dumps({"transformer.wte.weight": Payload(marker)}, protocol=2)
    with zipfile.ZipFile(weights, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    assert_error(
        invoke("stats", folder, "--text", "hi"),
        2,
        "torch.load(weights_only=True) refused them and nothing in them ran",
    )
    assert not marker.exists()


def test_remote_code_never_runs_without_trust_remote_code(tiny_model_dir: Path, tmp_path: Path):
    marker = tmp_path / "ran"
    folder = tmp_path / "custom"
    folder.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config |= {
        "model_type": "custom_gpt",
        "auto_map": {
            "AutoConfig": "modeling_custom.Config",
            "AutoModelForCausalLM": "modeling_custom.Model",
        },
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_custom.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "from transformers import GPT2Config as Config, GPT2LMHeadModel as Model\n"
    )
    assert_error(invoke("stats", folder, "--text", "hi"), 2, "unless you pass --trust-remote-code")
    assert not marker.exists()
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"  # user strings are data
    assert invoke("stats", tiny_model_dir, "--text", code, "--max-tokens", "4").exit_code == 0
    assert not marker.exists()


def test_a_model_without_norms_is_one_line(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch):
    from lninspect import jobs

    load = jobs.load_model

    def without_norms(*args, **kwargs):
        loaded = load(*args, **kwargs)
        for block in loaded.model.transformer.h:
            block.ln_1, block.ln_2 = torch.nn.Identity(), torch.nn.Identity()
        loaded.model.transformer.ln_f = torch.nn.Identity()
        return loaded

    monkeypatch.setattr(jobs, "load_model", without_norms)
    assert_error(
        invoke("stats", tiny_model_dir, "--text", TEXT),
        2,
        "has no normalization module (no LayerNorm or RMSNorm found)",
    )


def test_a_model_without_tokenizer_uses_bytes(models: dict[str, Path]):
    result = invoke("stats", models["eps0"], "--text", "hi", "--json", "-")
    assert json_doc(result)["input"]["token_ids"] == [[104, 105]]
    assert "no tokenizer found" in result.stderr and "byte-level fallback" in result.stderr


# Numbers ----------------------------------------------------------------------------------


def test_float16_overflow_is_counted_per_module_and_the_run_completes(models: dict[str, Path]):
    result = invoke("stats", models["hot"], "--text", TEXT, "--dtype", "float16", "--json", "-")
    doc = json_doc(result)
    by_name = {n["name"]: n for n in doc["norms"]}
    first, second = by_name["transformer.h.0.ln_1"], by_name["transformer.h.1.ln_1"]
    assert sum(first["input"]["nonfinite"][0]) == 0 and None not in first["input"]["std"][0]
    counts = np.array(second["input"]["nonfinite"][0])
    assert counts.sum() > 0 and second["input"]["std"][0] == [None] * len(counts)
    assert (
        f"transformer.h.1.ln_1: {counts.sum()} non-finite inputs in {(counts > 0).sum()} tokens"
    ) in result.stderr
    assert "ln_1: " in result.stderr and "Traceback" not in result.stderr
    calm = invoke("stats", models["hot"], "--text", TEXT, "--json", "-")  # float32: no overflow
    assert "non-finite" not in calm.stderr


def test_eps_zero_and_a_constant_token_give_nan_not_a_crash(models: dict[str, Path]):
    doc = json_doc(invoke("stats", models["eps0"], "--text", "xA", "--json", "-"))
    first = doc["norms"][0]
    assert first["eps"] == 0 and first["input"]["std"][0][1] == 0  # 'A' is constant
    assert first["input"]["nonfinite"] == [[0, 0]] and first["output"]["std"][0][1] is None
    assert sum(doc["norms"][1]["input"]["nonfinite"][0]) > 0  # the NaN reaches the next norm
    result = invoke("grads", models["eps0"], "--text", "xA", "--json", "-")
    grads = json_doc(result)
    assert grads["loss"] is None
    assert "non-finite output-gradient entries" in result.stderr
    assert sum(grads["norms"][0]["grad"]["output_nonfinite"][0]) > 0


# Options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--max-tokens", "-3"],
        ["--max-tokens", "0"],
        ["--stride", "0"],
        ["--device", "gpu7"],
        ["--dtype", "float8"],
        ["--layers", "-1"],
        ["--layers", "3-1"],
        ["--layers", "one"],
        ["--layers", "0-99999"],
        ["--top-k", "0"],
        ["--spike-z", "-1"],
        ["--seed", "x"],
    ],
)
def test_invalid_options_are_refused_before_any_model_loads(
    monkeypatch: pytest.MonkeyPatch, args: list[str]
):
    from lninspect import jobs

    monkeypatch.setattr(jobs, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    result = invoke("stats", "tiny", "--text", "hi", *args)
    assert result.exit_code == 2, (args, result.output)
    assert "Invalid value" in result.stderr and "Traceback" not in result.output


def test_layers_select_blocks_and_are_checked_against_the_model(tiny_model_dir: Path):
    doc = json_doc(invoke("stats", tiny_model_dir, "--text", TEXT, "--layers", "1", "--json", "-"))
    assert [n["name"] for n in doc["norms"]] == ["transformer.h.1.ln_1", "transformer.h.1.ln_2"]
    grads = json_doc(
        invoke("grads", tiny_model_dir, "--text", TEXT, "--layers", "0-1", "--json", "-")
    )
    assert {n["layer"] for n in grads["norms"]} == {0, 1}  # no final norm
    assert {p["group"] for p in grads["params"] if p["name"].endswith("ln_f.weight")} == {
        "norm_weight"
    }  # parameters are grouped as without --layers
    assert_error(
        invoke("stats", tiny_model_dir, "--text", TEXT, "--layers", "1,2,5-7"),
        2,
        "--layers 2,5-7 is out of range: model",
    )


# Output -----------------------------------------------------------------------------------


def test_existing_figures_are_refused_without_force(tiny_model_dir: Path, tmp_path: Path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / GRAD_FIGURES[1]).write_bytes(b"mine")
    (folder / "notes.txt").write_text("keep")
    before = listing(folder)
    result = invoke("grads", tiny_model_dir, "--text", TEXT, "--plot", "--out", folder)
    assert_error(result, 2, "already exists; use --force")
    assert listing(folder) == before
    forced = invoke("grads", tiny_model_dir, "--text", TEXT, "--plot", "--out", folder, "--force")
    assert forced.exit_code == 0, forced.output
    after = listing(folder)
    assert set(after) == set(GRAD_FIGURES) | {"notes.txt"} and after["notes.txt"] == b"keep"
    assert after[GRAD_FIGURES[1]].startswith(b"\x89PNG")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "mine.txt").write_text("keep")
    assert_error(
        invoke("report", tiny_model_dir, "--out", tmp_path / "report"),
        2,
        "is not empty; use --force",
    )
    assert listing(tmp_path / "report") == {"mine.txt": b"keep"}


def test_unwritable_json_paths(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert_error(
        invoke("stats", "tiny", "--json", a_file / "out.json"),
        2,
        f"'{a_file}' is a file, not a folder",
    )
    assert_error(
        invoke("stats", "tiny", "--json", tmp_path / "nowhere" / "out.json"), 2, "does not exist"
    )
    from lninspect import files

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)  # the folder turns read-only mid-run
    target = tmp_path / "late.json"
    assert_error(
        invoke("stats", tiny_model_dir, "--text", TEXT, "--json", target),
        1,
        f"cannot write '{target}': Permission denied",
    )
    assert listing(tmp_path) == {"a-file": b"x"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o500 folder regardless")
def test_a_read_only_folder_is_refused_before_the_run(tmp_path: Path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    assert_error(invoke("stats", "tiny", "--json", folder / "out.json"), 2, "is not writable")


def test_ctrl_c_mid_run_exits_130_and_leaves_no_file(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from lninspect import files
    from lninspect.hooks.fused import Reductions

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    target = tmp_path / "stats.json"
    with monkeypatch.context() as patch:
        patch.setattr(Reductions, "stats", interrupt)  # inside the model's forward pass
        result = invoke(
            "stats",
            tiny_model_dir,
            "--text",
            TEXT,
            "--json",
            target,
            "--plot",
            "--out",
            tmp_path / "figures",
        )
    assert_error(result, 130, "interrupted")
    assert listing(tmp_path) == {}
    target.write_text("the previous run")
    monkeypatch.setattr(files.os, "replace", interrupt)  # while the JSON is being written
    result = invoke("stats", tiny_model_dir, "--text", TEXT, "--json", target, "--force")
    assert_error(result, 130, "interrupted")
    assert listing(tmp_path) == {"stats.json": b"the previous run"}  # no temporary file


def test_two_runs_writing_the_same_file(tiny_model_dir: Path, tmp_path: Path):
    target = tmp_path / "same.json"
    command = [
        sys.executable,
        "-m",
        "lninspect",
        "stats",
        str(tiny_model_dir),
        "--text",
        TEXT,
        "--json",
        str(target),
        "--force",
        "--quiet",
    ]
    env = {**os.environ, **ENV, "OMP_NUM_THREADS": "1"}
    runs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for run in runs:
        out, err = processes.communicate(run, command)
        assert run.returncode == 0, err.decode()
        assert b"Traceback" not in err
    assert json.loads(target.read_text())["schema"] == STATS_SCHEMA
    assert [p.name for p in tmp_path.iterdir()] == ["same.json"]
