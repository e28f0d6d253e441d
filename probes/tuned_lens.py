"""Lenses: how a residual-stream state is read as a next-token distribution.

Follows the design of the ``tuned-lens`` package (Belrose et al. 2023): a small abstract
:class:`Lens` with :class:`LogitLens` (identity: the residual goes straight through the
model's final norm and unembedding) and :class:`TunedLens` (one affine translator per
layer, residual form ``h + W h + b`` with ``W = 0, b = 0`` at the start, so an untrained
tuned lens *is* the logit lens), and a dataclass config that is saved and loaded beside
the weights and names the model the lens was trained for.

Stack indices follow ``probes.capture.resid_hooks``: entry 0 is the embedding output,
entry ``l + 1`` the output of block ``l``; the last entry (the final residual) is read
as is by every lens. A lens is callable as ``lens(h, index)``, the signature of
``transformer_lens.tools.analysis.logit_lens(..., lens=...)``, so it plugs in there too.

The readout goes through ``transformer_lens.tools.analysis.logit_readout`` (the model's
real final norm, unembedding and output transform) with ``enable_grad=True`` for
training; no ``[positions, vocab]`` tensor larger than one minibatch ever exists.
"""

from __future__ import annotations

import abc
import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from probes.capture import capture_at, resid_hooks

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.pt"


class Lens(nn.Module, abc.ABC):
    """Maps the residual stream at stack entry ``index`` to a state the final norm and
    unembedding can read."""

    @abc.abstractmethod
    def transform_hidden(self, h: torch.Tensor, index: int) -> torch.Tensor: ...

    def forward(self, h: torch.Tensor, index: int) -> torch.Tensor:  # lens(h, index)
        return self.transform_hidden(h, index)

    name: str = "lens"


class LogitLens(Lens):
    """The identity translator: nostalgebraist's logit lens."""

    name = "logit"

    def transform_hidden(self, h: torch.Tensor, index: int) -> torch.Tensor:
        return h


@dataclass
class TunedLensConfig:
    """What a saved tuned lens is for. ``n_layers`` translators cover stack entries
    ``0 .. n_layers - 1``; the final entry needs none."""

    model_id: str
    d_model: int
    n_layers: int
    bias: bool = True
    train_steps: int = 0
    train_positions: int = 0
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TunedLensConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


class TunedLens(Lens):
    """Per-layer affine translators in residual form, identity at initialisation."""

    name = "tuned"

    def __init__(self, config: TunedLensConfig):
        super().__init__()
        self.config = config
        self.layer_translators = nn.ModuleList(
            nn.Linear(config.d_model, config.d_model, bias=config.bias)
            for _ in range(config.n_layers)
        )
        with torch.no_grad():
            for t in self.layer_translators:
                t.weight.zero_()
                if t.bias is not None:
                    t.bias.zero_()

    @classmethod
    def for_model(cls, bridge: Any, model_id: str, bias: bool = True) -> "TunedLens":
        return cls(TunedLensConfig(model_id=model_id, d_model=int(bridge.cfg.d_model),
                                   n_layers=int(bridge.cfg.n_layers), bias=bias))

    def transform_hidden(self, h: torch.Tensor, index: int) -> torch.Tensor:
        if index >= len(self.layer_translators):
            return h
        t = self.layer_translators[index]
        x = h.to(device=t.weight.device, dtype=t.weight.dtype)
        return (x + t(x)).to(h.dtype)

    def save(self, path: str | Path) -> None:
        """Write ``config.json`` and ``params.pt`` into the directory ``path``.
        (Plain files, written to temporaries and renamed, so a crash leaves no half lens.)"""
        import os
        import tempfile

        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        for name, writer in ((PARAMS_FILE, lambda f: torch.save(self.state_dict(), f)),
                             (CONFIG_FILE, lambda f: f.write(
                                 json.dumps(self.config.to_dict(), indent=2).encode()))):
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=p)
            with os.fdopen(fd, "wb") as f:
                writer(f)
            os.replace(tmp, p / name)

    @classmethod
    def load(cls, path: str | Path, model_id: str | None = None,
             map_location: str | torch.device = "cpu") -> "TunedLens":
        """Load a lens saved by :meth:`save`; ``model_id`` (when given) must match."""
        p = Path(path)
        cfg = TunedLensConfig.from_dict(json.loads((p / CONFIG_FILE).read_text()))
        if model_id is not None and cfg.model_id != model_id:
            raise ValueError(f"{p}: tuned lens was trained for {cfg.model_id!r}, not {model_id!r}")
        lens = cls(cfg)
        lens.load_state_dict(torch.load(p / PARAMS_FILE, map_location=map_location,
                                        weights_only=True))
        return lens


