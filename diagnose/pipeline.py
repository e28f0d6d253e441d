"""``diagnose run``: every stage for one task, resumable, ending in an HTML report.

    task --(views: diagnose.views)--> per model, one model in memory at a time:
        capture (one pass: task + views + residuals at the answer position)
        readings (lens, commitment, probes; from the capture)
        patching, mitigations (the interventions that need forwards of their own)
    --> family: score tables, trend, probes report, cause verdict, mitigations --> report.html

The per-model stages are resolved and cached by ``diagnose.runner`` (records under
``DIR/records``), so a killed run resumes, and a changed task file or setting
recomputes exactly what depends on it. The family stages read those records and are
recomputed every time. ``run.json`` holds no timings, so the same seed gives the same
bytes; wall times and the work counted (tokens run forward) go to ``timing.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from diagnose import store
from diagnose.families import Family
from diagnose.tasks import Task
from diagnose.trends import INVERSE_LIKE


@dataclass(frozen=True)
class RunConfig:
    probes: bool = True
    classify: bool = True
    mitigations: tuple[str, ...] = ("pad", "cad", "few-shot", "cot")
    lens: str = "logit"
    patching: bool = True
    patch_limit: int = 32
    seed: int = 0
    device: str | None = None
    dtype: str | None = None
    classifier: str | None = None
    mitigate_all: bool = False   # else mitigations run only where the trend is inverse-like
    extra: dict[str, Any] = field(default_factory=dict)
    dispatch: Any = None   # diagnose.dispatch.Dispatch: accelerate's device map, or None


# written last, after the listing; named explicitly so a rerun lists the same files
_FINAL_FILES = ("report.html", "run.json", "timing.json")


def _files(out: Path) -> list[str]:
    found = {str(p.relative_to(out)) for p in out.rglob("*")
             if p.is_file() and not p.name.startswith(".") and p.suffix != ".npz"}
    return sorted(found | set(_FINAL_FILES))


def run_task(task: Task, family: Family, out_dir: str | Path, cfg: RunConfig = RunConfig(),
             progress: bool = True, per_model_only: bool | str = False,
             executor: Any = None) -> dict[str, Any]:
    """Every stage of ``task`` on ``family``. ``per_model_only``: the per-model records
    only (one unit of a distributed suite, ``diagnose.executors``), returning ``{}``;
    ``"mitigation"``: the mitigation records only. ``executor``: where units run when the
    family's trend asks for mitigations (default: here)."""
    from diagnose.builtin_tasks import paper_cause
    from diagnose.capture import capture_stage
    from diagnose.family_scores import write_scores
    from diagnose.readings import readings_stage
    from diagnose.report import render_task_report
    from diagnose.runner import run_models
    from diagnose.trends import trend_from_task_scores
    from diagnose.views import build_views

    out = Path(out_dir)
    t_start = time.time()
    task, views = build_views(task, cfg.seed)
    classes = task.format != "sequence_prob"
    run: dict[str, Any] = {"task": task.name, "family": family.name, "format": task.format,
                           "n_examples": len(task), "views": views.to_dict(),
                           "planted_cause": task.metadata.get("cause"),
                           "design": task.metadata.get("design"),
                           "control": task.metadata.get("control"),
                           "paper_cause": paper_cause(task)}
    stages = [capture_stage(task)]
    if classes and (cfg.probes or cfg.classify):
        stages.append(readings_stage(cfg.seed))
    if cfg.probes and classes:
        from diagnose.probe_stage import patching_stage, tuned_lens_stage

        if cfg.patching:
            stages.append(patching_stage(task, None, limit=cfg.patch_limit))
        if cfg.lens == "tuned":
            stages += [tuned_lens_stage(task, seed=cfg.seed, lens_dir=out / "probes" / "tuned_lens"),
                       readings_stage(cfg.seed, lens="tuned")]
    load = dict(device=cfg.device, dtype=cfg.dtype, dispatch=cfg.dispatch)
    if per_model_only == "mitigation" or (per_model_only and cfg.mitigate_all):
        from diagnose.mitigations.stage import MitigationConfig, mitigation_stage

        mstage = mitigation_stage(task, MitigationConfig(strategies=tuple(cfg.mitigations),
                                                         seed=cfg.seed))
        stages = ([capture_stage(task), mstage] if per_model_only == "mitigation"
                  else stages + [mstage])
    res = run_models(stages, family, out, progress=progress, load=load)
    if per_model_only:
        return {}
    t: dict[str, float] = {f"model:{k}": round(v, 3) for k, v in res.seconds.items()}
    caps = res["capture"]

    t0 = time.time()
    run["score"] = write_scores(task, family.name, caps, out / "score", seed=cfg.seed)
    trends = (trend_from_task_scores([c.scores for c in caps], seed=cfg.seed)
              if len(caps) >= 2 else {"accuracy": None, "loss": None})
    run["trend"] = {k: (v.to_dict() if v is not None else None) for k, v in trends.items()}
    if len(caps) < 2:
        run["trend_note"] = "one model cannot show a trend: a family needs at least two sizes"
    store.write_json(out / "trend.json", run["trend"])
    t["score+trend"] = time.time() - t0

    if cfg.probes and classes:
        from diagnose.probe_stage import write_probes

        t0 = time.time()
        tuned = cfg.lens == "tuned"
        probes = write_probes(task, family.name, caps,
                              res["readings_tuned"] if tuned else res["readings"], out / "probes",
                              logit_readings=res["readings"] if tuned else None,
                              patching=res["patching"] if cfg.patching else None,
                              tuned=res["tuned_lens"] if tuned else None)
        run["probes"] = {"file": "probes/probes.json", "plots": probes.get("plots", [])}
        t["probes"] = time.time() - t0
    if cfg.classify and len(caps) >= 2:
        t0 = time.time()
        run["classification"] = classify_records(task, caps, res.by_stage.get("readings"),
                                                 res.models, views.to_dict(), cfg)
        store.write_json(out / "classification.json", run["classification"])
        t["classify"] = time.time() - t0
    elif cfg.classify:
        run["classification_note"] = "no verdict: a trend needs at least two models"
    trend = run["trend"].get("accuracy") or run["trend"].get("loss") or {}
    if cfg.mitigations and (cfg.mitigate_all or len(caps) < 2
                            or trend.get("label") in INVERSE_LIKE):
        from diagnose.mitigations.stage import (MitigationConfig, mitigation_stage,
                                                write_mitigations)

        t0 = time.time()
        mcfg = MitigationConfig(strategies=tuple(cfg.mitigations), seed=cfg.seed)
        if executor is not None:  # the units compute the records (a cluster's workers)
            executor.mitigate(task, family, out, cfg)
        # a second walk over the models: the captures are cached, the models too
        mres = run_models([capture_stage(task), mitigation_stage(task, mcfg)], family, out,
                          progress=progress, load=load)
        res.by_stage["mitigation"] = mres.by_stage["mitigation"]
        t["model:mitigation"] = round(mres.seconds["mitigation"], 3)
        run["mitigation"] = write_mitigations(task, family.name, mres["mitigation"],
                                              out / "mitigation", mcfg)
        t["mitigate"] = time.time() - t0
    elif cfg.mitigations:
        run["mitigation_note"] = (f"mitigations not run: the trend is '{trend.get('label')}', "
                                  "there is no inverse scaling to mitigate (--mitigate-all runs "
                                  "them anyway)")
    run["files"] = _files(out)
    store.write_json(out / "run.json", run)
    store.write_text(out / "report.html", render_task_report(run, out))
    t["total"] = time.time() - t_start
    store.write_json(out / "timing.json", {"seconds": t, "models": work(res)})
    return run


