"""Per-example evidence about a task over a family: what the cause classifier reads.

Built from the records the earlier stages wrote (``diagnose.capture`` and
``diagnose.readings``), never from a new pass over a model. Per model and example:

- the task prompt's choice and correctness (ISP scoring), and whether it was scored;
- the choice under every view built for the example (-1 where the view does not apply),
  and, for views with their own answer, whether the choice matches it;
- the tempting class (given by the task, or the best wrong class at the output);
- the logit-lens margin (correct minus tempting) per layer, the relative commitment
  depth, and the contrast probe's out-of-fold correctness per layer: the same arrays
  the probe stage reports and plots.

Evidence is kept per example so that any subset (a template, a bootstrap resample) can
be turned into features without running a model again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diagnose.capture import TASK, Capture
from diagnose.readings import Readings


@dataclass
class ModelEvidence:
    id: str
    n_params: int
    n_layers: int
    answer: np.ndarray                 # [N]
    choice: np.ndarray                 # [N] chosen class on the task prompt (-1 unscored)
    correct: np.ndarray                # [N] bool
    scored: np.ndarray                 # [N] bool
    tempting: np.ndarray               # [N] tempting class (-1 unknown)
    view_choice: dict[str, np.ndarray] = field(default_factory=dict)   # view -> [N], -1 missing
    view_own: dict[str, np.ndarray] = field(default_factory=dict)      # view -> [N] 1/0/NaN
    lens_margin: np.ndarray | None = None   # [N, S]
    commit_depth: np.ndarray | None = None  # [N] commitment entry / (S - 1), NaN if never
    probe_correct: np.ndarray | None = None  # [S, N] out-of-fold probe right (NaN: no probe)
    size: float | None = None          # position on the family's axis (params or step)


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

    @property
    def sizes(self) -> np.ndarray:
        """The family's axis: parameters, or training steps for a checkpoint family."""
        return np.array([m.n_params if m.size is None else m.size for m in self.models],
                        dtype=float)

    @property
    def scored_by_all(self) -> np.ndarray:
        """Examples every model could score: sizes are compared on these only."""
        return np.logical_and.reduce([m.scored for m in self.models])


def model_evidence(cap: Capture, readings: Readings | None) -> ModelEvidence:
    s = cap.scores
    scored = s.scored
    tempting = readings.tempting if readings is not None else cap.tempting
    ev = ModelEvidence(id=cap.model["id"], n_params=int(cap.model["n_params"]),
                       n_layers=int(cap.model["n_layers"]), answer=cap.answer,
                       size=cap.model.get("size"),
                       choice=np.where(scored, s.chosen, -1), correct=s.correct & scored,
                       scored=scored, tempting=tempting)
    for v in cap.views:
        ps = cap.sets[v]
        ev.view_choice[v] = cap.view_choices(v)
        own = np.full(len(cap.example_ids), np.nan)
        ok = ps.has_answer & ps.scores.scored
        own[ps.index[ok]] = ps.scores.correct[ok].astype(float)
        ev.view_own[v] = own
    if readings is not None:
        S = readings.n_entries
        ev.lens_margin = readings.margin
        ev.commit_depth = readings.commit / max(S - 1, 1)
        ev.probe_correct = readings.probe_correct(cap.answer)
    return ev


def family_evidence(task: str, caps: list[Capture], readings: list[Readings | None],
                    metadata: dict[str, Any] | None = None) -> FamilyEvidence:
    models = sorted((model_evidence(c, r) for c, r in zip(caps, readings)),
                    key=lambda m: m.n_params if m.size is None else m.size)
    views = tuple(dict.fromkeys(v for c in caps for v in c.views))
    return FamilyEvidence(task=task, example_ids=list(caps[0].example_ids), views=views,
                          models=models, metadata=dict(metadata or {}))


__all__ = ["ModelEvidence", "FamilyEvidence", "model_evidence", "family_evidence", "TASK"]
