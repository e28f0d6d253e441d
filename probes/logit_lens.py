"""The logit lens over the classes of a task, and the commitment layer.

For every example, the residual stream at the answer position (the last context token,
where the first token of a class is predicted) is read after the embedding and after
every block, through the model's real final norm and unembedding, as the log-probs of
each class's first token, renormalized over the classes (DESIGN.md section 4).

Why not ``transformer_lens.tools.analysis.logit_lens`` itself: it runs
``run_with_cache`` and keeps the residual at *every* position of the batch, and it reads
one shared position (``positions=``) per batch, so padded batches of prompts of
different lengths need a pass per length. We capture only the answer positions
(``probes.capture.capture_at``: memory independent of prompt length) and read them with
``logit_readout``, the kernel ``logit_lens`` is built on, so the numbers are the same. A
``Lens`` (``probes.tuned_lens``) plugs in exactly as ``logit_lens(lens=...)`` would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from probes.capture import capture_at, resid_hooks


@dataclass
class ClassLensResult:
    """Per example ``i``, stack entry ``s`` (0 = embeddings, ``l + 1`` = block ``l``),
    class ``c``. Missing classes (fewer than ``C``) are NaN."""

    log_probs: np.ndarray          # [N, S, C] full-vocabulary log p(first token of class)
    class_log_probs: np.ndarray    # [N, S, C] renormalized over the example's classes
    margin: np.ndarray             # [N, S] correct minus tempting (renormalized)
    choice: np.ndarray             # [N, S] argmax class per entry
    commit_layer: list[int | None]  # per example: first entry the final choice holds from
    answer_index: np.ndarray       # [N]
    tempting_index: np.ndarray     # [N] (given, or the best wrong class at the last entry)
    lens: str = "logit"

    @property
    def n_entries(self) -> int:
        return self.margin.shape[1]

    @property
    def commit_array(self) -> np.ndarray:
        """Commitment layers as floats (NaN where the model never settles)."""
        return np.array([np.nan if c is None else c for c in self.commit_layer], dtype=float)

    @property
    def final_correct(self) -> np.ndarray:
        return self.choice[:, -1] == self.answer_index


def commitment_layer(trajectory: np.ndarray, min_lead: float = 0.0) -> int | None:
    """The first stack entry from which the final choice stays the choice to the end.

    ``trajectory`` is ``[S, C]`` scores (log-probs, logits: any monotone score; NaN for
    a missing class). An entry "chooses" class ``c`` when ``c`` leads every other class
    by more than ``min_lead`` (a tie chooses nothing). Returns ``None`` when the last
    entry itself chooses nothing (the model never settles).
    """
    t = np.asarray(trajectory, dtype=float)
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"trajectory must be [layers, classes], got shape {t.shape}")
    s = np.where(np.isnan(t), -np.inf, t)
    best = s.argmax(-1)
    if s.shape[1] == 1:
        lead = np.full(len(s), np.inf)
    else:
        top2 = np.sort(s, axis=-1)[:, -2:]
        with np.errstate(invalid="ignore"):
            lead = top2[:, 1] - top2[:, 0]
        lead = np.where(np.isnan(lead), np.inf, lead)  # -inf runner-up: a clear lead
    chooses = (lead > min_lead) & np.isfinite(s.max(-1))
    if not chooses[-1]:
        return None
    final = best[-1]
    layer = len(s) - 1
    while layer > 0 and chooses[layer - 1] and best[layer - 1] == final:
        layer -= 1
    return int(layer)


def sign_change_layer(margin: Sequence[float]) -> int | None:
    """The last entry at which a (mean) margin trajectory changes sign, i.e. the entry
    from which its sign is the final sign; ``None`` if it never changes."""
    m = np.sign(np.asarray(margin, dtype=float))
    final = m[-1]
    if final == 0 or np.isnan(final):
        return None
    layer = len(m) - 1
    while layer > 0 and m[layer - 1] == final:
        layer -= 1
    return None if layer == 0 else int(layer)


def renormalize(log_probs: np.ndarray) -> np.ndarray:
    """log-softmax over the last axis, ignoring NaN (missing) classes."""
    x = np.where(np.isnan(log_probs), -np.inf, log_probs)
    mx = x.max(-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):  # rows with no class at all
        lse = mx + np.log(np.exp(x - mx).sum(-1, keepdims=True))
        out = x - lse
    return np.where(np.isnan(log_probs), np.nan, out)


@torch.no_grad()
def read_classes(bridge: Any, stack: torch.Tensor, class_ids: np.ndarray, lens: Any = None,
                 return_type: str = "log_probs", chunk_size: int = 256) -> np.ndarray:
    """Read a residual stack ``[S, N, d]`` as each example's class first-token values:
    ``[N, S, C]`` (NaN where ``class_ids`` is -1)."""
    from probes.devices import materialized, readout, readout_device

    class_ids = np.asarray(class_ids, dtype=np.int64)
    vocab, inverse = np.unique(np.where(class_ids < 0, class_ids.max(), class_ids),
                               return_inverse=True)
    inverse = inverse.reshape(class_ids.shape)
    S, N = stack.shape[:2]
    out = np.full((N, S, class_ids.shape[1]), np.nan)
    rows = np.arange(N)[:, None]
    dev = readout_device(bridge) if lens is not None else None
    with materialized(bridge, bridge.unembed):  # one load of an offloaded W_U for all layers
        for s in range(S):
            h = stack[s]
            if lens is not None:
                h = lens(h.to(dev), s)
            v = readout(bridge, h, vocab=torch.as_tensor(vocab), return_type=return_type,
                        chunk_size=chunk_size).values.float().cpu().numpy()
            out[:, s, :] = v[rows, inverse]
    out[np.broadcast_to((class_ids < 0)[:, None, :], out.shape)] = np.nan
    return out


def answer_positions(contexts: Sequence[Sequence[int]]) -> np.ndarray:
    return np.asarray([len(c) - 1 for c in contexts], dtype=np.int64)


@torch.no_grad()
def capture_resid_stack(bridge: Any, contexts: Sequence[Sequence[int]],
                        batch_tokens: int = 8192, progress: bool | str = False) -> torch.Tensor:
    """The residual stream at each context's last position, every entry: ``[S, N, d]``."""
    hooks = resid_hooks(int(bridge.cfg.n_layers))
    acts = capture_at(bridge, contexts, np.arange(len(contexts)), answer_positions(contexts),
                      hooks=hooks, batch_tokens=batch_tokens, progress=progress)
    return torch.stack([acts[h] for h in hooks])


