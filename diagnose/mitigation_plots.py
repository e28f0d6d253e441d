"""The mitigation plot: accuracy (and ISP loss) vs size, one line per strategy.

Readable alone: the title names the task and how parameters were chosen; each
legend entry names the strategy, its chosen parameter per model and the trend
label after (before) the mitigation; the baseline is the thick black line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from diagnose.plots import model_x, size_axis  # noqa: E402

_STYLE = {
    "none": dict(color="black", marker="o", ls="-", lw=2.4),
    "pad": dict(color="C0", marker="s", ls="-", lw=1.6),
    "cad": dict(color="C1", marker="^", ls="--", lw=1.6),
    "few-shot": dict(color="C2", marker="D", ls="-", lw=1.6),
    "cot": dict(color="C3", marker="v", ls="-.", lw=1.6),
}


def _label(s: dict[str, Any]) -> str:
    name = "baseline (none)" if s["name"] == "none" else s["name"]
    p = s.get("param") or {}
    if p.get("name"):
        name += f", {p['name']}=" + "/".join(f"{v:g}" if isinstance(v, (int, float)) else str(v)
                                             for v in p.get("chosen", []))
        if len(p.get("chosen", [])) > 1:
            name += " (per size)"
    if s["name"] == "cot" and s.get("source"):
        name += f" ({'/'.join(sorted(set(s['source'])))})"
    if s.get("trend"):
        name += f": {s['trend']}"
        if s["name"] != "none" and s.get("trend_before"):
            name += f" (was {s['trend_before']})"
    return name


def mitigation_plot(summary: dict[str, Any]) -> Any:
    models = summary["models"]
    x = np.array([model_x(m) for m in models], dtype=float)
    strategies = summary["strategies"]
    has_acc = any(a is not None for s in strategies for a in s["accuracy"])
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(13 if has_acc else 6.5, 4.6),
                             squeeze=False)
    axes = axes[0]
    n = len(strategies)
    # spread overlapping markers a little in log-x so identical lines stay visible
    offsets = np.linspace(-0.012, 0.012, n) if n > 1 else np.zeros(1)
    if has_acc:
        ax = axes[0]
        for s, off in zip(strategies, offsets):
            st = _STYLE.get(s["name"], dict(marker="o", ls="-"))
            acc = np.array([np.nan if a is None else a for a in s["accuracy"]], dtype=float)
            lo = np.array([np.nan if a is None else a for a in s["ci_low"]], dtype=float)
            hi = np.array([np.nan if a is None else a for a in s["ci_high"]], dtype=float)
            xs = x * 10 ** off
            ax.errorbar(xs, acc, yerr=[acc - lo, hi - acc], capsize=3, label=_label(s),
                        alpha=0.9, **st)
        if summary.get("chance") is not None:
            ax.axhline(summary["chance"], ls=":", color="grey",
                       label=f"chance ({summary['chance']:.2f})")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(f"accuracy on {summary['selection']['n_eval']} evaluation examples "
                      "(95% CI)")
        ax.set_title(f"{summary['task']}: accuracy vs size, per mitigation", fontsize=10)
        ax.legend(fontsize=7, loc="best")
    ax = axes[-1]
    for s, off in zip(strategies, offsets):
        st = _STYLE.get(s["name"], dict(marker="o", ls="-"))
        ax.plot(x * 10 ** off, s["loss"], label=s["name"], **st)
    ax.set_ylabel("mean ISP loss (lower is better)")
    ax.set_title(f"{summary['task']}: ISP loss vs size", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    for ax in axes:
        size_axis(ax, x, axis=summary.get("axis", "params"))
    how = summary["selection"]["how"]
    fig.suptitle(f"Parameters (a, k) chosen per model: {how}", fontsize=8, y=0.995)
    fig.tight_layout()
    return fig


def write_mitigation_plot(summary: dict[str, Any], path: str | Path) -> None:
    from diagnose import store

    fig = mitigation_plot(summary)
    store.save_figure(fig, Path(path))
    plt.close(fig)
