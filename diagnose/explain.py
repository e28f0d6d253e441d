"""The evidence in sentences, each one checkable against the results files."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from diagnose.causes import UNTESTED
from diagnose.views import VIEWS


def pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _fin(f: Mapping[str, float], k: str) -> bool:
    v = f.get(k)
    return v is not None and np.isfinite(v)


def sentences(f: Mapping[str, float], trend: Mapping[str, Any], tests: Mapping[str, str],
              largest: str = "the largest model") -> list[str]:
    s: list[str] = []
    if _fin(f, "drop_large"):
        s.append(f"Accuracy goes from {f['acc_small']:.2f} for the smallest model to "
                 f"{f['acc_large']:.2f} for {largest}; the best smaller model reaches "
                 f"{f['acc_best_smaller']:.2f}, {100 * f['drop_large']:+.0f} points above the "
                 f"largest. The trend rule says '{trend.get('label')}' (confidence "
                 f"{trend.get('confidence') or float('nan'):.2f}); {pct(f['p_inverse'])} of "
                 "bootstrap replicates are inverse-like.")
    for v, spec in VIEWS.items():
        if not _fin(f, f"{v}_tempt_large") and not _fin(f, f"{v}_acc_large"):
            continue
        parts = [f"With {spec.summary} ({v} view)"]
        if _fin(f, f"{v}_tempt_large"):
            parts.append(f"{largest} picks the tempting answer in {pct(f[f'{v}_tempt_large'])} "
                         f"of examples (trend {f[f'{v}_tempt_slope']:+.2f} per decade)")
        if _fin(f, f"{v}_acc_large"):
            change = (f" ({100 * (f[f'{v}_acc_large'] - f['acc_large']):+.0f} points against the "
                      "task prompt)" if _fin(f, "acc_large") else "")
            parts.append(f"it answers {pct(f[f'{v}_acc_large'])} of examples right{change}")
        if _fin(f, f"{v}_follow_large"):
            parts.append(f"its answers on the task equal its answers under the view in "
                         f"{pct(f[f'{v}_follow_large'])} of examples")
        s.append(parts[0] + ", " + "; ".join(parts[1:]) + ".")
    if _fin(f, "commit_large"):
        s.append(f"On its wrong answers {largest} commits at {pct(f['commit_large'])} of its "
                 f"depth (logit lens; trend {f['commit_slope']:+.2f} per decade: negative = "
                 "earlier in larger models).")
    if _fin(f, "overwrite_large"):
        s.append(f"In {pct(f['overwrite_large'])} of the wrong answers of {largest} the "
                 "correct class led at an intermediate layer and was overwritten later.")
    if _fin(f, "know_gap_large"):
        s.append(f"A linear contrast probe on the residual stream of {largest} is "
                 f"{100 * f['know_gap_large']:+.0f} points more accurate than its output "
                 "(knows-but-does-not-say gap).")
    untested = [c for c, t in tests.items() if t == UNTESTED]
    if untested:
        s.append(f"Untested (no view that tests them applies to this task): {', '.join(untested)}.")
    return s
