"""The cause classifier: which cause's intervention explains a task's inverse scaling?

Composed openly, in two parts:

1. The gate is a rule (``gate``), not a learned probability: a task the family cannot
   read is ``undetermined``; a task the trend rule (``diagnose.trends``) does not call
   inverse, inverted-U or U-shaped is ``no_inverse_scaling``.
2. The cause model (``CauseModel``, a scikit-learn estimator) runs only past the gate.
   Each cause has its own ``Pipeline`` (median imputation, standardisation, logistic
   regression) that reads only the evidence of the views testing that cause (the
   registry's ``ViewSpec.tests``) plus the lens and probe evidence, and answers "is this
   cause at work?": its support ``P_c``. A cause none of whose views exists for the task
   is *untested*: it gets no probability, is never the label, and the output says so.
   The tested causes' supports combine as ``P(undetermined) = prod(1 - P_c)`` (none is at
   work) and ``P(c) = (1 - P(undetermined)) * P_c / sum(P_t)``; ``predict`` is the argmax
   of ``predict_proba`` over ``classes_`` (the four causes and ``undetermined``).

No feature says whether a view exists, so which views a task happens to carry can only
change which causes are tested, never tip the evidence between tested ones. The fitted
model is saved as JSON (no pickle) with the feature names and the family it was fitted
on, so a stale model is an error, not a silent mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from diagnose.causes import (CAUSES, NO_INVERSE, NOT_SUPPORTED, SUPPORTED, UNDETERMINED,
                             UNTESTED)
from diagnose.features import SHARED_FEATURES, feature_names, view_features
from diagnose.views import views_testing

CLASSES = CAUSES + (UNDETERMINED,)


class StaleClassifierError(ValueError):
    """A saved classifier that does not fit this code or family (says what to run)."""


def cause_block(cause: str, shared: bool = True) -> list[str]:
    """The features the cause's own model reads: its views' evidence (+ lens/probes)."""
    names: list[str] = []
    for v in views_testing(cause):
        names += view_features(v)
    return names + (list(SHARED_FEATURES) if shared else [])


def as_matrix(X: Any, names: Sequence[str]) -> np.ndarray:
    """Feature dicts (or a DataFrame, or an array already in ``names`` order) -> [n, f]."""
    if isinstance(X, np.ndarray):
        return X.astype(float)
    if hasattr(X, "to_dict"):  # pandas
        X = X.to_dict("records")
    return np.array([[float(row.get(n, np.nan)) for n in names] for row in X], dtype=float)


def causes_under_test(X: Any) -> np.ndarray:
    """[n, 4] which causes each unit can test: some view of the cause has evidence."""
    names = feature_names()
    Xm = as_matrix(X, names)
    out = np.zeros((len(Xm), len(CAUSES)), dtype=bool)
    for j, c in enumerate(CAUSES):
        cols = [names.index(f"{v}_{m}") for v in views_testing(c) for m in ("tempt_large", "fix_large")]
        out[:, j] = np.isfinite(Xm[:, cols]).any(1) if cols else False
    return out


def _pipeline(C: float, seed: int):
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                     ("scale", StandardScaler()),
                     ("logit", LogisticRegression(C=C, class_weight="balanced", max_iter=5000,
                                                  random_state=seed))])


class CauseModel(ClassifierMixin, BaseEstimator):
    """Per-cause support from each cause's own views; see the module docstring.

    ``fit(X, y)``: ``y`` holds a cause for units where that cause is at work and
    ``no_inverse_scaling`` for units where none is (controls); a cause's model is fitted
    on the units that test it, positives its own, negatives all others.
    ``shared=False`` leaves out the lens/probe features; ``views=False`` reads only them
    (the lens/probe-only comparison model, one multinomial logistic regression).
    """

    def __init__(self, C: float = 0.5, shared: bool = True, views: bool = True,
                 random_state: int = 0):
        self.C = C
        self.shared = shared
        self.views = views
        self.random_state = random_state

    # -- fitting -------------------------------------------------------------------------
    def fit(self, X: Any, y: Sequence[str]) -> "CauseModel":
        names = feature_names()
        Xm = as_matrix(X, names)
        y = np.asarray(y)
        unknown = set(y) - set(CAUSES) - {NO_INVERSE}
        if unknown:
            raise ValueError(f"unknown labels {sorted(unknown)}; expected causes or {NO_INVERSE}")
        if len(set(y) & set(CAUSES)) < 2:
            raise ValueError("the cause model needs training units of at least two causes")
        self.feature_names_in_ = np.array(names)
        self.classes_ = np.array(CLASSES)
        self.blocks_: dict[str, list[str]] = {}
        self.models_: dict[str, Any] = {}
        self.constant_: dict[str, float] = {}
        T = causes_under_test(Xm)
        if not self.views:
            return self._fit_lens_only(Xm, y)
        for j, c in enumerate(CAUSES):
            block = cause_block(c, self.shared)
            self.blocks_[c] = block
            rows = T[:, j]
            yc = (y[rows] == c).astype(int)
            if rows.sum() == 0 or yc.min() == yc.max():
                # nothing to contrast: the support is the share seen (0 or 1), noted
                self.constant_[c] = float(yc.mean()) if rows.sum() else 0.0
                continue
            cols = [names.index(n) for n in block]
            self.models_[c] = _pipeline(self.C, self.random_state).fit(Xm[rows][:, cols], yc)
        return self

    def _fit_lens_only(self, Xm: np.ndarray, y: np.ndarray) -> "CauseModel":
        names = list(self.feature_names_in_)
        cols = [names.index(n) for n in SHARED_FEATURES]
        mask = np.isin(y, CAUSES)
        self.blocks_ = {"*": list(SHARED_FEATURES)}
        self.models_ = {"*": _pipeline(self.C, self.random_state).fit(Xm[mask][:, cols], y[mask])}
        return self

    # -- prediction ----------------------------------------------------------------------
    def support(self, X: Any) -> np.ndarray:
        """[n, 4] P(cause at work) per cause; NaN where the cause is untested."""
        names = list(self.feature_names_in_)
        Xm = as_matrix(X, names)
        T = causes_under_test(Xm)
        out = np.full((len(Xm), len(CAUSES)), np.nan)
        if "*" in self.models_:
            m = self.models_["*"]
            cols = [names.index(n) for n in self.blocks_["*"]]
            p = m.predict_proba(Xm[:, cols])
            for k, c in enumerate(m.classes_):
                out[:, CAUSES.index(c)] = p[:, k]
            return np.where(T, out, np.nan)
        for j, c in enumerate(CAUSES):
            if c in self.models_:
                cols = [names.index(n) for n in self.blocks_[c]]
                out[:, j] = self.models_[c].predict_proba(Xm[:, cols])[:, 1]
            else:
                out[:, j] = self.constant_.get(c, 0.0)
        return np.where(T, out, np.nan)

    def predict_proba(self, X: Any) -> np.ndarray:
        """[n, 5] over ``classes_``: the four causes, then ``undetermined``."""
        sup = self.support(X)
        if "*" in self.models_:  # lens/probe-only: a multinomial model over the tested causes
            p = np.nan_to_num(sup)
            tot = p.sum(1, keepdims=True)
            p = np.where(tot > 0, p / np.where(tot > 0, tot, 1), 0.0)
            return np.concatenate([p, (tot == 0).astype(float)], 1)
        s = np.nan_to_num(sup, nan=0.0)
        none = np.prod(np.where(np.isnan(sup), 1.0, 1.0 - sup), axis=1, keepdims=True)
        tot = s.sum(1, keepdims=True)
        causes = np.where(tot > 0, (1 - none) * s / np.where(tot > 0, tot, 1), 0.0)
        return np.concatenate([causes, none], 1)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]

    def tests(self, X: Any, threshold: float = 0.5) -> list[dict[str, str]]:
        """Per unit and cause: supported (support >= threshold), not_supported, untested."""
        sup = self.support(X)
        return [{c: (UNTESTED if np.isnan(p) else SUPPORTED if p >= threshold else NOT_SUPPORTED)
                 for c, p in zip(CAUSES, row)} for row in sup]

    def contributions(self, x: Mapping[str, float], cause: str) -> list[tuple[str, float]]:
        """Per feature of the cause's block: coefficient x standardized value (largest first)."""
        m = self.models_.get(cause)
        if m is None:
            return []
        names = list(self.feature_names_in_)
        block = self.blocks_[cause]
        row = as_matrix([x], names)[:, [names.index(n) for n in block]]
        z = m[:-1].transform(row)[0]
        c = m[-1].coef_[0] * z
        return [(block[i], float(c[i])) for i in np.argsort(-c)]

    # -- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        models = {}
        for c, m in self.models_.items():
            imp, sc, lr = m[0], m[1], m[2]
            models[c] = {"features": self.blocks_[c],
                         "impute": imp.statistics_.tolist(),
                         "mean": sc.mean_.tolist(), "scale": sc.scale_.tolist(),
                         "classes": [str(k) for k in lr.classes_],
                         "coef": lr.coef_.tolist(), "intercept": lr.intercept_.tolist()}
        return {"kind": "CauseModel", "version": 2, "C": self.C, "shared": self.shared,
                "views": self.views, "random_state": self.random_state,
                "feature_names": list(self.feature_names_in_), "models": models,
                "constant": self.constant_}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CauseModel":
        if d.get("kind") != "CauseModel" or d.get("version") != 2:
            raise StaleClassifierError("not a saved CauseModel of this version")
        if list(d["feature_names"]) != feature_names():
            raise StaleClassifierError("the saved classifier was fitted on another feature set")
        self = cls(C=d["C"], shared=d["shared"], views=d["views"], random_state=d["random_state"])
        self.feature_names_in_ = np.array(d["feature_names"])
        self.classes_ = np.array(CLASSES)
        self.constant_ = dict(d["constant"])
        self.blocks_, self.models_ = {}, {}
        for c, m in d["models"].items():
            p = _pipeline(self.C, self.random_state)
            imp, sc, lr = p[0], p[1], p[2]
            k = len(m["features"])
            imp.fit(np.zeros((1, k)))
            imp.statistics_ = np.array(m["impute"], dtype=float)
            sc.fit(np.zeros((2, k)))
            sc.mean_, sc.scale_ = np.array(m["mean"]), np.array(m["scale"])
            lr.classes_ = np.array([int(x) if x.isdigit() else x for x in m["classes"]])
            lr.coef_, lr.intercept_ = np.array(m["coef"]), np.array(m["intercept"])
            self.blocks_[c], self.models_[c] = list(m["features"]), p
        return self

    def save(self, path: str | Path, provenance: Mapping[str, Any] | None = None) -> None:
        from diagnose import store

        store.write_json(Path(path), {**self.to_dict(), "provenance": dict(provenance or {})})

    @classmethod
    def load(cls, path: str | Path) -> "CauseModel":
        return cls.from_dict(json.loads(Path(path).read_text()))


def gate(trend: Mapping[str, Any], unreadable: Sequence[str] = ()) -> str | None:
    """The rule before the cause model: ``undetermined`` when the family cannot read the
    task (``unreadable`` gives the reasons), ``no_inverse_scaling`` when the trend rule
    does not call the curve inverse-like; None when the cause model decides."""
    from diagnose.trends import INVERSE_LIKE

    if unreadable:
        return UNDETERMINED
    if trend.get("label") not in INVERSE_LIKE:
        return NO_INVERSE
    return None
