"""Hard edges (issue 15): special files at output paths, runaway sizes, pipes, closed and full
stdout, signals, control characters, non-causal models, stdin, brackets, byte order marks.

The special files are made in a temporary folder (never under /dev); each case runs through
the CLI and checks the exit code, the one error line, and what is left on disk.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import build_tokenizer, tiny_gpt2
from typer.testing import CliRunner

from lninspect import capture
from lninspect.cli import app
from lninspect.folders import LOCK
from lninspect.model import memory
from lninspect.render.report import claimed_folder
from lninspect.results.one_text import STATS_SCHEMA
from tests import processes

runner = CliRunner()
TEXT = "The quick brown fox jumps over the lazy dog."
ENV = {"COLUMNS": "200", "HF_HUB_OFFLINE": "1"}


def invoke(*args: object, **kwargs):
    return runner.invoke(app, [str(a) for a in args], env=ENV, **kwargs)


def assert_error(result, code: int, message: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and message in lines[-1], result.stderr


def lninspect(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """The real entry point in a fresh process (for stdout and signal cases)."""
    env = {**os.environ, **ENV, **kwargs.pop("env", {})}
    return processes.run([sys.executable, "-m", "lninspect", *args], env=env, **kwargs)


# 1. Output paths that are not regular files ------------------------------------------------


def test_a_fifo_is_written_in_place_and_stays_a_fifo(tiny_model_dir: Path, tmp_path: Path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = invoke("stats", tiny_model_dir, "--text", TEXT, "--json", fifo, "-q")
    reader.join(30)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert json.loads(received[0])["schema"] == STATS_SCHEMA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temporary file


def test_a_process_substitution_path_is_written(tiny_model_dir: Path):
    """`--json >(jq .)`: bash passes /dev/fd/N, a pipe whose real path is `pipe:[...]`."""
    read_end, write_end = os.pipe()
    received: list[bytes] = []
    reader = threading.Thread(
        target=lambda: received.append(os.fdopen(read_end, "rb").read()), daemon=True
    )
    reader.start()
    try:
        result = invoke("stats", tiny_model_dir, "--text", TEXT, "--json", f"/dev/fd/{write_end}")
    finally:
        os.close(write_end)
    reader.join(30)
    assert result.exit_code == 0, result.output
    assert json.loads(received[0])["schema"] == STATS_SCHEMA


def test_a_character_device_is_written_in_place(tiny_model_dir: Path, tmp_path: Path):
    null = tmp_path / "mynull"
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot make a character device here ({exc.strerror}): needs root")
    result = invoke("stats", tiny_model_dir, "--text", TEXT, "--json", null, "--force", "-q")
    assert result.exit_code == 0, result.output
    assert stat.S_ISCHR(os.lstat(null).st_mode)  # not swapped for a regular file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mynull"]


def test_a_symlink_is_followed_and_stays_a_link(tiny_model_dir: Path, tmp_path: Path):
    target, link = tmp_path / "real.json", tmp_path / "link.json"
    target.write_text("old")
    link.symlink_to(target)
    refused = invoke("stats", tiny_model_dir, "--text", TEXT, "--json", link, "-q")
    assert_error(refused, 2, "already exists")
    result = invoke("stats", tiny_model_dir, "--text", TEXT, "--json", link, "--force", "-q")
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text())["schema"] == STATS_SCHEMA
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "new.json")
    result = invoke("stats", tiny_model_dir, "--text", TEXT, "--json", dangling, "-q")
    assert result.exit_code == 0 and dangling.is_symlink() and (tmp_path / "new.json").is_file()


def test_other_special_files_are_refused_before_the_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)  # a socket's path has at most 107 bytes: bind a relative one
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind("sock")
        assert_error(invoke("stats", "no-such-model-x", "--json", "sock"), 2, "is a socket")
    finally:
        server.close()
    assert_error(invoke("stats", "tiny", "--json", ""), 2, "the output path is empty")


def test_figures_are_all_written_or_none_on_a_full_disk(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from lninspect import files

    written = files._temporary
    calls = []

    def fills_up(real: Path, data: bytes) -> Path:
        calls.append(real)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return written(real, data)

    monkeypatch.setattr(files, "_temporary", fills_up)
    out = tmp_path / "figs"
    result = invoke("stats", tiny_model_dir, "--text", TEXT, "--plot", "--out", out)
    assert_error(result, 1, "No space left on device")
    assert not out.exists()  # the folder made for the figures is gone too
    assert list(tmp_path.iterdir()) == []


def test_without_force_a_file_that_appeared_during_the_run_is_kept(tmp_path: Path):
    from lninspect.errors import LninspectError
    from lninspect.files import all_or_nothing, write_atomic

    path = tmp_path / "out.json"
    with pytest.raises(LninspectError, match="appeared while this run ran"):
        with all_or_nothing(force=False):
            write_atomic(path, b"new")
            path.write_text("theirs")  # another run got there first
    assert path.read_text() == "theirs" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


# 4. Reports: SIGTERM, stale files, two runs ---------------------------------------------------


def test_sigterm_during_a_report_leaves_nothing(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "report"
    code = (
        "import os, signal, sys\n"
        "from lninspect.render import report\n"
        "def killed(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "report.save_report_figures = killed\n"
        "from lninspect.cli import main\n"
        f"sys.argv = ['lninspect', 'report', {str(tiny_model_dir)!r}, '--out', {str(out)!r}]\n"
        "main()\n"
    )
    done = processes.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
    )
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "error: terminated"
    assert list(tmp_path.iterdir()) == []  # no staging folder, no report folder, no lock


def test_report_force_removes_stale_report_files(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "report"
    out.mkdir()
    stale = "stats-within-token-spearman.png"  # a figure of an earlier version's report
    (out / stale).write_bytes(b"an older run's figure")
    (out / "mine.txt").write_text("kept")
    result = invoke("report", tiny_model_dir, "--text", TEXT, "--out", out, "--force")
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert stale not in names and "mine.txt" in names and LOCK not in names


def test_a_folder_held_by_another_run_is_refused(tmp_path: Path):
    out = tmp_path / "report"
    with claimed_folder(out, force=False):
        assert (out / LOCK).exists()
        assert_error(invoke("report", "tiny", "--out", out), 2, "being written by another")
        assert_error(invoke("report", "tiny", "--out", out, "--force"), 2, "another lninspect")
    assert not out.exists()  # made for the claim, empty, removed


# 5. capture() inside capture() -------------------------------------------------------------


def test_a_nested_capture_probe_is_not_recorded_and_fires_no_user_hook():
    model = tiny_gpt2()
    fired: list[int] = []
    handle = model.transformer.h[0].register_forward_hook(lambda m, a, o: fired.append(1))
    ids = torch.arange(10)[None]
    try:
        with capture(model) as outer:
            assert fired == [] and outer.passes == 0  # the probe of `outer` itself
            with capture(model) as inner:  # its probe runs inside `outer`
                assert fired == [] and outer.passes == 0
                model(ids)
        assert fired == [1]
        for cap in (outer, inner):
            result = cap.result()
            assert result.passes == 1
            assert all(n.calls == 1 and n.input.mean.shape == (1, 10) for n in result.norms)
        assert model.transformer.h[0]._forward_hooks  # the user's hook is still there
    finally:
        handle.remove()


# 6. Bugs that were exit 1 "unexpected" -------------------------------------------------------


def test_models_that_are_no_model(tmp_path: Path):
    assert_error(invoke("stats", "not a valid id!"), 2, "neither a model folder nor")
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0")
    assert_error(invoke("stats", a_file), 2, "is a file, not a model directory")


def test_max_memory_is_checked_before_torch_is_imported():
    code = (
        "import sys\nfrom lninspect.cli import main\n"
        "sys.argv = ['lninspect', 'stats', 'tiny', '--max-memory', 'cpu=1GiB']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "assert code == 2 and 'torch' not in sys.modules, (code, 'torch' in sys.modules)\n"
    )
    done = processes.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--max-memory needs --device-map" in done.stderr


def test_a_device_map_budget_below_the_model_is_refused():
    pytest.importorskip("accelerate")
    result = invoke("stats", "tiny", "--device-map", "auto", "--max-memory", "cpu=1KiB")
    assert_error(result, 2, "--max-memory gives 1.02 kB in all")


def test_stdout_closed_full_or_cut(tiny_model_dir: Path):
    closed = lninspect(
        "stats", str(tiny_model_dir), "--text", TEXT, "--json", "-",
        capture_output=False, stdout=None, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: os.close(1),
    )  # fmt: skip
    assert closed.returncode == 2 and "stdout is closed" in closed.stderr
    if os.path.exists("/dev/full"):
        with open("/dev/full", "w") as full:
            done = lninspect(
                "stats", str(tiny_model_dir), "--text", TEXT,
                stdout=full, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
        assert done.returncode == 1 and "No space left on device" in done.stderr
    with subprocess.Popen(
        [sys.executable, "-m", "lninspect", "stats", str(tiny_model_dir), "--text", TEXT,
         "--spikes"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **ENV},
    ) as process:  # fmt: skip
        assert process.stdout is not None and process.stderr is not None
        process.stdout.readline()
        process.stdout.close()  # `| head -1`
        error = process.stderr.read().decode()
        process.wait(300)
    assert process.returncode == 141 and "Error" not in error and "error" not in error, error


# 3. Control characters ---------------------------------------------------------------------


def test_control_characters_are_escaped_everywhere(tiny_model_dir: Path, tmp_path: Path):
    result = invoke("stats", tiny_model_dir, "--text", "evil \x1b[31mred\x1b[0m text", "--plot",
                    "--out", tmp_path / "f\x1b[2Jx")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\x1b" not in result.stderr
    assert "\\x1b" in result.stdout and "\\x1b" in result.stderr  # the folder's name, escaped
    assert "Glyph" not in result.stderr


# 7. and 8. The hub, random: architectures, non-causal models --------------------------------


def test_random_arch_without_a_hub_answer_says_what_was_tried(tmp_path: Path):
    from lninspect.model.sources import hub_answers

    hub_answers.cache_clear()
    env = {
        "COLUMNS": "200",
        "HF_HOME": str(tmp_path),
        "HF_ENDPOINT": "http://127.0.0.1:9",  # nothing listens there: refused at once
        "HF_HUB_OFFLINE": None,
        "TRANSFORMERS_OFFLINE": None,
    }
    result = runner.invoke(app, ["stats", "random:llama-nope"], env=env)
    hub_answers.cache_clear()
    assert_error(result, 2, "not in the Hugging Face cache, and the Hugging Face Hub")
    assert "http://127.0.0.1:9" in result.stderr and "Retry" not in result.output


def test_a_bert_folder_is_refused_as_not_causal(tmp_path: Path):
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    BertForMaskedLM(config).save_pretrained(tmp_path / "bert")
    build_tokenizer().save_pretrained(tmp_path / "bert")
    result = invoke("stats", tmp_path / "bert", "--text", TEXT)
    assert_error(result, 2, "(BertLMHeadModel) is not a causal language model")


# 2. Memory, before allocating -----------------------------------------------------------------


def test_a_model_larger_than_free_memory_is_refused(tmp_path: Path, monkeypatch):
    folder = tmp_path / "llama-in-gpt2"
    tiny = Path(__file__).parents[1] / "lninspect" / "bundled" / "tiny"
    folder.mkdir()
    config = json.loads((tiny / "config.json").read_text())
    config.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(memory, "available_bytes", lambda device: (20 * 10**9, "of memory is free"))
    result = invoke("stats", folder, "--text", TEXT)  # llama's defaults: 4096 wide, 32 layers
    assert_error(result, 2, "needs ~26 GB of parameters, but only 20 GB of memory")


def test_a_pass_larger_than_free_memory_is_refused(tiny_model_dir: Path, monkeypatch):
    # the model's estimate and its exact count fit; the pass does not
    free = iter([(10**9, "of memory is available")] * 2 + [(10**5, "of memory is available")])
    monkeypatch.setattr(memory, "available_bytes", lambda device: next(free))
    result = invoke("grads", tiny_model_dir, "--text", TEXT)
    assert_error(result, 2, "of activations")
    assert "fewer tokens (--max-tokens or --stride)" in result.stderr


def test_placement_sizes_are_checked_before_any_model_is_built(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: (10**9, "of memory is free"))
    result = invoke("placement", "--layers", "10000")
    assert_error(result, 2, "the placement experiment at L = 10000 needs ~")
    assert "fewer --layers" in result.stderr
    trained = invoke("placement", "--train", "--layers", "3000", "--steps", "1")
    assert_error(trained, 2, "the placement experiment at L = 3000 needs ~")
    assert "of parameter gradients" in trained.stderr  # Adam's moments counted with them


# 9, 10, 12, 13. Text in --------------------------------------------------------------------


def test_text_from_stdin_and_from_a_pipe(tiny_model_dir: Path, tmp_path: Path):
    doc = json.loads(invoke("stats", tiny_model_dir, "--file", "-", "--json", "-",
                            input=TEXT).stdout)  # fmt: skip
    assert "".join(doc["input"]["tokens"][0]) == TEXT
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(TEXT), daemon=True)
    writer.start()
    doc = json.loads(invoke("stats", tiny_model_dir, "--file", fifo, "--json", "-").stdout)
    writer.join(30)
    assert "".join(doc["input"]["tokens"][0]) == TEXT  # read once: the run saw the text


def test_a_file_name_with_brackets_is_that_file(tiny_model_dir: Path, tmp_path: Path):
    path = tmp_path / "notes[draft].txt"
    path.write_text(TEXT)
    doc = json.loads(invoke("stats", tiny_model_dir, "--file", path, "--json", "-").stdout)
    assert doc["schema"] == STATS_SCHEMA  # one text, not a corpus glob
    missing = invoke("stats", tiny_model_dir, "--file", tmp_path / "no[ne].txt")
    assert_error(missing, 2, "matches no file")


def test_byte_order_marks(tiny_model_dir: Path, tmp_path: Path):
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffHi there".encode())
    doc = json.loads(invoke("stats", tiny_model_dir, "--file", bom, "--json", "-").stdout)
    assert "".join(doc["input"]["tokens"][0]) == "Hi there"
    wide = tmp_path / "u16.txt"
    wide.write_text("Hi there", encoding="utf-16")
    assert_error(invoke("stats", tiny_model_dir, "--file", wide), 2, "use --encoding utf-16")


def test_no_tokenizer_length_warning_even_for_long_text(tiny_model_dir: Path):
    result = invoke("stats", tiny_model_dir, "--text", TEXT * 20, "-q")
    assert result.exit_code == 0 and result.output == ""


# 15. Help and usage ------------------------------------------------------------------------


def test_help_and_usage_edges():
    alone = invoke()
    assert alone.exit_code == 0 and "Usage: lninspect" in alone.stdout and not alone.stderr
    helped = invoke("stats", "--help")
    assert "<bool>" not in helped.stdout and "--spikes " in helped.stdout
    debug = invoke("--debug", "stats", "tiny", "--text", "")
    assert debug.exit_code == 2 and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("error: the text is empty")


def test_one_norm_is_not_plural():
    from lninspect.render.format import plural

    assert plural(1, "norm") == "1 norm" and plural(2, "norm") == "2 norms"


def test_signal_handler_is_installed_only_by_main():
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.default_int_handler)
