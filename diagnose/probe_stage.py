"""The ``probe`` stage: what the instruments of ``probes/`` show, per model and over the
family, for one task.

Most of it reads records: the capture (``diagnose.capture``: the residual at the
answer position after every block, the lens readout, the direct logit attribution) and
its readings (``diagnose.readings``: lens margins, commitment, probes). Two
instruments need the model in memory and are per-model stages of their own:

- ``patching``: activation patching between each prompt and a second prompt of the
  same example (the ``prior`` view when the task has one, else its first view, else a
  logodds task's ``other_prompt``): interventions, so they run forwards of their own;
- ``tuned_lens`` (``lens="tuned"``): a tuned lens trained per model on the task's
  prompts (80 %; KL measured on the other 20 %), applied to the captured residuals.

Writes, atomically (``diagnose.store``)::

    DIR/probes.json             {"task", "models": [...]}
    DIR/lens_heatmap.png        relative depth x model size, colour = mean margin
    DIR/lens_trajectories.png   mean margin per layer with 95% bands, one line per size
    DIR/commitment.png          commitment depth vs model size
    DIR/probes.png              probe accuracy per layer beside output accuracy
    DIR/lens_kl.png             KL to the final layer per lens (tuned lens only)
    DIR/attribution/<slug>.png  per-layer attn/MLP bars and layer x head heatmap
    DIR/patching/<slug>.png     layer x position and layer x head patching heatmaps
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from diagnose import store
from diagnose.capture import Capture
from diagnose.families import LoadedModel
from diagnose.readings import Readings
from diagnose.tasks import Task
from diagnose.views import view_order


class ProbeError(ValueError):
    """The task cannot be probed as asked (wrong format, missing view)."""


@dataclass
class ProbeInputs:
    contexts: list[list[int]]
    class_ids: np.ndarray        # [N, C] first token of each class (-1 padding)
    answer: np.ndarray           # [N]
    tempting: np.ndarray         # [N] (-1: not given)
    n_truncated: int = 0


def encode_for_probes(task: Task, model: LoadedModel, prompts: Sequence[str] | None = None,
                      prepend_bos: bool = False) -> ProbeInputs:
    """Contexts and class first tokens, tokenized as scoring does (``encode_pairs``)."""
    from diagnose.tokenization import encode_pairs

    if task.format == "sequence_prob":
        raise ProbeError(f"task {task.name!r} is sequence_prob: probes need classes "
                         "(classification or logodds)")
    c_max = max(len(e.classes) for e in task.examples)
    ids = np.full((len(task), c_max), -1, dtype=np.int64)
    pairs = [(e.prompt if prompts is None else prompts[i], c)
             for i, e in enumerate(task.examples) for c in e.classes]
    encoded = iter(encode_pairs(model.tokenizer, pairs, prepend_bos))
    contexts, trunc = [], 0
    for i, e in enumerate(task.examples):
        ctx = None
        for k, _ in enumerate(e.classes):
            cx, cont = next(encoded)
            ids[i, k] = cont[0] if cont else -1
            ctx = cx if ctx is None else ctx
        if len(ctx) > model.n_ctx:  # the answer position needs only the context's tail
            ctx, trunc = ctx[-model.n_ctx:], trunc + 1
        contexts.append(ctx)
    answer = np.array([e.answer_index for e in task.examples], dtype=np.int64)
    tempting = np.array([-1 if e.tempting is None else e.tempting for e in task.examples],
                        dtype=np.int64)
    return ProbeInputs(contexts, ids, answer, tempting, trunc)


def patch_partner(task: Task, view: str | None) -> tuple[str | None, str]:
    """The second prompt for patching: (view name or ``other_prompt``, note)."""
    if view is not None:
        if view == "other_prompt":
            if task.format != "logodds":
                raise ProbeError("--patch-view other_prompt needs a logodds task")
            return view, ""
        if view not in task.view_names:
            raise ProbeError(f"task {task.name!r} has no view {view!r}; built: "
                             f"{list(task.view_names) or 'none'}")
        return view, ""
    names = [v for v in view_order(task.view_names) if v != "no_context"]
    if names:
        return ("prior" if "prior" in names else names[0]), ""
    if task.format == "logodds":
        return "other_prompt", ""
    return None, ("patching skipped: the task has no view with a prompt of its own (no second "
                  "prompt per example to patch from)")


def patching_stage(task: Task, view: str | None, limit: int = 32, positions: int = 8,
                   prepend_bos: bool = False, batch_tokens: int | None = None):
    """Per-model activation patching (interventions: forwards of their own)."""
    from diagnose.engine import default_batch_tokens
    from diagnose.runner import ModelStage
    from probes.capture import TokenCount
    from probes.patching import activation_patching

    name, note = patch_partner(task, view)

    def compute(model: LoadedModel, inputs: dict) -> tuple[dict, dict]:
        cap: Capture = inputs["capture"]
        if name is None or cap.dla.get("tempting") is None:
            return {}, {"note": note or "patching skipped: nothing was captured", "tokens": 0}
        # examples that have the partner prompt and were scored, up to ``limit``
        has = [i for i, e in enumerate(task.examples)
               if (name == "other_prompt" or name in e.views) and cap.dla["tempting"][i] >= 0]
        keep = has[:limit]
        if not keep:
            return {}, {"note": f"patching skipped: no scored example has the {name} view",
                        "tokens": 0}
        sub = task.subset(keep)
        prompts = [(e.other_prompt if name == "other_prompt" else e.views[name].prompt) or ""
                   for e in sub.examples]
        clean = encode_for_probes(sub, model, prepend_bos=prepend_bos)
        other = encode_for_probes(sub, model, prompts=prompts, prepend_bos=prepend_bos)
        good = cap.class_first[keep, cap.answer[keep]]
        bad = cap.class_first[keep, cap.dla["tempting"][keep]]
        with TokenCount() as count:
            po = activation_patching(model.bridge, clean.contexts, other.contexts, good, bad,
                                     n_positions=positions,
                                     batch_tokens=batch_tokens or default_batch_tokens(model))
        rec = {"clean": "prompt", "corrupted": name, "n_examples": len(keep),
               "n_normalizable": int(po.valid.sum()),
               "clean_logit_diff_mean": float(np.mean(po.clean)),
               "corrupted_logit_diff_mean": float(np.mean(po.corrupted)),
               "offsets": po.offsets.tolist(), "resid": po.resid_normalized.tolist(),
               "heads": None if po.heads is None else po.heads_normalized.tolist(),
               "resid_mean_ratio": po.resid_normalized_mean.tolist(),
               "metric": "normalized recovery of logit[correct]-logit[tempting]: "
                         "sum_i (patched_i - corrupted_i) sign(gap_i) / sum_i |gap_i|, "
                         "gap_i = clean_i - corrupted_i"}
        return {}, {"patching": rec, "tokens": count.tokens}

    return ModelStage(name="patching", reads=("capture",), needs_model=True,
                      key=[task.fingerprint(), name, limit, positions, prepend_bos],
                      compute=compute, decode=lambda arrays, meta: meta)


def tuned_lens_stage(task: Task, steps: int = 200, seed: int = 0, prepend_bos: bool = False,
                     batch_tokens: int | None = None, lens_dir: str | Path | None = None):
    """Per model: a tuned lens trained on the task's prompts, read at the captured answer
    positions (``lens_log_probs`` like the capture's) with its held-out KL; the lens
    itself is saved under ``lens_dir/<model slug>`` (tuned-lens's config + params)."""
    import torch

    from diagnose.engine import default_batch_tokens
    from diagnose.runner import ModelStage
    from diagnose.tokenization import encode_prompt
    from probes.capture import TokenCount
    from probes.logit_lens import read_classes
    from probes.tuned_lens import LogitLens, lens_kl, residual_sample, train_tuned_lens

    def compute(model: LoadedModel, inputs: dict) -> tuple[dict, dict]:
        cap: Capture = inputs["capture"]
        bt = batch_tokens or default_batch_tokens(model)
        texts = []
        for e in task.examples:
            for p in [e.prompt, *(v.prompt for v in e.views.values())]:
                ids = encode_prompt(model.tokenizer, p, prepend_bos)[-model.n_ctx:]
                if len(ids) > 1:
                    texts.append(ids)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(texts))
        cut = max(1, int(0.8 * len(texts))) if len(texts) > 1 else len(texts)
        train = [texts[i] for i in order[:cut]]
        held = [texts[i] for i in order[cut:]] or train
        with TokenCount() as count:
            stack = residual_sample(model.bridge, train, per_seq=32, seed=seed, batch_tokens=bt)
            lens = train_tuned_lens(model.bridge, stack, model.id, steps=steps, seed=seed)
            held_stack = residual_sample(model.bridge, held, per_seq=32, seed=seed + 1,
                                         batch_tokens=bt)
        if lens_dir is not None:
            lens.save(Path(lens_dir) / store.slug(model.id))
        kl = {"logit": lens_kl(model.bridge, LogitLens(), held_stack).tolist(),
              "tuned": lens_kl(model.bridge, lens, held_stack).tolist(),
              "trained_on": "task prompts (80%)", "measured_on": "held-out task prompts (20%)",
              "n_positions": int(held_stack.shape[1])}
        out = np.full_like(cap.lens_log_probs, np.nan)
        rows = np.nonzero(np.isfinite(cap.lens_log_probs[:, -1]).any(1))[0]
        out[rows] = read_classes(model.bridge, torch.from_numpy(cap.stack[:, rows]),
                                 cap.class_first[rows], lens)
        return {"lens_log_probs": out}, {"kl_to_final": kl, "tokens": count.tokens,
                                         "tuned_lens_path": None if lens_dir is None else
                                         str(Path(lens_dir) / store.slug(model.id))}

    return ModelStage(name="tuned_lens", reads=("capture",), needs_model=True,
                      key=[task.fingerprint(), steps, seed, prepend_bos], compute=compute,
                      decode=lambda arrays, meta: {**meta, **arrays})


def _mean_ci(x: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and a normal 95% interval (1.96 standard errors), NaN-aware."""
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.sum(~np.isnan(x), axis=axis)
        m = np.nanmean(x, axis=axis) if x.size else np.full(x.shape[1:], np.nan)
        se = np.nanstd(x, axis=axis, ddof=1) / np.sqrt(n) if x.shape[axis] > 1 else np.zeros_like(m)
    return m, m - 1.96 * np.nan_to_num(se), m + 1.96 * np.nan_to_num(se)


def model_summary(cap: Capture, rd: Readings, logit_rd: Readings | None = None,
                  patching: dict | None = None, tuned: dict | None = None) -> dict[str, Any]:
    """One model's ``probes.json`` record, from its capture and readings (``rd``: the
    chosen lens; ``logit_rd``: the logit lens beside a tuned one)."""
    L = int(cap.model["n_layers"])
    scored = np.isfinite(rd.margin[:, -1])
    answer = cap.answer
    rec: dict[str, Any] = {**{k: cap.model.get(k) for k in ("id", "n_params", "size", "step",
                                                           "n_layers", "n_heads", "dtype",
                                                           "device")},
                           "notes": [], "lens": "tuned" if tuned else "logit"}
    s = cap.scores
    rec["output_accuracy"] = float(s.correct[s.scored].mean()) if s.scored.any() else None
    rec["n_examples"] = int(scored.sum())
    rec["n_unscorable"] = len(s.unscorable)
    rec["n_truncated"] = s.n_truncated
    cf = cap.class_first
    shared = sum(int((cf[i][cf[i] >= 0] == cf[i, answer[i]]).sum() > 1) for i in np.nonzero(scored)[0])
    rec["n_shared_first_token"] = shared
    if shared:
        rec["notes"].append(f"{shared} examples: the correct class shares its first token with "
                            "another class (lens margin 0 there)")
    if s.unscorable:
        rec["notes"].append(s.unscorable_note())
    rec["notes"] += list(getattr(cap, "notes", []))
    m, lo, hi = _mean_ci(rd.margin[scored])
    rec["lens_margin"], rec["lens_margin_ci"] = m.tolist(), [lo.tolist(), hi.tolist()]
    base = logit_rd or rd
    rec["logit_lens_margin"] = np.nanmean(base.margin[scored], 0).tolist()
    from probes.logit_lens import sign_change_layer

    rec["margin_sign_change_layer"] = sign_change_layer(m)
    commit = rd.commit[scored]
    rec["commit_layer"] = [None if np.isnan(c) else int(c) for c in commit]
    rec["commit_layer_mean"] = float(np.nanmean(commit)) if np.isfinite(commit).any() else None
    c_m, c_lo, c_hi = _mean_ci(commit / L)
    ok = bool(np.isfinite(c_m))
    rec["commit_depth_mean"] = float(c_m) if ok else None
    rec["commit_depth_ci"] = [float(c_lo), float(c_hi)] if ok else None
    fc = rd.choice[scored, -1] == answer[scored]
    for tag, sel in (("correct", fc), ("tempting", ~fc)):
        v = commit[sel] / L
        rec[f"commit_depth_mean_{tag}"] = float(np.nanmean(v)) if np.isfinite(v).any() else None
    rec["first_token_accuracy"] = float(np.mean(fc)) if fc.size else None
    rec["tempting_index"] = rd.tempting[scored].tolist()
    rec["probe"] = "contrast"
    rec["probe_accuracy"] = rd.probe_accuracy(answer, np.nonzero(scored)[0]).tolist()
    rec["probe_shuffled_accuracy"] = np.asarray(rd.probe_shuffled).tolist()
    rec["probe_chance"] = rd.probe_chance
    rec["probe_folds"] = rd.folds
    rec["index_probe_accuracy"] = np.asarray(rd.index_probe).tolist()
    rec["index_probe_accuracy_std"] = np.asarray(rd.index_probe_std).tolist()
    rec["index_probe_shuffled_accuracy"] = np.asarray(rd.index_probe_shuffled).tolist()
    if not np.isfinite(rec["probe_accuracy"]).any():
        rec["notes"].append("linear probes skipped: too few examples or only one class")
    if tuned:
        rec["kl_to_final"] = tuned["kl_to_final"]
    rec["patching"] = (patching or {}).get("patching")
    if patching and patching.get("note"):
        rec["notes"].append(patching["note"])
        rec["patching_note"] = patching["note"]
    d = cap.dla
    if d and "total" in d:
        ok = np.isfinite(d["total"])
        rec["attribution"] = {"embed": float(np.mean(d["embed"][ok])),
                              "attn": d["attn"][ok].mean(0).tolist(),
                              "mlp": d["mlp"][ok].mean(0).tolist(),
                              "heads": d["heads"][ok].mean(0).tolist(),
                              "bias": float(np.mean(d["bias"][ok])),
                              "total": float(np.mean(d["total"][ok]))}
        mean = d["heads"][ok].mean(0)
        # heads left out (NaN: see probes.attribution) never rank among the top
        order = [i for i in np.argsort(-np.nan_to_num(np.abs(mean), nan=-1.0), axis=None)
                 if np.isfinite(mean.flat[i])][:5]
        rec["top_heads"] = [[int(l), int(h), float(mean[l, h])]
                            for l, h in zip(*np.unravel_index(np.asarray(order, dtype=np.int64),
                                                              mean.shape))]
    else:
        rec["attribution"], rec["top_heads"] = None, []
    return rec


def write_probes(task: Task, family_name: str, caps: Sequence[Capture],
                 readings: Sequence[Readings], out_dir: str | Path,
                 logit_readings: Sequence[Readings] | None = None,
                 patching: Sequence[dict] | None = None, tuned: Sequence[dict] | None = None,
                 plots: bool = True) -> dict[str, Any]:
    """``probes.json`` and the plots, from the per-model records (smallest first)."""
    out = Path(out_dir)
    models = [model_summary(c, r, None if logit_readings is None else logit_readings[i],
                            None if patching is None else patching[i],
                            None if tuned is None else tuned[i])
              for i, (c, r) in enumerate(zip(caps, readings)) if r is not None]
    models.sort(key=lambda m: m.get("size") or m["n_params"])
    summary = {"task": task.name, "format": task.format, "n_examples": len(task),
               "family": family_name, "lens": "tuned" if tuned else "logit",
               "axis": "steps" if models and models[0].get("step") is not None else "params",
               "models": models}
    if plots and models:
        summary["plots"] = write_probe_plots(summary, out)
    store.write_json(out / "probes.json", summary)
    return summary


def write_probe_plots(summary: dict[str, Any], out: Path) -> list[str]:
    import matplotlib.pyplot as plt

    from diagnose import probe_plots as pp

    written: list[str] = []

    def save(fig: Any, rel: str) -> None:
        store.save_figure(fig, out / rel)
        plt.close(fig)
        written.append(rel)

    save(pp.lens_heatmap(summary), "lens_heatmap.png")
    save(pp.lens_trajectories(summary), "lens_trajectories.png")
    save(pp.commitment_plot(summary), "commitment.png")
    save(pp.probe_plot(summary), "probes.png")
    if any(m.get("kl_to_final") for m in summary["models"]):
        save(pp.kl_plot(summary), "lens_kl.png")
    for m in summary["models"]:
        slug = store.slug(m["id"])
        if m.get("attribution"):
            save(pp.attribution_plot(summary["task"], m), f"attribution/{slug}.png")
        if m.get("patching"):
            save(pp.patching_plot(summary["task"], m), f"patching/{slug}.png")
    return written
