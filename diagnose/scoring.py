"""Score a task on one loaded model: requests -> engine -> ISP metrics.

``score_task`` is the stage every other stage builds on (trends, classifier,
mitigations all start from its ``TaskScores``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from diagnose import metrics
from diagnose.engine import (FINAL_RESID, Request, can_share_prefix, default_batch_tokens,
                             fit_to_context, loglikelihoods, plan_reads, readout_log_probs)
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

    @property
    def n(self) -> int:
        return len(self.example_ids)

    def summary(self, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
        """Accuracy with a 95% bootstrap interval, mean loss, mean class mass, baselines."""
        out: dict[str, Any] = {"id": self.model_id, "n_params": self.n_params, "n": self.n}
        if self.correct is not None:
            acc = self.correct.astype(np.float64)
            lo, hi = metrics.bootstrap_ci(acc, n_boot=n_boot, seed=seed)
            out.update(accuracy=float(acc.mean()), ci_low=lo, ci_high=hi)
        else:
            out.update(accuracy=None, ci_low=None, ci_high=None)
        lo, hi = metrics.bootstrap_ci(self.loss, n_boot=n_boot, seed=seed)
        out.update(loss=float(np.mean(self.loss)), loss_ci_low=lo, loss_ci_high=hi)
        out["class_mass"] = (float(np.mean(np.exp(self.class_mass)))
                             if self.class_mass is not None else None)
        out["log_class_mass"] = (float(np.mean(self.class_mass))
                                 if self.class_mass is not None else None)
        if self.class_scores is not None and self.answer_index is not None:
            out["always_index_accuracy"] = metrics.always_index_baselines(
                self.answer_index, self.class_scores.shape[1])
        out["n_truncated"] = self.n_truncated
        return out

    def rows(self) -> list[dict[str, Any]]:
        """Per-example rows (JSON-ready) for ``examples.jsonl``."""
        out = []
        for i, eid in enumerate(self.example_ids):
            row: dict[str, Any] = {"example_id": eid, "model_id": self.model_id}
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
                   ) -> tuple[list[Request], list[tuple[int, str, int]]]:
    """All requests of a task, and for each its (example index, prompt field, class)."""
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
    reqs = [
        fit_to_context(ctx, cont, model.n_ctx,
                       f"task {task.name!r}, example {task.examples[key[0]].id}")
        for (ctx, cont), key in zip(encode_pairs(model.tokenizer, pairs, prepend_bos), keys)
    ]
    return reqs, keys


def score_task(
    model: LoadedModel,
    task: Task,
    prepend_bos: bool = False,
    batch_tokens: int | None = None,
    progress: bool | str = False,
) -> TaskScores:
    """Score every example of ``task`` on ``model`` with the ISP rules."""
    reqs, keys = build_requests(task, model, prepend_bos)
    ll = loglikelihoods(model, reqs, batch_tokens=batch_tokens, progress=progress)
    return _assemble(task, model, reqs, keys, ll)


def _assemble(task: Task, model: LoadedModel, reqs: list[Request],
              keys: list[tuple[int, str, int]], ll: np.ndarray) -> TaskScores:
    n = len(task.examples)
    truncated = {keys[j][0] for j, r in enumerate(reqs) if r.truncated}
    ids = [e.id for e in task.examples]
    common = dict(task=task.name, format=task.format, model_id=model.id,
                  n_params=model.n_params, example_ids=ids, n_truncated=len(truncated))
    if task.format == "sequence_prob":
        m = metrics.sequence_prob(ll)
        return TaskScores(answer_index=None, class_scores=None, chosen=None, correct=None,
                          loss=m["loss"], class_mass=None, **common)
    c_max = max(len(e.classes) for e in task.examples)
    scores = {f: np.full((n, c_max), np.nan) for f in ("prompt", "other_prompt")}
    for (i, f, k), v in zip(keys, ll):
        scores[f][i, k] = v
    answer = np.array([e.answer_index for e in task.examples], dtype=np.int64)
    if task.format == "classification":
        m = metrics.classification(scores["prompt"], answer)
        extra = {}
    else:
        m = metrics.logodds(scores["prompt"], scores["other_prompt"], answer)
        extra = {k: m[k] for k in ("logodds", "other_logodds", "logodds_difference")}
    return TaskScores(answer_index=answer, class_scores=scores["prompt"], chosen=m["chosen"],
                      correct=m["correct"], loss=m["loss"], class_mass=m["class_mass"],
                      extra=extra, **common)


@dataclass
class FusedScores:
    """A task and its views scored in one pass, with the residual stack at each example's
    answer position when asked for (``[S, N, d]``: embeddings, then each block)."""

    task: TaskScores
    views: dict[str, TaskScores]
    stack: Any = None                     # torch.Tensor [S, N, d] or None
    contexts: list[list[int]] | None = None
    class_first_tokens: np.ndarray | None = None   # [N, C] (-1 padding)


def score_with_views(
    model: LoadedModel,
    task: Task,
    views: Sequence[str] | None = None,
    lens: bool = False,
    prepend_bos: bool = False,
    batch_tokens: int | None = None,
    progress: bool | str = False,
) -> FusedScores:
    """Score ``task`` and its ``views`` (default: all it has) in one batched plan.

    Every sequence of every view is sorted and packed together, so views cost only
    their own tokens; with ``lens=True`` the residual after the embedding and after
    every block is captured at the answer positions in the same forwards, so the logit
    lens costs no extra pass. Numbers equal ``score_task`` on each task separately.
    """
    from probes.capture import capture_at, resid_hooks

    views = list(task.view_names if views is None else views)
    tasks = [task] + [task.view(v) for v in views]
    parts = [build_requests(t, model, prepend_bos) for t in tasks]
    all_reqs = [r for reqs, _ in parts for r in reqs]
    plan = plan_reads(all_reqs, share_prefix=can_share_prefix(model))
    hooks = [FINAL_RESID] + (resid_hooks(model.n_layers) if lens else [])
    acts = capture_at(model.bridge, plan.inputs, plan.read_seq, plan.read_pos, hooks=hooks,
                      layouts=plan.layouts,
                      batch_tokens=batch_tokens or default_batch_tokens(model),
                      progress=progress)
    lp = readout_log_probs(model, acts[FINAL_RESID], plan.read_target)
    ll = np.bincount(plan.read_request, weights=lp, minlength=len(all_reqs))
    results, start = [], 0
    for t, (reqs, keys) in zip(tasks, parts):
        results.append(_assemble(t, model, reqs, keys, ll[start:start + len(reqs)]))
        start += len(reqs)
    out = FusedScores(task=results[0], views=dict(zip(views, results[1:])))
    if lens and task.format != "sequence_prob":
        reqs, keys = parts[0]
        first_read = np.full(len(all_reqs), -1, dtype=np.int64)
        first_read[plan.read_request[::-1]] = np.arange(len(plan.read_request))[::-1]
        n, c_max = len(task), max(len(e.classes) for e in task.examples)
        answer_read = np.full(n, -1, dtype=np.int64)
        contexts: list[list[int]] = [[] for _ in range(n)]
        first_tok = np.full((n, c_max), -1, dtype=np.int64)
        for j, (i, field_, k) in enumerate(keys):
            if field_ != "prompt":
                continue
            first_tok[i, k] = reqs[j].continuation[0]
            if answer_read[i] < 0:
                answer_read[i] = first_read[j]
                contexts[i] = list(reqs[j].context)
        idx = torch.from_numpy(answer_read)
        out.stack = torch.stack([acts[h][idx] for h in hooks[1:]])
        out.contexts, out.class_first_tokens = contexts, first_tok
    return out
