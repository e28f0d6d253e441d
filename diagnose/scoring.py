"""Score a task on one loaded model: requests -> engine -> ISP metrics.

``score_task`` is the stage every other stage builds on (trends, classifier,
mitigations all start from its ``TaskScores``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from diagnose import metrics
from diagnose.engine import Request, UnscorableError, fit_to_context, loglikelihoods
from diagnose.families import LoadedModel
from diagnose.tasks import Task
from diagnose.tokenization import encode_pairs


@dataclass
class TaskScores:
    """Per-example results of one task on one model (arrays aligned with ``example_ids``)."""

    task: str
    format: str
    model_id: str
    n_params: int
    example_ids: list[str]
    answer_index: np.ndarray | None
    class_scores: np.ndarray | None          # [N, C] summed log-probs (NaN-padded)
    chosen: np.ndarray | None
    correct: np.ndarray | None
    loss: np.ndarray                          # ISP loss per example
    class_mass: np.ndarray | None
    n_truncated: int = 0
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    # example index -> why it cannot be scored on this model (a class that encodes to zero
    # tokens, a class longer than the context); its scores are NaN, chosen -1, correct False
    unscorable: dict[int, str] = field(default_factory=dict)
    # where the model sits on the family's axis: its parameters, or its training step
    size: float | None = None

    @property
    def x(self) -> float:
        return float(self.n_params if self.size is None else self.size)

    @property
    def n(self) -> int:
        return len(self.example_ids)

    @property
    def scored(self) -> np.ndarray:
        """Which examples were scored on this model."""
        ok = np.ones(self.n, dtype=bool)
        ok[list(self.unscorable)] = False
        return ok

    def unscorable_note(self, k: int = 3) -> str | None:
        if not self.unscorable:
            return None
        first = sorted(self.unscorable)[:k]
        why = Counter(self.unscorable.values()).most_common(1)[0][0]
        return (f"{len(self.unscorable)} of {self.n} examples cannot be scored on {self.model_id} "
                f"({why}); first: {', '.join(self.example_ids[i] for i in first)}")

    def summary(self, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
        """Accuracy with a 95% bootstrap interval, mean loss, mean class mass, baselines."""
        ok = self.scored
        out: dict[str, Any] = {"id": self.model_id, "n_params": self.n_params,
                               "size": self.x, "n": int(ok.sum())}
        none = dict(accuracy=None, ci_low=None, ci_high=None)
        if self.correct is not None and ok.any():
            acc = self.correct[ok].astype(np.float64)
            lo, hi = metrics.bootstrap_ci(acc, n_boot=n_boot, seed=seed)
            out.update(accuracy=float(acc.mean()), ci_low=lo, ci_high=hi)
        else:
            out.update(none)
        if ok.any():
            lo, hi = metrics.bootstrap_ci(self.loss[ok], n_boot=n_boot, seed=seed)
            out.update(loss=float(np.mean(self.loss[ok])), loss_ci_low=lo, loss_ci_high=hi)
        else:
            out.update(loss=None, loss_ci_low=None, loss_ci_high=None)
        mass = None if self.class_mass is None or not ok.any() else self.class_mass[ok]
        out["class_mass"] = None if mass is None else float(np.mean(np.exp(mass)))
        out["log_class_mass"] = None if mass is None else float(np.mean(mass))
        if self.class_scores is not None and self.answer_index is not None:
            out["always_index_accuracy"] = metrics.always_index_baselines(
                self.answer_index[ok], self.class_scores.shape[1])
        out["n_truncated"] = self.n_truncated
        out["n_unscorable"] = len(self.unscorable)
        note = self.unscorable_note()
        if note:
            out["notes"] = [note]
        return out

    def rows(self) -> list[dict[str, Any]]:
        """Per-example rows (JSON-ready) for ``examples.jsonl``."""
        out = []
        for i, eid in enumerate(self.example_ids):
            row: dict[str, Any] = {"example_id": eid, "model_id": self.model_id}
            if i in self.unscorable:
                row.update(unscorable=self.unscorable[i], loss=None)
                out.append(row)
                continue
            if self.class_scores is not None:
                s = self.class_scores[i]
                row["class_scores"] = [None if np.isnan(x) else float(x) for x in s]
                row["answer_index"] = int(self.answer_index[i])
                row["chosen"] = int(self.chosen[i])
                row["correct"] = bool(self.correct[i])
            row["loss"] = float(self.loss[i])
            if self.class_mass is not None:
                row["class_mass"] = float(self.class_mass[i])
            for k, v in self.extra.items():
                row[k] = float(v[i])
            out.append(row)
        return out


def build_requests(task: Task, model: LoadedModel, prepend_bos: bool = False
                   ) -> tuple[list[Request], list[tuple[int, str, int]], dict[int, str]]:
    """All requests of a task, for each its (example index, prompt field, class), and the
    examples that cannot be scored on this model with the reason (a continuation that
    encodes to zero tokens under its tokenizer, one longer than its context): those are
    skipped, not raised, since whether a class can be scored depends on the model."""
    pairs: list[tuple[str, str]] = []
    keys: list[tuple[int, str, int]] = []
    for i, e in enumerate(task.examples):
        if task.format == "sequence_prob":
            pairs.append((e.prompt, e.completion or ""))
            keys.append((i, "prompt", 0))
            continue
        for k, c in enumerate(e.classes):
            pairs.append((e.prompt, c))
            keys.append((i, "prompt", k))
            if task.format == "logodds":
                pairs.append((e.other_prompt or "", c))
                keys.append((i, "other_prompt", k))
    fitted: list[Request | None] = []
    unscorable: dict[int, str] = {}
    for (ctx, cont), key in zip(encode_pairs(model.tokenizer, pairs, prepend_bos), keys):
        try:
            fitted.append(fit_to_context(ctx, cont, model.n_ctx,
                                         f"task {task.name!r}, example {task.examples[key[0]].id}"))
        except UnscorableError as err:
            unscorable.setdefault(key[0], err.reason)
            fitted.append(None)
    reqs = [r for r, key in zip(fitted, keys) if r is not None and key[0] not in unscorable]
    keys = [key for r, key in zip(fitted, keys) if r is not None and key[0] not in unscorable]
    return reqs, keys, unscorable


def score_task(
    model: LoadedModel,
    task: Task,
    prepend_bos: bool = False,
    batch_tokens: int | None = None,
    progress: bool | str = False,
) -> TaskScores:
    """Score every example of ``task`` on ``model`` with the ISP rules."""
    reqs, keys, unscorable = build_requests(task, model, prepend_bos)
    ll = loglikelihoods(model, reqs, batch_tokens=batch_tokens, progress=progress)
    return assemble(task, model, reqs, keys, ll, unscorable)


def assemble(task: Task, model: LoadedModel, reqs: Sequence[Request] | None,
             keys: Sequence[tuple[int, str, int]], ll: np.ndarray,
             unscorable: dict[int, str] | None = None, name: str | None = None) -> TaskScores:
    """``TaskScores`` from per-request summed log-probs, by the ISP rules (``reqs``, when
    given, counts the truncated examples)."""
    n = len(task.examples)
    unscorable = dict(unscorable or {})
    truncated = {keys[j][0] for j, r in enumerate(reqs or ()) if r.truncated}
    ids = [e.id for e in task.examples]
    common = dict(task=name or task.name, format=task.format, model_id=model.id,
                  n_params=model.n_params, example_ids=ids, n_truncated=len(truncated),
                  unscorable=unscorable,
                  size=model.n_params if model.spec.step is None else model.spec.step)
    bad = np.zeros(n, dtype=bool)
    bad[list(unscorable)] = True
    if task.format == "sequence_prob":
        total = np.zeros(n)
        for (i, _, _), v in zip(keys, ll):
            total[i] = v
        m = metrics.sequence_prob(total)
        loss = np.where(bad, np.nan, m["loss"])
        return TaskScores(answer_index=None, class_scores=None, chosen=None, correct=None,
                          loss=loss, class_mass=None, **common)
    c_max = max(len(e.classes) for e in task.examples)
    scores = {f: np.full((n, c_max), np.nan) for f in ("prompt", "other_prompt")}
    for (i, f, k), v in zip(keys, ll):
        scores[f][i, k] = v
    answer = np.array([e.answer_index for e in task.examples], dtype=np.int64)
    safe = {f: np.where(bad[:, None], 0.0, x) for f, x in scores.items()}
    if task.format == "classification":
        m = metrics.classification(safe["prompt"], answer)
        extra = {}
    else:
        m = metrics.logodds(safe["prompt"], safe["other_prompt"], answer)
        extra = {k: np.where(bad, np.nan, m[k]) for k in ("logodds", "other_logodds",
                                                           "logodds_difference")}
    return TaskScores(answer_index=answer, class_scores=scores["prompt"],
                      chosen=np.where(bad, -1, m["chosen"]), correct=m["correct"] & ~bad,
                      loss=np.where(bad, np.nan, m["loss"]),
                      class_mass=np.where(bad, np.nan, m["class_mass"]), extra=extra, **common)
