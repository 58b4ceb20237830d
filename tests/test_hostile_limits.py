"""Hostile inputs of issue 27: bounded memory and time on every input, the right exit code.

Most cases call the library layer directly (fast); a few go through the CLI on the tiny model.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import words

from lninspect.errors import LninspectError
from lninspect.files import check_target, write_json
from lninspect.folders import LOCK, claim_folder, write_folder
from lninspect.norms.discovery import find_norms
from tests.test_hostile import assert_error, invoke

TEXT = "The quick brown fox jumps over the lazy dog."
NAMES = ("index.html",)


def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


# 12. Long names ------------------------------------------------------------------------------


def test_a_255_byte_json_name_is_written(tmp_path: Path):
    target = tmp_path / ("a" * 250 + ".json")
    check_target(str(target), force=False)
    write_json(str(target), {"x": 1})
    assert json.loads(target.read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_name_too_long_is_refused_before_the_run(tiny_model_dir: Path, tmp_path: Path):
    with pytest.raises(LninspectError, match="at most 255"):
        check_target(str(tmp_path / ("a" * 256)), force=False)
    result = invoke("stats", tiny_model_dir, "--text", TEXT, "--json", tmp_path / ("b" * 260))
    assert_error(result, 2, "at most 255")


def test_a_report_folder_of_a_250_byte_name_is_written(tmp_path: Path):
    folder = tmp_path / ("r" * 250)

    def build(staging: Path) -> list[str]:
        (staging / "index.html").write_text("page")
        return ["index.html"]

    with claim_folder(folder, NAMES, force=False):
        write_folder(folder, build, lambda name: name in NAMES)
    assert sorted(p.name for p in folder.iterdir()) == ["index.html"]


# 13. Stale locks -----------------------------------------------------------------------------


def test_a_lock_names_its_process_and_host(tmp_path: Path):
    folder = tmp_path / "r"
    with claim_folder(folder, NAMES, force=False):
        assert (folder / LOCK).read_text().split() == [str(os.getpid()), socket.gethostname()]
    assert not folder.exists()


def test_a_killed_runs_lock_and_staging_are_taken_over(tmp_path: Path):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / LOCK).write_text(f"{dead_pid()} {socket.gethostname()}\n")
    (folder / ".lninspect-abc.tmp").mkdir()
    (folder / ".lninspect-abc.tmp" / "stats.png").write_bytes(b"half")
    with claim_folder(folder, NAMES, force=False):
        assert [p.name for p in folder.iterdir()] == [LOCK]
    assert list(folder.iterdir()) == []


def test_a_lock_that_names_no_process_needs_force(tmp_path: Path):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / LOCK).write_bytes(b"")  # kill -9 between the lock's creation and its write
    with pytest.raises(LninspectError, match="force=True"):
        with claim_folder(folder, NAMES, force=False):
            pass
    with claim_folder(folder, NAMES, force=True):
        pass
    assert list(folder.iterdir()) == []


def test_a_living_runs_lock_is_refused_even_with_force(tmp_path: Path):
    folder = tmp_path / "r"
    with claim_folder(folder, NAMES, force=False):
        with pytest.raises(LninspectError, match=f"process {os.getpid()}"):
            with claim_folder(folder, NAMES, force=True):
                pass


def test_a_report_folder_in_a_symlink_loop_says_so(tmp_path: Path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(LninspectError, match="symlink loop"):
        with claim_folder(loop / "r", NAMES, force=False):
            pass


# 2, 9, 10. The watch log: bounded, every field checked, order noted -------------------------

RECORD = {
    "schema": "lninspect.watch/1",
    "step": 1,
    "loss": 1.0,
    "lr": 0.1,
    "norms": [],
    "params": [],
    "mode": "train",
    "tokens": 8,
}


def write_log(path: Path, *records: object) -> Path:
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"step": "abc"}, "step: expected an integer"),
        ({"step": None}, "step: expected an integer"),
        ({"step": True}, "step: expected an integer"),
        ({"step": 1.5}, "step: expected an integer"),
        ({"step": 10**30}, "outside"),
        ({"step": -4}, "outside"),
        ({"mode": 5}, "mode: expected a string"),
        ({"norms": [{"name": ["x"]}]}, "name: expected a string"),
        ({"norms": "x"}, "norms: expected a list"),
    ],
)
def test_a_log_record_of_wrong_types_is_refused(tmp_path: Path, change: dict, message: str):
    from lninspect.results.watch import read_log

    log = write_log(tmp_path / "log.jsonl", RECORD, {**RECORD, **change})
    with pytest.raises(LninspectError, match="line 2 is not") as caught:
        read_log(log)
    assert message in str(caught.value)


def test_a_log_of_infinite_step_deep_nesting_or_huge_numbers_is_refused(tmp_path: Path):
    from lninspect.results.watch import read_log

    for text, message in [
        ('{"schema": "lninspect.watch/1", "step": 1e999}\n', "expected an integer"),
        ("[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply"),
        ('{"step": ' + "9" * 5000 + "}\n", "digits"),
    ]:
        with pytest.raises(LninspectError, match=message):
            read_log(write_log(tmp_path / "log.jsonl", text))


def test_a_device_or_a_huge_line_is_refused_not_read_whole(monkeypatch, tmp_path: Path):
    from lninspect.results import watch

    monkeypatch.setattr(watch, "MAX_LINE_BYTES", 1000)
    with pytest.raises(LninspectError, match="longer than"):
        watch.read_log(Path("/dev/zero"))
    monkeypatch.setattr(watch, "MAX_LOG_BYTES", 1000)
    log = write_log(tmp_path / "log.jsonl", *[RECORD] * 20)
    with pytest.raises(LninspectError, match="larger than"):
        watch.read_log(log)


def test_steps_out_of_order_are_noted_and_a_folder_without_log_named(tmp_path: Path):
    from lninspect.results.watch import read_log

    found = read_log(write_log(tmp_path / "log.jsonl", {**RECORD, "step": 3}, RECORD))
    assert "step 1 after 3" in found.notes[0]
    with pytest.raises(LninspectError, match="holds no lninspect-watch.jsonl"):
        read_log(tmp_path)


# 2, 4, 9. Text and corpus -------------------------------------------------------------------


def test_a_text_file_without_end_is_refused(monkeypatch):
    from lninspect.model import text

    monkeypatch.setattr(text, "MAX_TEXT_CHARS", 1 << 16)
    with pytest.raises(LninspectError, match="longer than 65,536 characters"):
        text.read_text(None, Path("/dev/zero"))


def test_undecodable_command_line_bytes_and_closed_stdin_are_refused(monkeypatch):
    from lninspect.model.text import read_text

    with pytest.raises(LninspectError, match="not valid UTF-8"):
        read_text(os.fsdecode(b"abc\xff"), None)
    monkeypatch.setattr(sys, "stdin", None)
    with pytest.raises(LninspectError, match="stdin is closed"):
        read_text(None, Path("-"))


def test_a_fifo_text_is_announced(tmp_path: Path, caplog):
    import threading

    from lninspect.model.text import read_text

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text("hello world"), daemon=True)
    writer.start()
    with caplog.at_level("WARNING", logger="lninspect"):
        assert read_text(None, fifo).text == "hello world"
    writer.join(10)
    assert "waiting for a writer" in caplog.text


def test_a_symlink_loop_is_not_missing(tmp_path: Path):
    from lninspect.model.text import read_text

    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(LninspectError, match="symlink loop"):
        read_text(None, loop)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"text": ' + "9" * 5000 + "}", "digits"),
    ],
)
def test_a_corpus_line_too_deep_or_too_long_a_number_is_refused(tmp_path, line, message):
    from lninspect.corpus.reader import _json_field

    with pytest.raises(LninspectError, match=message):
        _json_field(tmp_path / "c.jsonl", 1, line, "text")


def test_a_json_fifo_without_reader_says_it_waits(tmp_path: Path):
    import logging
    import threading

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []

    class StartReader(logging.Handler):  # the reader comes once the wait is announced
        def emit(self, record: logging.LogRecord) -> None:
            self.message = record.getMessage()
            threading.Thread(target=lambda: received.append(fifo.read_bytes())).start()

    handler = StartReader()
    logging.getLogger("lninspect").addHandler(handler)
    try:
        write_json(str(fifo), {"x": 1})
    finally:
        logging.getLogger("lninspect").removeHandler(handler)
    assert "waiting for a reader" in handler.message
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(10)
    assert json.loads(received[0]) == {"x": 1}


# 3, 9, 16. A model folder's config, checked before anything is built -------------------------


@pytest.fixture(scope="module")
def config_base() -> dict:
    from lninspect.model.sources import BUNDLED_DIR

    return json.loads((BUNDLED_DIR / "tiny" / "config.json").read_text())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("null", "a JSON object is expected"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ({"n_head": 0}, "'n_head' is 0"),
        ({"n_layer": "twelve"}, "'n_layer' is 'twelve', not a whole number"),
        ({"n_layer": 2.5}, "not a whole number"),
        ({"n_layer": -1}, "between 1 and"),
        ({"n_layer": 1_000_000}, "between 1 and"),
        ({"n_embd": 10**9}, "between 1 and"),
        ({"n_embd": 90}, "does not split into 4 attention heads"),
        ({"num_key_value_heads": 3}, "'n_head' is 4, which does not split into 3 key/value"),
        ({"layer_norm_epsilon": -1}, "'layer_norm_epsilon' is -1, not a number >= 0"),
        ({"layer_norm_epsilon": "1e-5"}, "'layer_norm_epsilon' is '1e-5', not a number >= 0"),
    ],
)
def test_a_bad_config_is_one_sentence(tmp_path: Path, config_base: dict, text, message: str):
    from lninspect.model.checks import check_folder

    body = text if isinstance(text, str) else json.dumps({**config_base, **text})
    (tmp_path / "config.json").write_text(body)
    with pytest.raises(LninspectError, match=message) as caught:
        check_folder(tmp_path, "m")
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"num_attention_heads": 3}, "its config is not valid (The hidden size (4096) is not"),
        ({"num_attention_heads": 0}, "'num_attention_heads' is 0, but a model's heads"),
        ({"rms_norm_eps": -1.0}, "'rms_norm_eps' is -1.0, not a number >= 0"),
    ],
)
def test_a_llama_config_of_bad_heads_or_eps_is_exit_2(tmp_path: Path, config: dict, message):
    """A width left to its default (4096) is checked by transformers' validators: exit 2 too."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", **config}))
    result = invoke("norms", tmp_path, "--device", "cpu")
    assert_error(result, 2, message)


