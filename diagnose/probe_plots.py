"""Plots of the probe stage, readable alone: titles, labelled axes, colour bars, sizes.

Every function takes the ``probes.json`` summary (or one model's record of it) and
returns a matplotlib figure; ``diagnose.probe_stage`` saves them.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402

from diagnose.plots import format_params, model_x, size_axis  # noqa: E402

DEPTH_LABEL = "relative depth (0 = embeddings, 1 = last layer)"


def _size_label(m: dict[str, Any]) -> str:
    if m.get("step") is not None:
        return f"step {m['step']}"
    return f"{format_params(m['n_params'])} ({m['n_layers']}L)"


def _depth(n_entries: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, n_entries)


def _colors(n: int) -> list:
    cmap = plt.get_cmap("viridis")
    return [cmap(x) for x in np.linspace(0.1, 0.85, max(n, 1))]


def _div_norm(values: list[np.ndarray]) -> TwoSlopeNorm:
    finite = np.concatenate([np.asarray(v, dtype=float).ravel() for v in values])
    finite = finite[np.isfinite(finite)]
    lim = float(np.max(np.abs(finite))) if finite.size else 1.0
    lim = lim or 1.0
    return TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim)


def lens_heatmap(summary: dict[str, Any]) -> Any:
    """Rows: model sizes (smallest at the bottom); columns: relative depth; colour: mean
    margin (correct - tempting). Each row is drawn on its own layer grid."""
    models = summary["models"]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.55 * len(models)))
    margins = [np.asarray(m["lens_margin"], dtype=float) for m in models]
    norm = _div_norm(margins)
    mesh = None
    for j, mg in enumerate(margins):
        S = len(mg)
        edges = np.linspace(-0.5 / (S - 1), 1 + 0.5 / (S - 1), S + 1) if S > 1 else np.array([0, 1])
        mesh = ax.pcolormesh(edges, [j - 0.5, j + 0.5], mg[None, :], cmap="RdBu", norm=norm,
                             shading="flat")
    ax.set_yticks(range(len(models)))
    ax.set_yticklabels([_size_label(m) for m in models])
    ax.set_ylim(-0.5, len(models) - 0.5)
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel(DEPTH_LABEL)
    ax.set_ylabel("model size (parameters, layers)")
    lens = summary.get("lens", "logit")
    ax.set_title(f"{summary['task']}: {lens} lens margin at the answer position")
    cb = fig.colorbar(mesh, ax=ax)
    cb.set_label("mean log-prob margin\ncorrect - tempting (blue: correct)")
    fig.tight_layout()
    return fig


def lens_trajectories(summary: dict[str, Any]) -> Any:
    models = summary["models"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for m, c in zip(models, _colors(len(models))):
        mg = np.asarray(m["lens_margin"], dtype=float)
        x = _depth(len(mg))
        lo, hi = (np.asarray(v, dtype=float) for v in m["lens_margin_ci"])
        ax.fill_between(x, lo, hi, color=c, alpha=0.2)
        ax.plot(x, mg, "o-", color=c, ms=3, label=_size_label(m))
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(DEPTH_LABEL)
    ax.set_ylabel("margin: log p(correct) - log p(tempting)\n(renormalized over classes)")
    ax.set_title(f"{summary['task']}: margin per layer by model size (bands: 95% CI)")
    ax.legend(title="model size", fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _log_x(ax: Any, x: np.ndarray, axis: str = "params") -> None:
    size_axis(ax, x, axis=axis)
    if len(x) == 1:
        ax.set_xlim(x[0] / 2, x[0] * 2)


def commitment_plot(summary: dict[str, Any]) -> Any:
    models = summary["models"]
    x = np.array([model_x(m) for m in models], dtype=float)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    mean = np.array([np.nan if m["commit_depth_mean"] is None else m["commit_depth_mean"]
                     for m in models])
    ci = np.array([m["commit_depth_ci"] or [np.nan, np.nan] for m in models], dtype=float)
    ax.fill_between(x, ci[:, 0], ci[:, 1], color="C0", alpha=0.2, label="95% CI (all)")
    ax.plot(x, mean, "o-", color="C0", label="all examples")
    for tag, col, mk in (("correct", "C2", "^"), ("tempting", "C3", "v")):
        v = np.array([np.nan if m.get(f"commit_depth_mean_{tag}") is None
                      else m[f"commit_depth_mean_{tag}"] for m in models])
        if np.isfinite(v).any():
            ax.plot(x, v, mk + "--", color=col, label=f"final choice {tag}")
    _log_x(ax, x, summary.get("axis", "params"))
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("commitment depth\n(commitment layer / n_layers)")
    ax.set_title(f"{summary['task']}: where the final choice settles, by size")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def probe_plot(summary: dict[str, Any]) -> Any:
    models = summary["models"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for m, c in zip(models, _colors(len(models))):
        acc = np.asarray(m["probe_accuracy"], dtype=float)
        x = _depth(len(acc))
        ax.plot(x, acc, "o-", color=c, ms=3, label=f"{_size_label(m)} probe")
        ax.axhline(m["output_accuracy"], color=c, ls=":", lw=1.5,
                   label=f"{_size_label(m)} output")
    chance = models[0].get("probe_chance") if models else None
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1, label=f"chance ({chance:.2f})")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(DEPTH_LABEL)
    ax.set_ylabel("accuracy (probe: cross-validated)")
    ax.set_title(f"{summary['task']}: contrast probe for the correct class vs the model's output")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def kl_plot(summary: dict[str, Any]) -> Any:
    models = [m for m in summary["models"] if m.get("kl_to_final")]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for m, c in zip(models, _colors(len(models))):
        kl = m["kl_to_final"]
        x = _depth(len(kl["logit"]))
        ax.plot(x, kl["logit"], "o--", color=c, ms=3, label=f"{_size_label(m)} logit lens")
        ax.plot(x, kl["tuned"], "s-", color=c, ms=3, label=f"{_size_label(m)} tuned lens")
    ax.set_xlabel(DEPTH_LABEL)
    ax.set_ylabel("KL(final layer || lens) in nats, held-out")
    ax.set_title(f"{summary['task']}: how far each lens is from the final distribution")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _int_ticks(ax: Any, shape: tuple[int, int]) -> None:
    """Integer layer/head ticks (at most ~16 labels per axis)."""
    for n, setter in ((shape[1], ax.set_xticks), (shape[0], ax.set_yticks)):
        setter(np.arange(0, n, max(1, int(np.ceil(n / 16)))))


def attribution_plot(task: str, m: dict[str, Any]) -> Any:
    a = m["attribution"]
    attn, mlp = np.asarray(a["attn"], dtype=float), np.asarray(a["mlp"], dtype=float)
    heads = np.asarray(a["heads"], dtype=float)
    L = len(attn)
    fig, (ax, hx) = plt.subplots(1, 2, figsize=(12, 4.2 + 0.12 * L),
                                 gridspec_kw={"width_ratios": [1.3, 1]})
    x = np.arange(L)
    ax.bar([-1], [a["embed"]], color="grey", label="embeddings")
    ax.bar(x - 0.2, attn, width=0.4, color="C0", label="attention")
    ax.bar(x + 0.2, mlp, width=0.4, color="C1", label="MLP")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks([-1, *x])
    ax.set_xticklabels(["emb", *[str(i) for i in x]], fontsize=8 if L < 30 else 6)
    ax.set_xlabel("layer")
    ax.set_ylabel("mean direct effect on\nlogit(correct) - logit(tempting)")
    ax.set_title(f"per-layer attribution (total {a['total']:+.2f})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    norm = _div_norm([heads])
    im = hx.imshow(heads, aspect="auto", cmap="RdBu", norm=norm, origin="lower",
                   interpolation="nearest")
    _int_ticks(hx, heads.shape)
    hx.set_xlabel("head")
    hx.set_ylabel("layer")
    hx.set_title("per-head attribution")
    cb = fig.colorbar(im, ax=hx)
    cb.set_label("mean direct effect (blue: toward correct)")
    fig.suptitle(f"{task}: direct logit attribution, {m['id'][-50:]} ({_size_label(m)})")
    fig.tight_layout()
    return fig


def patching_plot(task: str, m: dict[str, Any]) -> Any:
    p = m["patching"]
    resid = np.asarray(p["resid"], dtype=float)
    heads = None if p.get("heads") is None else np.asarray(p["heads"], dtype=float)
    ncols = 2 if heads is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4.2 + 0.12 * resid.shape[0]),
                             squeeze=False)
    axes = axes[0]
    norm = _div_norm([resid] + ([heads] if heads is not None else []))
    ax = axes[0]
    S, K = resid.shape
    im = ax.imshow(resid, aspect="auto", cmap="RdBu", norm=norm, origin="lower",
                   interpolation="nearest")
    ax.set_xticks(range(K))
    ax.set_xticklabels(["ans" if k == 0 else f"-{k}" for k in p["offsets"]])
    ax.set_yticks(range(S))
    ax.set_yticklabels(["emb", *[str(i) for i in range(S - 1)]], fontsize=8 if S < 30 else 5)
    ax.set_xlabel("position from the end (ans = answer position)")
    ax.set_ylabel("residual stream after layer")
    ax.set_title("residual stream patching")
    if heads is not None:
        hx = axes[1]
        hx.imshow(heads, aspect="auto", cmap="RdBu", norm=norm, origin="lower",
                  interpolation="nearest")
        _int_ticks(hx, heads.shape)
        hx.set_xlabel("head")
        hx.set_ylabel("layer")
        hx.set_title("head output patching (answer position)")
    cb = fig.colorbar(im, ax=list(axes))
    cb.set_label("normalized recovery of the logit difference\n"
                 "(0 = corrupted, 1 = clean)")
    fig.suptitle(f"{task}: patching prompt -> {p['corrupted']} ({p['n_normalizable']}/"
                 f"{p['n_examples']} examples), {m['id'][-40:]} ({_size_label(m)})")
    return fig
