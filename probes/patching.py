"""Activation patching between two prompts of the same example.

A *clean* prompt (e.g. the task prompt) and a *corrupted* one (e.g. its ``prior`` view,
the instruction removed) give different logit differences (correct minus tempting
first-token logit at the answer position). Copying one activation of the clean run into
the corrupted run and measuring how much of the difference comes back,
``(patched - corrupted) / (clean - corrupted)`` (0: nothing, 1: all of it), locates where
the prompts' difference is carried:

- the residual stream after the embedding and after each block, at positions counted
  from the end (offset 0 = the answer position), so prompts of different lengths align
  at the answer;
- each attention head's output (``hook_z``) at the answer position.

Why not ``transformer_lens.patching.generic_activation_patch``: it needs clean and
corrupted token tensors of one shape with positions aligned from the start (our prompt
and its view differ in length), it runs without an attention mask and materialises
``[batch, pos, vocab]`` logits on every patched run, and it needs a full clean
``ActivationCache``. Here a patched run keeps only the final residual at each answer
position (right-padded batches, as ``probes.capture``), and several patch cells share
one batched forward. The statistics reuse its ``PatchingResult`` (normalization,
bootstrap intervals, permutation p-values).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from probes.capture import FINAL_RESID, _device, _pad_id, batches, capture_at, resid_hooks, run_hooked


@dataclass
class Patch:
    """Write ``value[j]`` into ``hook`` at sequence ``seq[j]``, position ``pos[j]`` (and
    head ``head[j]`` for per-head activations such as ``attn.hook_z``)."""

    hook: str
    seq: np.ndarray
    pos: np.ndarray
    value: torch.Tensor
    head: np.ndarray | None = None


@torch.no_grad()
def run_patched(bridge: Any, inputs: Sequence[Sequence[int]], read_pos: np.ndarray,
                patches: Sequence[Patch] = (), batch_tokens: int = 8192,
                max_batch: int = 512) -> torch.Tensor:
    """Run every sequence with the patches applied; the final residual at ``read_pos``
    of each sequence: ``[N, d]`` (fp32, CPU)."""
    lengths = [len(x) for x in inputs]
    read_pos = np.asarray(read_pos, dtype=np.int64)
    device, pad = _device(bridge), _pad_id(bridge)
    by_hook: dict[str, list[Patch]] = {}
    for p in patches:
        by_hook.setdefault(p.hook, []).append(p)
    out = torch.empty((len(inputs), int(bridge.cfg.d_model)), dtype=torch.float32)
    for batch in batches(lengths, batch_tokens, max_batch):
        width = max(lengths[i] for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        row_of = np.full(len(inputs), -1, dtype=np.int64)
        for b, s in enumerate(batch):
            ids[b, : lengths[s]] = torch.tensor(inputs[s], dtype=torch.long)
            mask[b, : lengths[s]] = 1
            row_of[s] = b
        hooks: list[tuple[str, Callable]] = []
        for name, plist in by_hook.items():
            parts = []
            for p in plist:
                sel = row_of[p.seq] >= 0
                if sel.any():
                    parts.append((row_of[p.seq][sel], p.pos[sel], p.value[torch.from_numpy(sel)],
                                  None if p.head is None else p.head[sel]))
            if not parts:
                continue

            def hook(x: torch.Tensor, hook: Any = None, parts=parts) -> torch.Tensor:
                for rows, pos, val, head in parts:
                    r = torch.from_numpy(rows).to(x.device)
                    q = torch.from_numpy(pos).to(x.device)
                    v = val.to(device=x.device, dtype=x.dtype)
                    if head is None:
                        x[r, q] = v
                    else:
                        x[r, q, torch.from_numpy(head).to(x.device)] = v
                return x
            hooks.append((name, hook))
        rows_t = torch.arange(len(batch), device=device)
        pos_t = torch.from_numpy(read_pos[batch]).to(device)
        got: dict[str, torch.Tensor] = {}

        def read(x: torch.Tensor, hook: Any = None) -> torch.Tensor:
            got["x"] = x[rows_t.to(x.device), pos_t.to(x.device)].float().cpu()
            return x
        hooks.append((FINAL_RESID, read))
        run_hooked(bridge, ids.to(device), mask.to(device), hooks)
        out[torch.as_tensor(batch)] = got["x"]
    return out


@torch.no_grad()
def logit_diff(bridge: Any, resid: torch.Tensor, correct_ids: np.ndarray,
               tempting_ids: np.ndarray) -> np.ndarray:
    """logit[correct] - logit[tempting] read from final residuals ``[N, d]``."""
    from probes.devices import readout

    good = np.asarray(correct_ids, dtype=np.int64)
    bad = np.asarray(tempting_ids, dtype=np.int64)
    vocab, inv = np.unique(np.concatenate([good, bad]), return_inverse=True)
    v = readout(bridge, resid, vocab=torch.as_tensor(vocab),
                return_type="logits").values.float().cpu().numpy()
    n = len(good)
    rows = np.arange(n)
    return v[rows, inv[:n]] - v[rows, inv[n:]]


@dataclass
class PatchingOutcome:
    clean: np.ndarray              # [N] clean logit difference
    corrupted: np.ndarray          # [N] corrupted logit difference
    offsets: np.ndarray            # [K] positions from the end (0 = answer position)
    resid: Any                     # PatchingResult: values [S, K, N] patched logit diff
    heads: Any | None              # PatchingResult: values [L, H, N]
    min_gap: float = 1e-3
    notes: list[str] = field(default_factory=list)

    @property
    def valid(self) -> np.ndarray:
        """Examples whose clean and corrupted differences differ enough to normalize."""
        return np.abs(self.clean - self.corrupted) > self.min_gap

    def _normalized(self, res: Any) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            norm = res.normalized(torch.as_tensor(self.clean, dtype=res.values.dtype)).numpy()
        norm = norm[..., self.valid]
        if norm.shape[-1] == 0:
            return np.full(norm.shape[:-1], np.nan)
        with np.errstate(invalid="ignore"), _quiet():
            return np.nanmean(norm, axis=-1)

    def _weighted(self, res: Any) -> np.ndarray:
        """``sum_i (patched_i - corrupted_i) sign(gap_i) / sum_i |gap_i|``: the per-example
        normalized effects averaged with weights ``|gap_i|``, so examples whose prompts
        barely differ cannot blow the mean up (1: every patch restores the clean run)."""
        vals = res.values.numpy()
        gap = self.clean - self.corrupted
        eff = (vals - self.corrupted) * np.sign(gap)
        ok = ~np.isnan(eff)
        den = (np.abs(gap) * ok).sum(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, np.where(ok, eff, 0).sum(-1) / den, np.nan)

    @property
    def resid_normalized(self) -> np.ndarray:
        """``[S, K]`` normalized effect of patching the residual (gap-weighted mean)."""
        return self._weighted(self.resid)

    @property
    def heads_normalized(self) -> np.ndarray | None:
        """``[L, H]`` normalized effect of patching one head at the answer position."""
        return None if self.heads is None else self._weighted(self.heads)

    @property
    def resid_normalized_mean(self) -> np.ndarray:
        """``[S, K]`` plain mean of per-example normalized effects (valid examples)."""
        return self._normalized(self.resid)


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def _result(values: np.ndarray, baseline: np.ndarray, axes: list[str]) -> Any:
    import pandas as pd
    from transformer_lens.patching import PatchingResult, make_df_from_ranges

    shape = values.shape[:-1]
    return PatchingResult(values=torch.as_tensor(values, dtype=torch.float64), axis_names=axes,
                          index_df=make_df_from_ranges(list(shape), axes) if all(shape)
                          else pd.DataFrame(columns=axes),
                          metric_names=["logit_diff"], reduced=False,
                          baseline=torch.as_tensor(baseline, dtype=torch.float64))


def _run_cells(bridge: Any, corrupted: Sequence[Sequence[int]], read_pos: np.ndarray,
               cells: list[list[Patch]], correct: np.ndarray, tempting: np.ndarray,
               batch_tokens: int, max_seqs: int = 4096) -> np.ndarray:
    """Each cell's patches applied to a copy of the corrupted batch: ``[cells, N]``."""
    n = len(corrupted)
    out = np.full((len(cells), n), np.nan)
    per = max(1, max_seqs // max(n, 1))
    for a in range(0, len(cells), per):
        group = cells[a:a + per]
        inputs = list(corrupted) * len(group)
        patches = []
        for g, cell in enumerate(group):
            for p in cell:
                patches.append(Patch(p.hook, p.seq + g * n, p.pos, p.value, p.head))
        final = run_patched(bridge, inputs, np.tile(read_pos, len(group)), patches, batch_tokens)
        ld = logit_diff(bridge, final, np.tile(correct, len(group)), np.tile(tempting, len(group)))
        out[a:a + len(group)] = ld.reshape(len(group), n)
    return out


@torch.no_grad()
def activation_patching(
    bridge: Any,
    clean: Sequence[Sequence[int]],
    corrupted: Sequence[Sequence[int]],
    correct_ids: np.ndarray,
    tempting_ids: np.ndarray,
    n_positions: int = 8,
    heads: bool = True,
    batch_tokens: int = 8192,
) -> PatchingOutcome:
    """Residual (per stack entry x end-aligned position) and head-output patching from
    the ``clean`` contexts into the ``corrupted`` ones (pairs by index)."""
    if len(clean) != len(corrupted):
        raise ValueError("clean and corrupted need one context each per example")
    n = len(clean)
    L, H = int(bridge.cfg.n_layers), int(bridge.cfg.n_heads)
    correct = np.asarray(correct_ids, dtype=np.int64)
    tempting = np.asarray(tempting_ids, dtype=np.int64)
    a = np.asarray([len(c) for c in clean])
    b = np.asarray([len(c) for c in corrupted])
    K = int(max(1, min(n_positions, int(np.minimum(a, b).max()) if n else 1)))
    offsets = np.arange(K)
    # clean reads: every (example, offset) that exists in both prompts
    ex, off = np.meshgrid(np.arange(n), offsets, indexing="ij")
    ok = off < np.minimum(a, b)[:, None]
    r_seq, r_off = ex[ok], off[ok]
    rhooks = resid_hooks(L)
    zhooks = [f"blocks.{l}.attn.hook_z" for l in range(L)] if heads else []
    acts = capture_at(bridge, clean, r_seq, a[r_seq] - 1 - r_off, hooks=rhooks + [FINAL_RESID],
                      batch_tokens=batch_tokens)
    ans = r_off == 0
    clean_ld = np.full(n, np.nan)
    clean_ld[r_seq[ans]] = logit_diff(bridge, acts[FINAL_RESID][torch.from_numpy(ans)],
                                      correct[r_seq[ans]], tempting[r_seq[ans]])
    read_pos = b - 1
    corrupted_ld = _run_cells(bridge, corrupted, read_pos, [[]], correct, tempting,
                              batch_tokens)[0]
    cells, where = [], []
    for s, h in enumerate(rhooks):
        for k in offsets:
            sel = r_off == k
            if not sel.any():
                continue
            rows = r_seq[sel]
            cells.append([Patch(h, rows, b[rows] - 1 - k, acts[h][torch.from_numpy(sel)])])
            where.append((s, k, rows))
    vals = _run_cells(bridge, corrupted, read_pos, cells, correct, tempting, batch_tokens)
    resid = np.full((L + 1, K, n), np.nan)
    for (s, k, rows), v in zip(where, vals):
        resid[s, k, rows] = v[rows]
    head_res = None
    if heads:
        z = capture_at(bridge, clean, np.arange(n), a - 1, hooks=zhooks,
                       batch_tokens=batch_tokens)
        hcells = [[Patch(zhooks[l], np.arange(n), read_pos, z[zhooks[l]][:, h],
                         np.full(n, h))] for l in range(L) for h in range(H)]
        hv = _run_cells(bridge, corrupted, read_pos, hcells, correct, tempting, batch_tokens)
        head_res = _result(hv.reshape(L, H, n), corrupted_ld, ["layer", "head"])
    return PatchingOutcome(clean=clean_ld, corrupted=corrupted_ld, offsets=offsets,
                           resid=_result(resid, corrupted_ld, ["layer", "pos"]), heads=head_res)
