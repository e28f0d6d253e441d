"""Per-example evidence about a task over a family: what the cause classifier reads.

For each model (one in memory at a time) and each example:
- the task prompt's choice and correctness (ISP scoring);
- the same for every counterfactual view present on all examples (``prior``, ``easy``, ``human``,
  ``zero_shot``, ``balanced``), each judged against the view's own answer;
- the logit-lens margin (correct minus tempting class, renormalized first-token
  log-probs) at every layer, and the relative commitment depth;
- whether a cross-validated linear contrast probe on each layer's answer-position residual
  (``probes.linear_probe.contrast_cv_predictions``: each class scored from the residual
  times its unembedding direction) recovers the correct class (out-of-fold, so no example
  is judged by a probe that saw it).

Evidence is kept per example so that any subset (a template, a split, a bootstrap
resample) can be turned into features later without running a model again. It is
saved as one compressed ``.npz`` per model with a key of its inputs, so a rerun
reuses it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from diagnose import store
from diagnose.families import Family, LoadedModel, free_model, load_model
from diagnose.scoring import score_with_views
from diagnose.tasks import Task


@dataclass
class ModelEvidence:
    id: str
    n_params: int
    n_layers: int
    choice: np.ndarray                 # [N] chosen class on the task prompt
    correct: np.ndarray                # [N] bool
    tempting: np.ndarray               # [N] tempting class (-1 unknown)
    view_choice: dict[str, np.ndarray] = field(default_factory=dict)   # view -> [N]
    view_correct: dict[str, np.ndarray] = field(default_factory=dict)  # view -> [N] bool
    lens_margin: np.ndarray | None = None   # [N, S] correct - tempting, per layer
    commit_depth: np.ndarray | None = None  # [N] commitment layer / (S - 1), NaN if never
    probe_correct: np.ndarray | None = None  # [S, N] out-of-fold probe right (NaN: no probe)

    def save(self, path: Path, key: str) -> None:
        arrays: dict[str, Any] = {"choice": self.choice, "correct": self.correct,
                                  "tempting": self.tempting}
        for v in self.view_choice:
            arrays[f"view_choice__{v}"] = self.view_choice[v]
            arrays[f"view_correct__{v}"] = self.view_correct[v]
        for name in ("lens_margin", "commit_depth", "probe_correct"):
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        meta = {"id": self.id, "n_params": self.n_params, "n_layers": self.n_layers, "key": key}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez_compressed(tmp, __meta__=np.array(json.dumps(meta)), **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> tuple["ModelEvidence", str]:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["__meta__"]))
            get = {k: z[k] for k in z.files}
        views = sorted({k.split("__", 1)[1] for k in get if k.startswith("view_choice__")})
        ev = cls(id=meta["id"], n_params=meta["n_params"], n_layers=meta["n_layers"],
                 choice=get["choice"], correct=get["correct"].astype(bool),
                 tempting=get["tempting"],
                 view_choice={v: get[f"view_choice__{v}"] for v in views},
                 view_correct={v: get[f"view_correct__{v}"].astype(bool) for v in views},
                 lens_margin=get.get("lens_margin"), commit_depth=get.get("commit_depth"),
                 probe_correct=get.get("probe_correct"))
        return ev, meta["key"]


@dataclass
class FamilyEvidence:
    task: str
    example_ids: list[str]
    views: tuple[str, ...]
    models: list[ModelEvidence]        # smallest first
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_params(self) -> np.ndarray:
        return np.array([m.n_params for m in self.models], dtype=float)


def model_evidence(model: LoadedModel, task: Task, probes: bool = True, seed: int = 0,
                   prepend_bos: bool = False) -> ModelEvidence:
    """Everything the classifier needs from one model, for every example of ``task``."""
    from probes.linear_probe import class_directions, contrast_cv_predictions
    from probes.logit_lens import class_logit_lens

    # the task, every view and the residual stack at the answer positions: one pass
    fused = score_with_views(model, task, lens=probes, prepend_bos=prepend_bos)
    main = fused.task
    tempting = np.array([-1 if e.tempting is None else e.tempting for e in task.examples])
    ev = ModelEvidence(id=model.id, n_params=model.n_params, n_layers=model.n_layers,
                       choice=main.chosen, correct=main.correct, tempting=tempting)
    for v, s in fused.views.items():
        ev.view_choice[v] = s.chosen
        ev.view_correct[v] = s.correct
    if probes:
        answer = main.answer_index
        lens = class_logit_lens(model.bridge, fused.contexts, fused.class_first_tokens, answer,
                                tempting, stack=fused.stack)
        ev.lens_margin = lens.margin
        ev.commit_depth = lens.commit_array / max(lens.n_entries - 1, 1)
        dirs, valid = class_directions(model.bridge, fused.class_first_tokens)
        pred = contrast_cv_predictions(fused.stack.numpy(), dirs, answer, valid, seed=seed)
        ev.probe_correct = np.where(pred < 0, np.nan, (pred == answer[None, :]).astype(float))
    return ev


def evidence_key(task: Task, model_source: str, probes: bool, seed: int) -> str:
    rows = [dataclasses.asdict(e) for e in task.examples]
    return store.content_hash("evidence-v4", task.format, rows, model_source, probes, seed)


def family_evidence(task: Task, family: Family, cache_dir: str | Path | None = None,
                    probes: bool = True, seed: int = 0, device: str | None = None,
                    dtype: str | None = None, progress: bool = True) -> FamilyEvidence:
    """Evidence for ``task`` on every model, reusing ``cache_dir/<model>.npz`` when its
    key still matches (an interrupted run resumes)."""
    models = []
    for spec in tqdm(family.models, desc=f"evidence {task.name}", disable=not progress,
                     leave=False):
        key = evidence_key(task, spec.source, probes, seed)
        path = Path(cache_dir) / f"{store.slug(spec.id)}.npz" if cache_dir else None
        if path is not None and path.is_file():
            ev, old = ModelEvidence.load(path)
            if old == key:
                models.append(ev)
                continue
        model = load_model(spec, device=device, dtype=dtype)
        try:
            ev = model_evidence(model, task, probes=probes, seed=seed)
        finally:
            free_model(model)
        if path is not None:
            ev.save(path, key)
        models.append(ev)
    models.sort(key=lambda m: m.n_params)
    return FamilyEvidence(task=task.name, example_ids=[e.id for e in task.examples],
                          views=task.view_names, models=models, metadata=dict(task.metadata))
