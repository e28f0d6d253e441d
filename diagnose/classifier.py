"""The cause classifier: why does this task scale inversely?

``CauseClassifier`` is a scikit-learn estimator (``fit``/``predict``/``predict_proba``)
over the features of ``diagnose.features``. Two questions, answered in order:

1. Does the task scale inversely at all? ``p_inverse`` is the fraction of bootstrap
   replicates (over examples, paired across models) whose curve is inverse, inverted-U
   or U-shaped by the trend rule of ``diagnose.trends``. P(no_inverse_scaling) =
   1 - p_inverse: a flat, noisy curve rarely has most replicates inverse-like. The
   label (``predict``) is ``no_inverse_scaling`` whenever the trend rule itself does not
   call the curve inverse-like, so a cause is never named beside a "flat" verdict.
2. If so, which cause? A multinomial logistic regression over the four causes
   (median imputation for evidence a task lacks, standardisation), trained on planted
   tasks of the model organisms: P(cause) = p_inverse * P(cause | features).

The label is the most probable of the five. ``explain`` gives the evidence in
sentences built from the feature values (each one checkable against the results),
and names the features that pushed the label most (coefficient x standardized
value). The fitted model is saved as JSON (no pickle).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from diagnose.features import VIEWS, feature_names

CAUSES = ("strong_prior", "unwanted_imitation", "distractor_task", "spurious_few_shot")
NO_INVERSE = "no_inverse_scaling"
LABELS = CAUSES + (NO_INVERSE,)
GATE_FEATURE = "p_inverse"
# features the cause model does not read: the gate's own inputs, and raw accuracies that
# describe how hard a task is rather than why it fails
_NOT_CAUSAL = {"p_inverse", "trend_confidence", "trend_inverse_like", "n_models", "log10_span",
               "acc_small", "acc_large", "acc_best_smaller"}


def as_matrix(X: Any, names: Sequence[str]) -> np.ndarray:
    """Feature dicts (or a DataFrame, or an array already in ``names`` order) -> [n, f]."""
    if isinstance(X, np.ndarray):
        return X.astype(float)
    if hasattr(X, "to_dict"):  # pandas
        X = X.to_dict("records")
    return np.array([[float(row.get(n, np.nan)) for n in names] for row in X], dtype=float)


class CauseClassifier(ClassifierMixin, BaseEstimator):
    def __init__(self, C: float = 1.0, random_state: int = 0):
        self.C = C
        self.random_state = random_state

    # -- fitting -----------------------------------------------------------------------
    def fit(self, X: Any, y: Sequence[str]) -> "CauseClassifier":
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        names = feature_names()
        self.feature_names_in_ = np.array(names)
        self.cause_features_ = [n for n in names if n not in _NOT_CAUSAL]
        Xm = as_matrix(X, names)
        y = np.asarray(y)
        unknown = set(y) - set(LABELS)
        if unknown:
            raise ValueError(f"unknown labels {sorted(unknown)}; expected {LABELS}")
        mask = np.isin(y, CAUSES)
        if len(set(y[mask])) < 2:
            raise ValueError("the cause model needs training units of at least two causes")
        cols = [names.index(n) for n in self.cause_features_]
        Xc = Xm[mask][:, cols]
        # a feature missing from every training unit carries no information: drop it
        keep = ~np.all(np.isnan(Xc), axis=0)
        self.cause_features_ = [n for n, k in zip(self.cause_features_, keep) if k]
        Xc = Xc[:, keep]
        self.imputer_ = SimpleImputer(strategy="median").fit(Xc)
        Z = self.imputer_.transform(Xc)
        self.scaler_ = StandardScaler().fit(Z)
        self.model_ = LogisticRegression(C=self.C, max_iter=5000,
                                         random_state=self.random_state)
        self.model_.fit(self.scaler_.transform(Z), y[mask])
        self.classes_ = np.array(LABELS)
        return self

    # -- prediction ----------------------------------------------------------------------
    def _standardized(self, Xm: np.ndarray) -> np.ndarray:
        names = list(self.feature_names_in_)
        cols = [names.index(n) for n in self.cause_features_]
        return self.scaler_.transform(self.imputer_.transform(Xm[:, cols]))

    def predict_proba(self, X: Any) -> np.ndarray:
        Xm = as_matrix(X, list(self.feature_names_in_))
        gate = Xm[:, list(self.feature_names_in_).index(GATE_FEATURE)]
        gate = np.clip(np.nan_to_num(gate, nan=0.0), 0.0, 1.0)
        pc = self.model_.predict_proba(self._standardized(Xm))
        out = np.zeros((len(Xm), len(LABELS)))
        for j, c in enumerate(self.model_.classes_):
            out[:, LABELS.index(c)] = gate * pc[:, j]
        out[:, LABELS.index(NO_INVERSE)] = 1.0 - gate
        return out

    def predict(self, X: Any) -> np.ndarray:
        """The most probable label, except that a curve the trend rule does not call
        inverse, inverted-U or U-shaped (``trend_inverse_like`` = 0) is labelled
        ``no_inverse_scaling`` whatever share of its bootstrap replicates are inverse-like:
        a cause is only named for a task that scales inversely by the project's rule."""
        Xm = as_matrix(X, list(self.feature_names_in_))
        labels = np.array(LABELS)[self.predict_proba(Xm).argmax(1)]
        like = Xm[:, list(self.feature_names_in_).index("trend_inverse_like")]
        labels[np.nan_to_num(like, nan=1.0) == 0.0] = NO_INVERSE
        return labels

    def contributions(self, x: Mapping[str, float], label: str) -> list[tuple[str, float]]:
        """Per feature, coefficient x standardized value for ``label`` (largest first)."""
        if label not in self.model_.classes_:
            return []
        Xm = as_matrix([x], list(self.feature_names_in_))
        z = self._standardized(Xm)[0]
        coef = self.model_.coef_
        if coef.shape[0] == 1:  # binary: sklearn keeps one row for classes_[1]
            coef = np.vstack([-coef[0], coef[0]])
        w = coef[list(self.model_.classes_).index(label)]
        c = w * z
        order = np.argsort(-c)
        return [(self.cause_features_[i], float(c[i])) for i in order]

    # -- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "CauseClassifier", "version": 1, "C": self.C,
            "random_state": self.random_state,
            "feature_names": list(self.feature_names_in_),
            "cause_features": self.cause_features_,
            "imputer_statistics": self.imputer_.statistics_.tolist(),
            "scaler_mean": self.scaler_.mean_.tolist(), "scaler_scale": self.scaler_.scale_.tolist(),
            "classes": list(self.model_.classes_), "coef": self.model_.coef_.tolist(),
            "intercept": self.model_.intercept_.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CauseClassifier":
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        if d.get("kind") != "CauseClassifier":
            raise ValueError("not a saved CauseClassifier")
        if list(d["feature_names"]) != feature_names():
            raise ValueError("the saved classifier was fitted on another feature set; refit it")
        self = cls(C=d["C"], random_state=d["random_state"])
        self.feature_names_in_ = np.array(d["feature_names"])
        self.cause_features_ = list(d["cause_features"])
        k = len(self.cause_features_)
        self.imputer_ = SimpleImputer(strategy="median").fit(np.zeros((1, k)))
        self.imputer_.statistics_ = np.array(d["imputer_statistics"], dtype=float)
        self.scaler_ = StandardScaler().fit(np.zeros((2, k)))
        self.scaler_.mean_ = np.array(d["scaler_mean"])
        self.scaler_.scale_ = np.array(d["scaler_scale"])
        self.model_ = LogisticRegression()
        self.model_.classes_ = np.array(d["classes"])
        self.model_.coef_ = np.array(d["coef"])
        self.model_.intercept_ = np.array(d["intercept"])
        self.classes_ = np.array(LABELS)
        return self

    def save(self, path: str | Path) -> None:
        from diagnose import store

        store.write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "CauseClassifier":
        return cls.from_dict(json.loads(Path(path).read_text()))


