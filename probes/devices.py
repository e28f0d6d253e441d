"""Where a bridge's tensors live, for models dispatched by accelerate.

A model loaded with ``boot_transformers(device_map=...)`` is spread by accelerate over
several GPUs, or offloaded to the CPU and disk. Then three things that hold for a
model on one device no longer do, and every instrument here goes through this module
for them:

- the tokens go to the device of the input embedding, which is not the device of the
  first parameter (offloaded parameters sit on ``meta``: placeholders without data);
- an activation lives on the device of the block that wrote it, so the indices that
  read it are moved to it, and what is kept is moved to the CPU as it is read;
- an offloaded weight (``W_U``, ``W_O``, a norm's scale) has no data outside the
  module's own forward. TransformerLens's readers refuse it (``require_readable_weight``)
  and ``enable_compatibility_mode()`` refuses the whole bridge. ``materialized`` loads a
  component's offloaded weights for the span of a read, through accelerate's own
  ``align_module_device`` (TransformerLens's ``align_offloaded_subtree``), exactly as
  the component's forward does, and puts them back after.

Nothing here changes a model on one device: every helper is the plain reading there.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, Iterator

import numpy as np
import torch


def hf_device_map(bridge: Any) -> dict[str, Any] | None:
    """accelerate's realized placement (module name -> device, ``"cpu"`` or ``"disk"``),
    or None for a model on one device."""
    return getattr(getattr(bridge, "original_model", None), "hf_device_map", None) or None


def offloaded_modules(bridge: Any) -> list[str]:
    """Modules placed on the CPU or on disk by a device map (what TransformerLens calls
    offloaded: ``enable_compatibility_mode()`` refuses such a bridge)."""
    dmap = hf_device_map(bridge) or {}
    return sorted(k or "<whole model>" for k, v in dmap.items()
                  if str(v).lower() in ("cpu", "disk"))


def is_offloaded(bridge: Any) -> bool:
    return bool(offloaded_modules(bridge))


def _hook_device(module: Any) -> torch.device | None:
    """The execution device of accelerate's hook on ``module`` (None without one)."""
    pending = [getattr(module, "_hf_hook", None)]
    while pending:
        hook = pending.pop()
        if hook is None:
            continue
        pending.extend(getattr(hook, "hooks", ()) or ())  # a SequentialHook
        dev = getattr(hook, "execution_device", None)
        if dev is not None:
            return torch.device(dev if not isinstance(dev, int) else f"cuda:{dev}")
    return None


def _first_real_device(module: Any) -> torch.device | None:
    for p in module.parameters():
        if p.device.type != "meta":
            return p.device
    return None


def input_device(bridge: Any) -> torch.device:
    """The device token ids go to: the input embedding's (its accelerate execution device
    when dispatched), else the first parameter's."""
    model = bridge.original_model
    if hf_device_map(bridge):
        emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        for m in ((emb, model) if emb is not None else (model,)):
            dev = _hook_device(m)
            if dev is not None:
                return dev
        for m in ((emb, model) if emb is not None else (model,)):
            dev = _first_real_device(m)
            if dev is not None:
                return dev
        return torch.device("cpu")
    return next(model.parameters()).device


def _original(component: Any) -> Any:
    return getattr(component, "original_component", None) or component


# modules whose offloaded weights an enclosing ``materialized`` block holds
_HELD: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def materialized(bridge: Any, *components: Any) -> Iterator[None]:
    """Within the block, the offloaded weights of ``components`` (bridge components, such
    as ``bridge.unembed`` or ``bridge.blocks[3].attn``) hold their real values on their
    execution device; after it they are offloaded again. A no-op on one device. Blocks
    nest: an inner block over a component already held reads it without loading it
    again (hold the unembedding around a loop of read-outs: one load, not one per read).

    Run no forward of the same component inside the block: its own hook offloads the
    weights again when it returns (a readout's call of the final norm only touches the
    norm, so the norm is never held around a readout; see ``readout``)."""
    if not hf_device_map(bridge):
        yield
        return
    from transformer_lens.model_bridge.generalized_components.base import \
        align_offloaded_subtree

    with contextlib.ExitStack() as stack:
        for c in components:
            mod = _original(c)
            if _HELD.get(mod):
                continue
            stack.enter_context(align_offloaded_subtree(mod))
            _HELD[mod] = True
            stack.callback(_HELD.pop, mod, None)
        yield


def readout_device(bridge: Any) -> torch.device:
    """The device the unembedding runs on (where residuals go to be read out)."""
    with materialized(bridge, bridge.unembed):
        return bridge.W_U.device


def readout(bridge: Any, vectors: torch.Tensor, **kwargs: Any) -> Any:
    """``transformer_lens.tools.analysis.logit_readout`` on a model on one device or
    dispatched: the vectors move to the unembedding's device and its weights are
    materialized for the read (the final norm materializes its own, as in a forward)."""
    from transformer_lens.tools.analysis import logit_readout

    with materialized(bridge, bridge.unembed):
        dev = bridge.W_U.device
        for k in ("targets", "vocab"):
            if isinstance(kwargs.get(k), torch.Tensor):
                kwargs[k] = kwargs[k].to(dev)
        return logit_readout(bridge, vectors.to(dev), **kwargs)


def unembed_columns(bridge: Any, ids: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``W_U[:, ids]`` as fp32 on the CPU (``[d, len(ids)]``), read without holding the
    whole unembedding on the CPU when it is offloaded or on a GPU."""
    idx = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    with materialized(bridge, bridge.unembed):
        W_U = bridge.W_U
        return W_U.detach()[:, idx.to(W_U.device)].float().cpu().clone()


def unembed_bias(bridge: Any, ids: np.ndarray | torch.Tensor) -> torch.Tensor | None:
    """``b_U[ids]`` as fp32 on the CPU, or None when the model has no unembedding bias."""
    idx = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    with materialized(bridge, bridge.unembed):
        b_U = getattr(bridge, "b_U", None)
        if b_U is None:
            return None
        return b_U.detach()[idx.to(b_U.device)].float().cpu().clone()


def attn_W_O(bridge: Any, layer: int) -> torch.Tensor:
    """One layer's ``W_O`` ``[H, d_head, d]`` as fp32 on the CPU (materialized for the read
    when offloaded; one layer at a time, never the whole stack)."""
    attn = bridge.blocks[layer].attn
    with materialized(bridge, attn):
        w = attn.W_O.detach()
        d, H = int(bridge.cfg.d_model), int(bridge.cfg.n_heads)
        if w.shape == (d, d):  # as TransformerBridge.W_O reshapes a 2D weight
            w = w.reshape(H, d // H, d)
        return w.float().cpu().clone()


def attn_b_O(bridge: Any, layer: int) -> torch.Tensor | None:
    """One layer's attention output bias ``[d]`` (fp32, CPU; None where it has none)."""
    attn = bridge.blocks[layer].attn
    with materialized(bridge, attn):
        b = getattr(attn, "b_O", None)
        return None if b is None else b.detach().float().cpu().reshape(-1).clone()


def norm_weights(bridge: Any, norm: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """A norm module's own ``weight`` and ``bias`` (fp32, CPU; None where absent)."""
    mod = _original(norm)
    with materialized(bridge, norm):
        w = getattr(mod, "weight", None)
        b = getattr(mod, "bias", None)
        return (None if w is None else w.detach().float().cpu().clone(),
                None if b is None else b.detach().float().cpu().clone())


def to_device(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` on ``like``'s device (a no-op when it is there already)."""
    return t if t.device == like.device else t.to(like.device)
