"""The batched scoring engine: log-likelihoods of continuations, and residual capture.

Everything the toolkit measures reduces to "run these token sequences, and read the
residual stream at these positions". This module does that once, fast:

- each (context, continuation) request becomes one input sequence
  ``context + continuation[:-1]`` with reads at the continuation's positions; requests
  whose inputs coincide (every single-token class of a prompt) share one forward pass;
- sequences are sorted by length and packed into batches under a token budget, right
  padded (causal attention never lets a real token see the padding to its right, so
  padding changes no number);
- a hook (``probes.capture``) captures the final residual (``ln_final.hook_in``) only at the read positions,
  and ``transformer_lens``'s ``logit_readout`` turns it into log-probs through the
  model's real final norm and unembedding; the model's own unembedding runs on one
  position per row (``logits_to_keep=1``), so no ``[batch, pos, vocab]`` tensor exists.

The same capture path serves the logit lens (any ``blocks.{l}.hook_out``).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from diagnose.families import LoadedModel
from probes.capture import FINAL_RESID, capture_at

__all__ = ["Request", "UnscorableError", "ContextTooLongError", "fit_to_context", "loglikelihoods", "FINAL_RESID"]


@dataclass(frozen=True)
class Request:
    """Score ``continuation`` given ``context`` (token ids). ``truncated`` counts
    context tokens dropped from the left to fit the model's context window."""

    context: tuple[int, ...]
    continuation: tuple[int, ...]
    truncated: int = 0


class UnscorableError(ValueError):
    """A request this model cannot score (``reason`` says why); callers skip and count it."""

    def __init__(self, where: str, reason: str, advice: str = ""):
        super().__init__(f"{where}: {reason}" + (f"; {advice}" if advice else ""))
        self.reason = reason


class ContextTooLongError(UnscorableError):
    pass


def fit_to_context(ctx: Sequence[int], cont: Sequence[int], n_ctx: int, where: str) -> Request:
    """Left-truncate the context so context + continuation fits the window.

    Policy (documented in the README): the prompt loses its oldest tokens, the
    continuation is never cut; the number of truncated examples is reported.
    """
    if not cont:
        raise UnscorableError(where, "a class encodes to zero tokens under this tokenizer")
    n_input = len(ctx) + len(cont) - 1
    if n_input <= n_ctx:
        return Request(tuple(ctx), tuple(cont))
    if len(cont) > n_ctx:  # at least one context token must remain
        raise ContextTooLongError(
            where, f"a class is longer than the model's context ({len(cont)} > {n_ctx} tokens)",
            "shorten it or use a model with a longer context")
    drop = n_input - n_ctx
    return Request(tuple(ctx[drop:]), tuple(cont), truncated=drop)


@dataclass
class _Plan:
    inputs: list[tuple[int, ...]]        # unique input sequences (packed rows)
    read_seq: np.ndarray                 # [M] index of the input sequence for each read
    read_pos: np.ndarray                 # [M] position inside it
    read_target: np.ndarray              # [M] target token id
    read_request: np.ndarray             # [M] request each read belongs to
    # per input: None (plain causal) or (position ids, segment ids) of a prefix-shared row
    layouts: list[tuple[np.ndarray, np.ndarray] | None] = field(default_factory=list)