def test_a_shard_index_leaving_the_folder_is_refused(tmp_path: Path):
    from lninspect.model.checks import check_folder

    (tmp_path / "config.json").write_text("{}")
    index = {"weight_map": {"w": "../../../../etc/passwd"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(LninspectError, match="outside the folder"):
        check_folder(tmp_path, "m")


def test_a_deep_config_is_sized_from_its_numbers(config_base: dict):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from lninspect.model.checks import estimated_parameters
    from lninspect.model.memory import parameter_bytes

    small = GPT2Config(**{**config_base, "n_layer": 3})
    exact = parameter_bytes(lambda: GPT2LMHeadModel(small), torch.float32) // 4
    assert abs(estimated_parameters(small) - exact) <= 0.01 * exact  # biases aside, the same
    deep = GPT2Config(**{**config_base, "n_layer": 100_000})
    assert estimated_parameters(deep) > 10**10  # refused as memory, never built


def test_missing_weights_are_an_error(tmp_path: Path, config_base: dict):
    import shutil

    from lninspect.model.sources import BUNDLED_DIR

    folder = tmp_path / "m"
    shutil.copytree(BUNDLED_DIR / "tiny", folder)
    (folder / "config.json").write_text(json.dumps({**config_base, "n_layer": 13}))
    result = invoke("stats", folder, "--text", TEXT)
    assert_error(result, 2, "lacks 12 weights the config asks for")


# 6. What libraries and logs say reaches the terminal escaped, one note each -----------------


def test_warnings_and_transformers_records_are_one_escaped_note(capsys):
    import logging
    import warnings

    from lninspect.cli.console import Output, library_notes

    for debug in (False, True):
        with library_notes(Output(), debug):
            warnings.warn("overflow \x1b[2J encountered\nin divide", RuntimeWarning, stacklevel=1)
            report = (
                "\x1b[1mGPT2 LOAD REPORT\x1b[0m from: m\nKey | Status\nh.0.\x1b]0;x\x07 | MISSING"
            )
            logging.getLogger("transformers.modeling_utils").warning(report)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 2 and "\x1b" not in err, err
        assert lines[0].startswith("RuntimeWarning: overflow \\x1b[2J encountered")
        assert lines[1].startswith("transformers: GPT2 LOAD REPORT from: m")
        assert ("MISSING" in lines[1]) == debug and ("more lines" in lines[1]) != debug


def test_norm_names_of_a_log_are_escaped_in_run(tmp_path: Path):
    quantiles = {k: 1.0 for k in ("q05", "q25", "q50", "q75", "q95", "max")}
    norm = {
        "name": "h.0.ln_1\x1b[2J\x1b]0;title\x07",
        "layer": 0,
        "role": "attn_in",
        "input_denominator": quantiles,
        "output_std": quantiles,
        "grad_scale": quantiles,
        "absmax": 1.0,
        "absmax_dim": 0,
    }
    log = write_log(
        tmp_path / "log.jsonl", {**RECORD, "norms": [norm]}, {**RECORD, "step": 2, "norms": [norm]}
    )
    result = invoke("run", log)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\\x1b[2J" in result.stdout


# 7, 8. The watcher: disarmed for good, a raised pass dropped, a torn line cut -----------------


def _ref_model():
    import torch

    from lninspect.placement.refgpt import GPT, RefGPTConfig

    torch.manual_seed(0)
    return GPT(RefGPTConfig(vocab_size=64, context=32, layers=2, d_model=16, heads=2))


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_a_step_after_the_block_arms_nothing(tmp_path: Path):
    import torch

    import lninspect
    from lninspect.results.watch import read_log

    model, ids = _ref_model(), torch.randint(0, 64, (2, 8))
    with lninspect.watch(model, every=1, log_dir=tmp_path) as w:
        model.loss(ids).backward()
        w.step()
    w.step()  # stray
    assert _hooks(model) == 0
    model.loss(ids).backward()
    w.step()
    assert _hooks(model) == 0 and read_log(tmp_path).steps == [0]


def test_a_pass_that_raised_is_not_mixed_into_the_record(tmp_path: Path):
    import torch

    import lninspect
    from lninspect.results.watch import read_log

    model, ids = _ref_model(), torch.randint(0, 64, (1, 8))
    norm = find_norms(model)[2].module
    calls: list[int] = []

    def fails_once(module, args, output):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory, say")

    norm.register_forward_hook(fails_once)
    with lninspect.watch(model, every=1, log_dir=tmp_path) as w:
        with pytest.raises(RuntimeError):
            model.loss(ids)
        model.loss(ids).backward()  # the loop retries
        w.step()
    assert read_log(tmp_path).records[0].tokens == 7  # 8 ids, 7 inputs; mixed: 14


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"start_step": -5}, "start_step"),
        ({"start_step": 1.5}, "start_step"),
        ({"text": [1, 2, 3], "max_tokens": -1}, "max_tokens"),
        ({"text": [1, 999]}, "vocabulary"),
    ],
)
def test_watch_options_are_checked(tmp_path: Path, options: dict, message: str):
    import lninspect

    with pytest.raises(LninspectError, match=message):
        with lninspect.watch(_ref_model(), log_dir=tmp_path, **options):
            pass


