"""The cause classifier: which cause's intervention explains a task's inverse scaling?

Composed openly, in three parts:

1. The gate is a rule (``gate``), not a learned probability: a task the family cannot
   read is ``undetermined``; a task the trend rule (``diagnose.trends``) does not call
   inverse, inverted-U or U-shaped is ``no_inverse_scaling``.
2. Past the gate, each cause is *tested* by its own views (the registry's
   ``ViewSpec.tests``). Each view has its own ``Pipeline`` (imputation, logistic
   regression) that reads only what that view does (do the
   errors follow the view's answer, does the intervention pull to the tempting answer,
   does it remove the errors, by size) and answers "does this intervention explain the
   errors?". It is fitted on every task the view applies to: tasks of the view's cause
   that scale inversely are the positives; tasks of other causes and controls (where the
   view exists and explains nothing) the negatives. A cause's support ``s_c`` is its best
   view's. No view's features are ever imputed from another task's view, so a view a
   task lacks carries no value at all: a cause none of whose views exists is *untested*
   (no probability, never the label, reported so).
3. The lens and probe evidence (commitment depth, overwritten answers, the
   knows-but-does-not-say gap) cannot say whether a task scales inversely (the gate does
   that), so it is fitted on inversely scaling tasks only, as one multinomial logistic
   regression over the causes, ``q_c``, and weighs the tested causes against each other.

Each hypothesis "cause c is at work" is weighed against "none is" by its test's odds,
``s_c / (1 - s_c)``, times the lens model's ``4 q_c`` (1 when it is indifferent):
``P(c) = w_c / (1 + sum_t w_t)`` over the tested causes and ``P(undetermined) = 1 / (1 +
sum_t w_t)``. ``predict`` is the argmax of ``predict_proba`` over ``classes_`` (the four
causes and ``undetermined``): a cause beats "undetermined" by its own evidence alone, so
adding or removing the view of a cause that is not at work (a small ``w_t``) cannot move
the label. No feature says whether a view exists, so which views a task carries can only
change which causes are tested. The fitted model is saved as
JSON (no pickle) with its feature names; a model fitted on other features is an error.
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


def cause_block(cause: str) -> list[str]:
    """The features a cause's tests read: what its views do."""
    names: list[str] = []
    for v in views_testing(cause):
        names += view_features(v)
    return names


