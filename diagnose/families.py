"""Model families: ordered lists of models, loaded one at a time through TransformerLens.

A family is data (ids and nominal sizes); loading is a separate step that yields one
``LoadedModel`` at a time and frees it before the next, so a family of any size fits
in memory. Every model goes through ``TransformerBridge.boot_transformers``, whether it
is a hub name (``EleutherAI/pythia-160m``) or a local Hugging Face directory (the
model organisms), so the toolkit measures real family members and our own organisms
with the same code.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch


class ModelUnavailableError(RuntimeError):
    """A model's weights cannot be had (offline and not cached, or a bad directory)."""


class FamilyError(ValueError):
    """A family name or manifest the user gave cannot be resolved."""


@dataclass(frozen=True)
class ModelSpec:
    """One member of a family. ``path`` is where to load it from when it differs from ``id``;
    ``revision`` a hub revision (Pythia's ``step143000``); ``step`` the training step when
    the family is one model's checkpoints (the training-time axis)."""

    id: str
    n_params: int | None = None
    path: str | None = None
    revision: str | None = None
    step: int | None = None

    @property
    def source(self) -> str:
        return self.path or self.id


AXES = {"params": "parameters", "steps": "training step"}


@dataclass(frozen=True)
class Family:
    """Models ordered along an axis: sizes (``params``, smallest first) or one model's
    training checkpoints (``steps``, earliest first)."""

    name: str
    models: tuple[ModelSpec, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    axis: str = "params"

    def __post_init__(self) -> None:
        if not self.models:
            raise FamilyError(f"family {self.name!r} has no models")


# Nominal total parameter counts (Pythia paper, table 1; GPT-2 model cards). The count
# written to results is always measured on the loaded model; these only order the family.
PYTHIA = (
    ("EleutherAI/pythia-14m", 14_067_712),
    ("EleutherAI/pythia-31m", 30_494_720),
    ("EleutherAI/pythia-70m", 70_426_624),
    ("EleutherAI/pythia-160m", 162_322_944),
    ("EleutherAI/pythia-410m", 405_334_016),
    ("EleutherAI/pythia-1b", 1_011_781_632),
    ("EleutherAI/pythia-1.4b", 1_414_647_808),
    ("EleutherAI/pythia-2.8b", 2_775_208_960),
    ("EleutherAI/pythia-6.9b", 6_857_302_016),
    ("EleutherAI/pythia-12b", 11_846_072_320),
)
GPT2 = (
    ("openai-community/gpt2", 124_439_808),
    ("openai-community/gpt2-medium", 354_823_168),
    ("openai-community/gpt2-large", 774_030_080),
    ("openai-community/gpt2-xl", 1_557_611_200),
)
BUILTIN_FAMILIES: dict[str, tuple[tuple[str, int], ...]] = {
    "pythia": PYTHIA,
    "pythia-deduped": tuple((f"{m}-deduped", n) for m, n in PYTHIA if "14m" not in m and "31m" not in m),
    "gpt2": GPT2,
}
DEFAULT_FAMILY = "organisms"


def family_from_models(ids: list[str], name: str = "custom", over: str = "sizes") -> Family:
    """A family from hub names or local directories, in the order given (smallest first).
    ``NAME@stepN`` names a training checkpoint (a hub revision, or a local model's
    ``checkpoints/stepN``); with ``over="checkpoints"`` the family's axis is training steps."""
    specs = tuple(model_spec(i) for i in ids)
    if over == "checkpoints":
        missing = [s.id for s in specs if s.step is None]
        if missing:
            raise FamilyError(f"--over checkpoints needs a step for every model; name them "
                              f"NAME@stepN (missing: {', '.join(missing)})")
        specs = tuple(sorted(specs, key=lambda s: s.step))
        return Family(name=name, models=specs, axis="steps")
    return Family(name=name, models=tuple(dataclasses.replace(s, step=None) for s in specs))


def _checkpoints(model_dir: str) -> tuple[list[dict], int | None]:
    """A local model's checkpoints (``organism.json``: ``checkpoints``, ``steps``)."""
    rec = Path(model_dir) / "organism.json"
    if not rec.is_file():
        return [], None
    data = json.loads(rec.read_text())
    return list(data.get("checkpoints") or []), data.get("steps")


def model_spec(arg: str) -> ModelSpec:
    """``DIR_OR_NAME`` or ``DIR_OR_NAME@stepN`` (or ``@REVISION`` for a hub model)."""
    name, sep, rev = arg.partition("@")
    if not sep:
        return ModelSpec(id=arg)
    m = re.fullmatch(r"step(\d+)", rev)
    step = int(m.group(1)) if m else None
    if os.path.isdir(name):
        ckpts, total = _checkpoints(name)
        if step is not None and step == total:
            return ModelSpec(id=arg, path=name, step=step)
        for c in ckpts:
            if step is not None and int(c["step"]) == step:
                return ModelSpec(id=arg, path=str(Path(name) / c["path"]), step=step)
        have = [f"step{c['step']}" for c in ckpts] + ([f"step{total}"] if total else [])
        raise FamilyError(f"{arg}: {name} has no checkpoint {rev!r}; it has: "
                          f"{', '.join(have) or 'none (no organism.json checkpoints)'}")
    return ModelSpec(id=arg, revision=rev, step=step)


def checkpoint_family(family: Family, model: str | None = None) -> Family:
    """One model's training checkpoints as a family on the ``steps`` axis: the named
    model (an id of ``family``), by default its largest, from its ``organism.json``."""
    spec = family.models[-1] if model is None else next(
        (m for m in family.models if m.id == model), None)
    if spec is None:
        raise FamilyError(f"no model {model!r} in family {family.name!r}; it has: "
                          f"{', '.join(m.id for m in family.models)}")
    ckpts, total = _checkpoints(spec.source)
    if not ckpts:
        raise FamilyError(f"model {spec.id!r} lists no training checkpoints ({spec.source}/"
                          "organism.json); for a hub model list them with --model NAME@stepN")
    models = [ModelSpec(id=f"{spec.id}@step{c['step']}", n_params=spec.n_params,
                        path=str(Path(spec.source) / c["path"]), step=int(c["step"]))
              for c in ckpts]
    if total is not None and all(int(c["step"]) != int(total) for c in ckpts):
        models.append(ModelSpec(id=f"{spec.id}@step{total}", n_params=spec.n_params,
                                path=spec.source, step=int(total)))
    return Family(name=f"{spec.id} checkpoints", models=tuple(sorted(models, key=lambda m: m.step)),
                  metadata=dict(family.metadata), axis="steps")


def load_family_manifest(path: str | os.PathLike) -> Family:
    """A family from a ``family.json`` manifest (or a directory holding one).

    Manifest: ``{"name", "models": [{"id", "path", "n_params", ...}]}`` with ``path``
    relative to the manifest's directory.
    """
    p = Path(path)
    manifest = p / "family.json" if p.is_dir() else p
    if not manifest.is_file():
        raise FamilyError(f"{path}: no family.json manifest found")
    try:
        data = json.loads(manifest.read_text())
        models = tuple(
            ModelSpec(
                id=m["id"],
                n_params=m.get("n_params"),
                path=str((manifest.parent / m["path"]).resolve()) if m.get("path") else None,
            )
            for m in data["models"]
        )
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise FamilyError(
            f"{manifest}: not a valid family manifest ({e}); expected "
            '{"name": ..., "models": [{"id": ..., "path": ..., "n_params": ...}]}'
        ) from e
    meta = {k: v for k, v in data.items() if k != "models"}
    meta["dir"] = str(manifest.parent.resolve())
    return Family(name=data.get("name", manifest.parent.name), models=models, metadata=meta)


def resolve_family(name: str) -> Family:
    """A built-in family name, a registered family (``organisms``, the default, provided
    by its plugin), or a path to a ``family.json``."""
    from diagnose.registry import families

    if name in BUILTIN_FAMILIES:
        return Family(name=name, models=tuple(ModelSpec(i, n) for i, n in BUILTIN_FAMILIES[name]))
    registered = families()
    if name in registered:
        return registered[name].resolve()
    if Path(name).exists():
        return load_family_manifest(name)
    known = ", ".join(sorted([*BUILTIN_FAMILIES, *registered]))
    raise FamilyError(
        f"unknown family {name!r}: use one of {known}, a path to a family.json, "
        "or list models with --model (smallest first)"
    )


def auto_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def auto_dtype(device: str) -> torch.dtype:
    """bf16 on a GPU (what the field runs families in), fp32 on the CPU (exact, and bf16
    matmuls are slow on most CPUs)."""
    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def parse_dtype(name: str | torch.dtype | None, device: str) -> torch.dtype:
    if name is None or name == "auto":
        return auto_dtype(device)
    if isinstance(name, torch.dtype):
        return name
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(_DTYPES)} or 'auto'") from None