# -- evidence in words ---------------------------------------------------------------------

def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


# views whose own answer is the tempting one: what their accuracy says, and their name
_VIEW_SENTENCES = {
    "prior": ("With the instruction removed (prior view), {m} picks the memorized/prior answer "
              "in {acc} of examples", "prior-view"),
    "easy": ("The distractor sub-task alone (easy view) is solved in {acc} of examples by {m}",
             "easy-view"),
    "human": ("Asked in the imitated register (human view), {m} gives what that register says "
              "in {acc} of examples", "human-view"),
}


def evidence_sentences(f: Mapping[str, float], trend: Mapping[str, Any],
                       largest: str = "the largest model") -> list[str]:
    """What the features say, in sentences a researcher can check against the results."""
    s: list[str] = []
    fin = lambda k: k in f and f[k] is not None and np.isfinite(f[k])  # noqa: E731
    if fin("drop_large"):
        s.append(f"Accuracy goes from {f['acc_small']:.2f} for the smallest model to "
                 f"{f['acc_large']:.2f} for {largest}; the best smaller model reaches {f['acc_best_smaller']:.2f}, "
                 f"{100 * f['drop_large']:+.0f} points above the largest. The trend rule says "
                 f"'{trend.get('label')}' (confidence {trend.get('confidence', float('nan')):.2f}); "
                 f"{_pct(f['p_inverse'])} of bootstrap replicates are inverse-like.")
    for v, (what, name) in _VIEW_SENTENCES.items():
        if fin(f"{v}_acc_large"):
            s.append(what.format(m=largest, acc=_pct(f[f"{v}_acc_large"]))
                     + f" (trend {f[f'{v}_acc_slope']:+.2f} per decade of parameters).")
        if fin(f"{v}_agree_large"):
            s.append(f"Where {largest} is wrong, its answer equals its {name} answer in "
                     f"{_pct(f[f'{v}_agree_large'])} of cases.")
    for v, what in (("zero_shot", "Removing the demonstrations"),
                    ("balanced", "Balancing the demonstrations' spurious feature")):
        if fin(f"{v}_gap_large"):
            s.append(f"{what} changes the accuracy of {largest} by {100 * f[f'{v}_gap_large']:+.0f} "
                     f"points (trend {100 * f[f'{v}_gap_slope']:+.0f} points per decade).")
    if fin("commit_large"):
        s.append(f"On its wrong answers {largest} commits at {_pct(f['commit_large'])} of its "
                 f"depth (logit lens; trend {f['commit_slope']:+.2f} per decade: negative = "
                 "earlier in larger models).")
    if fin("overwrite_large"):
        s.append(f"In {_pct(f['overwrite_large'])} of the wrong answers of {largest} the "
                 "correct class led at an intermediate layer and was overwritten later.")
    if fin("know_gap_large"):
        s.append(f"A linear probe on the residual stream of {largest} is "
                 f"{100 * f['know_gap_large']:+.0f} points more accurate than its output "
                 "(knows-but-does-not-say gap).")
    present = [v for v in VIEWS if f.get(f"{v}_present")]
    if not present:
        s.append("The task has no counterfactual views, so the cause rests on the trend and "
                 "the probes only (less evidence).")
    return s
