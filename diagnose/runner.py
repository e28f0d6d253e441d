"""The stage protocol and the one runner that walks a family.

A per-model stage declares the records it reads (other stages' names), whether it
needs the model in memory, a key of its own inputs, and how to compute its record from
the model and the records it reads. The runner resolves the order, and for each model
(smallest first, one in memory at a time) reuses every record whose key still matches
and computes the others, loading the model once for all the stages that need it and
not at all when every record is current. A record's key includes the keys of the
records it reads, so a changed input recomputes exactly what depends on it, and since
a record is written last (``diagnose.records``), a killed run resumes where it stopped.

Family-level stages (score tables, trend, classification, report) are plain functions
of the per-model records; they are cheap and rerun every time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from diagnose import records
from diagnose.families import Family, LoadedModel, ModelSpec, free_model, load_model


@dataclass(frozen=True)
class ModelStage:
    """One record per model. ``compute(model, inputs)`` returns ``(arrays, meta)``;
    ``model`` is None for a stage that does not need it. ``decode`` turns a stored
    record back into the object later stages read."""

    name: str
    compute: Callable[[LoadedModel | None, dict[str, Any]], tuple[dict, dict]]
    decode: Callable[[dict, dict], Any]
    key: Any                                  # JSON-able: everything but the inputs' keys
    reads: tuple[str, ...] = ()
    needs_model: bool = False


def order(stages: Sequence[ModelStage]) -> list[ModelStage]:
    """Stages sorted so that each comes after the stages it reads."""
    by_name = {s.name: s for s in stages}
    done: list[ModelStage] = []

    def visit(s: ModelStage, path: tuple[str, ...] = ()) -> None:
        if s in done:
            return
        if s.name in path:
            raise ValueError(f"stages read each other in a cycle: {' -> '.join(path + (s.name,))}")
        for r in s.reads:
            if r not in by_name:
                raise ValueError(f"stage {s.name!r} reads {r!r}, which no stage writes")
            visit(by_name[r], path + (s.name,))
        done.append(s)

    for s in stages:
        visit(s)
    return done


def source_stamp(spec: ModelSpec) -> Any:
    """What identifies a model's weights: its id, its source, and for a local directory
    the names and sizes of its files (a model saved again at the same path is another
    model; a copy elsewhere, or a fresh clone, is the same one)."""
    src = spec.source
    files = ()
    if os.path.isdir(src):
        files = tuple(sorted((e.name, e.stat().st_size) for e in os.scandir(src) if e.is_file()))
    return [spec.id, src if not os.path.isdir(src) else os.path.basename(os.path.normpath(src)),
            files, spec.revision, spec.step]


@dataclass
class Results:
    """Decoded records by stage and model id, models smallest first; work counted."""

    by_stage: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)
    computed: dict[str, list[str]] = field(default_factory=dict)   # stage -> models computed
    seconds: dict[str, float] = field(default_factory=dict)        # stage -> wall time

    def __getitem__(self, stage: str) -> list[Any]:
        return [self.by_stage[stage][m] for m in self.models]


def run_models(stages: Sequence[ModelStage], family: Family, root: str | Path, *,
               load: dict[str, Any] | None = None, progress: bool = True,
               label: str = "models") -> Results:
    """Every per-model stage on every model of ``family``; records under ``root``."""
    staged = order(stages)
    res = Results(by_stage={s.name: {} for s in staged}, models=[m.id for m in family.models],
                  computed={s.name: [] for s in staged}, seconds={s.name: 0.0 for s in staged})
    bar = tqdm(family.models, desc=label, unit="model", disable=not progress)
    for spec in bar:
        bar.set_postfix_str(spec.id[-40:])
        model: LoadedModel | None = None
        keys: dict[str, str] = {}
        try:
            for s in staged:
                key = records.record_key(s.name, s.key, source_stamp(spec),
                                         [keys[r] for r in s.reads])
                keys[s.name] = key
                path = records.record_path(root, s.name, spec.id)
                got = records.load_if_current(path, key)
                if got is None:
                    t0 = time.time()
                    if s.needs_model and model is None:
                        model = load_model(spec, **(load or {}))
                    inputs = {r: res.by_stage[r][spec.id] for r in s.reads}
                    arrays, meta = s.compute(model if s.needs_model else None, inputs)
                    meta = {**meta, "key": key, "stage": s.name, "model_id": spec.id}
                    records.save(path, arrays, meta)
                    got = records.load(path)  # the stored form: fresh and cached alike
                    res.computed[s.name].append(spec.id)
                    res.seconds[s.name] += time.time() - t0
                res.by_stage[s.name][spec.id] = s.decode(*got)
        finally:
            if model is not None:
                free_model(model)
    return res