def work(res: Any) -> dict[str, dict[str, int]]:
    """Tokens run forward per model: by the capture (the task's distinct inputs), by the
    interventions of the instruments (patching, tuned lens), by the mitigations."""
    out = {}
    for mid in res.models:
        cap = res.by_stage["capture"][mid]
        rec = {"forward_tokens": int(cap.tokens.get("forward_tokens", 0)),
               "distinct_tokens": int(cap.tokens.get("distinct_tokens", 0)),
               "mitigation_tokens": 0, "intervention_tokens": 0}
        for st in ("patching", "tuned_lens"):
            if st in res.by_stage:
                rec["intervention_tokens"] += int(res.by_stage[st][mid].get("tokens", 0))
        if "mitigation" in res.by_stage:
            rec["mitigation_tokens"] = int(res.by_stage["mitigation"][mid].get("tokens", 0))
        out[mid] = rec
    return out


def classify_records(task: Task, caps: Sequence[Any], readings: dict | None,
                     model_ids: Sequence[str], views: dict, cfg: RunConfig) -> dict[str, Any]:
    """The verdict from the records: the classifier reads the same readings the probe
    report plots."""
    import numpy as np

    from diagnose.classify_stage import (classify, classify_sequence_prob, classify_unscorable,
                                         unreadable_reasons)
    from diagnose.evidence import family_evidence

    unk = [c.tokens.get("unk_share") for c in caps]
    scores = [c.scores for c in caps]
    if not np.logical_and.reduce([np.asarray(s.scored, bool) for s in scores]).any():
        # nothing every model scored (any format): no trend, the gate's verdict
        return classify_unscorable(task.name, views, unreadable_reasons(None, unk, n_scored=0),
                                   scores)
    if task.format == "sequence_prob":
        n = min(int(s.scored.sum()) for s in scores)
        why = unreadable_reasons(None, unk, n_scored=n)
        return classify_sequence_prob(scores, task.name, views, why, cfg.seed)
    rds = [readings[m] for m in model_ids] if readings else [None] * len(caps)
    ev = family_evidence(task.name, list(caps), rds, task.metadata)
    why = unreadable_reasons(ev, unk, task.n_classes)
    result = classify(load_classifier(cfg.classifier), ev, views, why, seed=cfg.seed)
    if task.metadata.get("cause") is not None or task.metadata.get("control"):
        result["evidence_notes"].append(
            "the default classifier was fitted on the organisms' planted tasks, this one "
            "included: for a fair test see `diagnose classify --validate designs`")
    return result


