"""Linear probes on the residual stream: is the right answer linearly present per layer?

A scikit-learn logistic regression per stack entry on the answer-position residual,
cross-validated (stratified k-fold), predicting which class is correct. Reported beside
the model's own output accuracy, a probe that is right where the output is wrong shows
a model that "knows but does not say".

Why not ``transformer_lens.tools.analysis.fit_sparse_probe`` / ``sweep_sparse_probe``:
they fit k-*sparse binary* probes on one train/test split; here the question is whether
the full residual carries the answer (dense), for tasks with any number of classes, and
the sample is small (tens to hundreds of examples), so k-fold cross-validation gives a
far less noisy accuracy than one held-out split. A label-shuffled control (the same
probe on permuted labels, the control ``sweep_sparse_probe`` also uses) is reported
beside it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass
class ProbeResult:
    accuracy: np.ndarray            # [S] mean cross-validated accuracy (NaN: too few examples)
    accuracy_std: np.ndarray        # [S] across folds
    shuffled_accuracy: np.ndarray   # [S] the same probe on shuffled labels (control)
    chance: float                   # majority-class rate
    n_splits: int
    n: int


def _pipeline(C: float, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # max_iter bounds the fits of the controls: labels a probe cannot learn are separable
    # noise in a wide residual, and L-BFGS creeps toward ever larger weights on them
    return make_pipeline(StandardScaler(),
                         LogisticRegression(C=C, max_iter=300, random_state=seed))


def cv_accuracy(X: np.ndarray, y: np.ndarray, n_splits: int = 5, C: float = 1.0,
                seed: int = 0) -> tuple[float, float, int]:
    """Stratified k-fold accuracy of a logistic-regression probe: (mean, std, folds used).
    NaN when a class has fewer than two examples or there is only one class."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    y = np.asarray(y)
    _, counts = np.unique(y, return_counts=True)
    k = int(min(n_splits, counts.min())) if len(counts) > 1 else 0
    if k < 2:
        return float("nan"), float("nan"), 0
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on tiny folds
        scores = cross_val_score(_pipeline(C, seed), np.asarray(X, dtype=np.float64), y, cv=cv)
    return float(scores.mean()), float(scores.std()), k


def layer_probes(features: np.ndarray, labels: np.ndarray, n_splits: int = 5, C: float = 1.0,
                 seed: int = 0, control: bool = True) -> ProbeResult:
    """One probe per stack entry. ``features`` is ``[S, N, d]``, ``labels`` ``[N]``."""
    feats = np.asarray(features)
    y = np.asarray(labels)
    S = feats.shape[0]
    acc, std, shuf = np.full(S, np.nan), np.full(S, np.nan), np.full(S, np.nan)
    y_shuf = np.random.default_rng(seed).permutation(y)
    k_used = 0
    for s in range(S):
        acc[s], std[s], k_used = cv_accuracy(feats[s], y, n_splits, C, seed)
        if control:
            shuf[s] = cv_accuracy(feats[s], y_shuf, n_splits, C, seed)[0]
    _, counts = np.unique(y, return_counts=True)
    chance = float(counts.max() / counts.sum()) if len(y) else float("nan")
    return ProbeResult(accuracy=acc, accuracy_std=std, shuffled_accuracy=shuf, chance=chance,
                       n_splits=k_used, n=len(y))


def cv_predictions(features: np.ndarray, labels: np.ndarray, n_splits: int = 5, C: float = 1.0,
                   seed: int = 0) -> np.ndarray:
    """Out-of-fold predictions per stack entry and example, ``[S, N]`` (-1 where a probe
    cannot be fitted). Per-example predictions let any subset of examples (a template,
    a split) be scored afterwards without refitting and without leaking its labels."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    feats = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    out = np.full(feats.shape[:2], -1, dtype=np.int64)
    _, counts = np.unique(y, return_counts=True)
    k = int(min(n_splits, counts.min())) if len(counts) > 1 else 0
    if k < 2:
        return out
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in range(feats.shape[0]):
            out[s] = cross_val_predict(_pipeline(C, seed), feats[s], y, cv=cv)
    return out


# -- contrast probes: which class is right, whatever its index ------------------------------
#
# The probes above predict the correct class's INDEX from the answer-position residual.
# Where the classes do not appear in the prompt (memo-trap: two endings in random order),
# no residual can know the index, so those probes sit at chance whatever the model knows.
# A contrast probe scores each class instead: its features are the residual times the
# class's unembedding direction (elementwise, d features), one row per (example, class),
# label "this class is the correct one"; an example's prediction is its best-scoring
# class. At the last layer a fixed all-ones weight is the model's own logit (before the
# final norm), so the probe asks whether a re-weighted linear read-out of the residual
# finds the answer where the model's read-out does not. Folds are grouped by example.


def class_directions(bridge, class_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each class's first-token unembedding direction ``[N, C, d]`` (zeros for padding,
    ``class_ids`` -1) and which entries are real classes ``[N, C]``."""
    from probes.devices import unembed_columns

    valid = class_ids >= 0
    ids = np.where(valid, class_ids, 0)
    uniq, inv = np.unique(ids, return_inverse=True)
    cols = unembed_columns(bridge, uniq).T.numpy()          # [U, d]
    dirs = cols[inv.reshape(ids.shape)]                     # [N, C, d]
    dirs[~valid] = 0.0
    return dirs, valid


