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

Each view test's evidence is the likelihood ratio it gives its cause: its posterior odds
over the odds it was fitted with (the share of its training tasks that were its cause's),
so a test that cannot tell its cause's tasks from the others gives 1, and so does a view
never seen on both its cause's tasks and others; a cause's ratio ``L_c`` is its best view's, and its
*support* ``L_c / (1 + L_c)`` (0.5: no evidence; "supported" from ``L_c >= MIN_RATIO``,
Jeffreys' substantial evidence). The hypotheses "cause c is at work" are weighed against
"none is": ``w_c = L_c q_c / max_t q_t`` (the lens model can lower a cause against the
best tested one, never raise it above its own views' evidence), ``P(c) = w_c / (R +
sum_t w_t)`` over the tested causes and ``P(undetermined) = R / (R + sum_t w_t)`` with
``R = MIN_RATIO``. ``predict`` is the argmax of ``predict_proba``
over ``classes_`` (the four causes and ``undetermined``): a cause beats "undetermined"
only on its own views' evidence, so a label always has a supported test, and adding or
removing the view of a cause that is not at work cannot move it. No feature says whether a view exists, so which views a
task carries can only change which causes are tested. The fitted model is saved as
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
# the evidence a cause needs to be named: its views must raise its odds at least this much
# (Jeffreys' "substantial" Bayes factor); below it the cause is "not supported"
MIN_RATIO = 3.0


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
                                        names.index(f"{v}_acc_large")]]).any(1)
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
        cols = [names.index(f"{v}_{m}") for v in views_testing(c) for m in ("tempt_large", "acc_large")]
        out[:, j] = np.isfinite(Xm[:, cols]).any(1) if cols else False
    return out


def _pipeline(C: float, seed: int):
    """Zero for a measure a task cannot give (no tempting class, one model for a slope):
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
    views-only model. ``C`` (inverse L2 strength) 10: the features are shares in [0, 1], so
    a test needs weights of that order to be sure, and a handful of training tasks cannot
    afford a stronger pull to the base rate (chosen among 0.5, 2, 10, 50 on a draft
    family's leave-one-design-out run: 0.80, 0.92, 0.97, 0.97; the reported validation
    is on the final families).
    """

    def __init__(self, C: float = 10.0, views: bool = True, lens: bool = True,
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
        self.prior_: dict[str, float] = {}
        if self.views:
            from diagnose.views import VIEWS

            P = views_present(Xm)
            for k, (v, spec) in enumerate(VIEWS.items()):
                block = view_features(v)
                self.blocks_[v] = block
                rows = P[:, k]
                yv = (y[rows] == spec.tests).astype(int)
                if yv.min() == yv.max():
                    continue  # nothing to contrast: no evidence (ratio 1)
                self.prior_[v] = float(yv.mean())
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
    def view_ratio(self, X: Any) -> np.ndarray:
        """[n, V] each view test's likelihood ratio for its cause (1: no evidence); NaN
        where the unit has no such view."""
        from diagnose.views import VIEWS

        names = list(self.feature_names_in_)
        Xm = as_matrix(X, names)
        out = np.ones((len(Xm), len(VIEWS)))
        for k, v in enumerate(VIEWS):
            if self.views and v in self.models_:
                cols = [names.index(n) for n in self.blocks_[v]]
                p = np.clip(self.models_[v].predict_proba(Xm[:, cols])[:, 1], 1e-6, 1 - 1e-6)
                pi = self.prior_[v]
                out[:, k] = (p / (1 - p)) / (pi / (1 - pi))
        return np.where(views_present(Xm), out, np.nan)

    def ratio(self, X: Any) -> np.ndarray:
        """[n, 4] each cause's likelihood ratio: its best view's; NaN where untested."""
        from diagnose.views import VIEWS

        names = list(VIEWS)
        vr = self.view_ratio(X)
        out = np.full((len(vr), len(CAUSES)), np.nan)
        for j, c in enumerate(CAUSES):
            block = vr[:, [names.index(v) for v in views_testing(c)]]
            has = np.isfinite(block).any(1)
            out[has, j] = np.nanmax(block[has], axis=1)
        return out

    def support(self, X: Any) -> np.ndarray:
        """[n, 4] each cause's support ``L / (1 + L)`` (0.5: no evidence); NaN untested."""
        r = self.ratio(X)
        return r / (1 + r)

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
        r = self.ratio(X)
        q = np.where(np.isnan(r), 0.0, self.lens_proba(X))
        top = q.max(1, keepdims=True)
        w = np.where(np.isnan(r), 0.0, r) * np.where(top > 0, q / np.where(top > 0, top, 1), 1.0)
        if not self.views:  # lens/probe-only: the lens model alone picks among tested causes
            w = np.where(np.isnan(r), 0.0, 1e6 * self.lens_proba(X))
        out = np.concatenate([w, np.full((len(w), 1), MIN_RATIO)], 1)
        return out / out.sum(1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]

    def tests(self, X: Any) -> list[dict[str, str]]:
        """Per task and cause: supported (its views raise its odds at least ``MIN_RATIO``
        times), not_supported, untested."""
        r = self.ratio(X)
        return [{c: (UNTESTED if np.isnan(x) else SUPPORTED if x >= MIN_RATIO else NOT_SUPPORTED)
                 for c, x in zip(CAUSES, row)} for row in r]

    def contributions(self, x: Mapping[str, float], cause: str) -> list[tuple[str, float]]:
        """Per feature of the cause's best view test: coefficient x value (largest first)."""
        from diagnose.views import VIEWS

        vs = self.view_ratio([x])[0]
        cands = [(vs[list(VIEWS).index(v)], v) for v in views_testing(cause)
                 if np.isfinite(vs[list(VIEWS).index(v)]) and v in self.models_]
        if not cands:
            return []
        view = max(cands)[1]
        m = self.models_[view]
        names = list(self.feature_names_in_)
        block = self.blocks_[view]
        row = as_matrix([x], names)[:, [names.index(n) for n in block]]
        z = m[:-1].transform(row)[0]  # the imputed values
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
        return {"kind": "CauseModel", "version": 6, "C": self.C, "views": self.views,
                "lens": self.lens, "random_state": self.random_state,
                "feature_names": list(self.feature_names_in_), "models": models,
                "prior": self.prior_}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CauseModel":
        if d.get("kind") != "CauseModel" or d.get("version") != 6:
            raise StaleClassifierError("not a saved CauseModel of this version")
        if list(d["feature_names"]) != feature_names():
            raise StaleClassifierError("the saved classifier was fitted on another feature set")
        self = cls(C=d["C"], views=d["views"], lens=d["lens"], random_state=d["random_state"])
        self.feature_names_in_ = np.array(d["feature_names"])
        self.classes_ = np.array(CLASSES)
        self.prior_ = dict(d["prior"])
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
