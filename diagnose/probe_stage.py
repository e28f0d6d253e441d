"""The ``probe`` stage: the instruments of ``probes/`` over a model family for one task.

For every model (one in memory at a time, smallest first) it runs, on the task's
examples:

1. the model's own scoring (``score_task``: output accuracy by the ISP rules);
2. the logit lens at the answer position (or the tuned lens, ``lens="tuned"``), the
   margin correct minus tempting per layer and the commitment layer per example;
3. cross-validated linear probes per layer on the same residuals;
4. activation patching between each prompt and a second prompt of the same example
   (the ``prior`` view by default), when the task has one;
5. direct logit attribution (last: it switches the bridge into compatibility mode).

Writes, atomically (``diagnose.store``)::

    DIR/probes.json             {"task", "models": [...]} (documented in README/issue 4)
    DIR/lens_heatmap.png        relative depth x model size, colour = mean margin
    DIR/lens_trajectories.png   mean margin per layer with 95% bands, one line per size
    DIR/commitment.png          commitment depth vs model size
    DIR/probes.png              probe accuracy per layer beside output accuracy
    DIR/lens_kl.png             KL to the final layer per lens (tuned lens only)
    DIR/attribution/<slug>.png  per-layer attn/MLP bars and layer x head heatmap
    DIR/patching/<slug>.png     layer x position and layer x head patching heatmaps
    DIR/tuned_lens/<slug>/      trained tuned lenses (config.json, params.pt)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from diagnose import store
from diagnose.families import Family, LoadedModel
from diagnose.tasks import Task


class ProbeError(ValueError):
    """The task cannot be probed as asked (wrong format, missing view)."""


@dataclass
class ProbeInputs:
    contexts: list[list[int]]
    class_ids: np.ndarray        # [N, C] first token of each class (-1 padding)
    answer: np.ndarray           # [N]
    tempting: np.ndarray         # [N] (-1: not given)
    n_truncated: int = 0

    @property
    def n_shared_first_token(self) -> int:
        """Examples whose correct class shares its first token with another class (the
        first-token lens cannot tell them apart there)."""
        n = 0
        for ids, a in zip(self.class_ids, self.answer):
            valid = ids[ids >= 0]
            n += int((valid == ids[a]).sum() > 1)
        return n


def _fit(ctx: list[int], n_ctx: int) -> tuple[list[int], bool]:
    return (ctx[-n_ctx:], True) if len(ctx) > n_ctx else (ctx, False)


def encode_for_probes(task: Task, model: LoadedModel, prompts: Sequence[str] | None = None,
                      prepend_bos: bool = False) -> ProbeInputs:
    """Contexts and class first tokens, tokenized as scoring does (``encode_pairs``)."""
    if task.format == "sequence_prob":
        raise ProbeError(f"task {task.name!r} is sequence_prob: probes need classes "
                         "(classification or logodds)")
    from diagnose.tokenization import encode_pairs

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
            if not cont:
                raise ProbeError(f"task {task.name!r}, example {e.id}: class {k} encodes to "
                                 "no tokens")
            ids[i, k] = cont[0]
            ctx = cx if ctx is None else ctx
        # the answer position needs only the context: keep its last n_ctx tokens
        ctx, t = _fit(ctx, model.n_ctx)
        trunc += t
        contexts.append(ctx)
    answer = np.array([e.answer_index for e in task.examples], dtype=np.int64)
    tempting = np.array([-1 if e.tempting is None else e.tempting for e in task.examples],
                        dtype=np.int64)
    return ProbeInputs(contexts, ids, answer, tempting, trunc)


def patch_partner(task: Task, view: str | None) -> tuple[str | None, list[str] | None, str]:
    """The second prompt of each example for patching: (name, prompts, note)."""
    if view is not None:
        if view == "other_prompt":
            if task.format != "logodds":
                raise ProbeError(f"--patch-view other_prompt needs a logodds task")
            return view, [e.other_prompt or "" for e in task.examples], ""
        if view not in task.view_names:
            raise ProbeError(f"task {task.name!r} has no view {view!r} on every example; "
                             f"available: {list(task.view_names) or 'none'}")
        return view, [e.views[view].prompt for e in task.examples], ""
    if task.view_names:
        name = "prior" if "prior" in task.view_names else task.view_names[0]
        return name, [e.views[name].prompt for e in task.examples], ""
    if task.format == "logodds":
        return "other_prompt", [e.other_prompt or "" for e in task.examples], ""
    return None, None, ("patching skipped: the task has no views (no second prompt per "
                        "example); add a 'prior' view or pass --patch-view")


def _mean_ci(x: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and a normal 95% interval (1.96 standard errors), NaN-aware."""
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.sum(~np.isnan(x), axis=axis)
        m = np.nanmean(x, axis=axis) if x.size else np.full(x.shape[1:], np.nan)
        se = np.nanstd(x, axis=axis, ddof=1) / np.sqrt(n) if x.shape[axis] > 1 else np.zeros_like(m)
    se = np.nan_to_num(se)
    return m, m - 1.96 * se, m + 1.96 * se


