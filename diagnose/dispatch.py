"""Models larger than one device: accelerate's dispatch, as TransformerLens 4.3 exposes it.

``TransformerBridge.boot_transformers`` takes ``device_map`` (``"auto"``, ``"balanced"``,
``"balanced_low_0"``, ``"sequential"`` or an explicit ``{module: device}`` map whose
devices may be GPU ids, ``"cpu"`` or ``"disk"``), ``max_memory`` (a budget per device),
``n_devices`` (split over that many GPUs) and ``offload_folder`` (where disk-offloaded
weights go); accelerate places the weights and moves activations between devices. A
``Dispatch`` carries those four settings from the command line to ``load_model``; the
placement itself is accelerate's, never reimplemented here.

What a stage can do on a dispatched model is in the README ("Large models and
clusters"): in short every stage runs, reading offloaded weights only for the span of
a read (``probes.devices``); nothing calls ``enable_compatibility_mode()``, which
TransformerLens refuses on a CPU- or disk-offloaded bridge.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


class DispatchError(ValueError):
    """A dispatch setting the user gave cannot be used (bad JSON, a bad device, ...)."""


@dataclass(frozen=True)
class Dispatch:
    """accelerate dispatch settings for ``boot_transformers`` (all None: one device)."""

    device_map: str | tuple[tuple[str, Any], ...] | None = None   # dict kept as sorted items
    max_memory: tuple[tuple[Any, Any], ...] | None = None
    n_devices: int | None = None
    offload_folder: str | None = None

    @property
    def active(self) -> bool:
        return (self.device_map is not None or self.max_memory is not None
                or (self.n_devices or 0) > 1 or self.offload_folder is not None)

    def resolved_device_map(self) -> str | dict[str, Any] | None:
        """The map handed to accelerate: the one given, else ``"auto"`` when only a
        memory budget or an offload folder was given (they mean nothing without a map),
        else None (``n_devices`` alone: TransformerLens makes a balanced map)."""
        if isinstance(self.device_map, tuple):
            return dict(self.device_map)
        if self.device_map is not None:
            return self.device_map
        if (self.max_memory is not None or self.offload_folder is not None) \
                and not (self.n_devices or 0) > 1:
            return "auto"
        return None

    def boot_kwargs(self, offload_folder: str | None = None) -> dict[str, Any]:
        """Keyword arguments for ``boot_transformers`` (no ``device``: it excludes them)."""
        kw: dict[str, Any] = {}
        dmap = self.resolved_device_map()
        if dmap is not None:
            kw["device_map"] = dmap
        if self.max_memory is not None:
            kw["max_memory"] = dict(self.max_memory)
        if (self.n_devices or 0) > 1:
            kw["n_devices"] = int(self.n_devices)
        folder = offload_folder or self.offload_folder
        if folder is not None:
            kw["offload_folder"] = folder
        return kw

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (for cache keys and ``model_facts``)."""
        dmap = self.device_map
        return {"device_map": dict(dmap) if isinstance(dmap, tuple) else dmap,
                "max_memory": None if self.max_memory is None
                else {str(k): v for k, v in self.max_memory},
                "n_devices": self.n_devices, "offload_folder": self.offload_folder}


def _json_arg(flag: str, text: str, what: str) -> Any:
    """``text`` as JSON, or the JSON in the file it names."""
    src = text
    if not text.lstrip().startswith("{") and os.path.isfile(text):
        try:
            with open(text) as f:
                src = f.read()
        except OSError as e:
            raise DispatchError(f"{flag} {text}: cannot read the file ({e})") from None
    try:
        return json.loads(src)
    except json.JSONDecodeError as e:
        raise DispatchError(f"{flag}: {text!r} is not valid JSON ({e.msg} at character "
                            f"{e.pos}); give {what}") from None