def test_resuming_cuts_a_torn_last_line(tmp_path: Path, caplog):
    import torch

    import lninspect
    from lninspect.results.watch import LOG_NAME, read_log

    model, ids = _ref_model(), torch.randint(0, 64, (1, 8))
    with lninspect.watch(model, every=1, log_dir=tmp_path) as w:
        model.loss(ids).backward()
        w.step()
    with (tmp_path / LOG_NAME).open("ab") as log:
        log.write(b'{"schema": "lninspect.watch/1", "st')  # a full disk mid-write
    with caplog.at_level("WARNING", logger="lninspect"):
        with lninspect.watch(model, every=1, log_dir=tmp_path, resume=True, start_step=1) as w:
            model.loss(ids).backward()
            w.step()
    assert "cut a torn last line" in caplog.text
    assert read_log(tmp_path).steps == [0, 1]


# 1. --stride sized before its windows are built ----------------------------------------------


def test_a_stride_run_beyond_memory_is_refused_first(monkeypatch):
    from lninspect.model import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: (30 << 20, "is free"))
    text = " ".join(["the quick brown fox jumps over the lazy dog"] * 250)
    result = invoke("stats", "tiny", "--text", text, "--max-tokens", 16, "--stride", 1)
    assert_error(result, 2, "windows of 16 tokens needs")


