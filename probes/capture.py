"""Capture activations only where they are needed.

Every instrument here reads the residual stream (or a head's output) at a few
positions per sequence: the answer position, the class tokens. ``capture_at`` runs
the sequences in length-sorted, right-padded batches under a token budget, and hooks
keep only the requested rows, so memory grows with the number of reads, never with
prompt length or vocabulary size.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

FINAL_RESID = "ln_final.hook_in"


def resid_hooks(n_layers: int) -> list[str]:
    """The residual stream after the embedding and after each block (logit-lens order)."""
    return ["blocks.0.hook_in"] + [f"blocks.{l}.hook_out" for l in range(n_layers)]


def batches(lengths: Sequence[int], batch_tokens: int, max_batch: int) -> list[list[int]]:
    """Indices grouped into batches, longest first, under a padded-token budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        width = lengths[cur[0]] if cur else lengths[i]
        if cur and ((len(cur) + 1) * width > batch_tokens or len(cur) >= max_batch):
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out


def _pad_id(bridge: Any) -> int:
    tok = bridge.tokenizer
    for tid in (getattr(tok, "pad_token_id", None), getattr(tok, "eos_token_id", None)):
        if tid is not None:
            return int(tid)
    return 0


def _device(bridge: Any) -> torch.device:
    """Where token ids go (the input embedding's device; see ``probes.devices``)."""
    from probes.devices import input_device

    return input_device(bridge)