@dataclass
class LoadedModel:
    """A model in memory: the bridge, its tokenizer, and facts the results need."""

    spec: ModelSpec
    bridge: Any  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: Any
    n_params: int
    n_ctx: int
    device: str
    dtype: torch.dtype
    # accelerate's realized placement when loaded with a device map (``diagnose.dispatch``)
    device_map: dict[str, Any] | None = None
    offload_dir: str | None = None   # our temporary folder for disk-offloaded weights

    @property
    def offloaded(self) -> bool:
        """Some weights live on the CPU or on disk under a device map (TransformerLens
        then refuses ``enable_compatibility_mode()``)."""
        return any(str(v).lower() in ("cpu", "disk") for v in (self.device_map or {}).values())

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def n_layers(self) -> int:
        return int(self.bridge.cfg.n_layers)


def _hf_model(bridge: Any) -> torch.nn.Module:
    return bridge.original_model


def count_parameters(bridge: Any) -> int:
    """The checkpoint's parameter count (as Pythia and model cards report it).

    Counting the bridge's modules overcounts: it adds split copies of fused weights
    (e.g. q/k/v beside GPT-NeoX's joint query_key_value). So the architecture is built
    from its config on the meta device (no memory) and counted there; tied weights
    count once.
    """
    from transformers import AutoModelForCausalLM

    config = _hf_model(bridge).config
    try:
        with torch.device("meta"):
            shell = AutoModelForCausalLM.from_config(config)
        return int(sum(p.numel() for p in shell.parameters()))
    except Exception:  # an architecture AutoModelForCausalLM cannot build: best effort
        seen = {p.data_ptr(): p for p in _hf_model(bridge).parameters()}
        return int(sum(p.numel() for p in seen.values()))