def plan_reads(requests: Sequence[Request], share_prefix: bool = True,
               max_shared_row: int | None = None) -> _Plan:
    """Unique input rows and the reads each request needs from them.

    Requests with the same context share one row. With one multi-token continuation (or
    none) that row is ``context + continuation[:-1]`` and every single-token continuation
    is read at the context's last position. With several multi-token continuations
    (``share_prefix``) the row is the context once followed by each continuation's
    tokens as a branch: a branch sees the context and its own earlier tokens only, and
    its position ids continue from the context, so each branch computes exactly what its
    own sequence would, and the context is run once instead of once per class.
    ``max_shared_row``: a shared row longer than this is not built; that context falls
    back to one row per continuation (local attention, see ``shared_row_limit``).
    """
    inputs: list[tuple[int, ...]] = []
    layouts: list[tuple[np.ndarray, np.ndarray] | None] = []
    seq, pos, tgt, req = [], [], [], []

    def read(s: int, at: Sequence[int], r_i: int) -> None:
        for p_, t in zip(at, requests[r_i].continuation):
            seq.append(s)
            pos.append(p_)
            tgt.append(t)
            req.append(r_i)

    index: dict[tuple[int, ...], int] = {}

    def separate(r_i: int) -> None:  # one row per distinct context + continuation[:-1]
        r = requests[r_i]
        full = r.context + r.continuation[:-1]
        if full not in index:
            index[full] = len(inputs)
            inputs.append(full)
            layouts.append(None)
        read(index[full], range(len(r.context) - 1, len(full)), r_i)

    if not share_prefix:
        for r_i in range(len(requests)):
            separate(r_i)
    else:
        groups: dict[tuple[int, ...], list[int]] = {}
        for r_i, r in enumerate(requests):
            groups.setdefault(r.context, []).append(r_i)
        for ctx, members in groups.items():
            bodies = list(dict.fromkeys(requests[i].continuation[:-1] for i in members
                                        if len(requests[i].continuation) > 1))
            s = len(inputs)
            if (len(bodies) > 1 and max_shared_row is not None
                    and len(ctx) + sum(map(len, bodies)) > max_shared_row):
                for r_i in members:
                    separate(r_i)
                continue
            if len(bodies) <= 1:
                inputs.append(ctx + (bodies[0] if bodies else ()))
                layouts.append(None)
                start = {b: len(ctx) for b in bodies}
            else:
                row, positions, segments, start = list(ctx), list(range(len(ctx))), [0] * len(ctx), {}
                for b_i, body in enumerate(bodies, start=1):
                    start[body] = len(row)
                    row += body
                    positions += range(len(ctx), len(ctx) + len(body))
                    segments += [b_i] * len(body)
                inputs.append(tuple(row))
                layouts.append((np.asarray(positions, dtype=np.int64),
                                np.asarray(segments, dtype=np.int64)))
            for r_i in members:
                body = requests[r_i].continuation[:-1]
                # token k >= 1 of a continuation is predicted at its branch's token k - 1
                read(s, [len(ctx) - 1] + [start[body] + k for k in range(len(body))], r_i)
    # reads in request order (token by token within a request), whatever the grouping:
    # consumers that walk two plans in step (contrastive decoding) rely on it
    req_a = np.asarray(req, dtype=np.int64)
    o = np.argsort(req_a, kind="stable")
    return _Plan(inputs, np.asarray(seq, dtype=np.int64)[o], np.asarray(pos, dtype=np.int64)[o],
                 np.asarray(tgt, dtype=np.int64)[o], req_a[o], layouts)


