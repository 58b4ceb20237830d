"""Every command of README.md and docs/commands.md runs as written (issue 15).

Commands are read from the documents themselves: the lines of README.md's code blocks that
call lninspect, and the `lninspect ...` spans of docs/commands.md. They run offline in a
temporary folder with what they name: `tiny` for gpt2 (and gpt2@main, and an omitted model),
a saved tiny model for ./my-checkpoint and the other local model folders, small text files for
notes.txt and corpus/*.txt, a short watch log for runs/a, and the placement experiment at its
smallest settings (a documented command is tested for its code path, not for its default
size), and each is checked for what it wrote: JSON that parses, PNGs that are not blank, a
report's index.html.
"""

from __future__ import annotations

import ast
import builtins
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from lninspect.cli import app
from lninspect.results.watch import LOG_NAME

ROOT = Path(__file__).parents[1]
TEXT = "Layer normalization keeps every token at a steady scale. " * 4
SMALL_PLACEMENT = {"--d-model": "16", "--heads": "2", "--seeds": "1", "--seq-len": "16"}
SMALL_TRAINING = {
    "--layers": "2",
    "--batch": "2",
    "--steps": "4",
    "--warmup": "2",
    "--lr": "1e-3",
    "--eval-every": "2",
    "--stats-every": "2",
}
LOCAL_MODELS = {"./my-checkpoint", "./ckpt-1000", "./ckpt-2000", "./base", "./finetuned"}
GOLDEN_WATCH = Path(__file__).parent / "golden" / "watch.json"
runner = CliRunner()


def readme_commands() -> list[str]:
    blocks = re.findall(r"```\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if re.match(r"(cat \S+ \| )?lninspect ", line)]


def commands_md_commands() -> list[str]:
    spans = re.findall(r"`(lninspect [^`]*)`", (ROOT / "docs" / "commands.md").read_text())
    return sorted({span for span in spans if "..." not in span})


COMMANDS = [("README.md", c) for c in readme_commands()] + [
    ("docs/commands.md", c) for c in commands_md_commands()
]


def test_the_documents_have_commands():
    assert len(readme_commands()) >= 9 and len(commands_md_commands()) >= 6


def runnable(command: str, checkpoint: Path) -> tuple[list[str], str | None]:
    """The arguments after `lninspect`, with the stand-ins, and the text piped in (if any)."""
    piped = None
    if command.startswith("cat "):
        name, command = command.removeprefix("cat ").split(" | ", 1)
        piped = Path(name).read_text()
    words = shlex.split(command, comments=True)[1:]
    words = ["tiny" if w in ("gpt2", "gpt2@main", "[MODEL]") else w for w in words]
    words = [str(checkpoint) if w in LOCAL_MODELS else w for w in words]
    words = ["runs/a" if w == "LOG" else w for w in words]
    if words[:1] == ["placement"]:
        small = SMALL_PLACEMENT | (SMALL_TRAINING if "--train" in words else {})
        words += [
            word
            for option, value in small.items()
            if option not in words
            for word in (option, value)
        ]
    return words, piped


def written(folder: Path) -> dict[Path, int]:
    """Every file below `folder`, with the time it was last written."""
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def assert_wrote_what_it_promises(args: list[str], before: dict[Path, int], folder: Path) -> None:
    """JSON that parses, PNGs that are not blank, a report's page: whatever the command names."""
    new = [p for p, t in written(folder).items() if before.get(p) != t]
    if "--json" in args and args[args.index("--json") + 1] != "-":
        assert any(p.suffix == ".json" and "schema" in json.loads(p.read_text()) for p in new)
    if "--plot" in args:
        pngs = [p for p in new if p.suffix == ".png"]
        assert pngs, f"no PNG written: {args}"
        for png in pngs:
            with Image.open(png) as image:
                low, high = image.convert("L").getextrema()
                assert high > low, f"{png.name} is blank"
    if args[:1] == ["report"]:
        assert any(p.name == "index.html" for p in new), f"no report page: {args}"


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    """A folder per document (its commands run in order, as a reader would), with the files
    the commands name."""
    folders = {}
    for source in ("README.md", "docs/commands.md"):
        folder = tmp_path_factory.mktemp(source.replace("/", "-"))
        (folder / "notes.txt").write_text(TEXT)
        (folder / "corpus").mkdir()
        for name in ("a.txt", "b.txt"):
            (folder / "corpus" / name).write_text(TEXT * 3)
        (folder / "runs" / "a").mkdir(parents=True)
        record = json.loads(GOLDEN_WATCH.read_text())  # one line of a watch log, three steps
        lines = [json.dumps(record | {"step": step}) + "\n" for step in (0, 10, 20)]
        (folder / "runs" / "a" / LOG_NAME).write_text("".join(lines))
        folders[source] = folder
    return folders


@pytest.mark.parametrize("source, command", COMMANDS, ids=[c for _, c in COMMANDS])
def test_every_documented_command_runs(
    source: str,
    command: str,
    workdirs: dict[str, Path],
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    folder = workdirs[source]
    monkeypatch.chdir(folder)
    args, piped = runnable(command, tiny_model_dir)
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(folder / "hf-home"), "COLUMNS": "80"}
    before = written(folder)
    result = runner.invoke(app, args, env=env, input=piped)
    assert result.exit_code == 0, f"{source}: {command}\n{result.output}"
    assert "Traceback" not in result.output
    assert_wrote_what_it_promises(args, before, folder)


def test_every_name_of_the_readme_python_blocks_is_imported_or_assigned():
    """The README's Python blocks, copied into a fresh file, need no name from elsewhere."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        tree = ast.parse(block)
        bound = set(dir(builtins))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                bound.add(node.id)
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert used - bound - {"model", "optimizer", "batches"} == set(), block


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
@pytest.mark.parametrize(("target", "browser"), [("demo", False), ("test", True)])
def test_only_the_tests_install_chromium(target: str, browser: bool, tmp_path: Path):
    dry = subprocess.run(
        ["make", "-n", "-B", "-f", str(ROOT / "Makefile"), target, f"VENV={tmp_path}/v"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert ("chromium" in dry.stdout) == browser, dry.stdout
