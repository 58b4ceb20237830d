"""Where a model comes from: the bundled `tiny`, `random:ARCH`, a local directory, or the
Hugging Face Hub (its local cache, or the network when it answers within seconds).

Deciding is quick by design: a plain `from_pretrained` on a machine without network spends
about 28 s in retries, so the cache is looked at first and any hub probe is bounded.
Imports neither torch nor transformers.
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from lninspect.errors import LninspectError

BUNDLED_DIR = Path(__file__).parents[1] / "bundled"
BUNDLED_NAMES = ("tiny",)
RANDOM_PREFIX = "random:"
DEFAULT_MODEL = "gpt2"
PROBE_SECONDS = 3.0
ALTERNATIVES = "try `tiny` (bundled), `random:gpt2` (random weights) or a local model directory"


@dataclass(frozen=True)
class Source:
    """How to load a model spec: `kind` is hub, local, random or bundled."""

    spec: str
    kind: str
    path: str  # what from_pretrained gets (a directory or a hub id; the arch for random)
    local_only: bool = False  # load from the cache without asking the hub


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) asks for no network."""
    flags = (os.environ.get(v, "").upper() for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag in {"1", "ON", "YES", "TRUE"} for flag in flags)


def is_cached(repo_id: str, revision: str | None = None) -> bool:
    """Whether the model's config is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)


@functools.lru_cache(maxsize=8)
def hub_answers(repo_id: str, revision: str | None = None, timeout: float = PROBE_SECONDS) -> bool:
    """Whether the hub answers about `repo_id` within `timeout` seconds (any HTTP answer)."""
    if hub_offline():
        return False
    answered: list[bool] = []

    def probe() -> None:
        from huggingface_hub import model_info
        from huggingface_hub.errors import HfHubHTTPError

        try:
            model_info(repo_id, revision=revision, timeout=timeout)
            answered.append(True)
        except HfHubHTTPError:  # 401, 404, ...: the hub is there, the answer is no
            answered.append(True)
        except Exception:  # no route, no DNS, timeout
            answered.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered and answered[0])


def locate(spec: str, revision: str | None = None) -> Source:
    """Where `spec` comes from; a hub model that can be neither found nor fetched fails here."""
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
            raise LninspectError(f"'{spec}' is a directory but holds no model (no config.json)")
        return Source(spec, "local", spec, local_only=True)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise LninspectError(f"model directory '{spec}' does not exist")
    if hub_answers(spec, revision):
        return Source(spec, "hub", spec)
    if is_cached(spec, revision):
        return Source(spec, "hub", spec, local_only=True)
    why = "HF_HUB_OFFLINE is set" if hub_offline() else "the Hugging Face Hub cannot be reached"
    raise LninspectError(
        f"model '{spec}' is not in the Hugging Face cache and {why}; {ALTERNATIVES}"
    )


def default_model() -> tuple[str, str]:
    """(spec, why) for an omitted MODEL: gpt2 if cached or reachable, else the bundled model."""
    if is_cached(DEFAULT_MODEL):
        return DEFAULT_MODEL, "the default: gpt2, found in the Hugging Face cache"
    if hub_answers(DEFAULT_MODEL):
        return DEFAULT_MODEL, "the default: gpt2, from the Hugging Face Hub"
    why = "HF_HUB_OFFLINE is set" if hub_offline() else "the hub cannot be reached"
    if (BUNDLED_DIR / "tiny" / "config.json").is_file():
        return "tiny", f"the default: gpt2 is not cached and {why}, so the bundled model"
    return "random:gpt2", f"the default: gpt2 is not cached and {why}; random weights"