def load_classifier(path: str | None = None, progress: bool = True):
    """A saved classifier, or the default one: the registered default family's
    ``classifier.json``, fitted once if that file is missing."""
    from diagnose.classifier import CauseModel, StaleClassifierError
    from diagnose.classify_stage import default_classifier_path, fit_default

    if path:
        try:
            return CauseModel.load(path)
        except StaleClassifierError as e:
            raise StaleClassifierError(f"{path}: {e}; refit it with `diagnose classify --fit "
                                       f"--out DIR` and pass DIR/classifier.json") from None
    p = default_classifier_path()
    if p.is_file():
        try:
            model = CauseModel.load(p)
            check_family(p)
            return model
        except StaleClassifierError as e:
            raise StaleClassifierError(f"{p}: {e}; refit the default classifier with "
                                       "`diagnose classify --fit`") from None
    return fit_default(progress=progress)


def check_family(path: Path) -> None:
    """A default classifier lives in its family's directory; it must have been fitted on
    the models that are there now (ids and sizes)."""
    import json

    from diagnose.classifier import StaleClassifierError
    from diagnose.families import load_family_manifest

    fitted = (json.loads(Path(path).read_text()).get("provenance") or {}).get("family")
    here = [[m.id, int(m.n_params or 0)] for m in load_family_manifest(Path(path).parent).models]
    if fitted is not None and sorted(map(tuple, fitted)) != sorted(map(tuple, here)):
        raise StaleClassifierError(f"fitted on models {fitted}, but the family now holds {here}")