# Small models stay loaded between stages (each stage walks the whole family, so a run
# would otherwise load every model once per stage): an LRU of loaded models whose
# parameters fit in DIAGNOSE_MODEL_CACHE_MB together (default 1024; 0 disables it). A
# model larger than that is loaded per use and freed after, one at a time, as before.
_CACHE: "collections.OrderedDict[tuple, LoadedModel]" = collections.OrderedDict()


def _cache_budget_bytes() -> int:
    raw = os.environ.get("DIAGNOSE_MODEL_CACHE_MB", "1024")
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if not mb >= 0:
        raise FamilyError(f"DIAGNOSE_MODEL_CACHE_MB={raw!r} is not a size in megabytes; set a "
                          "number such as 1024, or 0 to load every model afresh")
    return int(mb * 2 ** 20)


def _param_bytes(bridge: Any) -> int:
    return sum(p.numel() * p.element_size() for p in _hf_model(bridge).parameters())


def _source_stamp(src: str) -> tuple:
    """A local directory's files with their sizes and mtimes, so a model saved again at
    the same path is never served from the cache."""
    if not os.path.isdir(src):
        return ()
    return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns)
                        for e in os.scandir(src) if e.is_file()))


def clear_model_cache() -> None:
    _CACHE.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_model(
    spec: ModelSpec | str,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
    dispatch: Any = None,
) -> LoadedModel:
    """Load one model through ``TransformerBridge.boot_transformers`` (or hand back the
    cached one, see ``DIAGNOSE_MODEL_CACHE_MB``).

    ``dispatch`` (a ``diagnose.dispatch.Dispatch``) spreads the model with accelerate
    (``device_map``, ``max_memory``, ``n_devices``, ``offload_folder``) instead of putting
    it on ``device``; a dispatched model is never kept in the model cache.

    ``trust_remote_code`` is off unless asked for: a model directory's own code never
    runs by default. Weights load through ``from_pretrained``, which prefers
    safetensors when a directory has both formats.
    """
    if isinstance(spec, str):
        spec = ModelSpec(id=spec)
    if dispatch is not None and dispatch.active:
        return _load_model(spec, None, parse_dtype(dtype, "cuda" if torch.cuda.is_available()
                                                   else "cpu"), trust_remote_code, dispatch)
    device = device or auto_device()
    torch_dtype = parse_dtype(dtype, device)
    key = (spec.source, spec.revision, _source_stamp(spec.source), str(device), str(torch_dtype),
           bool(trust_remote_code))
    hit = _CACHE.get(key)
    # a bridge switched to compatibility mode (direct logit attribution folds its
    # LayerNorms in place) is not the model other stages expect: load it afresh
    if hit is not None and hit.bridge is not None and not getattr(hit.bridge, "compatibility_mode", False):
        _CACHE.move_to_end(key)
        return dataclasses.replace(hit, spec=spec)
    _CACHE.pop(key, None)
    model = _load_model(spec, device, torch_dtype, trust_remote_code)
    budget = _cache_budget_bytes()
    size = _param_bytes(model.bridge)
    if 0 < size <= budget:
        _CACHE[key] = model
        while sum(_param_bytes(m.bridge) for m in _CACHE.values()) > budget:
            _CACHE.popitem(last=False)
        return dataclasses.replace(model)  # the caller's handle; free_model drops only it
    return model


