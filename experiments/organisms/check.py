"""The organisms check: per-size accuracy with 95 % Wilson intervals on every
planted and control task (the table ``diagnose organisms check`` prints).

Scoring is the project engine's ISP classification scoring (``diagnose.scoring``):
score of a class = sum of the log-probs of its tokens given the prompt, no BOS
prepended; correct = argmax equals answer_index.
"""

from __future__ import annotations

import math
from pathlib import Path

from .config import OrganismConfig
from .family import load_config
from .planted import check_tasks


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


def check_family(family_dir: str | Path, cfg: OrganismConfig | None = None, tasks=None,
                 views: bool = False) -> dict:
    """Accuracy of every model of the family on every check task, scored by the project
    engine (``diagnose.capture``: ISP rules, one pass per model and task).

    ``views=True`` also reports every view the registry builds for each task (rows named
    ``task[view]``; accuracy against the view's own answer where it has one, else
    agreement with the task's answer), from the same pass.
    """
    from diagnose.capture import TASK, capture
    from diagnose.families import free_model, load_family_manifest, load_model
    from diagnose.views import build_views, view_order

    family_dir = Path(family_dir)
    cfg = cfg or load_config(family_dir)
    family = load_family_manifest(family_dir)
    tasks = [build_views(t)[0] for t in (list(tasks) if tasks is not None else check_tasks(cfg))]
    names = [t.name for t in tasks] + ([f"{t.name}[{v}]" for t in tasks
                                        for v in view_order(t.view_names)] if views else [])
    correct: dict[str, list[int]] = {n: [] for n in names}
    sizes: dict[str, int] = {}
    for spec in family.models:
        model = load_model(spec, device="cpu")
        try:
            for t in tasks:
                cap = capture(model, t, instruments=False)
                for key, ps in cap.sets.items():
                    name = t.name if key == TASK else f"{t.name}[{key}]"
                    if name in correct:
                        correct[name].append(int(ps.scores.correct.sum()))
                        sizes[name] = ps.scores.n
        finally:
            free_model(model)
    by_name = {t.name: t for t in tasks}
    out_tasks = []
    for name in names:
        t = by_name[name.split("[")[0]]
        n = sizes[name]
        ci = [wilson(k, n) for k in correct[name]]
        out_tasks.append({
            "name": name,
            "cause": t.metadata.get("cause"),
            "design": t.metadata.get("design"),
            "control": bool(t.metadata.get("control", False)),
            "accuracy": [k / n for k in correct[name]],
            "ci_low": [c[0] for c in ci],
            "ci_high": [c[1] for c in ci],
            "n": n,
        })
    return {"models": [{"id": m.id, "n_params": m.n_params} for m in family.models],
            "tasks": out_tasks}


def format_table(check: dict) -> str:
    models = check["models"]
    head = ["task", "cause"] + [f"{m['id']} ({m['n_params'] / 1e6:.2f}M)" for m in models]
    rows = [head]
    for t in check["tasks"]:
        cells = [f"{a:.2f} [{lo:.2f},{hi:.2f}]" for a, lo, hi in zip(t["accuracy"], t["ci_low"], t["ci_high"])]
        cause = "control" if t["control"] else (t["cause"] or "-")
        rows.append([f"{t['name']} (n={t['n']})", cause] + cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def bar_rows(check: dict, points: float = 0.20) -> list[dict]:
    """The planted tasks against the bar: the largest model at least ``points`` below the
    best smaller one, with their 95 % intervals apart. A family of one model has no bar."""
    ids = [m["id"] for m in check["models"]]
    rows = []
    if len(ids) < 2:
        return rows
    for t in check["tasks"]:
        if t["control"] or "[" in t["name"]:
            continue
        acc, lo, hi = t["accuracy"], t["ci_low"], t["ci_high"]
        best = max(range(len(acc) - 1), key=lambda i: acc[i])
        drop = round(acc[best] - acc[-1], 9)  # k/n differences: 0.3 - 0.1 is 0.1999...
        apart = lo[best] > hi[-1]
        rows.append({"task": t["name"], "design": t["design"], "cause": t["cause"],
                     "best_smaller": ids[best], "best_acc": acc[best], "largest_acc": acc[-1],
                     "drop": drop, "intervals_apart": apart,
                     "passes": bool(drop >= points and apart)})
    return rows


def format_bar(rows: list[dict]) -> str:
    lines = ["| planted task | design | cause | best smaller | largest | drop | bar |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['design']} | {r['cause']} | {r['best_smaller']} "
                     f"{r['best_acc']:.2f} | {r['largest_acc']:.2f} | {100 * r['drop']:+.0f} | "
                     f"{'PASS' if r['passes'] else 'fail'} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    """``python -m experiments.organisms.check FAMILY_DIR [--out DIR] [--views]``"""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("family_dir")
    ap.add_argument("--out", default=None)
    ap.add_argument("--views", action="store_true")
    a = ap.parse_args(argv)
    if not (Path(a.family_dir) / "config.json").is_file():
        ap.error(f"{a.family_dir} is not an organisms family directory (no config.json): pass the directory "
                 "`python -m experiments.organisms.family` printed, or use `diagnose organisms check`")
    res = check_family(a.family_dir, views=a.views)
    if a.out:  # the measurements first: nothing printed below can lose them
        from diagnose import store

        store.write_json(Path(a.out) / "check.json", res)
    print(format_table(res))
    print()
    print(format_bar(bar_rows(res)))


if __name__ == "__main__":
    main()
