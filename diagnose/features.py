"""Features of a task over a family, from per-example evidence (pure numpy).

Each feature is a number a researcher can check by hand against the evidence, named for
what it measures. Slopes are least-squares slopes against log10(parameters), so they
compare across families of different spans; "large" means the largest model. Only
examples every model could score are used.

What each view *does* (for every view of the registry, ``diagnose.views``), on the
examples the view was built for:
- ``{v}_follow_large`` / ``_slope``: the fraction of examples where the model's answer
  equals its answer under the view (on a task it gets wrong, mostly: "the errors are the
  view's answer");
- ``{v}_tempt_large`` / ``_slope``: the fraction where the answer under the view is the
  tempting class (how hard the intervention alone pulls toward it);
- ``{v}_acc_large`` / ``_slope``: accuracy on the task's answer under the view (does the
  intervention remove the errors? Compare with ``acc_large``).
None of them is conditioned on the errors or taken relative to the task's accuracy: such
a measure would say how inversely the task scales, which the gate decides, and would let
a cause test learn "inverse task versus control" instead of what the intervention does.
A view the task does not have gives NaN for its features, and nothing else: no feature
says whether a view exists (``diagnose.classifier`` treats a cause none of whose views
exists as untested).

From the probes (the probe stage's own arrays):
- ``commit_large`` / ``_slope``: mean relative depth at which a model commits to its
  final answer, among the examples it gets wrong (earlier = smaller);
- ``overwrite_large``: fraction of the largest model's wrong answers where the correct
  class led at some intermediate layer ("present, then overwritten");
- ``know_gap_large`` / ``_slope``: best per-layer probe accuracy minus output accuracy
  ("knows but does not say").

The trend and accuracy features (``GATE_FEATURES``) describe the curve; the gate and
the evidence sentences read them, the cause model does not.
"""

from __future__ import annotations

import numpy as np

from diagnose.evidence import FamilyEvidence
from diagnose.trends import INVERSE_LIKE, trend_from_outcomes
from diagnose.views import VIEWS

GATE_FEATURES = ("n_models", "log10_span", "acc_small", "acc_large", "acc_best_smaller",
                 "drop_large", "p_inverse", "trend_confidence", "trend_inverse_like")
VIEW_MEASURES = ("follow_large", "follow_slope", "tempt_large", "tempt_slope", "acc_large",
                 "acc_slope")
SHARED_FEATURES = ("commit_large", "commit_slope", "overwrite_large", "know_gap_large",
                   "know_gap_slope")


def view_features(view: str) -> list[str]:
    return [f"{view}_{m}" for m in VIEW_MEASURES]


def feature_names() -> list[str]:
    names = list(GATE_FEATURES)
    for v in VIEWS:
        names += view_features(v)
    return names + list(SHARED_FEATURES)


def slope(x: np.ndarray, y: np.ndarray) -> float:
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


def unit_features(ev: FamilyEvidence, idx: np.ndarray | None = None, n_boot: int = 500,
                  seed: int = 0) -> tuple[dict[str, float], dict]:
    """Features over the examples ``idx`` (all when None), and the accuracy trend."""
    idx = np.arange(len(ev.example_ids)) if idx is None else np.asarray(idx)
    idx = idx[ev.scored_by_all[idx]]
    f: dict[str, float] = {k: float("nan") for k in feature_names()}
    if len(idx) == 0:
        return f, {"label": "flat", "confidence": float("nan"), "label_probabilities": {},
                   "reason": "no example could be scored by every model"}
    x = np.log10(ev.sizes)
    M = len(ev.models)
    correct = np.stack([m.correct[idx] for m in ev.models]).astype(float)   # [M, n]
    acc = correct.mean(1)
    trend = trend_from_outcomes(ev.sizes, correct, higher_is_better=True, n_boot=n_boot,
                                seed=seed)
    probs = trend.label_probabilities
    f.update(n_models=M, log10_span=float(x[-1] - x[0]), acc_small=acc[0], acc_large=acc[-1],
             acc_best_smaller=float(acc[:-1].max()) if M > 1 else float("nan"),
             drop_large=float(acc[:-1].max() - acc[-1]) if M > 1 else float("nan"),
             p_inverse=float(sum(probs.get(k, 0.0) for k in INVERSE_LIKE)),
             trend_confidence=float(trend.confidence),
             trend_inverse_like=float(trend.scales_inversely))
    for v in VIEWS:
        if v not in ev.views:
            continue
        have = np.logical_and.reduce([m.view_choice.get(v, np.full(len(m.choice), -1))[idx] >= 0
                                      for m in ev.models])
        sel = idx[have]
        if len(sel) == 0:
            continue
        follow, tempt, acc_v = [], [], []
        for m in ev.models:
            vc, ch = m.view_choice[v][sel], m.choice[sel]
            follow.append(_mean(ch == vc))
            t = m.tempting[sel]
            tempt.append(_mean((vc == t)[t >= 0]))
            acc_v.append(_mean(vc == m.answer[sel]))
        for name, vals in (("follow", follow), ("tempt", tempt), ("acc", acc_v)):
            vals = np.asarray(vals, dtype=float)
            f[f"{v}_{name}_large"] = vals[-1]
            f[f"{v}_{name}_slope"] = slope(x, vals)
    largest = ev.models[-1]
    if all(m.commit_depth is not None for m in ev.models):
        commit = np.array([_mean(m.commit_depth[idx][~m.correct[idx]]) for m in ev.models])
        f["commit_large"] = commit[-1]
        f["commit_slope"] = slope(x, commit)
        lm = largest.lens_margin[idx]
        if lm.shape[1] > 2:
            led = (lm[:, 1:-1] > 0).any(1)
            wrong = ~largest.correct[idx]
            f["overwrite_large"] = _mean(led[wrong].astype(float)) if wrong.any() else float("nan")
    if all(m.probe_correct is not None for m in ev.models):
        gaps = []
        for m in ev.models:
            per_layer = np.array([_mean(row) for row in m.probe_correct[:, idx]])
            gaps.append(float(np.nanmax(per_layer)) - float(m.correct[idx].mean())
                        if np.isfinite(per_layer).any() else float("nan"))
        gaps = np.array(gaps)
        f["know_gap_large"] = gaps[-1]
        f["know_gap_slope"] = slope(x, gaps)
    return f, trend.to_dict()