# 14, 15. A SIGTERM that a finalizer swallowed; --max-memory of a missing device ---------------


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_sigterm_swallowed_by_a_finalizer_still_exits_143(monkeypatch, capsys):
    import importlib
    import signal

    cli_app = importlib.import_module("lninspect.cli.app")

    class Finalized:
        def __del__(self) -> None:
            cli_app._terminate(signal.SIGTERM, None)  # Python prints "Exception ignored"

    def run(**kwargs) -> int:
        Finalized()
        return 0

    previous = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(cli_app, "app", run)
    monkeypatch.setattr(cli_app, "_SIGNALS", [])
    try:
        with pytest.raises(SystemExit) as done:
            cli_app.main()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert done.value.code == 143
    assert capsys.readouterr().err.strip().endswith("error: terminated")


def test_max_memory_of_a_missing_device_is_a_usage_error():
    pytest.importorskip("accelerate")
    import torch

    if torch.cuda.device_count() > 7:
        pytest.skip("eight GPUs")
    result = invoke(
        "stats", "tiny", "--text", TEXT, "--device-map", "auto", "--max-memory", "cuda:7=1GiB"
    )
    assert_error(result, 2, "device 'cuda:7' is not available")


def test_a_seed_out_of_range_and_a_huge_placement_are_refused_first():
    assert_error(invoke("stats", "tiny", "--text", TEXT, "--seed", 10**23), 2, "outside 0..2**64-1")
    assert_error(invoke("placement", "--d-model", 10**12), 2, "TB of parameters")


