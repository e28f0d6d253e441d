"""The ``score`` stage: a task and its views over a model family, as tables and a plot.

The numbers come from the per-model captures (``diagnose.capture``: one pass per model
runs the task and every view); this stage only writes them out, in the layout of
``diagnose.store``: ``summary.json``, ``summary.csv``, ``scaling.png`` and per model
``models/<slug>/{summary.json,examples.jsonl}``, and the same under ``views/<view>/``
for every view (accuracy against the view's own answer where it has one, else
agreement with the task's answer: ``metric`` says which).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from diagnose import store
from diagnose.capture import TASK, Capture
from diagnose.families import Family
from diagnose.scoring import TaskScores
from diagnose.tasks import Task

SUMMARY_FIELDS = ("id", "n_params", "size", "accuracy", "ci_low", "ci_high", "loss", "loss_ci_low",
                  "loss_ci_high", "class_mass", "always_index_accuracy", "n_truncated",
                  "n_unscorable", "n")


def _write(name: str, fmt: str, n_examples: int, n_classes: int | None, source: str | None,
           family_name: str, scores: Sequence[TaskScores], facts: Sequence[dict],
           out: Path, seed: int, metric: str = "accuracy") -> dict[str, Any]:
    models = []
    for s, fact in sorted(zip(scores, facts), key=lambda p: p[0].x):
        summ = {**s.summary(seed=seed), **{k: fact[k] for k in ("source", "n_layers", "dtype",
                                                                  "device")}}
        mdir = out / "models" / store.slug(s.model_id)
        store.write_jsonl(mdir / "examples.jsonl", s.rows())
        store.write_json(mdir / "summary.json", summ)
        models.append(summ)
    notes = [n for m in models for n in m.get("notes", [])]
    axis = "steps" if facts and facts[0].get("step") is not None else "params"
    summary = {"task": name, "format": fmt, "n_examples": n_examples, "n_classes": n_classes,
               "source": source, "family": family_name, "metric": metric, "axis": axis,
               "models": [{k: m.get(k) for k in SUMMARY_FIELDS} for m in models],
               "notes": notes}
    store.write_json(out / "summary.json", summary)
    store.write_csv(out / "summary.csv", summary["models"])
    write_scaling_plot(summary, out / "scaling.png")
    return summary


def write_scores(task: Task, family_name: str, caps: Sequence[Capture], out_dir: str | Path,
                 seed: int = 0, views: bool = True) -> dict[str, Any]:
    """Write the task's score tables (and every view's); return the task's summary with
    ``views``: {view: summary}."""
    out = Path(out_dir)
    facts = [c.model for c in caps]
    summary = _write(task.name, task.format, len(task), task.n_classes, task.source, family_name,
                     [c.sets[TASK].scores for c in caps], facts, out, seed)
    summary["views"] = {}
    if views and caps:
        for v in caps[0].views:
            sets = [c.sets[v] for c in caps]
            own = bool(sets[0].has_answer.all())
            summary["views"][v] = _write(
                f"{task.name}[{v}]", task.format, len(sets[0].index), task.n_classes,
                task.source, family_name, [p.scores for p in sets], facts, out / "views" / v,
                seed, metric="accuracy" if own else "agreement with the task's answer")
    return summary


def score_family(task: Task, family: Family, out_dir: str | Path, device: str | None = None,
                 dtype: str | None = None, prepend_bos: bool = False,
                 batch_tokens: int | None = None, trust_remote_code: bool = False,
                 progress: bool = True, seed: int = 0, views: bool = True,
                 dispatch: Any = None) -> dict[str, Any]:
    """``diagnose score``: build the task's views, capture every model once (records
    under ``out_dir/records``, reused on a rerun), write the tables."""
    from diagnose.capture import capture_stage
    from diagnose.runner import run_models
    from diagnose.views import build_views

    if views:
        task, _ = build_views(task, seed)
    res = run_models([capture_stage(task, prepend_bos, batch_tokens)], family, out_dir,
                     load=dict(device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                               dispatch=dispatch),
                     progress=progress)
    return write_scores(task, family.name, res["capture"], out_dir, seed=seed, views=views)


def write_scaling_plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    from diagnose.plots import scaling_plot

    n_cls = summary.get("n_classes")
    chance = 1.0 / n_cls if n_cls else None
    base = summary["models"][0].get("always_index_accuracy") if summary["models"] else None
    fig = scaling_plot(summary["task"], summary["models"], chance, base,
                       axis=summary.get("axis", "params"))
    store.save_figure(fig, path)
    plt.close(fig)