def shared_row_limit(model: LoadedModel) -> int | None:
    """The longest prefix-shared row this model computes exactly (None: no limit).

    Why: a model with local (sliding-window) attention layers (Mistral, Gemma 2 and 3,
    GPT-Neo, Qwen2 with ``use_sliding_window``) builds its sliding mask itself from a 2D
    padding mask, but a custom 4D mask such as our branch mask replaces it: its local
    layers then see the whole row (measured on the tiny Mistral/Gemma models of
    ``tests/archzoo.py``: the final residual moved by 0.6-7 with a 20-token context
    and window 8). A row no longer than the window is exact either way (no key is
    farther than the window from its query), so shared rows are kept up to the window
    and longer ones fall back to one row per continuation."""
    cfg = getattr(model.bridge.original_model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    window = getattr(cfg, "sliding_window", None)
    if not window and "local" in (getattr(cfg, "attention_layers", None) or []):
        window = getattr(cfg, "window_size", None)   # GPT-Neo's local layers
    if not window:
        return None
    if getattr(cfg, "use_sliding_window", True) is False:
        return None
    types = getattr(cfg, "layer_types", None)
    if types is not None and not any("sliding" in str(t) for t in types):
        return None
    return int(window)


def plan_for(model: LoadedModel, requests: Sequence[Request]) -> _Plan:
    """``plan_reads`` with the sharing this model computes exactly."""
    return plan_reads(requests, share_prefix=can_share_prefix(model),
                      max_shared_row=shared_row_limit(model))


# per loaded bridge (a cached model is handed out as a new LoadedModel each time)
_SHARED_PREFIX_OK: "weakref.WeakKeyDictionary[object, bool]" = weakref.WeakKeyDictionary()


def can_share_prefix(model: LoadedModel) -> bool:
    """Does this model honour a custom 4D attention mask and position ids?

    Checked once per loaded model on a tiny probe (one context, two two-token branches,
    shared row vs separate rows); an architecture whose HF code ignores custom masks
    falls back to one row per continuation instead of returning wrong numbers.
    """
    known = _SHARED_PREFIX_OK.get(model.bridge)
    if known is None:
        v = int(model.bridge.cfg.d_vocab)
        toks = [(7 * i + 3) % v for i in range(7)]
        reqs = [Request(tuple(toks[:3]), tuple(toks[3:5])), Request(tuple(toks[:3]), tuple(toks[5:7]))]
        got = []
        for share in (False, True):
            plan = plan_reads(reqs, share_prefix=share)
            try:
                acts = capture_at(model.bridge, plan.inputs, plan.read_seq, plan.read_pos,
                                  layouts=plan.layouts)
            except RuntimeError as e:
                # the first forward of every stage: a dtype the bridge's own attention
                # cannot run (TransformerLens 4.3 on OLMo 2 in bf16) is a user's setting
                msg = str(e).splitlines()[0]
                if share:  # plain rows run, the branch mask does not: one row per class
                    break
                if not ("dtype" in msg or "scalar type" in msg):
                    raise
                from diagnose.families import ModelUnavailableError

                raise ModelUnavailableError(
                    f"model {model.id!r}: TransformerBridge cannot run it in "
                    f"{str(model.dtype).replace('torch.', '')} ({msg[:200]}); load it with "
                    "--dtype float32") from e
            got.append(acts[FINAL_RESID])
        tol = 1e-4 if model.dtype == torch.float32 else 5e-2
        scale = float(got[0].abs().max()) or 1.0
        known = len(got) == 2 and bool(float((got[1] - got[0]).abs().max())
                                       <= tol * max(1.0, scale))
        _SHARED_PREFIX_OK[model.bridge] = known
    return known


@torch.no_grad()
def readout_log_probs(model: LoadedModel, resid: torch.Tensor, targets: np.ndarray,
                      chunk_size: int = 256) -> np.ndarray:
    """log p(target) from final-layer residuals, through the model's real final norm
    and unembedding (``transformer_lens.tools.analysis.logit_readout``)."""
    from probes.devices import readout

    if len(targets) == 0:
        return np.zeros(0)
    tgt = torch.as_tensor(targets, dtype=torch.long)
    ro = readout(model.bridge, resid, targets=tgt, return_type="log_probs",
                 chunk_size=chunk_size)
    return ro.values[..., 0].float().cpu().numpy().astype(np.float64)


def loglikelihoods(
    model: LoadedModel,
    requests: Sequence[Request],
    batch_tokens: int | None = None,
    progress: bool | str = False,
) -> np.ndarray:
    """Summed log-prob of each request's continuation given its context: ``[R]``."""
    plan = plan_for(model, requests)
    acts = capture_at(model.bridge, plan.inputs, plan.read_seq, plan.read_pos,
                      layouts=plan.layouts, batch_tokens=batch_tokens or default_batch_tokens(model),
                      progress=progress)
    lp = readout_log_probs(model, acts[FINAL_RESID], plan.read_target)
    return np.bincount(plan.read_request, weights=lp, minlength=len(requests))


def default_batch_tokens(model: LoadedModel) -> int:
    """Padded tokens per forward batch. On a GPU, large batches; on a CPU, the batch whose
    activations stay in cache is the fastest: about 2^18 residual elements (measured on
    the organisms: d256 ran 1.8x faster at 1024 tokens than at 8192, d32 was flat from
    2048 on; measured by `make bench`), between 512 and 8192 tokens."""
    if model.device.startswith("cuda"):
        return 65536
    d = int(getattr(model.bridge.cfg, "d_model", 256) or 256)
    return int(min(8192, max(512, 2 ** 18 // d)))


# -- full-vocabulary readouts (mitigations: contrastive decoding, generation) ---------


def iter_continuation_logits(
    model: LoadedModel,
    requests: Sequence[Request],
    batch_tokens: int | None = None,
    chunk_size: int = 256,
    progress: bool | str = False,
):
    """Full-vocabulary next-token logits at every continuation position, chunk by chunk.

    Yields ``(read_request [n], read_target [n], logits [n, d_vocab] fp32 tensor)`` for
    consecutive chunks of at most ``chunk_size`` reads, in ``plan_reads`` order (request by
    request, continuation token by token), so at most ``chunk_size x d_vocab`` logits
    exist at once. The forward batches and readout chunks are those of
    ``loglikelihoods`` (same plan, same ``batch_tokens``, same 256-row readout chunks),
    so ``log_softmax`` of these logits gathered at the targets equals
    ``loglikelihoods``' log-probs bit for bit.
    """
    from probes.devices import readout

    plan = plan_for(model, requests)
    if len(plan.read_target) == 0:
        return
    acts = capture_at(model.bridge, plan.inputs, plan.read_seq, plan.read_pos,
                      layouts=plan.layouts, batch_tokens=batch_tokens or default_batch_tokens(model),
                      progress=progress)
    vec = acts[FINAL_RESID]
    for start in range(0, len(plan.read_target), chunk_size):
        stop = start + chunk_size
        ro = readout(model.bridge, vec[start:stop], return_type="logits",
                     chunk_size=chunk_size)
        yield plan.read_request[start:stop], plan.read_target[start:stop], ro.values.float()
