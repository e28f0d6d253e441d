"""Direct logit attribution of the (correct - tempting) logit difference.

The final residual at the answer position is a sum of components (the embeddings, each
layer's attention and MLP output; an attention output is a sum of its heads plus the
output bias). The final norm is linear in them once its scale is fixed at the one the
position really had, so each component's share of the logit difference is

    ((c - mean c) / scale) * w . (W_U[:, correct] - W_U[:, tempting])

(no centring for RMSNorm), and the shares plus the norm's and unembedding's biases sum
exactly to the model's logit difference. This is what TransformerLens's
``direct_logit_attribution`` computes with a cached ``ln_final.hook_scale``; we do the
arithmetic here instead because that function requires ``enable_compatibility_mode()``
(weights folded in place), which changes the bridge under every other instrument and
which TransformerLens refuses on a CPU- or disk-offloaded model. Here the components,
the scale and the norm's input and output are captured in an ordinary forward (at the
answer position only: ``probes.capture.capture_at``), the norm's elementwise affine map
is read off its own input and output, and the bridge is left as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from probes.capture import capture_at
from probes.devices import (attn_W_O, attn_b_O, input_device, norm_weights, readout, unembed_bias,
                            unembed_columns)


@dataclass
class AttributionResult:
    """Per example ``i``: contributions to logit[correct] - logit[tempting] at the answer
    position. ``embed + attn.sum(1) + mlp.sum(1) + bias == total``; per layer, the heads
    plus that layer's attention output bias sum to ``attn``."""

    embed: np.ndarray       # [N] token (+ positional) embedding
    attn: np.ndarray        # [N, L] each layer's attention output
    mlp: np.ndarray         # [N, L] each layer's MLP output
    heads: np.ndarray       # [N, L, H] each attention head
    bias: np.ndarray        # [N] b_U[correct] - b_U[tempting] (no component writes it)
    total: np.ndarray       # [N] the model's logit difference at the answer position
    labels: list[str]
    notes: list[str] = field(default_factory=list)   # what could not be split, and why
    # [N] the difference after the model's post-unembedding transform (Gemma 2's logit
    # soft-cap): ``total`` is the difference before it, the one the components add up to
    output_total: np.ndarray | None = None

    def components(self) -> np.ndarray:
        """``[N, 1 + 2L]``: embed, then attn and MLP per layer (sums to total - bias)."""
        L = self.attn.shape[1]
        inter = np.empty((len(self.embed), 2 * L))
        inter[:, 0::2], inter[:, 1::2] = self.attn, self.mlp
        return np.concatenate([self.embed[:, None], inter], axis=1)

    def top_heads(self, k: int = 5) -> list[tuple[int, int, float]]:
        """The ``k`` heads with the largest mean |attribution|, as (layer, head, mean)."""
        mean = self.heads.mean(0)
        order = np.argsort(-np.abs(mean), axis=None)[:k]
        return [(int(l), int(h), float(mean[l, h]))
                for l, h in zip(*np.unravel_index(order, mean.shape))]


def _embed_hooks(bridge: Any) -> list[str]:
    """``hook_embed`` and, when the model has one that fires, ``hook_pos_embed``."""
    with torch.no_grad():
        probe = torch.zeros((1, 1), dtype=torch.long, device=input_device(bridge))
        _, cache = bridge.run_with_cache(probe, names_filter=["hook_embed", "hook_pos_embed"])
    return [h for h in ("hook_embed", "hook_pos_embed") if h in cache.keys()]


def attribution_hooks(bridge: Any) -> list[str]:
    """The activations ``attribute`` needs, at the positions attributed."""
    L = int(bridge.cfg.n_layers)
    hooks = _embed_hooks(bridge)
    for l in range(L):
        hooks += [f"blocks.{l}.hook_attn_out", f"blocks.{l}.hook_mlp_out", f"blocks.{l}.attn.hook_z"]
    return hooks + ["ln_final.hook_in", "ln_final.hook_scale", "ln_final.hook_normalized",
                    "ln_final.hook_out"]


