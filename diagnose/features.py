"""Features of a task over a family, computed from per-example evidence (pure numpy).

Each feature is a number a researcher can check by hand against the evidence, named
for what it measures. Slopes are least-squares slopes against log10(parameters), so
they compare across families of different spans. "large" means the largest model.
A feature that cannot be computed (a view the task does not have, no probes) is NaN;
the classifier imputes it and the explanation says the evidence is missing.

Per counterfactual view ``v``:
- ``{v}_acc_large`` / ``{v}_acc_slope``: accuracy on the view (against the view's own
  answer) at the largest size / its trend with size. For ``prior`` that is how
  strongly memory alone prefers the tempting answer; for ``easy``, how well the
  distractor sub-task is solved; for ``human``, how well the model reproduces what
  the imitated register says.
- ``{v}_agree_large``: among examples the largest model gets wrong, the fraction
  where its answer equals its answer on the view ("wrong answers agree with the
  view"); ``{v}_agree_slope`` its trend over sizes.
- ``{v}_gap_large`` / ``{v}_gap_slope``: view accuracy minus task accuracy, for the
  views that keep the true answer (``zero_shot``, ``balanced``): positive when
  removing or balancing the demonstrations helps.
From the probes:
- ``commit_large`` / ``commit_slope``: mean relative depth at which the model commits
  to its final answer, among examples it gets wrong (earlier = smaller).
- ``overwrite_large``: fraction of the largest model's wrong answers where the correct
  class led at some intermediate layer ("present, then overwritten").
- ``know_gap_large`` / ``know_gap_slope``: best per-layer probe accuracy minus output
  accuracy ("knows but does not say").
"""

from __future__ import annotations

import numpy as np

from diagnose.evidence import FamilyEvidence
from diagnose.tasks import VIEW_NAMES
from diagnose.trends import INVERSE_LIKE, trend_from_outcomes

VIEWS = VIEW_NAMES
TRUE_ANSWER_VIEWS = ("zero_shot", "balanced")


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    x, y = x[ok], y[ok]
    xc = x - x.mean()
    den = float((xc ** 2).sum())
    return float((xc * (y - y.mean())).sum() / den) if den > 0 else float("nan")


def _mean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def feature_names() -> list[str]:
    names = ["n_models", "log10_span", "acc_small", "acc_large", "acc_best_smaller",
             "drop_large", "p_inverse", "trend_confidence", "trend_inverse_like"]
    for v in VIEWS:
        names += [f"{v}_present", f"{v}_acc_large", f"{v}_acc_slope", f"{v}_agree_large",
                  f"{v}_agree_slope"]
        if v in TRUE_ANSWER_VIEWS:
            names += [f"{v}_gap_large", f"{v}_gap_slope"]
    names += ["commit_large", "commit_slope", "overwrite_large", "know_gap_large",
              "know_gap_slope"]
    return names


def unit_features(ev: FamilyEvidence, idx: np.ndarray | None = None, n_boot: int = 500,
                  seed: int = 0) -> tuple[dict[str, float], dict]:
    """Features over the examples ``idx`` (all when None), and the accuracy trend."""
    n_ex = len(ev.example_ids)
    idx = np.arange(n_ex) if idx is None else np.asarray(idx)
    x = np.log10(ev.n_params)
    M = len(ev.models)
    f: dict[str, float] = {k: float("nan") for k in feature_names()}
    correct = np.stack([m.correct[idx] for m in ev.models]).astype(float)   # [M, n]
    acc = correct.mean(1)
    trend = trend_from_outcomes(ev.n_params, correct, higher_is_better=True, n_boot=n_boot,
                                seed=seed)
    probs = trend.label_probabilities
    f.update(n_models=M, log10_span=float(x[-1] - x[0]), acc_small=acc[0], acc_large=acc[-1],
             acc_best_smaller=float(acc[:-1].max()) if M > 1 else float("nan"),
             drop_large=float(acc[:-1].max() - acc[-1]) if M > 1 else float("nan"),
             p_inverse=float(sum(probs.get(k, 0.0) for k in INVERSE_LIKE)),
             trend_confidence=float(trend.confidence),
             trend_inverse_like=float(trend.scales_inversely))
    largest = ev.models[-1]
    wrong_large = ~largest.correct[idx]
    for v in VIEWS:
        present = v in ev.views and all(v in m.view_correct for m in ev.models)
        f[f"{v}_present"] = float(present)
        if not present:
            continue
        vacc = np.array([m.view_correct[v][idx].mean() for m in ev.models])
        agree = np.array([
            _mean((m.choice[idx] == m.view_choice[v][idx])[~m.correct[idx]])
            for m in ev.models])
        f[f"{v}_acc_large"] = vacc[-1]
        f[f"{v}_acc_slope"] = _slope(x, vacc)
        f[f"{v}_agree_large"] = (_mean((largest.choice[idx] == largest.view_choice[v][idx])
                                       [wrong_large]))
        f[f"{v}_agree_slope"] = _slope(x, agree)
        if v in TRUE_ANSWER_VIEWS:
            gap = vacc - acc
            f[f"{v}_gap_large"] = gap[-1]
            f[f"{v}_gap_slope"] = _slope(x, gap)
    if all(m.commit_depth is not None for m in ev.models):
        commit = np.array([_mean(m.commit_depth[idx][~m.correct[idx]]) for m in ev.models])
        f["commit_large"] = commit[-1]
        f["commit_slope"] = _slope(x, commit)
        lm = largest.lens_margin[idx]
        if lm.shape[1] > 2:
            led = (lm[:, 1:-1] > 0).any(1)
            f["overwrite_large"] = _mean(led[wrong_large].astype(float))
    if all(m.probe_correct is not None for m in ev.models):
        gaps = []
        for m in ev.models:
            per_layer = np.array([_mean(row) for row in m.probe_correct[:, idx]])
            gaps.append(float(np.nanmax(per_layer)) - float(m.correct[idx].mean())
                        if np.isfinite(per_layer).any() else float("nan"))
        gaps = np.array(gaps)
        f["know_gap_large"] = gaps[-1]
        f["know_gap_slope"] = _slope(x, gaps)
    return f, trend.to_dict()