# ---------------------------------------------------------------------------------------
# reading and training


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Model parameters out of autograd while a lens trains (restored afterwards)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def readout_log_probs(bridge: Any, h: torch.Tensor, enable_grad: bool = False,
                      chunk_size: int = 256) -> torch.Tensor:
    """Full-vocabulary log-probs of residual states ``[n, d]`` (fp32)."""
    from probes.devices import readout

    return readout(bridge, h, return_type="log_probs", chunk_size=chunk_size,
                   enable_grad=enable_grad).values.float()


def _kl(final_lp: torch.Tensor, lens_lp: torch.Tensor) -> torch.Tensor:
    """KL(final || lens) per row, in nats."""
    return (final_lp.exp() * (final_lp - lens_lp)).sum(-1)


def sample_positions(lengths: Sequence[int], per_seq: int, seed: int = 0,
                     skip_first: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``per_seq`` random positions per sequence (position 0 skipped: the first
    token's state is an outlier in most models and says little about a lens)."""
    rng = np.random.default_rng(seed)
    seq, pos = [], []
    for s, n in enumerate(lengths):
        lo = 1 if skip_first and n > 1 else 0
        cand = np.arange(lo, n)
        take = cand if len(cand) <= per_seq else np.sort(rng.choice(cand, per_seq, replace=False))
        seq += [s] * len(take)
        pos += list(take)
    return np.asarray(seq, dtype=np.int64), np.asarray(pos, dtype=np.int64)


def residual_sample(bridge: Any, texts: Sequence[Sequence[int]], per_seq: int = 32,
                    seed: int = 0, batch_tokens: int = 8192) -> torch.Tensor:
    """The residual stack ``[S, M, d]`` at sampled positions of token sequences."""
    seq, pos = sample_positions([len(t) for t in texts], per_seq, seed)
    hooks = resid_hooks(int(bridge.cfg.n_layers))
    acts = capture_at(bridge, texts, seq, pos, hooks=hooks, batch_tokens=batch_tokens)
    return torch.stack([acts[h] for h in hooks])


@torch.no_grad()
def lens_kl(bridge: Any, lens: Lens, stack: torch.Tensor, batch: int = 256) -> np.ndarray:
    """Mean KL(final layer || lens at layer s) for every stack entry: ``[S]`` (nats)."""
    from probes.devices import materialized, readout_device

    S, M, _ = stack.shape
    lens = lens.to(readout_device(bridge))
    total = np.zeros(S)
    with materialized(bridge, bridge.unembed):  # one load of an offloaded W_U
        for a in range(0, M, batch):
            final_lp = readout_log_probs(bridge, stack[-1, a:a + batch])
            for s in range(S):
                lp = readout_log_probs(bridge, lens(stack[s, a:a + batch], s))
                total[s] += _kl(final_lp, lp).sum().item()
    return total / max(M, 1)


def train_tuned_lens(bridge: Any, stack: torch.Tensor, model_id: str, steps: int = 200,
                     batch: int = 128, lr: float = 1e-3, weight_decay: float = 1e-3,
                     seed: int = 0, lens: TunedLens | None = None) -> TunedLens:
    """Fit translators so every layer's readout matches the final layer's distribution.

    ``stack`` is a residual sample from :func:`residual_sample`. The loss is the sum over
    layers of KL(final || translated), averaged over a minibatch of positions (the
    tuned-lens objective); Adam with a little weight decay toward the identity.
    """
    S, M, _ = stack.shape
    lens = lens or TunedLens.for_model(bridge, model_id)
    from probes.devices import materialized, readout_device

    device = readout_device(bridge)
    lens = lens.to(device)
    opt = torch.optim.Adam(lens.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    # an offloaded unembedding is loaded once for the whole training, not once per read
    with _frozen(bridge), materialized(bridge, bridge.unembed):
        for _ in range(steps):
            idx = torch.randint(0, M, (min(batch, M),), generator=g)
            with torch.no_grad():
                final_lp = readout_log_probs(bridge, stack[-1, idx])
            loss = torch.zeros((), device=final_lp.device)
            for s in range(S - 1):
                h = stack[s, idx].to(device)
                lp = readout_log_probs(bridge, lens(h, s), enable_grad=True)
                loss = loss + _kl(final_lp, lp).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    lens.config.train_steps += steps
    lens.config.train_positions = int(M)
    return lens.eval()