def _device_value(flag: str, module: str, v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise DispatchError(f"{flag}: module {module!r} is mapped to {v!r}; use a GPU index, "
                            "\"cuda:N\", \"cpu\" or \"disk\"")
    if isinstance(v, int):
        if v < 0:
            raise DispatchError(f"{flag}: module {module!r} is mapped to GPU {v}; GPU indices "
                                "start at 0")
        return v
    low = v.lower()
    if low.isdigit():
        return int(low)
    if low in ("cpu", "disk", "cuda", "mps") or low.startswith(("cuda:", "xpu:", "npu:")):
        return low
    raise DispatchError(f"{flag}: module {module!r} is mapped to {v!r}; use a GPU index, "
                        "\"cuda:N\", \"cpu\" or \"disk\"")


def parse_device_map(text: str | None) -> str | tuple[tuple[str, Any], ...] | None:
    """``auto``/``balanced``/``balanced_low_0``/``sequential``, or a JSON object (inline or
    a file) mapping module names to devices."""
    if text is None:
        return None
    t = text.strip()
    if t in DEVICE_MAP_STRATEGIES:
        return t
    if not t.startswith("{") and not os.path.isfile(t):
        raise DispatchError(f"--device-map {text!r}: use one of {', '.join(DEVICE_MAP_STRATEGIES)}"
                            ", a JSON object such as '{\"gpt_neox.embed_in\": 0, \"\": \"cpu\"}', "
                            "or a file holding one")
    data = _json_arg("--device-map", t, 'a JSON object mapping module names to devices, e.g. '
                     '\'{"gpt_neox.embed_in": 0, "gpt_neox.layers": 1, "": "disk"}\'')
    if not isinstance(data, dict) or not data:
        raise DispatchError("--device-map: the JSON must be a non-empty object mapping module "
                            "names to devices")
    return tuple(sorted((str(k), _device_value("--device-map", str(k), v))
                        for k, v in data.items()))


def parse_max_memory(text: str | None) -> tuple[tuple[Any, Any], ...] | None:
    """A JSON object (inline or a file): device (GPU index, ``"cpu"``, ``"disk"``) ->
    budget (bytes, or a size such as ``"20GiB"``)."""
    if text is None:
        return None
    data = _json_arg("--max-memory", text.strip(),
                     'a JSON object of budgets per device, e.g. \'{"0": "20GiB", "cpu": "60GiB"}\'')
    if not isinstance(data, dict) or not data:
        raise DispatchError("--max-memory: the JSON must be a non-empty object of budgets per "
                            "device, e.g. '{\"0\": \"20GiB\", \"cpu\": \"60GiB\"}'")
    out = []
    for k, v in data.items():
        key: Any = str(k).strip().lower()
        if key.isdigit():
            key = int(key)
        elif key not in ("cpu", "disk", "mps") and not key.startswith(("cuda:", "xpu:", "npu:")):
            raise DispatchError(f"--max-memory: device {k!r} is not a GPU index, \"cpu\" or "
                                "\"disk\"")
        if isinstance(key, str) and key.startswith("cuda:"):
            key = int(key.split(":", 1)[1])
        out.append((key, _size("--max-memory", k, v)))
    return tuple(sorted(out, key=lambda kv: (isinstance(kv[0], str), str(kv[0]))))


def _size(flag: str, device: Any, v: Any) -> Any:
    if isinstance(v, bool):
        v = None
    if isinstance(v, (int, float)) and v >= 0:
        return int(v)
    if isinstance(v, str):
        from accelerate.utils import convert_file_size_to_int

        try:
            if convert_file_size_to_int(v.strip()) >= 0:
                return v.strip()
        except ValueError:
            pass
    raise DispatchError(f"{flag}: the budget {v!r} for device {device!r} is not a size; use "
                        "bytes (an integer) or a string such as \"20GiB\" or \"500MB\"")


def dispatch_from_args(device_map: str | None = None, max_memory: str | None = None,
                       n_devices: int | None = None, offload_folder: str | None = None,
                       device: str | None = None) -> Dispatch | None:
    """The ``Dispatch`` the command-line flags ask for, or None for one device."""
    if n_devices is not None and n_devices < 1:
        raise DispatchError(f"--n-devices {n_devices}: give a number of GPUs, 1 or more")
    d = Dispatch(device_map=parse_device_map(device_map), max_memory=parse_max_memory(max_memory),
                 n_devices=n_devices, offload_folder=offload_folder)
    if not d.active:
        return None
    if device is not None:
        raise DispatchError(f"--device {device} cannot be combined with --device-map, "
                            "--max-memory, --n-devices or --offload-folder: accelerate places "
                            "a dispatched model itself; drop --device")
    if d.device_map is not None and (n_devices or 0) > 1:
        raise DispatchError("--n-devices splits the model over that many GPUs itself; give "
                            "either --n-devices or --device-map, not both")
    return d