def views_present(X: Any) -> np.ndarray:
    """[n, V] which registry views have evidence on each unit."""
    from diagnose.views import VIEWS

    names = feature_names()
    Xm = as_matrix(X, names)
    return np.stack([np.isfinite(Xm[:, [names.index(f"{v}_tempt_large"),
                                        names.index(f"{v}_fix_large")]]).any(1)
                     for v in VIEWS], 1)


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
    """Zero for a measure a task cannot give (no errors to agree, one model for a slope):
    no evidence, not the training tasks' typical value. No standardisation: every feature
    is a share or a per-decade change on the same scale already, and rescaling features
    that barely vary across the training tasks would blow their noise up. No class
    weights: where a view's effect cannot tell its cause from the others, the support
    must fall to that cause's share of the tasks the view applies to, not to one half."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    return Pipeline([("impute", SimpleImputer(strategy="constant", fill_value=0.0,
                                              keep_empty_features=True)),
                     ("logit", LogisticRegression(C=C, max_iter=5000, random_state=seed))])


class CauseModel(ClassifierMixin, BaseEstimator):
    """Per-cause tests from each cause's own views, weighed by the lens and probe
    evidence; see the module docstring.

    ``fit(X, y)``: ``y`` holds a cause for tasks where that cause is at work (they scale
    inversely) and ``no_inverse_scaling`` for tasks where none is (controls).
    ``views=False`` gives the lens/probe-only comparison model (every tested cause counts
    as supported; the lens and probe evidence alone picks among them); ``lens=False`` the
    views-only model.
    """

    def __init__(self, C: float = 0.5, views: bool = True, lens: bool = True,
                 random_state: int = 0):
        self.C = C
        self.views = views
        self.lens = lens
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
            raise ValueError("the cause model needs training tasks of at least two causes")
        self.feature_names_in_ = np.array(names)
        self.classes_ = np.array(CLASSES)
        self.blocks_: dict[str, list[str]] = {}
        self.models_: dict[str, Any] = {}
        self.constant_: dict[str, float] = {}
        if self.views:
            from diagnose.views import VIEWS

            P = views_present(Xm)
            for k, (v, spec) in enumerate(VIEWS.items()):
                block = view_features(v)
                self.blocks_[v] = block
                rows = P[:, k]
                yv = (y[rows] == spec.tests).astype(int)
                if rows.sum() == 0 or yv.min() == yv.max():
                    # nothing to contrast: the support is the share seen (0 or 1)
                    self.constant_[v] = float(yv.mean()) if rows.sum() else 0.0
                    continue
                cols = [names.index(n) for n in block]
                self.models_[v] = _pipeline(self.C, self.random_state).fit(Xm[rows][:, cols], yv)
        if self.lens:
            mask = np.isin(y, CAUSES)
            self.blocks_["lens"] = list(SHARED_FEATURES)
            cols = [names.index(n) for n in SHARED_FEATURES]
            self.models_["lens"] = _pipeline(self.C, self.random_state).fit(Xm[mask][:, cols],
                                                                            y[mask])
        return self

    # -- prediction ----------------------------------------------------------------------
    def view_support(self, X: Any) -> np.ndarray:
        """[n, V] each view's test: P(its intervention explains the errors); NaN where the
        unit has no such view."""
        from diagnose.views import VIEWS

        names = list(self.feature_names_in_)
        Xm = as_matrix(X, names)
        out = np.full((len(Xm), len(VIEWS)), np.nan)
        P = views_present(Xm)
        for k, v in enumerate(VIEWS):
            if v in self.models_:
                cols = [names.index(n) for n in self.blocks_[v]]
                out[:, k] = self.models_[v].predict_proba(Xm[:, cols])[:, 1]
            else:
                out[:, k] = self.constant_.get(v, 0.0)
        return np.where(P, out, np.nan)

    def support(self, X: Any) -> np.ndarray:
        """[n, 4] each cause's support: its best view's test; NaN where it is untested."""
        from diagnose.views import VIEWS

        names = list(VIEWS)
        vs = self.view_support(X) if self.views else np.where(views_present(X), 1.0, np.nan)
        out = np.full((len(vs), len(CAUSES)), np.nan)
        for j, c in enumerate(CAUSES):
            cols = [names.index(v) for v in views_testing(c)]
            block = vs[:, cols]
            has = np.isfinite(block).any(1)
            out[has, j] = np.nanmax(block[has], axis=1)
        return out

    def lens_proba(self, X: Any) -> np.ndarray:
        """[n, 4] the lens/probe model's P(cause | inverse scaling) (uniform without it)."""
        names = list(self.feature_names_in_)
        Xm = as_matrix(X, names)
        out = np.full((len(Xm), len(CAUSES)), 1.0 / len(CAUSES))
        m = self.models_.get("lens")
        if m is not None:
            cols = [names.index(n) for n in self.blocks_["lens"]]
            p = m.predict_proba(Xm[:, cols])
            out[:] = 0.0
            for k, c in enumerate(m.classes_):
                out[:, CAUSES.index(c)] = p[:, k]
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        """[n, 5] over ``classes_``: the four causes, then ``undetermined``."""
        sup = np.clip(self.support(X), 1e-6, 1 - 1e-6)
        w = np.where(np.isnan(sup), 0.0, sup / (1 - sup)) * len(CAUSES) * self.lens_proba(X)
        if not self.views:  # lens/probe-only: the lens model alone picks among tested causes
            w = np.where(np.isnan(sup), 0.0, 1e6 * self.lens_proba(X))
        out = np.concatenate([w, np.ones((len(w), 1))], 1)
        return out / out.sum(1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]

    def tests(self, X: Any, threshold: float = 0.5) -> list[dict[str, str]]:
        """Per task and cause: supported (its views' support >= threshold), not_supported,
        untested."""
        sup = self.support(X)
        return [{c: (UNTESTED if np.isnan(p) else SUPPORTED if p >= threshold else NOT_SUPPORTED)
                 for c, p in zip(CAUSES, row)} for row in sup]

    def contributions(self, x: Mapping[str, float], cause: str) -> list[tuple[str, float]]:
        """Per feature of the cause's best view test: coefficient x standardized value
        (largest first)."""
        from diagnose.views import VIEWS

        vs = self.view_support([x])[0]
        cands = [(vs[list(VIEWS).index(v)], v) for v in views_testing(cause)
                 if np.isfinite(vs[list(VIEWS).index(v)]) and v in self.models_]
        if not cands:
            return []
        view = max(cands)[1]
        m = self.models_[view]
        names = list(self.feature_names_in_)
        block = self.blocks_[view]
        row = as_matrix([x], names)[:, [names.index(n) for n in block]]
        z = m[:-1].transform(row)[0]
        c = m[-1].coef_[0] * z
        return [(block[i], float(c[i])) for i in np.argsort(-c)]

    # -- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        models = {}
        for c, m in self.models_.items():
            lr = m[-1]
            models[c] = {"features": self.blocks_[c],
                         "classes": [str(k) for k in lr.classes_],
                         "coef": lr.coef_.tolist(), "intercept": lr.intercept_.tolist()}
        return {"kind": "CauseModel", "version": 5, "C": self.C, "views": self.views,
                "lens": self.lens, "random_state": self.random_state,
                "feature_names": list(self.feature_names_in_), "models": models,
                "constant": self.constant_}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CauseModel":
        if d.get("kind") != "CauseModel" or d.get("version") != 5:
            raise StaleClassifierError("not a saved CauseModel of this version")
        if list(d["feature_names"]) != feature_names():
            raise StaleClassifierError("the saved classifier was fitted on another feature set")
        self = cls(C=d["C"], views=d["views"], lens=d["lens"], random_state=d["random_state"])
        self.feature_names_in_ = np.array(d["feature_names"])
        self.classes_ = np.array(CLASSES)
        self.constant_ = dict(d["constant"])
        self.blocks_, self.models_ = {}, {}
        for c, m in d["models"].items():
            p = _pipeline(self.C, self.random_state)
            p[0].fit(np.zeros((1, len(m["features"]))))
            lr = p[-1]
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