def _norm_affine(bridge: Any, normalized: torch.Tensor, out: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The final norm's elementwise map ``out = normalized * w + b``, per dimension, read
    off its own input and output by least squares over the positions: exact for
    LayerNorm (weight, bias), RMSNorm (weight) and (1 + weight) variants alike. With a
    single position it falls back to the module's own ``weight``/``bias``."""
    n = normalized.shape[0]
    if n >= 2:
        x, y = normalized.double(), out.double()
        xm, ym = x.mean(0), y.mean(0)
        var = ((x - xm) ** 2).sum(0)
        w = torch.where(var > 1e-12, ((x - xm) * (y - ym)).sum(0) / var.clamp_min(1e-12),
                        torch.ones_like(xm))
        b = ym - w * xm
        return w.float(), b.float()
    w, b = norm_weights(bridge, bridge.ln_final)
    d = normalized.shape[-1]
    return (torch.ones(d) if w is None else w, torch.zeros(d) if b is None else b)


def attribute(bridge: Any, acts: dict[str, torch.Tensor], correct_ids: np.ndarray,
              tempting_ids: np.ndarray) -> AttributionResult:
    """Direct logit attribution from activations captured at the attributed positions
    (``acts[hook]`` is ``[N, ...]`` for every hook of ``attribution_hooks``)."""
    L, H = int(bridge.cfg.n_layers), int(bridge.cfg.n_heads)
    n = len(correct_ids)
    center = str(getattr(bridge.cfg, "normalization_type", "LN")).upper().startswith("LN")
    scale = acts["ln_final.hook_scale"].reshape(n, -1)[:, :1].double()
    w, b_norm = _norm_affine(bridge, acts["ln_final.hook_normalized"].reshape(n, -1),
                             acts["ln_final.hook_out"].reshape(n, -1))
    # only the columns of the classes read (the whole W_U may be offloaded or on a GPU)
    vocab, inv = np.unique(np.concatenate([np.asarray(correct_ids, dtype=np.int64),
                                           np.asarray(tempting_ids, dtype=np.int64)]),
                           return_inverse=True)
    cols = unembed_columns(bridge, vocab)                                # [d, U]
    good = torch.as_tensor(inv[:n])
    bad = torch.as_tensor(inv[n:])
    u = (cols[:, good] - cols[:, bad]).T.double() * w.double()          # [N, d]

    def share(c: torch.Tensor) -> np.ndarray:
        c = c.reshape(n, -1).double()
        if center:
            c = c - c.mean(-1, keepdim=True)
        return ((c / scale) * u).sum(-1).numpy()

    embed = sum(share(acts[h]) for h in ("hook_embed", "hook_pos_embed") if h in acts)
    attn = np.stack([share(acts[f"blocks.{l}.hook_attn_out"]) for l in range(L)], 1)
    mlp = np.stack([share(acts[f"blocks.{l}.hook_mlp_out"]) for l in range(L)], 1)
    heads = np.zeros((n, L, H))
    b_O = np.zeros((n, L))         # each layer's attention output bias, its share
    for l in range(L):
        W_O = attn_W_O(bridge, l)                                        # [H, dh, d]
        z = acts[f"blocks.{l}.attn.hook_z"].reshape(n, H, -1)
        for h in range(H):
            heads[:, l, h] = share(z[:, h] @ W_O[h])
        b = attn_b_O(bridge, l)
        if b is not None:
            b_O[:, l] = share(b.expand(n, -1))
    # heads are a linear split of the attention output only where that output joins the
    # residual as it is; a norm after the attention (Gemma 2/3's post-attention norm,
    # OLMo 2's post-norm blocks) rescales it per position, so the heads' shares no longer
    # add up to the layer's (measured on tests/archzoo.py: off by 0.6 on shares of 0.7,
    # against 1e-7 elsewhere). Those layers' heads are left out (NaN), with a note.
    # tolerance by the weights' precision: in bf16 the heads' fp32 products and the
    # module's own bf16 output differ by rounding, not by structure
    exact = next(bridge.original_model.parameters()).dtype == torch.float32
    scale = np.maximum(1.0, np.maximum(np.abs(attn), np.abs(heads).sum(-1)))
    off = np.abs(heads.sum(-1) + b_O - attn) > (1e-4 if exact else 5e-2) * scale
    bad_layers = np.nonzero(off.any(0))[0]
    notes = []
    if len(bad_layers):
        heads[:, bad_layers] = np.nan
        notes.append(f"per-head attribution left out on {len(bad_layers)} of {L} layers: there "
                     "the heads' outputs do not add up to the attention output that reaches the "
                     "residual (a norm after the attention, as in Gemma 2/3 and OLMo 2, rescales "
                     "it), so a head's direct effect is not defined; per-layer attribution stands")
    b_U = unembed_bias(bridge, vocab)
    db_u = (b_U[good] - b_U[bad]).double() if b_U is not None \
        else torch.zeros(n, dtype=torch.float64)
    bias = ((cols[:, good] - cols[:, bad]).T.double() * b_norm.double()).sum(-1) + db_u
    final = acts["ln_final.hook_in"].reshape(n, -1)
    ro = readout(bridge, final, vocab=torch.as_tensor(vocab),
                 return_type="logits").values.float().cpu().numpy()
    rows = np.arange(n)
    output_total = ro[rows, inv[:n]] - ro[rows, inv[n:]]
    # the decomposition is linear up to the unembedding; a soft-cap after it (Gemma 2:
    # 30 tanh(logit / 30)) is not, so ``total`` is the difference before the cap, read off
    # the final norm's own output
    normed = acts["ln_final.hook_out"].reshape(n, -1).double()
    total = (((cols[:, good] - cols[:, bad]).T.double() * normed).sum(-1) + db_u).numpy()
    labels = (["embed"] + [f"{l}_{k}" for l in range(L) for k in ("attn_out", "mlp_out")]
              + ["bias"])
    return AttributionResult(embed=np.asarray(embed, dtype=float) + np.zeros(n), attn=attn,
                             mlp=mlp, heads=heads, bias=bias.numpy(), total=total,
                             labels=labels, output_total=output_total, notes=notes)


@torch.no_grad()
def logit_diff_attribution(
    bridge: Any,
    contexts: Sequence[Sequence[int]],
    correct_ids: np.ndarray,
    tempting_ids: np.ndarray,
    batch_tokens: int = 8192,
) -> AttributionResult:
    """DLA of first-token logit[correct] - logit[tempting] at each context's last position
    (one forward, the bridge unchanged)."""
    n = len(contexts)
    pos = np.asarray([len(c) - 1 for c in contexts], dtype=np.int64)
    acts = capture_at(bridge, contexts, np.arange(n), pos, hooks=attribution_hooks(bridge),
                      batch_tokens=batch_tokens)
    return attribute(bridge, acts, correct_ids, tempting_ids)
