"""``diagnose run``: every stage for one task, resumable, ending in an HTML report.

    task --(adapt: views, tempting answers)--> score (task + each view) --> trend
         --> probes --> evidence --> cause label --> mitigations --> report.html

Each stage caches per model with a key of its inputs (task examples, model, settings),
so an interrupted run recomputes only what was missing, and a changed task file or
parameter recomputes exactly the stages that depend on it. The cheap derived stages
(trend, label, report) are recomputed every time from the cached results. Every file
is written atomically. ``run.json`` holds no timings, so the same seed gives the same
bytes; wall times go to ``timing.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from diagnose import store
from diagnose.families import Family
from diagnose.tasks import Task


@dataclass(frozen=True)
class RunConfig:
    probes: bool = True
    classify: bool = True
    mitigations: tuple[str, ...] = ("pad", "cad", "few-shot", "cot")
    lens: str = "logit"
    patch_limit: int = 32
    seed: int = 0
    device: str | None = None
    dtype: str | None = None
    classifier: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# written last, after the listing; named explicitly so a rerun lists the same files
_FINAL_FILES = ("report.html", "run.json", "timing.json")


def _files(out: Path) -> list[str]:
    found = {str(p.relative_to(out)) for p in out.rglob("*")
             if p.is_file() and not p.name.startswith(".") and p.suffix != ".npz"}
    return sorted(found | set(_FINAL_FILES))


def run_task(task: Task, family: Family, out_dir: str | Path, cfg: RunConfig = RunConfig(),
             progress: bool = True) -> dict[str, Any]:
    from diagnose.family_scores import score_family
    from diagnose.report import render_task_report
    from diagnose.trends import trend_from_score_dir
    from experiments.isp_adapters import adapt

    out = Path(out_dir)
    adapted = adapt(task)
    task = adapted.task
    t: dict[str, float] = {}
    run: dict[str, Any] = {"task": task.name, "family": family.name, "format": task.format,
                           "n_examples": len(task), "views_available": list(task.view_names),
                           "adapter": adapted.adapter,
                           "planted_cause": task.metadata.get("cause"),
                           "control": task.metadata.get("control")}
    common = dict(device=cfg.device, dtype=cfg.dtype, progress=progress)

    t0 = time.time()
    run["score"] = score_family(task, family, out / "score", seed=cfg.seed, **common)
    run["views"] = {v: score_family(task.view(v), family, out / "score" / "views" / v,
                                    seed=cfg.seed, **common) for v in task.view_names}
    t["score"] = time.time() - t0
    trends = trend_from_score_dir(out / "score", seed=cfg.seed)
    run["trend"] = {k: (v.to_dict() if v is not None else None) for k, v in trends.items()}
    store.write_json(out / "trend.json", run["trend"])

    has_classes = task.format != "sequence_prob"
    if cfg.probes and has_classes:
        from diagnose.probe_stage import probe_family

        t0 = time.time()
        patch_view = "prior" if "prior" in task.view_names else None
        probes = probe_family(task, family, out / "probes", lens=cfg.lens,
                              patch_view=patch_view, patch_limit=cfg.patch_limit,
                              seed=cfg.seed, **common)
        run["probes"] = {"file": "probes/probes.json", "plots": probes.get("plots", [])}
        t["probes"] = time.time() - t0
    if cfg.classify and len(family.models) >= 2:
        from diagnose.classifier import CauseClassifier
        from diagnose.classify_stage import classify_task, default_classifier

        t0 = time.time()
        clf = (CauseClassifier.load(cfg.classifier) if cfg.classifier
               else default_classifier(progress=progress))
        run["classification"] = classify_task(task, family, out, clf=clf, seed=cfg.seed,
                                              progress=progress, device=cfg.device,
                                              dtype=cfg.dtype)
        if task.metadata.get("cause") is not None or task.metadata.get("control"):
            run["classification"]["evidence_notes"].append(
                "the default classifier was fitted on the organisms' planted tasks, this "
                "one included: for a fair test see `diagnose classify --heldout`")
        t["classify"] = time.time() - t0
    else:
        run["classification_note"] = "no cause label: a trend needs at least two models"
    if cfg.mitigations:
        from diagnose.mitigations.stage import MitigationConfig, run_mitigations

        t0 = time.time()
        mcfg = MitigationConfig(strategies=tuple(cfg.mitigations), seed=cfg.seed)
        run["mitigation"] = run_mitigations(task, family, out / "mitigation", mcfg,
                                            device=cfg.device, dtype=cfg.dtype, progress=progress)
        t["mitigate"] = time.time() - t0
    run["files"] = _files(out)
    store.write_json(out / "run.json", run)
    store.write_text(out / "report.html", render_task_report(run, out))
    store.write_json(out / "timing.json", t)
    return run


def verdict_row(run: dict[str, Any]) -> dict[str, Any]:
    tr = (run.get("trend") or {}).get("accuracy") or (run.get("trend") or {}).get("loss") or {}
    c = run.get("classification") or {}
    probs = (c.get("cause") or {}).get("probabilities") or {}
    label = (c.get("cause") or {}).get("label") or "-"
    return {"task": run["task"], "planted": run.get("planted_cause") or
            ("control" if run.get("control") else None), "trend": tr.get("label"),
            "trend_confidence": float(tr.get("confidence") or 0.0), "cause": label,
            "cause_p": float(probs.get(label, 0.0))}


def run_suite(name: str, tasks: Sequence[Task], family: Family, out_dir: str | Path,
              cfg: RunConfig = RunConfig(), progress: bool = True) -> list[dict[str, Any]]:
    from diagnose.report import render_index

    out = Path(out_dir)
    rows = []
    for task in tasks:
        run = run_task(task, family, out / task.name, cfg, progress)
        rows.append(verdict_row(run))
        store.write_json(out / "suite.json", {"suite": name, "tasks": rows})
        store.write_text(out / "index.html", render_index(name, rows))
    return rows


def format_verdict(run: dict[str, Any]) -> str:
    return format_row(verdict_row(run))


def format_row(r: dict[str, Any]) -> str:
    s = f"{r['task']}: trend {r['trend']} ({r['trend_confidence']:.2f}); cause {r['cause']}"
    if r["cause"] != "-":
        s += f" (p={r['cause_p']:.2f}"
        if r["cause"] == "no_inverse_scaling" and r["cause_p"] < 0.5:
            s += ": named by the trend rule, most replicates lean inverse"
        s += ")"
    if r.get("planted"):
        s += f"  [planted: {r['planted']}]"
    return s
