"""Contrastive decoding: prior-aware (PAD) and context-aware (CAD) decoding.

DESIGN.md section 4:

- CAD (Shi et al. 2023): ``logits = (1 + a) * logits(y | context, x) - a * logits(y | x)``;
- PAD: ``logits = L(prompt) + a * (L(prompt) - L(weak prompt))``, the weak prompt being
  more prone to the prior (by default the task's ``prior`` view: the prompt with the
  instruction removed).

Both are the same affine combination ``(1 + a) * L_strong - a * L_weak`` of two
prompts' next-token logits; they differ only in what they call the strong and weak
prompts and in how the strength is read (CAD: the weight on the context; PAD: the
step away from the weak prompt). One kernel (``contrastive_logits``) does the
arithmetic; ``PAD`` and ``CAD`` are thin specs over it. Because the two weights sum
to one, combining logits or log-probs gives the same distribution (the per-row
normalisers only shift it), so the choice is immaterial.

Class scoring, token by token: for a class of ``n`` tokens, the continuation tokens
are those of the *full* prompt's (prompt, class) pair (``encode_pairs``), reused
after the weak prompt; at each class-token position both prompts' next-token logits
over the full vocabulary are combined, log-softmaxed, and the class token's
log-prob is read; the class score is the sum. With ``a = 0`` every number equals
``score_task``'s exactly (same forward batches and readout chunks, and
``1 * L - 0 * L_weak == L`` in floating point).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from diagnose.engine import Request, fit_to_context, iter_continuation_logits
from diagnose.families import LoadedModel
from diagnose.scoring import TaskScores, assemble, build_requests
from diagnose.tasks import Task
from diagnose.tokenization import encode_prompt

DEFAULT_ALPHAS = (0.0, 0.5, 1.0, 2.0, 4.0)


# -- the kernel ------------------------------------------------------------------------


def contrastive_logits(strong, weak, a: float):
    """The one kernel: ``(1 + a) * strong - a * weak`` (tensors or arrays, any shape)."""
    return (1.0 + a) * strong - a * weak


def cad_logits(l_context_x, l_x, a: float):
    """CAD: ``(1 + a) * logits(y | context, x) - a * logits(y | x)``."""
    return contrastive_logits(l_context_x, l_x, a)


def pad_logits(l_prompt, l_weak, a: float):
    """PAD: ``L(prompt) + a * (L(prompt) - L(weak))`` (= the kernel, up to rounding)."""
    return contrastive_logits(l_prompt, l_weak, a)


# -- class scoring ------------------------------------------------------------------------


def weak_requests(model: LoadedModel, strong: Sequence[Request], weak_contexts: Sequence[str],
                  prepend_bos: bool = False, where: Sequence[str] | None = None) -> list[Request]:
    """Requests with the weak prompts as contexts and the strong requests' continuations
    (the class tokens as they tokenize after the full prompt)."""
    if len(weak_contexts) != len(strong):
        raise ValueError("one weak context per strong request is needed")
    enc: dict[str, list[int]] = {}
    out = []
    for j, (r, w) in enumerate(zip(strong, weak_contexts)):
        if w not in enc:
            enc[w] = encode_prompt(model.tokenizer, w, prepend_bos)
        out.append(fit_to_context(enc[w], r.continuation, model.n_ctx,
                                  where[j] if where else f"weak request {j}"))
    return out


@torch.no_grad()
def contrastive_loglikelihoods(
    model: LoadedModel,
    strong: Sequence[Request],
    weak: Sequence[Request],
    alphas: Sequence[float],
    batch_tokens: int | None = None,
    chunk_size: int = 256,
) -> np.ndarray:
    """Summed contrastive log-probs of each request's continuation, for each ``a``:
    ``[len(alphas), len(strong)]``. ``weak[j]`` must carry ``strong[j]``'s continuation.

    Two forward passes in all (strong and weak prompts), whatever the number of ``a``
    values; logits exist for ``chunk_size`` reads at a time. Keep ``chunk_size`` at 256
    (``engine.readout_log_probs``' chunk) for ``a = 0`` to equal plain scoring bit for
    bit: the unembedding matmul's rounding depends on the chunk's shape.
    """
    if len(strong) != len(weak):
        raise ValueError("strong and weak request lists differ in length")
    for j, (s, w) in enumerate(zip(strong, weak)):
        if s.continuation != w.continuation:
            raise ValueError(f"request {j}: the weak request's continuation differs from the "
                             "strong one's (reuse the full prompt's continuation tokens)")
    n_reads = sum(len(r.continuation) for r in strong)
    lp = np.zeros((len(alphas), n_reads))
    read_request = np.zeros(n_reads, dtype=np.int64)
    it_s = iter_continuation_logits(model, strong, batch_tokens, chunk_size)
    it_w = iter_continuation_logits(model, weak, batch_tokens, chunk_size)
    start = 0
    for (req_s, tgt_s, ls), (req_w, tgt_w, lw) in zip(it_s, it_w):
        assert np.array_equal(req_s, req_w) and np.array_equal(tgt_s, tgt_w)
        n = len(req_s)
        read_request[start:start + n] = req_s
        tgt = torch.as_tensor(tgt_s, dtype=torch.long, device=ls.device).unsqueeze(-1)
        lw = lw.to(ls.device)
        for i, a in enumerate(alphas):
            comb = torch.log_softmax(contrastive_logits(ls, lw, float(a)), dim=-1)
            lp[i, start:start + n] = (torch.gather(comb, -1, tgt)[..., 0].float().cpu().numpy()
                                      .astype(np.float64))
        start += n
    assert start == n_reads
    return np.stack([np.bincount(read_request, weights=lp[i], minlength=len(strong))
                     for i in range(len(alphas))]) if len(alphas) else np.zeros((0, len(strong)))


def score_contrastive(
    model: LoadedModel,
    task: Task,
    weak_prompts: Sequence[str],
    alphas: Sequence[float],
    prepend_bos: bool = False,
    batch_tokens: int | None = None,
) -> list[TaskScores]:
    """Score ``task`` with contrastive decoding against per-example ``weak_prompts``,
    once per ``a`` in ``alphas`` (one ``TaskScores`` each; ``a = 0`` is ``score_task``).
    Runs both prompts; ``scores_from_capture`` reads them from a capture instead."""
    if task.format not in ("classification", "sequence_prob"):
        raise NotImplementedError(f"contrastive scoring supports classification and "
                                  f"sequence_prob tasks, not {task.format}")
    if len(weak_prompts) != len(task.examples):
        raise ValueError("one weak prompt per example is needed")
    reqs, keys, unscorable = build_requests(task, model, prepend_bos)
    where = [f"task {task.name!r}, example {task.examples[i].id} (weak prompt)" for i, _, _ in keys]
    weak = weak_requests(model, reqs, [weak_prompts[i] for i, _, _ in keys], prepend_bos, where)
    ll = contrastive_loglikelihoods(model, reqs, weak, alphas, batch_tokens=batch_tokens)
    truncated = len({keys[j % len(reqs)][0] for j, r in enumerate(list(reqs) + weak)
                     if r.truncated})
    out = []
    for a, row in zip(alphas, ll):
        s = assemble(task, model, reqs, keys, row, unscorable, name=f"{task.name}[a={a:g}]")
        s.n_truncated = truncated  # examples whose full or weak prompt lost tokens
        out.append(s)
    return out


@torch.no_grad()
def scores_from_capture(model: LoadedModel, task: Task, cap: Any, view: str,
                        alphas: Sequence[float], chunk_size: int = 256) -> list[TaskScores] | None:
    """Contrastive scores read from a capture (``diagnose.capture``): the task prompt's
    and view ``view``'s final residuals at the class tokens, combined token by token, with
    no forward pass. None when the view does not cover every scored example with the same
    class tokens (the caller then runs ``score_contrastive``). ``a = 0`` equals the
    capture's own scores bit for bit (same residuals, same readout chunks)."""
    from probes.devices import readout

    strong, weak = cap.sets["task"], cap.sets.get(view)
    if weak is None:
        return None
    wkey = {}
    seen: dict[tuple[int, int], int] = {}
    for r, (i, c, t) in enumerate(zip(weak.read_example, weak.read_class, weak.read_target)):
        k = seen.get((i, c), 0)
        seen[(i, c)] = k + 1
        wkey[(int(i), int(c), k)] = (r, int(t))
    match = np.full(len(strong.read_target), -1, dtype=np.int64)
    seen = {}
    for r, (i, c, t) in enumerate(zip(strong.read_example, strong.read_class,
                                      strong.read_target)):
        k = seen.get((i, c), 0)
        seen[(i, c)] = k + 1
        w = wkey.get((int(i), int(c), k))
        if w is None or w[1] != int(t):
            return None
        match[r] = w[0]
    s_res = torch.from_numpy(strong.resid)
    w_res = torch.from_numpy(weak.resid)
    tgt_all = torch.as_tensor(strong.read_target, dtype=torch.long)
    lp = np.zeros((len(alphas), len(tgt_all)))
    for a0 in range(0, len(tgt_all), chunk_size):
        sl = slice(a0, a0 + chunk_size)
        ls = readout(model.bridge, s_res[sl], return_type="logits",
                     chunk_size=chunk_size).values.float()
        lw = readout(model.bridge, w_res[torch.from_numpy(match[sl])],
                     return_type="logits", chunk_size=chunk_size).values.float()
        tgt = tgt_all[sl].to(ls.device).unsqueeze(-1)
        for j, a in enumerate(alphas):
            comb = torch.log_softmax(contrastive_logits(ls, lw, float(a)), dim=-1)
            lp[j, sl] = torch.gather(comb, -1, tgt)[..., 0].cpu().numpy().astype(np.float64)
    base = strong.scores
    n = len(task.examples)
    out = []
    has = np.zeros(base.class_scores.shape, dtype=bool)
    has[strong.read_example, strong.read_class] = True
    keys = [(i, "prompt", k) for i in range(n) for k in range(has.shape[1]) if has[i, k]]
    for j, a in enumerate(alphas):
        summed = np.zeros(has.shape)
        np.add.at(summed, (strong.read_example, strong.read_class), lp[j])
        s = assemble(task, model, None, keys, np.array([summed[i, k] for i, _, k in keys]),
                     base.unscorable, name=f"{task.name}[a={a:g}]")
        s.n_truncated = max(base.n_truncated, weak.scores.n_truncated)
        out.append(s)
    return out


# -- free generation -----------------------------------------------------------------------


@dataclass
class Generation:
    """Greedy continuations: text and ids per prompt, and whether a stop string ended it."""

    texts: list[str]
    token_ids: list[list[int]]
    stopped: list[bool] = field(default_factory=list)


class _CachedDecoder:
    """Greedy decoding state of a batch of token sequences with a KV cache: left-padded,
    position ids from the attention mask, one token per sequence per step. Runs the
    Hugging Face model under the bridge (generation needs no hooks)."""

    def __init__(self, model: LoadedModel, seqs: Sequence[Sequence[int]]):
        from probes.devices import input_device

        hf = model.bridge.original_model
        device = input_device(model.bridge)
        pad = model.tokenizer.pad_token_id
        pad = model.tokenizer.eos_token_id if pad is None else pad
        width = max(len(x) for x in seqs)
        ids = torch.full((len(seqs), width), int(pad or 0), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for b, x in enumerate(seqs):
            ids[b, width - len(x):] = torch.tensor(list(x), dtype=torch.long)
            mask[b, width - len(x):] = 1
        self.hf, self.device = hf, device
        self.mask = mask.to(device)
        pos = (self.mask.cumsum(-1) - 1).clamp(min=0)
        out = hf(input_ids=ids.to(device), attention_mask=self.mask, position_ids=pos,
                 use_cache=True)
        self.cache, self.pos = out.past_key_values, pos[:, -1]
        self.logits = out.logits[:, -1].float()

    def step(self, tokens: torch.Tensor) -> None:
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        self.pos = self.pos + 1
        out = self.hf(input_ids=tokens.to(self.device)[:, None], attention_mask=self.mask,
                      position_ids=self.pos[:, None], past_key_values=self.cache, use_cache=True)
        self.cache, self.logits = out.past_key_values, out.logits[:, -1].float()


_CACHE_OK: "weakref.WeakKeyDictionary[object, bool]" = weakref.WeakKeyDictionary()


@torch.no_grad()
def kv_cache_ok(model: LoadedModel) -> bool:
    """Does decoding with a KV cache (left padding, position ids) give the logits of a
    full forward on this model? Checked once per loaded model on a tiny probe, as the
    shared-prefix rows are (``engine.can_share_prefix``): a bridge component that does not
    honour the cache falls back to rerunning the sequences."""
    known = _CACHE_OK.get(model.bridge)
    if known is None:
        v = int(model.bridge.cfg.d_vocab)
        seqs = [[(5 * i + 3) % v for i in range(4)], [(7 * i + 1) % v for i in range(2)]]
        dec = _CachedDecoder(model, seqs)
        nxt = torch.tensor([(11 * j + 2) % v for j in range(2)])
        dec.step(nxt)
        want = last_logits(model, [s + [int(t)] for s, t in zip(seqs, nxt)])
        tol = 1e-3 if model.dtype == torch.float32 else 5e-2
        known = bool((dec.logits.cpu() - want).abs().max() <= tol * max(1.0, float(want.abs().max())))
        _CACHE_OK[model.bridge] = known
    return known


def last_logits(model: LoadedModel, seqs: Sequence[Sequence[int]], batch_tokens: int | None = None
                ) -> torch.Tensor:
    """Next-token logits after each whole sequence (the engine's capture and readout)."""
    from diagnose.engine import FINAL_RESID, default_batch_tokens
    from probes.capture import capture_at
    from probes.devices import readout

    acts = capture_at(model.bridge, [list(s) for s in seqs], np.arange(len(seqs)),
                      np.asarray([len(s) - 1 for s in seqs]), hooks=(FINAL_RESID,),
                      batch_tokens=batch_tokens or default_batch_tokens(model))
    return readout(model.bridge, acts[FINAL_RESID], return_type="logits").values.float().cpu()


@torch.no_grad()
def greedy_generate(
    model: LoadedModel,
    prompts: Sequence[str],
    max_new_tokens: int = 8,
    weak_prompts: Sequence[str] | None = None,
    a: float = 0.0,
    stop: Sequence[str] = (),
    prepend_bos: bool = False,
    batch_tokens: int | None = None,
) -> Generation:
    """Greedy decoding of every prompt, with the contrastive logits ``(1 + a) *
    L(prompt + y<t) - a * L(weak + y<t)`` when ``weak_prompts`` is given (``a = 0``:
    plain greedy). A continuation ends at the end-of-text token (not kept), at
    ``max_new_tokens``, or once its text contains one of the ``stop`` strings (kept, text
    cut right after it). Batches of similar length share a KV cache, so each step runs one
    token per sequence (prompts longer than the context keep their last tokens)."""
    from diagnose.engine import default_batch_tokens

    tok = model.tokenizer
    keep = max(1, model.n_ctx - max_new_tokens)
    strong = [encode_prompt(tok, p, prepend_bos)[-keep:] for p in prompts]
    weak = ([encode_prompt(tok, p, prepend_bos)[-keep:] for p in weak_prompts]
            if weak_prompts is not None else None)
    if weak is not None and len(weak) != len(strong):
        raise ValueError("one weak prompt per prompt is needed")
    eos = tok.eos_token_id
    gen: list[list[int]] = [[] for _ in prompts]
    texts = ["" for _ in prompts]
    stopped = [False] * len(prompts)
    budget = batch_tokens or default_batch_tokens(model)
    from probes.capture import TokenCount, batches

    lengths = [len(s) + max_new_tokens for s in strong]
    if not kv_cache_ok(model):
        return _uncached_greedy(model, strong, weak, a, max_new_tokens, stop, budget)
    for batch in batches(lengths, budget, 256):
        dec = _CachedDecoder(model, [strong[i] for i in batch])
        wdec = (_CachedDecoder(model, [weak[i] for i in batch])
                if weak is not None and a != 0 else None)
        TokenCount.add(torch.zeros(0), sum(len(strong[i]) for i in batch)
                       + (sum(len(weak[i]) for i in batch) if wdec else 0))
        live = [True] * len(batch)
        for _ in range(max_new_tokens):
            ls = dec.logits if wdec is None else contrastive_logits(dec.logits, wdec.logits, float(a))
            nxt = ls.argmax(dim=-1)
            for j, i in enumerate(batch):
                if not live[j]:
                    continue
                t = int(nxt[j])
                if eos is not None and t == eos:
                    live[j] = False
                    continue
                gen[i].append(t)
                texts[i] = tok.decode(gen[i])
                hit = [texts[i].index(s) + len(s) for s in stop if s and s in texts[i]]
                if hit:
                    texts[i] = texts[i][:min(hit)]
                    stopped[i] = True
                    live[j] = False
            if not any(live):
                break
            dec.step(nxt)
            if wdec is not None:
                wdec.step(nxt)
            TokenCount.add(torch.zeros(0), len(batch) * (2 if wdec else 1))
    return Generation(texts=texts, token_ids=gen, stopped=stopped)


def _uncached_greedy(model: LoadedModel, strong: list[list[int]], weak: list[list[int]] | None,
                     a: float, max_new_tokens: int, stop: Sequence[str], budget: int) -> Generation:
    """The fallback: every step reruns the sequences (no cache)."""
    tok = model.tokenizer
    eos = tok.eos_token_id
    gen: list[list[int]] = [[] for _ in strong]
    texts = ["" for _ in strong]
    stopped = [False] * len(strong)
    live = list(range(len(strong)))
    for _ in range(max_new_tokens):
        if not live:
            break
        ls = last_logits(model, [strong[i] + gen[i] for i in live], budget)
        if weak is not None and a != 0:
            lw = last_logits(model, [weak[i] + gen[i] for i in live], budget)
            ls = contrastive_logits(ls, lw, float(a))
        still = []
        for i, t in zip(live, ls.argmax(dim=-1).tolist()):
            if eos is not None and t == eos:
                continue
            gen[i].append(int(t))
            texts[i] = tok.decode(gen[i])
            hit = [texts[i].index(s) + len(s) for s in stop if s and s in texts[i]]
            if hit:
                texts[i] = texts[i][:min(hit)]
                stopped[i] = True
                continue
            still.append(i)
        live = still
    return Generation(texts=texts, token_ids=gen, stopped=stopped)


def contrastive_generate(model: LoadedModel, prompt: str, weak_prompt: str, a: float,
                         max_new_tokens: int = 8, stop: Sequence[str] = ()) -> str:
    """Greedy free generation with PAD/CAD logits ``(1 + a) * L(prompt) - a * L(weak)``,
    the weak prompt followed by the same generated tokens; returns the new text."""
    return greedy_generate(model, [prompt], max_new_tokens, [weak_prompt], a, stop).texts[0]
