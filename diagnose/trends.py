"""Scaling-trend shape of one task over a model family, with a paired bootstrap.

Given per-example outcomes of the same examples on every model of a family
(``correct`` for accuracy, the ISP ``loss``), label the curve of per-model means
against model size as one of

    positive     larger is better
    inverse      larger is worse
    u_shaped     worse, then better again at the largest sizes (interior minimum)
    inverted_u   better, then worse at the largest sizes (interior maximum)
    flat         no trend that exceeds the noise

All numbers are computed on a *goodness* scale ``g = s * metric`` with ``s = +1``
when higher is better (accuracy) and ``s = -1`` when lower is better (ISP loss,
for every format, following the ISP's "loss" convention: a loss that rises with
size is inverse scaling). Models are sorted by ``n_params``; ``g_1`` is the
smallest model, ``g_M`` the largest.

The shape of one curve (``classify_curve``), with minimum effect ``d``:

1. end-to-end: ``e = g_M - g_1``; monotone label = positive if ``e >= d``,
   inverse if ``e <= -d``, else flat.
2. turning shapes (only with M >= 3 models; with 2 models only positive,
   inverse and flat exist): let ``P`` be the best interior model
   (``argmax g_k, 1 < k < M``) and ``T`` the worst interior model.
   ``inverted_u`` if ``depth_iu = min(g_P - g_1, g_P - g_M) >= d`` (it rises by at
   least ``d`` and falls by at least ``d``); ``u_shaped`` if
   ``depth_u = min(g_1 - g_T, g_M - g_T) >= d``. If both hold (a zig-zag), the
   deeper one wins (ties: the later turning point). A turning shape overrides
   the monotone label.

``d`` (``min_effect``) defaults to 0.05 (5 accuracy points) when the outcomes
are 0/1, and otherwise to 0.1 x the pooled per-example standard deviation
(the same standardized size as 5 points at 50 % accuracy), so a loss in nats
or a summed sequence loss gets a threshold in its own units.

The paired bootstrap: the same examples are scored by every model, so each of
``n_boot`` replicates resamples example indices once and applies them to all
models jointly (shared example difficulty then cancels in the differences,
as it should). Each replicate's curve is labelled with the same rule;
``label_probabilities`` are the fractions of replicates per label.

The decision rule (the label reported):

A. Shape: if the observed curve's label ``L0`` is not flat and at least
   ``min_support`` (default 0.9) of the replicates carry ``L0``, report ``L0``
   with ``confidence = P(L0)``.
B. Monotone fallback: otherwise, if the observed end-to-end change passes
   ``d`` (label ``L1`` = positive or inverse) and at least ``min_support`` of
   the replicates' end-to-end changes pass ``d`` in the same direction,
   report ``L1`` with ``confidence`` = that fraction (e.g. an inverse curve
   whose slight recovery at the top is not reliable enough for u_shaped).
C. Otherwise ``flat`` ("no trend exceeds the noise"), with ``confidence`` =
   the fraction of replicates labelled flat (low when the data are too noisy
   to tell anything; ``label_probabilities`` shows what the noise allows).

So a non-flat label needs both an effect of at least ``d`` in the observed
means and bootstrap support; a flat curve is called inverse only when the
smallest-minus-largest difference is at least ``d`` *and* at least about
``d + 1.3`` standard errors, i.e. rarely: 1.1 % of 540 flat synthetic families
(3.3 % at 100 examples with independent outcomes, 0 % at 300 and 1000), see
the trend validation study (README, "Trends").

Turning point (u_shaped / inverted_u): the vertex of the parabola through the
extreme interior model and its two neighbours, in ``log10(n_params)`` (so it
lies between those neighbours), reported in parameters. Two intervals, over
the replicates that carry the reported label (``ci``, default 95 %):

- ``turning_point_interval`` (model-free): from the ``(1-ci)/2`` quantile of the
  lower neighbour's size to the ``(1+ci)/2`` quantile of the upper neighbour's
  size. A family is only observed at its model sizes, so for a unimodal curve
  this bracket is what the data can vouch for without assuming a curve shape
  (coverage 99.9 % in the validation, about 1.7 decades wide on 4-8 models
  over 2-3 decades).
- ``turning_point_vertex_interval``: the percentile interval of the vertex
  itself; narrower (about 0.5 decade) but it trusts the local parabola, and
  asymmetric curves bias it (90 % coverage for nominal 95 % in the validation).

Everything is pure numpy; the same inputs and ``seed`` give the same numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

LABELS = ("positive", "inverse", "u_shaped", "inverted_u", "flat")
# the labels under which a task "scales inversely": the largest model is worse than a smaller one
INVERSE_LIKE = ("inverse", "inverted_u", "u_shaped")
_POS, _INV, _U, _IU, _FLAT = range(5)
_TOL = 1e-9  # relative slack on the threshold so that k/N differences of exactly d pass

DEFAULT_ACCURACY_EFFECT = 0.05
DEFAULT_STANDARDIZED_EFFECT = 0.1


@dataclass
class Trend:
    """The trend of one metric over a family (see the module docstring for the rule)."""

    label: str
    confidence: float
    label_probabilities: dict[str, float]
    decided_by: str                        # "shape", "monotone_fallback" or "no_supported_trend"
    reason: str                            # one sentence a researcher can check
    metric: str | None
    higher_is_better: bool
    n_params: list[int]                    # smallest first
    means: list[float]                     # per model, in the metric's own units
    mean_ci: list[tuple[float, float]]     # per model, paired-bootstrap percentile interval
    n_examples: int
    min_effect: float
    min_support: float
    turning_point: float | None = None     # n_params, for u_shaped / inverted_u
    turning_point_interval: tuple[float, float] | None = None        # bracket, n_params
    turning_point_vertex_interval: tuple[float, float] | None = None
    # effects on the goodness scale (positive = better), each {"estimate", "ci_low", "ci_high"}
    effects: dict[str, dict[str, float]] = field(default_factory=dict)
    n_boot: int = 0
    seed: int = 0
    ci: float = 0.95

    @property
    def scales_inversely(self) -> bool:
        """True when the largest model is worse than a smaller one by the rule:
        ``inverse``, ``inverted_u`` (reverses at the top) or ``u_shaped`` (inverse over
        part of the range)."""
        return self.label in INVERSE_LIKE

    def to_dict(self) -> dict[str, Any]:
        def f(x: Any) -> Any:
            if x is None:
                return None
            x = float(x)
            return x if math.isfinite(x) else None

        return {
            "label": self.label,
            "confidence": f(self.confidence),
            "label_probabilities": {k: f(v) for k, v in self.label_probabilities.items()},
            "decided_by": self.decided_by,
            "reason": self.reason,
            "metric": self.metric,
            "higher_is_better": bool(self.higher_is_better),
            "n_params": [int(n) for n in self.n_params],
            "means": [f(m) for m in self.means],
            "mean_ci": [[f(lo), f(hi)] for lo, hi in self.mean_ci],
            "n_examples": int(self.n_examples),
            "min_effect": f(self.min_effect),
            "min_support": f(self.min_support),
            "turning_point": f(self.turning_point),
            "turning_point_interval": (None if self.turning_point_interval is None
                                       else [f(v) for v in self.turning_point_interval]),
            "turning_point_vertex_interval": (
                None if self.turning_point_vertex_interval is None
                else [f(v) for v in self.turning_point_vertex_interval]),
            "effects": {k: {kk: f(vv) for kk, vv in v.items()} for k, v in self.effects.items()},
            "n_boot": int(self.n_boot),
            "seed": int(self.seed),
            "ci": f(self.ci),
        }


# ---------------------------------------------------------------- the shape rule


def _vertex(x: np.ndarray, g: np.ndarray, k: np.ndarray) -> np.ndarray:
    """log10 x of the vertex of the parabola through points k-1, k, k+1 (per row)."""
    r = np.arange(len(k))
    x0, x1, x2 = x[k - 1], x[k], x[k + 1]
    y0, y1, y2 = g[r, k - 1], g[r, k], g[r, k + 1]
    # derivative-free form: vertex = x1 - 0.5 * num / den
    num = (x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)
    den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = x1 - 0.5 * num / den
    v = np.where(np.isfinite(v) & (den != 0), v, x1)
    return np.clip(v, x0, x2)


def classify_curve(g: np.ndarray, log_n: np.ndarray, min_effect: float
                   ) -> dict[str, np.ndarray]:
    """Label curves of goodness means ``g`` [B, M] (models sorted by size).

    Returns arrays of length B: ``label`` (index into ``LABELS``), ``mono`` (the
    end-to-end label: positive, inverse or flat), ``turn`` (log10 n_params of the
    turning point, NaN unless the label is a turning shape), and the effects
    ``gain`` (g_M - g_1), ``drop`` (best smaller model minus the largest),
    ``depth_iu`` and ``depth_u`` (NaN with fewer than 3 models).
    """
    g = np.atleast_2d(np.asarray(g, dtype=np.float64))
    B, M = g.shape
    d = min_effect * (1 - _TOL)
    first, last = g[:, 0], g[:, -1]
    gain = last - first
    mono = np.full(B, _FLAT)
    mono[gain >= d] = _POS
    mono[gain <= -d] = _INV
    label = mono.copy()
    drop = g[:, :-1].max(axis=1) - last
    turn = np.full(B, np.nan)
    turn_lo = np.full(B, np.nan)
    turn_hi = np.full(B, np.nan)
    depth_iu = np.full(B, np.nan)
    depth_u = np.full(B, np.nan)
    if M >= 3:
        r = np.arange(B)
        inner = g[:, 1:-1]
        kp = inner.argmax(axis=1) + 1
        kt = inner.argmin(axis=1) + 1
        peak, trough = g[r, kp], g[r, kt]
        depth_iu = np.minimum(peak - first, peak - last)
        depth_u = np.minimum(first - trough, last - trough)
        is_iu, is_u = depth_iu >= d, depth_u >= d
        iu = is_iu & (~is_u | (depth_iu > depth_u) | ((depth_iu == depth_u) & (kp > kt)))
        u = is_u & ~iu
        label[iu] = _IU
        label[u] = _U
        k = np.where(iu, kp, kt)
        turning = iu | u
        if turning.any():
            turn[turning] = _vertex(log_n, g[turning], k[turning])
            turn_lo[turning] = log_n[k[turning] - 1]
            turn_hi[turning] = log_n[k[turning] + 1]
    return {"label": label, "mono": mono, "turn": turn, "turn_lo": turn_lo, "turn_hi": turn_hi,
            "gain": gain, "drop": drop, "depth_iu": depth_iu, "depth_u": depth_u}


def default_min_effect(outcomes: np.ndarray) -> float:
    """0.05 for 0/1 outcomes; else 0.1 x the pooled per-example standard deviation."""
    o = np.asarray(outcomes, dtype=np.float64)
    if np.all((o == 0) | (o == 1)):
        return DEFAULT_ACCURACY_EFFECT
    sd = math.sqrt(float(np.mean(np.var(o, axis=1))))
    return DEFAULT_STANDARDIZED_EFFECT * sd if sd > 0 else DEFAULT_ACCURACY_EFFECT


def _bootstrap_means(outcomes: np.ndarray, n_boot: int, seed: int,
                     chunk_elems: int = 4_000_000) -> np.ndarray:
    """[n_boot, M] means; each replicate resamples example indices jointly for all models."""
    M, N = outcomes.shape
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, N, size=(n_boot, N))
    out = np.empty((n_boot, M))
    step = max(1, chunk_elems // max(1, M * N))
    for s in range(0, n_boot, step):
        out[s:s + step] = outcomes[:, idx[s:s + step]].mean(axis=2).T
    return out


def _interval(v: np.ndarray, ci: float) -> tuple[float, float]:
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (float("nan"), float("nan"))
    a = (1 - ci) / 2
    return (float(np.quantile(v, a)), float(np.quantile(v, 1 - a)))


def _fmt_n(n: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


# ---------------------------------------------------------------- public API


def trend_from_outcomes(
    n_params: Sequence[float],
    outcomes: np.ndarray,
    higher_is_better: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    min_effect: float | None = None,
    min_support: float = 0.9,
    ci: float = 0.95,
    metric: str | None = None,
) -> Trend:
    """Trend of one metric: ``outcomes`` [M, N] per-example values of the same N
    examples (same order) on M models of sizes ``n_params`` (any order)."""
    o = np.asarray(outcomes, dtype=np.float64)
    sizes = np.asarray(n_params, dtype=np.float64)
    if o.ndim != 2:
        raise ValueError(f"outcomes must be [models, examples], got shape {o.shape}")
    M, N = o.shape
    if sizes.shape != (M,):
        raise ValueError(f"{sizes.size} sizes for {M} models")
    if M < 2:
        raise ValueError("a trend needs at least two models")
    if N < 1:
        raise ValueError("a trend needs at least one example")
    if not np.all(np.isfinite(o)):
        raise ValueError("outcomes contain NaN or inf; drop those examples first")
    if not np.all(sizes > 0):
        raise ValueError("n_params must be positive")
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    order = np.argsort(sizes, kind="stable")
    sizes, o = sizes[order], o[order]
    log_n = np.log10(sizes)
    if np.any(np.diff(log_n) <= 0):
        raise ValueError("model sizes must be distinct")
    d = float(default_min_effect(o) if min_effect is None else min_effect)
    if d <= 0:
        raise ValueError("min_effect must be positive")
    sign = 1.0 if higher_is_better else -1.0

    means = o.mean(axis=1)
    boot = _bootstrap_means(o, n_boot, seed)
    point = classify_curve(sign * means[None, :], log_n, d)
    reps = classify_curve(sign * boot, log_n, d)

    counts = np.bincount(reps["label"], minlength=len(LABELS))
    probs = {lab: float(counts[i] / n_boot) for i, lab in enumerate(LABELS)}
    l0, l1 = int(point["label"][0]), int(point["mono"][0])
    if l0 != _FLAT and probs[LABELS[l0]] >= min_support:
        label, conf, how = l0, probs[LABELS[l0]], "shape"
    elif l1 != _FLAT and float(np.mean(reps["mono"] == l1)) >= min_support:
        label, conf, how = l1, float(np.mean(reps["mono"] == l1)), "monotone_fallback"
    else:
        label, conf, how = _FLAT, probs["flat"], "no_supported_trend"
    name = LABELS[label]

    turning = tp_int = tp_vertex_int = None
    if label in (_U, _IU):
        turning = float(10 ** point["turn"][0])
        same = reps["label"] == label
        lo, hi = _interval(reps["turn"][same], ci)
        tp_vertex_int = (float(10 ** lo), float(10 ** hi))
        a = (1 - ci) / 2
        tp_int = (float(10 ** np.quantile(reps["turn_lo"][same], a)),
                  float(10 ** np.quantile(reps["turn_hi"][same], 1 - a)))

    effects: dict[str, dict[str, float]] = {}
    keys = ["gain", "drop"] + (["depth_iu", "depth_u"] if M >= 3 else [])
    names = {"gain": "gain_smallest_to_largest", "drop": "drop_best_smaller_to_largest",
             "depth_iu": "inverted_u_depth", "depth_u": "u_depth"}
    for k in keys:
        lo, hi = _interval(reps[k], ci)
        effects[names[k]] = {"estimate": float(point[k][0]), "ci_low": lo, "ci_high": hi}

    mean_ci = [_interval(boot[:, j], ci) for j in range(M)]
    trend = Trend(
        label=name, confidence=conf, label_probabilities=probs, decided_by=how, reason="",
        metric=metric, higher_is_better=higher_is_better,
        n_params=[int(round(s)) for s in sizes], means=[float(m) for m in means],
        mean_ci=mean_ci, n_examples=N, min_effect=d, min_support=min_support,
        turning_point=turning, turning_point_interval=tp_int,
        turning_point_vertex_interval=tp_vertex_int, effects=effects,
        n_boot=n_boot, seed=seed, ci=ci)
    trend.reason = _reason(trend, LABELS[l0])
    return trend


def _reason(t: Trend, observed: str) -> str:
    what = t.metric or "the metric"
    better = "higher" if t.higher_is_better else "lower"
    g = t.effects["gain_smallest_to_largest"]["estimate"]
    head = (f"{what} ({better} is better) goes from {t.means[0]:.4g} at {_fmt_n(t.n_params[0])} "
            f"to {t.means[-1]:.4g} at {_fmt_n(t.n_params[-1])} params "
            f"({'improves' if g > 0 else 'worsens'} by {abs(g):.3g}; minimum effect {t.min_effect:.3g})")
    if t.decided_by == "shape":
        tail = f"; {t.label} in {t.confidence:.0%} of {t.n_boot} paired bootstrap replicates"
        if t.turning_point is not None:
            lo, hi = t.turning_point_interval
            tail += (f", turning near {_fmt_n(t.turning_point)} params "
                     f"({t.ci:.0%} interval {_fmt_n(lo)}-{_fmt_n(hi)})")
    elif t.decided_by == "monotone_fallback":
        tail = (f"; the observed shape ({observed}) is not reliable, but the end-to-end change "
                f"passes the minimum effect in {t.confidence:.0%} of replicates: {t.label}")
    else:
        tail = (f"; no trend exceeds the noise (observed shape {observed}, "
                f"flat in {t.confidence:.0%} of replicates)")
    return head + tail + "."


def _aligned(models: list[tuple[float, list[str], np.ndarray | None, np.ndarray]]
             ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, int]:
    """Align per-model (n_params, example_ids, correct, loss) by example id.

    Keeps the ids that every model has, in the first model's order; drops examples
    whose loss is not finite on some model (returned as the count dropped).
    """
    common = set(models[0][1])
    for _, ids, _, _ in models[1:]:
        common &= set(ids)
    keep = [e for e in models[0][1] if e in common]
    sizes, correct, loss = [], [], []
    has_correct = all(c is not None for _, _, c, _ in models)
    for n, ids, c, l in models:
        pos = {e: i for i, e in enumerate(ids)}
        sel = np.array([pos[e] for e in keep], dtype=np.int64)
        sizes.append(n)
        loss.append(np.asarray(l, dtype=np.float64)[sel])
        if has_correct:
            correct.append(np.asarray(c, dtype=np.float64)[sel])
    loss_a = np.stack(loss) if keep else np.zeros((len(models), 0))
    ok = np.all(np.isfinite(loss_a), axis=0)
    corr_a = np.stack(correct)[:, ok] if has_correct and keep else None
    return np.asarray(sizes, dtype=np.float64), corr_a, loss_a[:, ok], int((~ok).sum())


def _trends(models: list[tuple[float, list[str], np.ndarray | None, np.ndarray]],
            min_effect_accuracy: float | None = None, min_effect_loss: float | None = None,
            **kw: Any) -> dict[str, Trend | None]:
    sizes, correct, loss, _ = _aligned(models)
    if loss.shape[1] == 0:   # no example every model could score: nothing to compare
        return {"accuracy": None, "loss": None}
    acc = None
    if correct is not None and correct.shape[1]:
        acc = trend_from_outcomes(sizes, correct, higher_is_better=True, metric="accuracy",
                                  min_effect=min_effect_accuracy, **kw)
    los = trend_from_outcomes(sizes, loss, higher_is_better=False, metric="loss",
                              min_effect=min_effect_loss, **kw)
    return {"accuracy": acc, "loss": los}


def trend_from_task_scores(scores: Sequence[Any], n_boot: int = 1000, seed: int = 0,
                           min_effect_accuracy: float | None = None,
                           min_effect_loss: float | None = None,
                           min_support: float = 0.9, ci: float = 0.95
                           ) -> dict[str, Trend | None]:
    """``{"accuracy": Trend | None, "loss": Trend}`` from in-memory ``TaskScores``
    (one per model; anything with ``n_params``, ``example_ids``, ``correct``, ``loss``)."""
    models = [(getattr(s, "x", s.n_params), list(s.example_ids), s.correct, s.loss)
              for s in scores]
    return _trends(models, n_boot=n_boot, seed=seed, min_effect_accuracy=min_effect_accuracy,
                   min_effect_loss=min_effect_loss, min_support=min_support, ci=ci)


def trend_from_score_dir(path: str | Path, n_boot: int = 1000, seed: int = 0,
                         min_effect_accuracy: float | None = None,
                         min_effect_loss: float | None = None,
                         min_support: float = 0.9, ci: float = 0.95
                         ) -> dict[str, Trend | None]:
    """``{"accuracy": Trend | None, "loss": Trend}`` for a ``diagnose score`` directory.

    Reads ``DIR/summary.json`` (models, smallest first) and each model's
    ``DIR/models/<slug>/examples.jsonl`` (``example_id``, ``correct``, ``loss``).
    Examples are aligned by id across models (ids missing on some model, or with a
    non-finite loss on some model, are left out). ``accuracy`` is None for formats
    without ``correct`` (sequence_prob).
    """
    from diagnose import store

    root = Path(path)
    summary = store.read_json(root / "summary.json")
    models = []
    for m in summary["models"]:
        rows_path = root / "models" / store.slug(m["id"]) / "examples.jsonl"
        if not rows_path.is_file():
            raise FileNotFoundError(f"no per-example results for model {m['id']!r}: {rows_path}")
        ids, correct, loss = [], [], []
        with open(rows_path) as fh:
            for line in fh:
                if not line.strip():
                    continue
                r = json.loads(line)
                ids.append(str(r["example_id"]))
                correct.append(r.get("correct"))
                loss.append(np.nan if r.get("loss") is None else r["loss"])
        corr = (None if any(c is None for c in correct)
                else np.asarray(correct, dtype=bool))
        models.append((float(m["n_params"]), ids, corr, np.asarray(loss, dtype=np.float64)))
    return _trends(models, n_boot=n_boot, seed=seed, min_effect_accuracy=min_effect_accuracy,
                   min_effect_loss=min_effect_loss, min_support=min_support, ci=ci)