def class_logit_lens(
    bridge: Any,
    contexts: Sequence[Sequence[int]],
    class_ids: np.ndarray,
    answer_index: np.ndarray,
    tempting_index: np.ndarray | None = None,
    lens: Any = None,
    stack: torch.Tensor | None = None,
    batch_tokens: int = 8192,
    min_lead: float = 0.0,
) -> ClassLensResult:
    """The logit (or tuned) lens at the answer position, over the classes.

    ``class_ids[i, c]`` is the first token of class ``c`` of example ``i`` (-1 padding);
    ``tempting_index[i] = -1`` (or no array) takes the best wrong class at the last entry.
    ``stack`` reuses a residual capture from :func:`capture_resid_stack`.
    """
    if stack is None:
        stack = capture_resid_stack(bridge, contexts, batch_tokens)
    lp = read_classes(bridge, stack, class_ids, lens)
    norm = renormalize(lp)
    answer = np.asarray(answer_index, dtype=np.int64)
    n = len(answer)
    tempting = (np.full(n, -1, dtype=np.int64) if tempting_index is None
                else np.asarray(tempting_index, dtype=np.int64).copy())
    for i in np.where(tempting < 0)[0]:
        final = np.where(np.isnan(norm[i, -1]), -np.inf, norm[i, -1]).copy()
        final[answer[i]] = -np.inf
        tempting[i] = int(final.argmax())
    rows = np.arange(n)
    margin = norm[rows, :, answer] - norm[rows, :, tempting]
    choice = np.where(np.isnan(norm), -np.inf, norm).argmax(-1)
    commit = [commitment_layer(norm[i], min_lead) for i in range(n)]
    return ClassLensResult(log_probs=lp, class_log_probs=norm, margin=margin, choice=choice,
                           commit_layer=commit, answer_index=answer, tempting_index=tempting,
                           lens=getattr(lens, "name", "logit") if lens is not None else "logit")
