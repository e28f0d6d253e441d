"""The one pass per model: a task and every view of it through the model once.

For a loaded model and a task whose views are built (``diagnose.views``), one batched
plan (``diagnose.engine.plan_reads``: sorted, packed, prompts shared across classes)
runs every distinct (prompt, class) input of the task and of each view, and keeps
everything the later stages need, so none of them runs the prompts again:

- the class scores of the task and of each view (ISP rules: ``TaskScores``), with the
  examples this model cannot score counted, not raised;
- the final residual at every continuation read of every prompt set, from which the
  contrastive mitigations (PAD, CAD) read their logits when their weak prompt is a view;
- at the task prompt's answer position (where a class's first token is predicted):
  the residual after the embedding and after every block (``stack``: the logit lens,
  the probes and the commitment layer read it), the lens readout of every class's first
  token, and the direct logit attribution of correct minus tempting.

``Capture`` round-trips through ``diagnose.records`` (one ``.npz`` per model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from diagnose.engine import FINAL_RESID, default_batch_tokens, plan_for, readout_log_probs
from diagnose.families import LoadedModel
from diagnose.scoring import TaskScores, assemble, build_requests
from diagnose.tasks import Task
from diagnose.views import view_order, view_task

TASK = "task"


@dataclass
class PromptSet:
    """The task prompts or one view's, for the examples ``index`` of the task."""

    name: str
    index: np.ndarray            # [n] example indices in the task
    scores: TaskScores           # scored against the view's own answer where it has one
    has_answer: np.ndarray       # [n] the view has its own answer (else the task's is used)
    read_example: np.ndarray     # [R] for each continuation read: example index (in the task)
    read_class: np.ndarray       # [R] class
    read_target: np.ndarray      # [R] token predicted
    resid: np.ndarray | None     # [R, d] final residual (before the final norm)


