"""Plots a researcher puts in a paper: readable alone (titles, labelled axes, sizes)."""

from __future__ import annotations

from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def format_params(n: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{int(n)}"


def model_x(m: dict[str, Any]) -> float:
    """Where a model sits on its family's axis (parameters, or training step)."""
    return float(m.get("size") or m["n_params"])


def size_axis(ax: Any, sizes: Sequence[float], fontsize: int = 8, axis: str = "params") -> None:
    """Parameters (or training steps) on a log axis, one labelled tick per model."""
    ax.set_xscale("log")
    ax.set_xlabel("training step" if axis == "steps" else "parameters")
    ax.set_xticks(list(sizes))
    ax.set_xticklabels([(f"{int(v)}" if axis == "steps" else format_params(v)) for v in sizes],
                       rotation=30, fontsize=fontsize)
    ax.minorticks_off()
    ax.grid(alpha=0.3)


def display_name(model_id: str) -> str:
    """A model's name for people: a local directory's own name, a hub id unchanged."""
    import os

    if os.path.isabs(model_id) or model_id.startswith("."):
        return os.path.basename(os.path.normpath(model_id)) or model_id
    return model_id


def scaling_plot(task: str, models: Sequence[dict[str, Any]], chance: float | None,
                 baselines: Sequence[float] | None = None, axis: str = "params") -> Any:
    """Accuracy (with 95% intervals) and ISP loss against parameters (or training steps),
    log scale."""
    x = np.array([model_x(m) for m in models], dtype=float)
    has_acc = any(m.get("accuracy") is not None for m in models)
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(11 if has_acc else 5.5, 4),
                             squeeze=False)
    axes = axes[0]
    if has_acc:
        ax = axes[0]
        acc = np.array([m["accuracy"] for m in models], dtype=float)
        lo = np.array([m["ci_low"] for m in models], dtype=float)
        hi = np.array([m["ci_high"] for m in models], dtype=float)
        ax.fill_between(x, lo, hi, alpha=0.2, color="C0", label="95% bootstrap CI")
        ax.plot(x, acc, "o-", color="C0", label="accuracy")
        if chance is not None:
            ax.axhline(chance, ls="--", color="grey", label=f"chance ({chance:.2f})")
        if baselines:
            best = max(baselines)
            ax.axhline(best, ls=":", color="C3",
                       label=f"best always-index-k ({best:.2f})")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("accuracy")
        ax.set_title(f"{task}: accuracy vs size")
        ax.legend(fontsize=8, loc="best")
    ax = axes[-1]
    loss = np.array([m["loss"] for m in models], dtype=float)
    llo = np.array([m.get("loss_ci_low", np.nan) for m in models], dtype=float)
    lhi = np.array([m.get("loss_ci_high", np.nan) for m in models], dtype=float)
    ax.fill_between(x, llo, lhi, alpha=0.2, color="C1")
    ax.plot(x, loss, "s-", color="C1", label="mean ISP loss (95% CI)")
    ax.set_ylabel("ISP loss (lower is better)")
    ax.set_title(f"{task}: loss vs size")
    ax.legend(fontsize=8, loc="best")
    for ax in axes:
        size_axis(ax, x, axis=axis)
    fig.tight_layout()
    return fig