def _tuned_lens(model: LoadedModel, task: Task, lens_dir: Path, steps: int, seed: int,
                batch_tokens: int, prepend_bos: bool):
    """Load the model's tuned lens from ``lens_dir`` or train it on the task's prompts
    (80% of the prompts; KL is measured on the other 20%)."""
    from probes.tuned_lens import TunedLens, lens_kl, residual_sample, train_tuned_lens
    from probes.tuned_lens import LogitLens
    from diagnose.tokenization import encode_prompt

    texts = []
    for e in task.examples:
        for p in [e.prompt, *(v.prompt for v in e.views.values())]:
            ids, _ = _fit(encode_prompt(model.tokenizer, p, prepend_bos), model.n_ctx)
            if len(ids) > 1:
                texts.append(ids)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))
    cut = max(1, int(0.8 * len(texts))) if len(texts) > 1 else len(texts)
    train = [texts[i] for i in order[:cut]]
    held = [texts[i] for i in order[cut:]] or train
    if (lens_dir / "config.json").is_file():
        lens = TunedLens.load(lens_dir, model_id=model.id)
    else:
        stack = residual_sample(model.bridge, train, per_seq=32, seed=seed,
                                batch_tokens=batch_tokens)
        lens = train_tuned_lens(model.bridge, stack, model.id, steps=steps, seed=seed)
        lens.save(lens_dir)
    lens = lens.to(model.bridge.W_U.device)
    held_stack = residual_sample(model.bridge, held, per_seq=32, seed=seed + 1,
                                 batch_tokens=batch_tokens)
    kl = {"logit": lens_kl(model.bridge, LogitLens(), held_stack).tolist(),
          "tuned": lens_kl(model.bridge, lens, held_stack).tolist(),
          "trained_on": "task prompts (80%)", "measured_on": "held-out task prompts (20%)",
          "n_positions": int(held_stack.shape[1])}
    return lens, kl