# 5, 17. Model code's prints kept off stdout; options that do nothing are said -----------------


def test_ignored_options_are_noted_and_prints_kept_off_stdout(tiny_model_dir: Path, monkeypatch):
    from lninspect.model import loading

    def chatty():
        print("running the folder's own code")  # as custom modeling code may
        return original()

    original = loading._auto_model
    monkeypatch.setattr(loading, "_auto_model", chatty)
    result = invoke(
        "grads",
        tiny_model_dir,
        "--text",
        TEXT,
        "--target",
        " fox",
        "--revision",
        "v1",
        "--json",
        "-",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["schema"].startswith("lninspect.grads/")
    assert "running the folder's own code" in result.stderr
    assert "--target is used by --loss target only" in result.stderr
    assert "--revision v1 ignored" in result.stderr


# 11. Messages that say what is wrong ----------------------------------------------------------


def test_a_damaged_tokenizer_and_unreadable_weights_are_named(tmp_path: Path):
    import shutil

    from lninspect.model.sources import BUNDLED_DIR

    folder = tmp_path / "m"
    shutil.copytree(BUNDLED_DIR / "tiny", folder)
    (folder / "tokenizer.json").write_text("{garbage")
    assert_error(invoke("stats", folder, "--text", TEXT), 2, "tokenizer.json is damaged")
    if os.geteuid() != 0:  # root reads anything
        (folder / "model.safetensors").chmod(0)
        assert_error(invoke("stats", folder, "--text", TEXT), 2, "is not readable")


def test_a_model_folder_or_figure_folder_in_a_symlink_loop_says_so(tmp_path: Path):
    from lninspect.files import make_folder
    from lninspect.model.sources import locate

    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(LninspectError, match="symlink loop"):
        locate(str(loop))
    with pytest.raises(LninspectError, match="symlink loop"):
        make_folder(loop / "r")


def assert_usage(result, message: str) -> None:
    """A usage error as Typer's runner shows it (the real entry point makes it one line)."""
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert message in words(result.stderr), result.stderr


@pytest.mark.parametrize("command", [("stats", "tiny"), ("run", "log.jsonl")])
def test_out_without_plot_or_empty_is_refused(command: tuple[str, str]):
    assert_usage(invoke(*command, "--out", "figures"), "add --plot, or drop --out")
    assert_usage(invoke(*command, "--plot", "--out", ""), "the folder name is empty")


def test_report_out_empty_and_revision_on_tiny_are_said():
    assert_usage(invoke("report", "tiny", "--out", ""), "the folder name is empty")
    result = invoke("norms", "tiny", "--revision", "v1")
    assert result.exit_code == 0, result.output
    assert "--revision v1 ignored: 'tiny' is not a Hugging Face Hub model" in result.stderr


@pytest.fixture(scope="module")
def tiny_grads():
    from lninspect.jobs import run_grads
    from lninspect.options import RunOptions

    return run_grads(RunOptions(model="tiny", text=TEXT, device="cpu"))


def test_the_same_model_twice_has_no_differences(tiny_grads):
    from lninspect.comparison import compare_results
    from lninspect.render.compare_tables import differences_title

    compared = compare_results([tiny_grads, tiny_grads], ["tiny", "./tiny"])
    assert compared.differences == [] and differences_title(compared) == "no differences from A"
    assert "B (./tiny) gives exactly the numbers of A (tiny) on every norm" in compared.notes[-1]


def test_norms_that_differ_by_name_only_say_so(tiny_grads):
    import dataclasses

    from lninspect.comparison import compare_results

    norms = tiny_grads.norms
    renamed = [dataclasses.replace(n, name=n.name.replace("ln_", "norm_")) for n in norms]
    other = dataclasses.replace(tiny_grads, norms=renamed)
    compared = compare_results([tiny_grads, other], ["a", "b"])
    first = tiny_grads.norms[0].name
    expected = f"but {first!r} in A is {first.replace('ln_', 'norm_')!r} in B"
    assert compared.matching == "relative depth" and expected in compared.notes[0]
    assert " vs " not in compared.notes[0] and compared.notes[-1].startswith("B (b) gives")


# 11. A full disk names the user's path, never a temporary one ---------------------------------

FULL = OSError(28, "No space left on device")


def test_a_full_disk_names_the_path_given_not_the_staged_file(monkeypatch, tmp_path: Path):
    from lninspect import files

    (tmp_path / "data").mkdir()
    link = tmp_path / "out.json"
    link.symlink_to(tmp_path / "data" / "real.json")

    def full_rename(source, target) -> None:
        raise OSError(28, "No space left on device", str(source), None, str(target))

    def full_temporary(real: Path, data: bytes) -> Path:
        raise OSError(28, "No space left on device", str(real.parent / ".lninspect-x.tmp"))

    with monkeypatch.context() as patch:
        patch.setattr(files.os, "replace", full_rename)
        patch.setattr(files.os, "link", full_rename)
        for force in (True, False):  # renamed over, or linked as new
            with pytest.raises(LninspectError) as caught, files.all_or_nothing(force):
                write_json(str(link), {"x": 1})
            assert str(caught.value) == f"cannot write '{link}': No space left on device"
    monkeypatch.setattr(files, "_temporary", full_temporary)
    with pytest.raises(LninspectError, match=f"cannot write '{link}': No space left on device"):
        write_json(str(link), {"x": 1})
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data", "out.json"]


def test_a_full_disk_while_a_report_is_built_names_its_folder(monkeypatch, tmp_path: Path):
    from lninspect import files

    def build(staging: Path) -> list[str]:
        files.write_atomic(staging / "index.html", b"page")  # as a figure is saved
        return ["index.html"]

    monkeypatch.setattr(files.os, "replace", lambda a, b: (_ for _ in ()).throw(FULL))
    folder = tmp_path / "r"
    with pytest.raises(LninspectError) as caught:
        with claim_folder(folder, NAMES, force=False):
            write_folder(folder, build, lambda name: name in NAMES)
    assert str(caught.value) == f"cannot write the report into '{folder}': No space left on device"
    assert list(tmp_path.iterdir()) == []


# 6. A tensor name with terminal escapes in the weights -----------------------------------------


def test_a_tensor_name_with_escapes_is_one_escaped_line(tiny_model_dir: Path, tmp_path: Path):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    weights = load_file(folder / "model.safetensors")
    weights["transformer.h.0.\x1b[2J\x1b]0;owned\x07evil"] = torch.zeros(2)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    quiet = invoke("stats", folder, "--text", TEXT, "-q")
    assert quiet.exit_code == 0 and quiet.stderr == "", quiet.output
    for debug in ((), ("--debug",)):  # the report's lines shown only under --debug
        result = invoke(*debug, "norms", folder)
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output and "\x07" not in result.output, result.output
        report = [line for line in result.stderr.splitlines() if "LOAD REPORT" in line]
        assert len(report) == 1 and ("\\x1b[2J" in report[0]) == bool(debug), result.stderr


# 6. Rich markup in a name is shown as written, never interpreted -----------------------------


def test_markup_in_norm_names_is_shown_literally(tmp_path: Path):
    from lninspect.render.format import short_names

    quantiles = {k: 1.0 for k in ("q05", "q25", "q50", "q75", "q95", "max")}
    names = ["[bold]h.0.ln_1[/bold]", "[red]", "h.1.ln_1[/]"]
    norms = [
        {"name": name, "layer": layer, "role": "attn_in", "input_denominator": quantiles,
         "output_std": quantiles, "grad_scale": quantiles, "absmax": 1.0, "absmax_dim": 0}
        for layer, name in enumerate(names)
    ]  # fmt: skip
    grown = [{**n, "input_denominator": {k: 9.0 for k in quantiles}} for n in norms]  # a jump
    records = [{**RECORD, "step": s, "norms": norms} for s in range(1, 6)]
    log = write_log(tmp_path / "log.jsonl", *records, {**RECORD, "step": 6, "norms": grown})
    result = invoke("run", log)
    assert result.exit_code == 0, result.output
    shown = short_names(names)
    assert "[/bold]" in shown[0] and shown[1] == "[red]" and "[/]" in shown[2]
    rows = [line.split() for line in result.stdout.splitlines()]
    for name in shown:  # a row of the run table, one of the jumps table
        assert sum(name in row for row in rows) == 2, result.stdout


# Issue 24, 4: a long run on a pipe says how far it got ---------------------------------------


def test_a_piped_corpus_run_prints_plain_progress_lines(monkeypatch):
    from lninspect.cli import progress
    from lninspect.model.sources import BUNDLED_DIR

    monkeypatch.setattr(progress, "DELAY_SECONDS", 0.0)
    monkeypatch.setattr(progress, "PIPE_INTERVAL", 0.0)  # a line after every batch
    text = BUNDLED_DIR / "text"
    files = ("--file", text / "README.md", "--lines")
    args = ("--seq-len", 16, "--batch-size", 2, "--max-sequences", 6)
    result = invoke("stats", "tiny", *files, *args)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("corpus: ")]
    assert len(lines) == 3 and "\x1b" not in result.stderr, result.stderr  # 6 sequences, 3 batches
    assert all(" tokens · " in line and line.endswith(" elapsed") for line in lines), lines