@dataclass
class Capture:
    model: dict[str, Any]        # id, n_params, n_layers, n_heads, d_model, source, dtype, device
    task: str
    format: str
    example_ids: list[str]
    answer: np.ndarray           # [N] (-1 for sequence_prob)
    tempting: np.ndarray         # [N] given or two-class tempting class (-1 unknown)
    sets: dict[str, PromptSet]   # "task" first, then the views in registry order
    class_first: np.ndarray | None = None     # [N, C] first token of each class (-1 padding)
    stack: np.ndarray | None = None           # [S, N, d] residual at the answer position
    lens_log_probs: np.ndarray | None = None  # [N, S, C] full-vocabulary log p(first token)
    unembed_ids: np.ndarray | None = None     # [U] the class first tokens
    unembed: np.ndarray | None = None         # [U, d] their unembedding directions
    dla: dict[str, np.ndarray] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)   # what could not be measured, and why

    @property
    def scores(self) -> TaskScores:
        return self.sets[TASK].scores

    @property
    def views(self) -> list[str]:
        return [k for k in self.sets if k != TASK]

    def view_choices(self, name: str) -> np.ndarray:
        """[N] the model's choice under view ``name`` (-1 where it has no such view or
        the example could not be scored)."""
        out = np.full(len(self.example_ids), -1, dtype=np.int64)
        ps = self.sets[name]
        out[ps.index] = ps.scores.chosen
        return out

    def class_directions(self) -> tuple[np.ndarray, np.ndarray]:
        """Each class's first-token unembedding direction ``[N, C, d]`` and validity."""
        valid = self.class_first >= 0
        col = {int(t): j for j, t in enumerate(self.unembed_ids)}
        dirs = np.zeros((*self.class_first.shape, self.unembed.shape[1]), dtype=np.float32)
        for (i, c) in zip(*np.nonzero(valid)):
            dirs[i, c] = self.unembed[col[int(self.class_first[i, c])]]
        return dirs, valid

    # -- records -------------------------------------------------------------------
    def to_record(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays: dict[str, Any] = {"answer": self.answer, "tempting": self.tempting,
                                  "class_first": self.class_first, "stack": self.stack,
                                  "lens_log_probs": self.lens_log_probs,
                                  "unembed_ids": self.unembed_ids, "unembed": self.unembed}
        arrays.update({f"dla__{k}": v for k, v in self.dla.items()})
        sets_meta = {}
        for name, ps in self.sets.items():
            s = ps.scores
            p = f"set__{name}__"
            arrays.update({p + "index": ps.index, p + "has_answer": ps.has_answer,
                           p + "read_example": ps.read_example, p + "read_class": ps.read_class,
                           p + "read_target": ps.read_target, p + "resid": ps.resid,
                           p + "loss": s.loss, p + "answer": s.answer_index,
                           p + "class_scores": s.class_scores, p + "chosen": s.chosen,
                           p + "correct": s.correct, p + "class_mass": s.class_mass})
            arrays.update({f"{p}extra__{k}": v for k, v in s.extra.items()})
            sets_meta[name] = {"n_truncated": s.n_truncated, "task": s.task,
                               "unscorable": {str(k): v for k, v in s.unscorable.items()},
                               "extra": list(s.extra)}
        meta = {"model": self.model, "task": self.task, "format": self.format,
                "example_ids": self.example_ids, "sets": sets_meta, "tokens": self.tokens,
                "dla": list(self.dla), "notes": list(self.notes)}
        return {k: v for k, v in arrays.items() if v is not None}, meta

    @classmethod
    def from_record(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> "Capture":
        ids = list(meta["example_ids"])
        sets = {}
        for name, sm in meta["sets"].items():
            p = f"set__{name}__"
            g = lambda k: arrays.get(p + k)  # noqa: E731
            index = g("index")
            scores = TaskScores(
                task=sm["task"], format=meta["format"], model_id=meta["model"]["id"],
                n_params=int(meta["model"]["n_params"]), example_ids=[ids[i] for i in index],
                size=meta["model"].get("size"),
                answer_index=g("answer"), class_scores=g("class_scores"), chosen=g("chosen"),
                correct=None if g("correct") is None else g("correct").astype(bool),
                loss=g("loss"), class_mass=g("class_mass"), n_truncated=int(sm["n_truncated"]),
                extra={k: g(f"extra__{k}") for k in sm["extra"]},
                unscorable={int(k): v for k, v in sm["unscorable"].items()})
            sets[name] = PromptSet(name, index, scores, g("has_answer").astype(bool),
                                   g("read_example"), g("read_class"), g("read_target"),
                                   g("resid"))
        return cls(model=meta["model"], task=meta["task"], format=meta["format"],
                   example_ids=ids, answer=arrays["answer"], tempting=arrays["tempting"],
                   sets=sets, class_first=arrays.get("class_first"), stack=arrays.get("stack"),
                   lens_log_probs=arrays.get("lens_log_probs"),
                   unembed_ids=arrays.get("unembed_ids"), unembed=arrays.get("unembed"),
                   dla={k: arrays[f"dla__{k}"] for k in meta["dla"]}, tokens=meta["tokens"],
                   notes=list(meta.get("notes", [])))


def model_facts(model: LoadedModel) -> dict[str, Any]:
    cfg = model.bridge.cfg
    step = model.spec.step
    facts = {"id": model.id, "n_params": int(model.n_params), "step": step,
             "size": int(model.n_params) if step is None else int(step),
             "n_layers": int(cfg.n_layers),
             "n_heads": int(cfg.n_heads), "d_model": int(cfg.d_model),
             "source": model.spec.source, "dtype": str(model.dtype).replace("torch.", ""),
             "device": model.device}
    if model.device_map:  # accelerate's placement of a dispatched model
        facts["device_map"] = dict(model.device_map)
    return facts


@torch.no_grad()
def capture(model: LoadedModel, task: Task, prepend_bos: bool = False,
            batch_tokens: int | None = None, instruments: bool = True,
            progress: bool | str = False) -> Capture:
    """Run ``task`` and its views (built beforehand) through ``model`` once."""
    from probes.attribution import attribute, attribution_hooks
    from probes.capture import TokenCount, capture_at, resid_hooks
    from probes.devices import materialized, unembed_columns
    from probes.logit_lens import read_classes

    names = [TASK] + view_order(task.view_names)
    subtasks = {TASK: (task, list(range(len(task))))}
    subtasks.update({v: view_task(task, v) for v in names[1:]})
    parts = {k: build_requests(t, model, prepend_bos) for k, (t, _) in subtasks.items()}
    all_reqs, offsets = [], {}
    for k in names:
        offsets[k] = len(all_reqs)
        all_reqs += parts[k][0]
    plan = plan_for(model, all_reqs)
    n = len(task)
    classes = task.format != "sequence_prob"
    instruments = instruments and classes and n > 0
    # the task prompt's answer position: the first read of each example's first request
    reqs0, keys0, _ = parts[TASK]
    first_read = np.full(len(all_reqs), -1, dtype=np.int64)
    first_read[plan.read_request[::-1]] = np.arange(len(plan.read_request))[::-1]
    answer_read = np.full(n, -1, dtype=np.int64)
    class_first = None
    if classes:
        c_max = max(len(e.classes) for e in task.examples)
        class_first = np.full((n, c_max), -1, dtype=np.int64)
        for j, (i, fld, k) in enumerate(keys0):
            if fld != "prompt":
                continue
            class_first[i, k] = reqs0[j].continuation[0]
            if answer_read[i] < 0:
                answer_read[i] = first_read[j]
    scored = np.nonzero(answer_read >= 0)[0]
    hooks = [FINAL_RESID]
    subsets: dict[str, np.ndarray] = {}
    if instruments and len(scored):
        extra = resid_hooks(model.n_layers) + [h for h in attribution_hooks(model.bridge)
                                                if h != FINAL_RESID]
        extra = list(dict.fromkeys(extra))
        hooks += extra
        subsets = {h: answer_read[scored] for h in extra}
    with TokenCount() as count:
        acts = capture_at(model.bridge, plan.inputs, plan.read_seq, plan.read_pos, hooks=hooks,
                          layouts=plan.layouts, subsets=subsets,
                          batch_tokens=batch_tokens or default_batch_tokens(model),
                          progress=progress)
    final = acts[FINAL_RESID]
    # read out set by set, in the readout's own chunks, so that anything reading one
    # set's residuals again (contrastive decoding at a = 0) gets the same bits
    lp = np.zeros(len(plan.read_target))
    with materialized(model.bridge, model.bridge.unembed):  # an offloaded W_U: loaded once
        for k in names:
            sel = np.nonzero((plan.read_request >= offsets[k])
                             & (plan.read_request < offsets[k] + len(parts[k][0])))[0]
            lp[sel] = readout_log_probs(model, final[torch.from_numpy(sel)],
                                        plan.read_target[sel])
    ll = np.bincount(plan.read_request, weights=lp, minlength=len(all_reqs))
    sets = {}
    for k in names:
        t, idx = subtasks[k]
        reqs, keys, unscorable = parts[k]
        lo = offsets[k]
        s = assemble(t, model, reqs, keys, ll[lo:lo + len(reqs)], unscorable)
        sel = (plan.read_request >= lo) & (plan.read_request < lo + len(reqs))
        req = plan.read_request[sel] - lo
        idx_a = np.asarray(idx, dtype=np.int64)
        sets[k] = PromptSet(
            k, idx_a, s,
            np.array([bool(e.metadata.get("view_has_answer", True)) for e in t.examples]),
            idx_a[np.array([keys[r][0] for r in req], dtype=np.int64)] if len(req) else
            np.zeros(0, dtype=np.int64),
            np.array([keys[r][2] for r in req], dtype=np.int64),
            plan.read_target[sel], final[torch.from_numpy(np.nonzero(sel)[0])].numpy())
    answer = np.array([-1 if e.answer_index is None else e.answer_index for e in task.examples],
                      dtype=np.int64)
    tempting = np.array([-1 if e.tempting is None else e.tempting for e in task.examples],
                        dtype=np.int64)
    out = Capture(model=model_facts(model), task=task.name, format=task.format,
                  example_ids=[e.id for e in task.examples], answer=answer, tempting=tempting,
                  sets=sets, class_first=class_first)
    out.tokens = {"forward_tokens": count.tokens, "padded_tokens": count.padded,
                  "distinct_tokens": distinct_request_tokens(all_reqs),
                  "unk_share": unknown_share(model.tokenizer, [r.context for r in reqs0])}
    if not instruments or not len(scored):
        return out
    d = int(model.bridge.cfg.d_model)
    S = model.n_layers + 1
    stack = np.full((S, n, d), np.nan, dtype=np.float32)
    for s_i, h in enumerate(resid_hooks(model.n_layers)):
        stack[s_i, scored] = acts[h].numpy()
    out.stack = stack
    lens = np.full((n, S, class_first.shape[1]), np.nan)
    lens[scored] = read_classes(model.bridge, torch.from_numpy(stack[:, scored]),
                                class_first[scored])
    out.lens_log_probs = lens
    uniq = np.unique(class_first[class_first >= 0])
    out.unembed_ids = uniq
    out.unembed = unembed_columns(model.bridge, uniq).T.numpy()
    # attribution of correct minus tempting (the best wrong class at the output where the
    # task names no tempting class)
    rows = scored
    good = class_first[rows, answer[rows]]
    tm = tempting[rows].copy()
    for j, i in enumerate(rows):
        if tm[j] < 0:
            last = np.where(class_first[i] >= 0, lens[i, -1], -np.inf)
            last[answer[i]] = -np.inf
            tm[j] = int(np.argmax(last))
    bad = class_first[rows, tm]
    at_acts = {h: acts[h] for h in subsets}
    at_acts[FINAL_RESID] = final[torch.from_numpy(answer_read[rows])]
    try:
        at = attribute(model.bridge, at_acts, good, bad)
    except (NotImplementedError, RuntimeError) as e:
        # TransformerLens refuses to read an offloaded weight it cannot materialize (its
        # require_readable_weight / compatibility-mode checks): on a dispatched model the
        # rest of the capture stands and the attribution says why it is missing
        if not model.device_map:
            raise
        out.dla = {"tempting": np.full(n, -1, dtype=np.int64)}
        out.dla["tempting"][rows] = tm
        out.notes.append("direct logit attribution skipped on this dispatched model "
                         f"(accelerate device map: {_placement(model)}): "
                         f"{str(e).splitlines()[0][:300]}")
        return out
    L, H = model.n_layers, int(model.bridge.cfg.n_heads)
    dla = {"embed": np.full(n, np.nan), "attn": np.full((n, L), np.nan),
           "mlp": np.full((n, L), np.nan), "heads": np.full((n, L, H), np.nan),
           "bias": np.full(n, np.nan), "total": np.full(n, np.nan),
           "tempting": np.full(n, -1, dtype=np.int64)}
    for k in ("embed", "attn", "mlp", "heads", "bias", "total"):
        dla[k][rows] = getattr(at, k)
    dla["tempting"][rows] = tm
    out.dla = dla
    out.notes += at.notes
    cfg = getattr(model.bridge.original_model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    if getattr(cfg, "final_logit_softcapping", None):
        gap = np.abs(at.output_total - at.total)
        out.notes.append("the model transforms its logits after the unembedding (a soft-cap): "
                         "direct logit attribution decomposes the logit difference before it "
                         f"(largest gap to the output's difference: {float(gap.max()):.2g})")
    return out


def _placement(model: LoadedModel) -> str:
    where = sorted({str(v) for v in (model.device_map or {}).values()})
    return ", ".join(where) + (" (offloaded)" if model.offloaded else "")


def unknown_share(tokenizer: Any, contexts: list[tuple[int, ...]]) -> float | None:
    """Share of the task prompts' tokens the tokenizer does not know (None when it has no
    unknown token of its own: byte-level tokenizers know every string)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None or unk in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        return None
    uniq = list(dict.fromkeys(contexts))
    total = sum(len(c) for c in uniq)
    return float(sum(c.count(unk) for c in uniq) / total) if total else None


def distinct_request_tokens(reqs) -> int:
    """Tokens of the distinct (prompt, class) inputs: each distinct context once, and each
    distinct continuation body after it (what a perfect prefix-sharing plan would run)."""
    contexts: dict[tuple[int, ...], set[tuple[int, ...]]] = {}
    for r in reqs:
        contexts.setdefault(r.context, set()).add(r.continuation[:-1])
    return int(sum(len(c) + sum(len(b) for b in bodies) for c, bodies in contexts.items()))


def capture_stage(task: Task, prepend_bos: bool = False, batch_tokens: int | None = None,
                  progress: bool | str = False):
    """The per-model stage that runs the model: its record is a ``Capture``."""
    from diagnose.runner import ModelStage

    return ModelStage(
        name="capture", needs_model=True, key=[task.fingerprint(), task.name, prepend_bos],
        compute=lambda model, _: capture(model, task, prepend_bos, batch_tokens,
                                         progress=progress).to_record(),
        decode=Capture.from_record)