@torch.no_grad()
def capture_at(
    bridge: Any,
    inputs: Sequence[Sequence[int]],
    read_seq: np.ndarray,
    read_pos: np.ndarray,
    hooks: Sequence[str] = (FINAL_RESID,),
    batch_tokens: int = 8192,
    max_batch: int = 512,
    progress: bool | str = False,
    transform: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
    layouts: Sequence[tuple[np.ndarray, np.ndarray] | None] | None = None,
    subsets: dict[str, np.ndarray] | None = None,
) -> dict[str, torch.Tensor]:
    """Run token sequences and return, per hook, the activations at the read positions.

    ``read_seq[m]``/``read_pos[m]`` name the sequence and position of read ``m``.
    Returns ``{hook: [M, ...]}`` in read order (fp32, CPU). ``transform(hook, x)`` may
    reshape what is kept (e.g. per-head outputs) before it leaves the device.
    ``layouts[i]``, when given and not None, is ``(position_ids, segment_ids)`` of a
    prefix-shared row (``diagnose.engine.plan_reads``): a token attends to earlier
    tokens of segment 0 (the shared context) and of its own segment only.
    ``subsets[hook]``, when given, names the reads (indices into ``read_seq``) that hook
    keeps; its result then has one row per subset entry, in the subset's order (e.g. the
    logit lens at the answer positions only, while the final residual is read everywhere).
    """
    read_seq = np.asarray(read_seq, dtype=np.int64)
    read_pos = np.asarray(read_pos, dtype=np.int64)
    lengths = [len(x) for x in inputs]
    if any(n == 0 for n in lengths):
        raise ValueError("an input sequence is empty")
    if (read_pos < 0).any() or (read_pos >= np.asarray(lengths)[read_seq]).any():
        raise ValueError("a read position lies outside its sequence")
    device = _device(bridge)
    pad = _pad_id(bridge)
    order = np.argsort(read_seq, kind="stable")
    starts = np.searchsorted(read_seq[order], np.arange(len(inputs) + 1))
    kept: dict[str, list[tuple[np.ndarray, torch.Tensor]]] = {h: [] for h in hooks}
    # per subset hook: position of each read in its subset (-1: not kept)
    where = {}
    for h, sub in (subsets or {}).items():
        w = np.full(len(read_seq), -1, dtype=np.int64)
        w[np.asarray(sub, dtype=np.int64)] = np.arange(len(sub))
        where[h] = w
    plan = batches(lengths, batch_tokens, max_batch)
    bar = tqdm(total=len(plan), desc=progress if isinstance(progress, str) else "batches",
               disable=not progress, leave=False, unit="batch")
    for batch in plan:
        width = max(lengths[i] for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        rows, poss, reads = [], [], []
        for b, s in enumerate(batch):
            ids[b, : lengths[s]] = torch.tensor(inputs[s], dtype=torch.long)
            mask[b, : lengths[s]] = 1
            r = order[starts[s]:starts[s + 1]]
            rows.append(np.full(len(r), b))
            poss.append(read_pos[r])
            reads.append(r)
        r_all = np.concatenate(reads)
        if len(r_all) == 0:
            bar.update(1)
            continue
        rows_a, poss_a = np.concatenate(rows), np.concatenate(poss)
        row_t = torch.from_numpy(rows_a).to(device)
        pos_t = torch.from_numpy(poss_a).to(device)
        sel = {h: np.nonzero(where[h][r_all] >= 0)[0] for h in where}
        sel_t = {h: (torch.from_numpy(rows_a[k]).to(device), torch.from_numpy(poss_a[k]).to(device))
                 for h, k in sel.items()}
        got: dict[str, torch.Tensor] = {}

        def make_hook(name: str) -> Callable:
            def hook(x: torch.Tensor, hook: Any = None) -> torch.Tensor:
                rt, pt = sel_t.get(name, (row_t, pos_t))
                if rt.device != x.device:  # a dispatched model: this block's device
                    rt, pt = rt.to(x.device), pt.to(x.device)
                v = x[rt, pt]
                if transform is not None:
                    v = transform(name, v)
                got[name] = v.float().cpu()
                return x
            return hook

        lay = [layouts[s] for s in batch] if layouts is not None else []
        if any(x is not None for x in lay):
            attn, position_ids = tree_mask(lay, [lengths[s] for s in batch], width,
                                           _dtype(bridge))
            run_hooked(bridge, ids.to(device), attn.to(device), [(h, make_hook(h)) for h in hooks],
                       n_tokens=sum(lengths[s] for s in batch), position_ids=position_ids.to(device))
        else:
            run_hooked(bridge, ids.to(device), mask.to(device), [(h, make_hook(h)) for h in hooks])
        for h in hooks:
            kept[h].append((where[h][r_all[sel[h]]] if h in where else r_all, got[h]))
        bar.update(1)
    bar.close()
    result: dict[str, torch.Tensor] = {}
    for h in hooks:
        if not kept[h]:
            result[h] = torch.empty((0,))
            continue
        shape = kept[h][0][1].shape[1:]
        n_rows = len(subsets[h]) if h in where else len(read_seq)
        full = torch.empty((n_rows, *shape), dtype=torch.float32)
        for r, v in kept[h]:
            full[torch.from_numpy(r)] = v
        result[h] = full
    return result


def _dtype(bridge: Any) -> torch.dtype:
    return next(bridge.original_model.parameters()).dtype


def tree_mask(layouts: Sequence[tuple[np.ndarray, np.ndarray] | None], lengths: Sequence[int],
              width: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Additive attention mask ``[B, 1, W, W]`` and position ids ``[B, W]`` for a batch of
    right-padded rows, some of them prefix-shared (see ``capture_at``).

    Causal everywhere; in a shared row a key of another branch is masked. Padding
    positions continue the row's positions (their outputs are never read). The mask is
    additive with the dtype's most negative finite value (not -inf), so no row is ever
    fully masked into NaN, and it works for eager and sdpa attention alike.
    """
    B = len(lengths)
    seg = torch.zeros((B, width), dtype=torch.long)
    pos = torch.arange(width).repeat(B, 1)
    for b, (lay, n) in enumerate(zip(layouts, lengths)):
        if lay is not None:
            p, sg = lay
            pos[b, :n] = torch.from_numpy(p)
            pos[b, n:] = int(p[-1]) + 1 + torch.arange(width - n)
            seg[b, :n] = torch.from_numpy(sg)
            seg[b, n:] = -1  # padding: sees only the shared context and other padding
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    q, k = seg[:, :, None], seg[:, None, :]
    keep = causal[None] & ((k == 0) | (k == q))
    keep |= torch.eye(width, dtype=torch.bool)[None]
    attn = torch.zeros((B, 1, width, width), dtype=dtype)
    attn.masked_fill_(~keep[:, None], torch.finfo(dtype).min)
    return attn, pos


class TokenCount:
    """Tokens run forward while it is active (``with TokenCount() as c: ... c.tokens``):
    real tokens (padding excluded) and padded positions, over every ``run_hooked`` call,
    so a stage can say how much work it did."""

    _active: list["TokenCount"] = []

    def __init__(self) -> None:
        self.tokens = 0
        self.padded = 0
        self.forwards = 0

    def __enter__(self) -> "TokenCount":
        TokenCount._active.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        TokenCount._active.remove(self)

    @classmethod
    def add(cls, ids: torch.Tensor, real: int) -> None:
        for c in cls._active:
            c.tokens += real
            c.padded += int(ids.numel())
            c.forwards += 1


def run_hooked(bridge: Any, ids: torch.Tensor, mask: torch.Tensor, fwd_hooks: list,
               n_tokens: int | None = None, **kwargs: Any) -> Any:
    """One forward with hooks; the model's own unembedding runs on the last position only
    (``logits_to_keep=1``): instruments read the positions they need from the residual.
    ``n_tokens``: the real (unpadded) tokens in the batch, when ``mask`` is not a 2D
    padding mask."""
    TokenCount.add(ids, int((mask != 0).sum()) if n_tokens is None else n_tokens)
    try:
        return bridge.run_with_hooks(ids, attention_mask=mask, fwd_hooks=fwd_hooks,
                                     logits_to_keep=1, **kwargs)
    except TypeError:  # an HF class without logits_to_keep
        return bridge.run_with_hooks(ids, attention_mask=mask, fwd_hooks=fwd_hooks, **kwargs)
