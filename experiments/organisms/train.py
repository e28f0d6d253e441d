"""A plain PyTorch trainer for ``GPTNeoXForCausalLM`` (the Pythia architecture).

Why not ``transformer_lens.tools.training.train``: it calls
``model(tokens, return_type="loss")`` (a TransformerLens model, not a Hugging
Face one), shuffles with its own DataLoader, and has no loss mask for padding;
we need an HF model saved with ``save_pretrained`` and a data order that is
identical for every size (as Pythia did), so a 40-line loop is simpler.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass

import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from .config import ModelSize, TrainConfig


def pack_windows(lines: list[str], vocab: dict[str, int], seq_len: int, eot_id: int = 0) -> torch.Tensor:
    """Greedily pack whole lines, each preceded by <|endoftext|>, into windows.

    Returns an int64 tensor (n_windows, seq_len); unused tail positions hold -1
    (padding, masked out of the loss). A line never straddles two windows, so
    every prompt the tasks use is seen whole in training. Half of the windows
    (seeded) drop the leading <|endoftext|>, so a prompt scored without a BOS
    token (the engine's default, as lm-eval and the ISP) is in distribution too.
    """
    unk = vocab.get("<|unk|>", 1)
    rng = random.Random(f"pack-{seq_len}")
    windows, cur = [], []
    for line in lines:
        ids = [eot_id] + [vocab.get(w, unk) for w in line.split()]
        if len(ids) > seq_len:
            ids = ids[:seq_len]
        if len(cur) + len(ids) > seq_len:
            windows.append(cur + [-1] * (seq_len - len(cur)))
            cur = []
        if not cur and rng.random() < 0.5:
            ids = ids[1:]
        cur = cur + ids
    if cur:
        windows.append(cur + [-1] * (seq_len - len(cur)))
    return torch.tensor(windows, dtype=torch.long)


def batch_order(n_windows: int, n_batches: int, batch_size: int, seed: int) -> list[list[int]]:
    """The window indices of every batch: one seeded permutation per epoch.

    Depends only on (n_windows, n_batches, batch_size, seed), so every size of a
    family sees the same data in the same order.
    """
    order: list[int] = []
    epoch = 0
    while len(order) < n_batches * batch_size:
        perm = list(range(n_windows))
        random.Random(f"order-{seed}-{epoch}").shuffle(perm)
        order += perm
        epoch += 1
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(n_batches)]


def make_model(size: ModelSize, vocab_size: int, train: TrainConfig, seed: int) -> GPTNeoXForCausalLM:
    config = GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=size.d_model,
        num_hidden_layers=size.n_layers,
        num_attention_heads=size.n_heads,
        intermediate_size=4 * size.d_model,
        rotary_pct=train.rotary_pct,
        max_position_embeddings=512,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(config)


@dataclass
class TrainResult:
    model: GPTNeoXForCausalLM
    final_loss: float
    train_tokens: int
    train_seconds: float
    losses: list[float]


def train_model(
    size: ModelSize,
    windows: torch.Tensor,
    vocab_size: int,
    train: TrainConfig,
    seed: int,
    log=None,
    on_checkpoint=None,
) -> TrainResult:
    """Train one size; ``on_checkpoint(step, model)`` is called after ``step`` optimizer
    steps for every fraction in ``train.checkpoints`` (the training-time axis)."""
    # ORGANISMS_THREADS overrides the thread count without changing the config hash:
    # on a shared 2-core machine, 2 threads next to another busy process spin-wait and
    # run up to ~10x slower than 1 thread (measured, RESEARCH.md).
    torch.set_num_threads(int(os.environ.get("ORGANISMS_THREADS", train.threads)))
    model = make_model(size, vocab_size, train, seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=size.lr,
        betas=train.betas,
    )

    def lr_at(step: int) -> float:
        if step < train.warmup:
            return size.lr * (step + 1) / train.warmup
        frac = (step - train.warmup) / max(1, size.steps - train.warmup)
        return size.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    batches = batch_order(len(windows), size.steps, train.batch_size, seed)
    ckpt_steps = sorted({round(f * size.steps) for f in train.checkpoints} - {0, size.steps})
    losses, n_tokens = [], 0
    model.train()
    t0 = time.time()
    for step, idx in enumerate(batches):
        x = windows[idx]
        labels = x.clone()
        x = x.clamp(min=0)  # padding positions read <|endoftext|> but are masked via labels
        labels[labels < 0] = -100
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        out = model(input_ids=x, labels=labels)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        opt.step()
        losses.append(out.loss.item())
        n_tokens += int((labels != -100).sum())
        if on_checkpoint is not None and step + 1 in ckpt_steps:
            model.eval()
            on_checkpoint(step + 1, model)
            model.train()
        if log and (step % 100 == 0 or step == size.steps - 1):
            log(f"{size.name} step {step}/{size.steps} loss {losses[-1]:.3f} ({time.time() - t0:.0f}s)")
    model.eval()
    tail = losses[-20:]
    return TrainResult(model, sum(tail) / len(tail), n_tokens, time.time() - t0, losses)
