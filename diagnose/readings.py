"""What the instruments read from one model's capture, without the model.

The capture (``diagnose.capture``) holds the residual at the task prompt's answer
position after every block, each class's first-token log-prob there (the logit lens)
and the direct logit attribution. From those this module derives, per example:

- the lens over the classes (renormalized), the margin correct minus tempting per
  layer, each layer's choice and the commitment layer (``probes.logit_lens``);
- out-of-fold predictions of the contrast probe per layer (``probes.linear_probe``:
  each class scored from the residual times its unembedding direction, folds grouped by
  example), and the index probe's and the shuffled controls' accuracies.

``Readings`` is what the probe stage reports and plots and what the cause classifier
reads, from the same arrays: the label's evidence is the evidence shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from diagnose.capture import Capture


@dataclass
class Readings:
    class_log_probs: np.ndarray     # [N, S, C] renormalized over the example's classes
    margin: np.ndarray              # [N, S] correct minus tempting (NaN: unscored)
    choice: np.ndarray              # [N, S] argmax class per entry (-1: unscored)
    commit: np.ndarray              # [N] commitment entry (NaN: never settles / unscored)
    tempting: np.ndarray            # [N] the tempting class used (given, else best wrong)
    probe_pred: np.ndarray          # [S, N] out-of-fold contrast-probe choice (-1: none)
    probe_shuffled: np.ndarray      # [S] contrast probe on a random "correct" class
    probe_chance: float
    index_probe: np.ndarray         # [S] index-probe accuracy (which position is right)
    index_probe_std: np.ndarray     # [S]
    index_probe_shuffled: np.ndarray  # [S]
    folds: int

    @property
    def n_entries(self) -> int:
        return self.margin.shape[1]

    def probe_correct(self, answer: np.ndarray) -> np.ndarray:
        """[S, N] 1/0 where the probe is right/wrong, NaN where it made no prediction."""
        return np.where(self.probe_pred < 0, np.nan, (self.probe_pred == answer[None]).astype(float))

    def probe_accuracy(self, answer: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        """[S] probe accuracy over the examples ``idx`` (all scored ones by default)."""
        pc = self.probe_correct(answer)
        if idx is not None:
            pc = pc[:, idx]
        with np.errstate(invalid="ignore"):
            return np.array([np.nanmean(r) if np.isfinite(r).any() else np.nan for r in pc])


def read(cap: Capture, seed: int = 0, folds: int = 5, min_lead: float = 0.0,
         lens_log_probs: np.ndarray | None = None, index_probe: bool = False) -> Readings:
    """The lens, commitment and probe readings of one capture (``lens_log_probs``: another
    lens's readout of the same residuals, e.g. a tuned lens; default the logit lens).
    ``index_probe``: also the older probe of the correct class's position (off by default:
    it only means something where the classes are listed in the prompt)."""
    from threadpoolctl import threadpool_limits

    # one BLAS thread per fit: hundreds of small fits oversubscribe a shared CPU otherwise
    with threadpool_limits(1):
        return _read(cap, seed, folds, min_lead, lens_log_probs, index_probe)


def _read(cap: Capture, seed: int, folds: int, min_lead: float,
          lens_log_probs: np.ndarray | None, index_probe: bool) -> Readings:
    from probes.linear_probe import contrast_cv_predictions, contrast_layer_probes, layer_probes
    from probes.logit_lens import commitment_layer, renormalize

    lp = cap.lens_log_probs if lens_log_probs is None else lens_log_probs
    N, S, C = lp.shape
    scored = np.isfinite(lp[:, -1]).any(1)
    norm = renormalize(lp)
    answer = cap.answer
    tempting = cap.tempting.copy()
    for i in np.nonzero((tempting < 0) & scored)[0]:
        last = np.where(np.isnan(norm[i, -1]), -np.inf, norm[i, -1]).copy()
        last[answer[i]] = -np.inf
        tempting[i] = int(last.argmax())
    margin = np.full((N, S), np.nan)
    rows = np.nonzero(scored)[0]
    margin[rows] = norm[rows, :, answer[rows]] - norm[rows, :, tempting[rows]]
    choice = np.full((N, S), -1, dtype=np.int64)
    choice[rows] = np.where(np.isnan(norm[rows]), -np.inf, norm[rows]).argmax(-1)
    commit = np.full(N, np.nan)
    for i in rows:
        c = commitment_layer(norm[i], min_lead)
        commit[i] = np.nan if c is None else c
    pred = np.full((S, N), -1, dtype=np.int64)
    shuffled = np.full(S, np.nan)
    idx_acc = idx_std = idx_shuf = np.full(S, np.nan)
    chance = float("nan")
    k = 0
    if len(rows) >= 2:
        dirs, valid = cap.class_directions()
        stack = cap.stack[:, rows].astype(np.float64)
        pred[:, rows] = contrast_cv_predictions(stack, dirs[rows], answer[rows], valid[rows],
                                                n_splits=folds, seed=seed)
        ctrl = contrast_layer_probes(stack, dirs[rows], answer[rows], valid[rows], n_splits=folds,
                                     seed=seed, control=True)
        shuffled, chance, k = ctrl.shuffled_accuracy, ctrl.chance, ctrl.n_splits
        if index_probe:
            ip = layer_probes(stack, answer[rows], n_splits=folds, seed=seed)
            idx_acc, idx_std, idx_shuf = ip.accuracy, ip.accuracy_std, ip.shuffled_accuracy
    return Readings(class_log_probs=norm, margin=margin, choice=choice, commit=commit,
                    tempting=tempting, probe_pred=pred, probe_shuffled=shuffled,
                    probe_chance=chance, index_probe=idx_acc, index_probe_std=idx_std,
                    index_probe_shuffled=idx_shuf, folds=k)


def to_record(r: Readings) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays = {k: getattr(r, k) for k in FIELDS}
    return arrays, {"probe_chance": r.probe_chance, "folds": r.folds}


FIELDS = ("class_log_probs", "margin", "choice", "commit", "tempting", "probe_pred",
          "probe_shuffled", "index_probe", "index_probe_std", "index_probe_shuffled")


def from_record(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Readings:
    chance = meta.get("probe_chance")
    return Readings(probe_chance=float("nan") if chance is None else float(chance),
                    folds=int(meta["folds"]), **{k: arrays[k] for k in FIELDS})


def readings_stage(seed: int = 0, folds: int = 5, lens: str = "logit",
                   index_probe: bool = False):
    """The per-model stage that reads the instruments from the capture (no model);
    ``lens="tuned"`` reads the tuned lens stage's readout instead of the logit lens."""
    from diagnose.runner import ModelStage

    tuned = lens == "tuned"

    def compute(_, inputs):
        cap = inputs["capture"]
        if cap.lens_log_probs is None:
            return {}, {"empty": True}
        lp = inputs["tuned_lens"]["lens_log_probs"] if tuned else None
        return to_record(read(cap, seed=seed, folds=folds, lens_log_probs=lp,
                              index_probe=index_probe))

    def decode(arrays, meta):
        return None if meta.get("empty") else from_record(arrays, meta)

    return ModelStage(name="readings_tuned" if tuned else "readings",
                      reads=("capture", "tuned_lens") if tuned else ("capture",),
                      key=[seed, folds, lens, index_probe], compute=compute, decode=decode)
