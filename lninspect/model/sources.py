"""Where a model comes from: the bundled `tiny`, `random:ARCH`, a local directory, a `.gguf`
file (or a folder and `--gguf-file`), or the Hugging Face Hub (its local cache, or the
network when it answers within seconds).

Deciding is quick by design: a plain `from_pretrained` on a machine without network spends
about 28 s in retries, so the cache is looked at first and any hub probe is bounded.
Imports neither torch nor transformers.
"""

from __future__ import annotations

import functools
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lninspect.errors import LninspectError

BUNDLED_DIR = Path(__file__).parents[1] / "bundled"
BUNDLED_NAMES = ("tiny",)
RANDOM_PREFIX = "random:"
DEFAULT_MODEL = "gpt2"
PROBE_SECONDS = 3.0
GGUF_SUFFIX = ".gguf"
ALTERNATIVES = "try `tiny` (bundled), `random:gpt2` (random weights) or a local model directory"


@dataclass(frozen=True)
class Source:
    """How to load a model spec: `kind` is hub, local, gguf, random or bundled."""

    spec: str
    kind: str
    path: str  # what from_pretrained gets (a directory or a hub id; the arch for random)
    local_only: bool = False  # load from the cache without asking the hub
    gguf_file: str | None = None  # a GGUF file in `path`, dequantized by transformers


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) asks for no network."""
    flags = (os.environ.get(v, "").upper() for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag in {"1", "ON", "YES", "TRUE"} for flag in flags)


def is_cached(repo_id: str, revision: str | None = None) -> bool:
    """Whether the model's config is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError

    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except HFValidationError:  # not a hub id at all
        return False
    return isinstance(found, str)


def hub_endpoint() -> str:
    """The Hugging Face Hub's address (HF_ENDPOINT, as huggingface_hub reads it)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def http_answers(url: str, timeout: float) -> bool:
    """Whether `url` gives any HTTP answer (401 and 404 too) within `timeout` seconds.

    urllib, not huggingface_hub's shared client: that client is closed when Python exits,
    which waits for a request still resolving a name on a machine without network.
    Proxies set in the environment are used, as huggingface_hub would.
    """
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "lninspect"})
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except urllib.error.HTTPError:  # the hub is there; the answer is no
        return True
    except (OSError, ValueError):  # no route, no name, refused, timed out, a bad endpoint
        return False


Transport = Callable[[str, float], bool]


@functools.lru_cache(maxsize=8)
def hub_answers(
    repo_id: str,
    revision: str | None = None,
    timeout: float = PROBE_SECONDS,
    transport: Transport = http_answers,
) -> bool:
    """Whether the hub answers about `repo_id` within `timeout` seconds.

    The request runs in a daemon thread that this function waits for at most `timeout`
    seconds, whatever the transport does (a name lookup may ignore socket timeouts); a
    thread still waiting is abandoned, and does not hold up the exit.
    """
    if hub_offline():
        return False
    url = f"{hub_endpoint()}/api/models/{repo_id}" + (f"/revision/{revision}" if revision else "")
    answered: list[bool] = []
    thread = threading.Thread(
        target=lambda: answered.append(transport(url, timeout)), daemon=True, name="hub-probe"
    )
    thread.start()
    thread.join(timeout)
    return bool(answered and answered[0])


def unreachable() -> str:
    """Why the hub was not used, saying what was tried."""
    if hub_offline():
        return "HF_HUB_OFFLINE is set"
    return f"the Hugging Face Hub ({hub_endpoint()}) did not answer within {PROBE_SECONDS:g} s"


def locate(spec: str, revision: str | None = None, gguf_file: str | None = None) -> Source:
    """Where `spec` comes from; a hub model that can be neither found nor fetched fails here."""
    if gguf_file is not None or spec.lower().endswith(GGUF_SUFFIX):
        return _gguf_source(spec, gguf_file)
    if spec.startswith(RANDOM_PREFIX):
        return Source(spec, "random", spec.removeprefix(RANDOM_PREFIX))
    if spec in BUNDLED_NAMES:
        if not (BUNDLED_DIR / spec / "config.json").is_file():
            raise LninspectError(
                f"the bundled model '{spec}' is missing from this installation "
                f"({BUNDLED_DIR / spec}); reinstall lninspect"
            )
        return Source(spec, "bundled", str(BUNDLED_DIR / spec), local_only=True)
    if os.path.isdir(spec):
        if not (Path(spec) / "config.json").is_file():
            found = sorted(p.name for p in Path(spec).glob(f"*{GGUF_SUFFIX}"))
            hint = f"; it holds {', '.join(found)}: pass gguf_file=NAME" if found else ""
            raise LninspectError(
                f"'{spec}' is a directory but holds no model (no config.json){hint}"
            )
        return Source(spec, "local", spec, local_only=True)
    if os.path.exists(spec):
        raise LninspectError(
            f"'{spec}' is a file, not a model directory (a folder with config.json and weights)"
        )
    if os.path.islink(spec):  # a link that leads nowhere, or back to itself
        raise LninspectError(f"model directory '{spec}' is a broken link or a symlink loop")
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise LninspectError(f"model directory '{spec}' does not exist")
    _check_hub_id(spec)
    if hub_answers(spec, revision):
        return Source(spec, "hub", spec)
    if is_cached(spec, revision):
        return Source(spec, "hub", spec, local_only=True)
    raise LninspectError(
        f"model '{spec}' is not in the Hugging Face cache and {unreachable()}; {ALTERNATIVES}"
    )


def _gguf_source(spec: str, gguf_file: str | None) -> Source:
    """A GGUF file: `spec` itself (folder/name.gguf), or `gguf_file` inside the folder `spec`."""
    if gguf_file is None:
        folder, name = os.path.dirname(spec) or ".", os.path.basename(spec)
    elif os.path.isdir(spec):
        folder, name = spec, gguf_file
    else:
        raise LninspectError(f"gguf_file= needs MODEL to be the folder that holds it, not '{spec}'")
    if not os.path.isfile(os.path.join(folder, name)):
        raise LninspectError(f"GGUF file '{os.path.join(folder, name)}' does not exist")
    return Source(spec, "gguf", folder, local_only=True, gguf_file=name)


def _check_hub_id(spec: str) -> None:
    """Refuse what is neither a folder nor a hub id (`org/name`: letters, digits, -_.)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError as exc:
        reason = str(exc).strip().splitlines()[0].rstrip(".")
        raise LninspectError(
            f"'{spec}' is neither a model folder nor a Hugging Face model id ({reason}); "
            f"{ALTERNATIVES}"
        ) from exc


def default_model() -> tuple[str, str]:
    """(spec, why) for an omitted MODEL: gpt2 if cached or reachable, else the bundled model."""
    if is_cached(DEFAULT_MODEL):
        return DEFAULT_MODEL, "the default: gpt2, found in the Hugging Face cache"
    if hub_answers(DEFAULT_MODEL):
        return DEFAULT_MODEL, "the default: gpt2, from the Hugging Face Hub"
    why = unreachable()
    if (BUNDLED_DIR / "tiny" / "config.json").is_file():
        return "tiny", f"the default: gpt2 is not cached and {why}, so the bundled model"
    return "random:gpt2", f"the default: gpt2 is not cached and {why}; random weights"