def probe_model(model: LoadedModel, task: Task, *, lens: str = "logit",
                lens_dir: Path | None = None, lens_steps: int = 200,
                patch_view: str | None = None, patch_limit: int = 64,
                patch_positions: int = 8, patching: bool = True, probe_folds: int = 5,
                prepend_bos: bool = False, batch_tokens: int | None = None,
                seed: int = 0) -> dict[str, Any]:
    """Every instrument on one model; a JSON-ready record (arrays as lists)."""
    from diagnose.engine import default_batch_tokens
    from diagnose.scoring import score_task
    from probes.attribution import logit_diff_attribution
    from probes.linear_probe import class_directions, contrast_layer_probes, layer_probes
    from probes.logit_lens import capture_resid_stack, class_logit_lens, sign_change_layer
    from probes.patching import activation_patching

    bt = batch_tokens or default_batch_tokens(model)
    L = model.n_layers
    rec: dict[str, Any] = {"id": model.id, "n_params": model.n_params, "n_layers": L,
                           "n_heads": int(model.bridge.cfg.n_heads), "notes": []}
    scores = score_task(model, task, prepend_bos=prepend_bos, batch_tokens=bt)
    rec["output_accuracy"] = float(np.mean(scores.correct))
    inp = encode_for_probes(task, model, prepend_bos=prepend_bos)
    rec["n_examples"] = len(inp.contexts)
    rec["n_truncated"] = inp.n_truncated
    rec["n_shared_first_token"] = inp.n_shared_first_token
    if inp.n_shared_first_token:
        rec["notes"].append(f"{inp.n_shared_first_token} examples: the correct class shares "
                            "its first token with another class (lens margin 0 there)")

    # 1-2. lenses (one residual capture serves the lens and the probes)
    stack = capture_resid_stack(model.bridge, inp.contexts, bt)
    logit = class_logit_lens(model.bridge, inp.contexts, inp.class_ids, inp.answer,
                             inp.tempting, stack=stack)
    chosen = logit
    rec["lens"] = lens
    if lens == "tuned":
        tl, kl = _tuned_lens(model, task, lens_dir, lens_steps, seed, bt, prepend_bos)
        chosen = class_logit_lens(model.bridge, inp.contexts, inp.class_ids, inp.answer,
                                  inp.tempting, lens=tl, stack=stack)
        rec["kl_to_final"] = kl
        rec["tuned_lens_path"] = str(lens_dir)
    m, lo, hi = _mean_ci(chosen.margin)
    rec["lens_margin"] = m.tolist()
    rec["lens_margin_ci"] = [lo.tolist(), hi.tolist()]
    rec["logit_lens_margin"] = np.nanmean(logit.margin, 0).tolist()
    rec["margin_sign_change_layer"] = sign_change_layer(m)
    commit = chosen.commit_array
    rec["commit_layer"] = chosen.commit_layer
    rec["commit_layer_mean"] = float(np.nanmean(commit)) if np.isfinite(commit).any() else None
    c_m, c_lo, c_hi = _mean_ci(commit / L)
    rec["commit_depth_mean"] = float(c_m) if np.isfinite(c_m) else None
    rec["commit_depth_ci"] = [float(c_lo), float(c_hi)] if np.isfinite(c_m) else None
    fc = chosen.final_correct
    for tag, sel in (("correct", fc), ("tempting", ~fc)):
        v = commit[sel] / L
        rec[f"commit_depth_mean_{tag}"] = (float(np.nanmean(v)) if np.isfinite(v).any()
                                           else None)
    rec["first_token_accuracy"] = float(np.mean(fc))
    rec["tempting_index"] = chosen.tempting_index.tolist()

    # 3. linear probes: which class is correct, from the answer-position residual. The
    # contrast probe scores each class (residual x its unembedding direction), so it can
    # find the answer whatever the class order; the index probe (which position is
    # right) is kept beside it for tasks whose classes are listed in the prompt
    dirs, valid = class_directions(model.bridge, inp.class_ids)
    pr = contrast_layer_probes(stack.numpy(), dirs, inp.answer, valid, n_splits=probe_folds,
                               seed=seed)
    rec["probe"] = "contrast"
    rec["probe_accuracy"] = pr.accuracy.tolist()
    rec["probe_shuffled_accuracy"] = pr.shuffled_accuracy.tolist()
    rec["probe_chance"] = pr.chance
    rec["probe_folds"] = pr.n_splits
    ip = layer_probes(stack.numpy(), inp.answer, n_splits=probe_folds, seed=seed)
    rec["index_probe_accuracy"] = ip.accuracy.tolist()
    rec["index_probe_accuracy_std"] = ip.accuracy_std.tolist()
    rec["index_probe_shuffled_accuracy"] = ip.shuffled_accuracy.tolist()
    if not np.isfinite(pr.accuracy).any():
        rec["notes"].append("linear probes skipped: too few examples or only one class")

    rows = np.arange(len(inp.answer))
    good = inp.class_ids[rows, inp.answer]
    bad = inp.class_ids[rows, chosen.tempting_index]

    # 4. activation patching between the prompt and its partner
    rec["patching"] = None
    if patching:
        name, prompts, note = patch_partner(task, patch_view)
        if name is None:
            rec["notes"].append(note)
            rec["patching_note"] = note
        else:
            keep = np.arange(min(patch_limit, len(task)))
            sub = task.subset(keep)
            other = encode_for_probes(sub, model, prompts=[prompts[i] for i in keep],
                                      prepend_bos=prepend_bos)
            po = activation_patching(model.bridge, [inp.contexts[i] for i in keep],
                                     other.contexts, good[keep], bad[keep],
                                     n_positions=patch_positions, batch_tokens=bt)
            rec["patching"] = {
                "clean": "prompt", "corrupted": name, "n_examples": int(len(keep)),
                "n_normalizable": int(po.valid.sum()),
                "clean_logit_diff_mean": float(np.mean(po.clean)),
                "corrupted_logit_diff_mean": float(np.mean(po.corrupted)),
                "offsets": po.offsets.tolist(),
                "resid": po.resid_normalized.tolist(),
                "heads": None if po.heads is None else po.heads_normalized.tolist(),
                "resid_mean_ratio": po.resid_normalized_mean.tolist(),
                "metric": "normalized recovery of logit[correct]-logit[tempting]: "
                          "sum_i (patched_i - corrupted_i) sign(gap_i) / sum_i |gap_i|, "
                          "gap_i = clean_i - corrupted_i (per-example (patched - corrupted) "
                          "/ (clean - corrupted) weighted by |gap_i|)",
            }

    # 5. direct logit attribution (last: compatibility mode changes the bridge)
    at = logit_diff_attribution(model.bridge, inp.contexts, good, bad, batch_tokens=bt)
    rec["attribution"] = {
        "embed": float(at.embed.mean()), "attn": at.attn.mean(0).tolist(),
        "mlp": at.mlp.mean(0).tolist(), "heads": at.heads.mean(0).tolist(),
        "bias": float(at.bias.mean()), "total": float(at.total.mean()),
    }
    rec["top_heads"] = [list(t) for t in at.top_heads(5)]
    return rec