# Issue 24, 5: norms draws every random weight once, and finds the same norms ----------------


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_norms_of_random_weights_draws_each_once_same_result(tmp_path: Path, monkeypatch, family):
    import torch
    from transformers import GPT2Config, LlamaConfig

    from lninspect.jobs import describe_norms
    from lninspect.model import loading
    from lninspect.options import RunOptions

    small = {"vocab_size": 64, "bos_token_id": 0, "eos_token_id": 0}
    config = (
        GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=32, **small)
        if family == "gpt2"
        else LlamaConfig(num_hidden_layers=2, hidden_size=16, intermediate_size=32,
                         num_attention_heads=2, num_key_value_heads=1, **small)
    )  # fmt: skip
    config.save_pretrained(tmp_path)
    options = RunOptions(model=f"random:{tmp_path}", device="cpu")
    drawn: list[int] = []
    normal = torch.Tensor.normal_

    def counted(tensor, *args, **kwargs):
        if not tensor.is_meta:  # the memory check's build on the meta device draws nothing
            drawn.append(tensor.numel())
        return normal(tensor, *args, **kwargs)

    def norms(full: bool) -> tuple[dict, int]:
        original = loading._random_model
        with monkeypatch.context() as patch:
            patch.setattr(torch.Tensor, "normal_", counted)
            if full:  # as every other command builds random: weights
                patch.setattr(loading, "_random_model", lambda c, t, _: original(c, t, False))
            drawn.clear()
            return describe_norms(options).to_json(), sum(drawn)

    (fast, values), (full, all_values) = norms(False), norms(True)
    assert fast == full
    assert 0 < values < all_values  # the constructors' draws skipped, the init's kept