def verdict_row(run: dict[str, Any]) -> dict[str, Any]:
    tr = (run.get("trend") or {}).get("accuracy") or (run.get("trend") or {}).get("loss") or {}
    c = run.get("classification") or {}
    cause = c.get("cause") or {}
    label = cause.get("label") or "-"
    p = (cause.get("probabilities") or {}).get(label)
    row = {"task": run["task"], "planted": run.get("planted_cause") or
           ("control" if run.get("control") else None), "design": run.get("design"),
           "trend": tr.get("label"), "trend_confidence": float(tr.get("confidence") or 0.0),
           "cause": label, "cause_p": None if p is None else float(p),
           "decided_by": cause.get("decided_by"), "tests": c.get("tests"),
           "notes": c.get("evidence_notes", [])}
    if label == "undetermined":
        row["reason"] = "; ".join(c.get("unreadable") or []) or cause.get("decided_by")
    elif run.get("trend_note"):  # a single model: no trend, hence no verdict, and why
        row["reason"] = run["trend_note"]
    skips = [m.get("n_unscorable", 0) for m in (run.get("score") or {}).get("models", [])]
    row["n_unscorable"] = skips
    return row


class FailedTask:
    """A task of a suite that could not even be loaded: recorded with its error."""

    def __init__(self, name: str, error: str):
        self.name, self.error = name, error
        self.metadata: dict = {}


def run_suite(name: str, tasks: Sequence[Task | FailedTask], family: Family,
              out_dir: str | Path, cfg: RunConfig = RunConfig(),
              progress: bool = True, executor: Any = None) -> list[dict[str, Any]]:
    """Every task; a task that fails is recorded (``error``) and the others go on. Each
    task's records are cached, so a killed suite resumes. ``executor``
    (``diagnose.executors``) computes the (task, model) units; without one ``run_task``
    computes them here, one model in memory at a time. Each task's family-level stages run
    here once its units are in."""
    from diagnose.report import render_index

    out = Path(out_dir)
    if executor is not None:
        executor.submit([t for t in tasks if not isinstance(t, FailedTask)], family, out, cfg)
    rows = []
    for task in tasks:
        try:
            if isinstance(task, FailedTask):
                raise RuntimeError(task.error)
            if executor is not None:
                executor.wait(task.name)
            run = run_task(task, family, out / task.name, cfg, progress, executor=executor)
            rows.append(verdict_row(run))
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - one failing task must not end the suite
            msg = (str(e) if isinstance(task, FailedTask)
                   else f"{type(e).__name__}: {e}").splitlines()[0][:500]
            rows.append({"task": task.name, "error": msg, "planted": task.metadata.get("cause")
                         or ("control" if task.metadata.get("control") else None),
                         "design": task.metadata.get("design"), "trend": None,
                         "trend_confidence": 0.0, "cause": "-", "cause_p": None})
            if getattr(e, "failures", None):  # diagnose.executors.UnitFailed: which units
                rows[-1]["failed_units"] = e.failures
        store.write_json(out / "suite.json", {"suite": name, "tasks": rows,
                                              "failed": [r["task"] for r in rows if r.get("error")]})
        store.write_text(out / "index.html", render_index(name, rows))
    return rows


def format_verdict(run: dict[str, Any]) -> str:
    line = format_row(verdict_row(run))
    for m in (run.get("score") or {}).get("models", []) if run.get("trend_note") else []:
        if m.get("accuracy") is not None:  # one model: its own numbers stand in for a trend
            line += (f"\n  {m['id']}: accuracy {m['accuracy']:.3f} "
                     f"[{m['ci_low']:.3f}, {m['ci_high']:.3f}] (95 % interval)")
    return line


def format_row(r: dict[str, Any]) -> str:
    if r.get("error"):
        return f"{r['task']}: FAILED ({r['error']})"
    trend = ("none" if r.get("trend") in (None, "-")
             else f"{r['trend']} ({r['trend_confidence']:.2f})")
    s = f"{r['task']}: trend {trend}; verdict {r['cause']}"
    if r.get("cause_p") is not None and r["cause"] not in ("-", "no_inverse_scaling"):
        s += f" (p={r['cause_p']:.2f})"
    if r.get("reason"):
        s += f" [{r['reason']}]"
    elif (r.get("decided_by") or "").startswith("gate"):
        s += f" [{r['decided_by']}]"
    if r.get("planted"):
        s += f"  [planted: {r['planted']}{'/' + r['design'] if r.get('design') else ''}]"
    if any(r.get("n_unscorable") or []):
        s += f"  [unscorable per model: {r['n_unscorable']}]"
    return s
