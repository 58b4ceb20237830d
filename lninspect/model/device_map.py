"""Models spread over several devices by accelerate (`--device-map`, `--max-memory`).

from_pretrained(device_map=..., max_memory=...) places each layer on its own device and
moves activations between them; lninspect's hooks then run on each layer's device and the
per-token statistics are gathered afterwards. Parsing imports no torch.
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from typing import Any

from lninspect.errors import LninspectError
from lninspect.options import DeviceMap, choices

DEVICE_MAPS = choices(DeviceMap)
_MEMORY_ITEM = re.compile(r"^(cpu|mps|disk|cuda:\d+|\d+)=(\d+(\.\d+)?\s*([KMGT]i?B)?)$", re.I)


def parse_max_memory(value: str | None) -> dict[int | str, str] | None:
    """`cuda:0=20GiB,cpu=60GiB` -> {0: "20GiB", "cpu": "60GiB"} (accelerate's max_memory)."""
    if not value:
        return None
    limits: dict[int | str, str] = {}
    for item in value.split(","):
        match = _MEMORY_ITEM.match(item.strip())
        if match is None:
            raise LninspectError(f"'{item}' is not DEVICE=SIZE, e.g. cuda:0=20GiB or cpu=64GiB")
        device = match.group(1).lower()
        key: int | str = int(device.removeprefix("cuda:")) if device[-1].isdigit() else device
        limits[key] = match.group(2).replace(" ", "")
    return limits


UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def memory_budget(max_memory: str | None) -> int | None:
    """The bytes --max-memory allows in all (None without it); disk is not memory."""
    limits = parse_max_memory(max_memory)
    if limits is None:
        return None
    total = 0
    for device, text in limits.items():
        if device == "disk":
            continue
        number = re.match(r"[\d.]+", text)
        assert number is not None  # parse_max_memory checked the form
        total += int(float(number.group()) * UNITS[text[number.end() :].upper()])
    return total


def check_device_map(device_map: str | None, max_memory: str | None) -> None:
    """Refuse, before loading, a device map that cannot work here."""
    if device_map is None:
        if max_memory:
            raise LninspectError("max_memory= needs device_map=")
        return
    if device_map not in DEVICE_MAPS:
        raise LninspectError(f"device_map='{device_map}': use one of {', '.join(DEVICE_MAPS)}")
    if importlib.util.find_spec("accelerate") is None:
        raise LninspectError("device_map= needs accelerate: pip install 'lninspect[scale]'")
    parse_max_memory(max_memory)


def from_pretrained_kwargs(device_map: str | None, max_memory: str | None) -> dict[str, Any]:
    """What from_pretrained needs to dispatch the model ({} without a device map)."""
    check_device_map(device_map, max_memory)
    if device_map is None:
        return {}
    return {"device_map": device_map, "max_memory": parse_max_memory(max_memory)}


def dispatched(model: Any) -> tuple[Any, str]:
    """(the device inputs go to: the embeddings', a note on where the modules went)."""
    placement = getattr(model, "hf_device_map", None) or {}
    device = model.get_input_embeddings().weight.device
    counts = Counter(str(v) for v in placement.values())
    where = ", ".join(f"{n} on {_device_name(d)}" for d, n in counts.items()) or str(device)
    return device, f"device map: {where}; inputs go to {device}"


def _device_name(device: str) -> str:
    return f"cuda:{device}" if device.isdigit() else device