def contrast_features(stack: np.ndarray, class_dirs: np.ndarray) -> np.ndarray:
    """``stack`` ``[S, N, d]`` x ``class_dirs`` ``[N, C, d]`` -> ``[S, N, C, d]``."""
    return np.asarray(stack)[:, :, None, :] * np.asarray(class_dirs)[None]


def contrast_cv_predictions(stack: np.ndarray, class_dirs: np.ndarray, labels: np.ndarray,
                            valid: np.ndarray | None = None, n_splits: int = 5, C: float = 1.0,
                            seed: int = 0) -> np.ndarray:
    """Out-of-fold predicted class per stack entry and example, ``[S, N]`` (-1 where no
    probe can be fitted). ``valid[n, c]`` marks real classes (False: padding)."""
    from sklearn.model_selection import GroupKFold

    feats = contrast_features(stack, class_dirs).astype(np.float64)
    S, N, Cc, _ = feats.shape
    y = np.asarray(labels)
    valid = np.ones((N, Cc), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    out = np.full((S, N), -1, dtype=np.int64)
    k = min(n_splits, N)
    if k < 2 or Cc < 2:
        return out
    rows_n, rows_c = np.nonzero(valid)
    target = (rows_c == y[rows_n]).astype(int)
    if target.min() == target.max():
        return out
    folds = list(GroupKFold(n_splits=k).split(rows_n, target, groups=rows_n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in range(S):
            X = feats[s, rows_n, rows_c]
            score = np.full((N, Cc), -np.inf)
            for tr, te in folds:
                if target[tr].min() == target[tr].max():
                    continue
                clf = _pipeline(C, seed).fit(X[tr], target[tr])
                score[rows_n[te], rows_c[te]] = clf.decision_function(X[te])
            ok = np.isfinite(score).any(1)
            out[s, ok] = score[ok].argmax(1)
    return out


def contrast_layer_probes(stack: np.ndarray, class_dirs: np.ndarray, labels: np.ndarray,
                          valid: np.ndarray | None = None, n_splits: int = 5, C: float = 1.0,
                          seed: int = 0, control: bool = True) -> ProbeResult:
    """Per stack entry: contrast-probe accuracy (out of fold), and the same probe with the
    correct class drawn at random per example (the control; about 1 / n_classes)."""
    y = np.asarray(labels)
    N = len(y)
    valid_ = np.ones(np.asarray(class_dirs).shape[:2], dtype=bool) if valid is None else valid
    pred = contrast_cv_predictions(stack, class_dirs, y, valid_, n_splits, C, seed)
    acc = np.where((pred >= 0).all(1), (pred == y[None]).mean(1), np.nan)
    shuf = np.full(len(acc), np.nan)
    if control:
        rng = np.random.default_rng(seed)
        y_rand = np.array([rng.choice(np.nonzero(row)[0]) for row in valid_])
        p2 = contrast_cv_predictions(stack, class_dirs, y_rand, valid_, n_splits, C, seed)
        shuf = np.where((p2 >= 0).all(1), (p2 == y_rand[None]).mean(1), np.nan)
    n_cls = np.asarray(valid_).sum(1)
    return ProbeResult(accuracy=acc, accuracy_std=np.full(len(acc), np.nan),
                       shuffled_accuracy=shuf, chance=float(np.mean(1.0 / n_cls)) if N else float("nan"),
                       n_splits=min(n_splits, N), n=N)