def probe_family(task: Task, family: Family, out_dir: str | Path, *, device: str | None = None,
                 dtype: str | None = None, trust_remote_code: bool = False,
                 progress: bool = True, plots: bool = True, **kwargs: Any) -> dict[str, Any]:
    """``probe_model`` over every model of ``family``; writes probes.json and the plots."""
    out = Path(out_dir)
    lens_root = Path(kwargs.pop("lens_cache", None) or out / "tuned_lens")
    models = []
    from diagnose.per_model import for_each_model, task_fingerprint

    fp = task_fingerprint(task)

    def compute(model: LoadedModel) -> dict[str, Any]:
        rec = probe_model(model, task, lens_dir=lens_root / store.slug(model.id), **kwargs)
        rec["dtype"] = str(model.dtype).replace("torch.", "")
        rec["device"] = model.device
        return rec

    models = for_each_model(
        family, record_path=lambda spec: out / "models" / store.slug(spec.id) / "probes.json",
        key=lambda spec: store.content_hash("probes-v2", fp, spec.source, dtype,
                                            sorted(kwargs.items())),
        compute=compute, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
        progress=progress)
    models.sort(key=lambda m: m["n_params"])
    summary = {"task": task.name, "format": task.format, "n_examples": len(task),
               "family": family.name, "lens": kwargs.get("lens", "logit"), "models": models}
    if plots:
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