def _load_model(spec: ModelSpec, device: str | None, torch_dtype: torch.dtype,
                trust_remote_code: bool, dispatch: Any = None) -> LoadedModel:
    from transformer_lens.model_bridge import TransformerBridge

    src = spec.source
    if os.path.isdir(src) and not os.path.isfile(os.path.join(src, "config.json")):
        raise ModelUnavailableError(
            f"model {spec.id!r}: directory {src} has no config.json; save the model there with "
            "`model.save_pretrained(dir)` and `tokenizer.save_pretrained(dir)`"
        )
    place: dict[str, Any] = {"device": device}
    offload_dir = None
    if dispatch is not None:
        # a folder of our own per load (inside --offload-folder when given), removed when
        # the model is freed: two models, or two workers, never share offloaded files
        import tempfile

        from diagnose.store import slug

        parent = dispatch.offload_folder
        if parent:
            os.makedirs(parent, exist_ok=True)
        offload_dir = tempfile.mkdtemp(prefix=f"offload-{slug(spec.id)}-", dir=parent)
        place = dispatch.boot_kwargs(offload_folder=offload_dir)
    try:
        with _quiet_loading():
            extra = {"revision": spec.revision} if spec.revision else {}
            bridge = TransformerBridge.boot_transformers(
                src, dtype=torch_dtype, trust_remote_code=trust_remote_code, **place,
                **extra)
    except ValueError as e:
        _remove_dir(offload_dir)
        if "Could not determine supported architecture" in str(e):
            arch = _config_architecture(src)
            raise ModelUnavailableError(
                f"model {spec.id!r}: TransformerBridge (TransformerLens "
                f"{_tl_version()}) does not support its architecture {arch}; the families "
                "tested here are listed in the README's 'Architectures' table") from e
        if dispatch is None:
            raise
        from diagnose.dispatch import DispatchError

        raise DispatchError(f"model {spec.id!r}: the dispatch settings "
                            f"{json.dumps(dispatch.to_dict())} were refused: "
                            f"{str(e).splitlines()[0]}") from e
    except (OSError, EnvironmentError) as e:
        _remove_dir(offload_dir)
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        raise ModelUnavailableError(
            f"model {spec.id!r} cannot be loaded from {src!r}"
            f"{' (HF_HUB_OFFLINE=1: the hub is not contacted)' if offline else ''}. "
            "Provide it as a local Hugging Face directory (pass the directory with --model), "
            "or populate the Hugging Face cache (HF_HOME) on a machine with access "
            f"(`huggingface-cli download {spec.id}`) and copy it here. Cause: {e}"
        ) from e
    bridge.eval()
    tok = bridge.tokenizer
    if tok is None:
        _remove_dir(offload_dir)
        raise ModelUnavailableError(f"model {spec.id!r} has no tokenizer at {src!r}")
    n_params = count_parameters(bridge)
    dmap = None
    if dispatch is not None:
        from probes.devices import hf_device_map, input_device

        dmap = {k: (v if isinstance(v, (int, str)) else str(v))
                for k, v in (hf_device_map(bridge) or {}).items()}
        device = str(input_device(bridge))
    return LoadedModel(
        spec=spec, bridge=bridge, tokenizer=tok, n_params=int(n_params),
        n_ctx=int(bridge.cfg.n_ctx), device=str(device), dtype=torch_dtype,
        device_map=dmap, offload_dir=offload_dir,
    )


def _config_architecture(src: str) -> str:
    """The architecture a local directory's config.json names (for error messages)."""
    try:
        cfg = json.loads((Path(src) / "config.json").read_text())
        return f"{', '.join(cfg.get('architectures') or [])} (model_type {cfg.get('model_type')!r})"
    except (OSError, ValueError):
        return "(unknown: no readable config.json)"


def _tl_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformer-lens")
    except PackageNotFoundError:  # pragma: no cover - a source checkout
        return "?"


def _remove_dir(path: str | None) -> None:
    if path:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def free_model(model: LoadedModel) -> None:
    """Drop this handle; the weights go unless the model cache keeps them."""
    cached = any(m.bridge is model.bridge for m in _CACHE.values())
    model.bridge = None
    if not cached:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if model.offload_dir and not cached:
        _remove_dir(model.offload_dir)
        model.offload_dir = None


def iter_models(family: Family, **load_kwargs: Any) -> Iterator[LoadedModel]:
    """Yield each model of a family, smallest first, freeing each before the next loads."""
    for spec in family.models:
        model = load_model(spec, **load_kwargs)
        try:
            yield model
        finally:
            free_model(model)


@contextlib.contextmanager
def _quiet_loading():
    """Silence transformers' per-weight progress bars while booting (they flood logs)."""
    try:
        from transformers.utils import logging as hf_logging

        prev = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover - older transformers
        yield
        return
    try:
        yield
    finally:
        if prev:
            hf_logging.enable_progress_bar()
