"""The ``classify`` stage: a task's verdict from the records, and the validation of the
cause classifier across planted designs it was not fitted on.

Everything here reads per-model records (``diagnose.capture``, ``diagnose.readings``)
through ``diagnose.evidence``; nothing runs a model.

Verdict of one task (``classification.json``): the gate (``diagnose.classifier.gate``)
first, a rule: ``undetermined`` when the family cannot show anything on the task (every
model within its interval of chance, most prompt tokens unknown to the tokenizer, too
few examples scored by every model), ``no_inverse_scaling`` when the trend rule does
not call the accuracy curve inverse-like; otherwise the cause model's label, which is
``undetermined`` too when no tested cause is supported. Every cause is reported as
supported, not supported or untested, with the views built and the reasons others
could not be.

Validation (``validate_designs``): the units are tasks (a bootstrap resample of a task
is not an independent unit). Every planted cause has several independently designed
plantings (``metadata["design"]``); each fold fits the cause model on one design of
every cause (with their controls) and labels the tasks of the other designs, so the
classifier is judged on designs it never saw. The answer key is behavioural: a planted
task is labelled with its cause when it scales inversely on the family by the trend
rule, else ``no_inverse_scaling``; controls are ``no_inverse_scaling``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from diagnose.causes import CAUSES, NO_INVERSE, UNDETERMINED, UNTESTED, VERDICTS
from diagnose.classifier import CLASSES, CauseModel, cause_block, gate
from diagnose.evidence import FamilyEvidence
from diagnose.explain import pct, sentences
from diagnose.features import SHARED_FEATURES, feature_names, unit_features
from diagnose.trends import INVERSE_LIKE, trend_from_outcomes
from diagnose.views import VIEWS, views_testing

MIN_SCORED = 20
UNK_SHARE = 0.5


# -- can the family read the task? ------------------------------------------------------

def unreadable_reasons(ev: FamilyEvidence | None, unk_shares: Sequence[float | None] = (),
                       n_classes: int | None = None, n_scored: int | None = None) -> list[str]:
    """Why a family cannot show anything on a task (empty: it can). ``ev`` gives the
    examples scored by every model and their outcomes; without it (a sequence_prob
    task) ``n_scored`` gives the count."""
    from diagnose.metrics import bootstrap_ci

    out = []
    shares = [u for u in unk_shares if u is not None]
    if shares and min(shares) > UNK_SHARE:
        out.append(f"{pct(min(shares))} or more of the prompt tokens are unknown to the "
                   "models' tokenizer: the models do not read this task's language")
    both = ev.scored_by_all if ev is not None else None
    n = int(both.sum()) if both is not None else int(n_scored or 0)
    if n < MIN_SCORED:
        out.append(f"only {n} examples could be scored by every model "
                   f"(at least {MIN_SCORED} are needed)")
    elif ev is not None and n_classes:
        chance = 1.0 / n_classes
        cis = [bootstrap_ci(m.correct[both].astype(float)) for m in ev.models]
        if all(lo <= chance <= hi for lo, hi in cis):
            out.append(f"every model is within its 95% interval of chance ({chance:.2f})")
    return out


# -- one task ---------------------------------------------------------------------------

def _untested_because(views_report: dict | None) -> dict[str, str]:
    if not views_report:
        return {}
    na = views_report.get("not_applicable", {})
    return {c: "; ".join(f"{v}: {na.get(v, 'not built')}" for v in views_testing(c))
            for c in CAUSES}


def classify(model: CauseModel, ev: FamilyEvidence, views_report: dict | None = None,
             unreadable: Sequence[str] = (), n_boot: int = 1000, seed: int = 0,
             notes: Sequence[str] = ()) -> dict[str, Any]:
    """``classification.json`` for one task."""
    from diagnose.plots import display_name

    f, trend = unit_features(ev, None, n_boot=n_boot, seed=seed)
    proba = model.predict_proba([f])[0]
    support = model.support([f])[0]
    tests = model.tests([f])[0]
    ruled = gate(trend, unreadable)
    label = ruled or str(model.classes_[int(proba.argmax())])
    if ruled == UNDETERMINED:
        decided = "gate: the family cannot show anything on this task"
    elif ruled == NO_INVERSE:
        decided = f"gate: the trend rule calls the curve '{trend['label']}'"
    elif label == UNDETERMINED:
        decided = "cause model: no tested cause is supported by the evidence"
    else:
        decided = "cause model"
    largest = display_name(ev.models[-1].id)
    ev_sent = sentences(f, trend, tests, largest=f"the largest model ({largest})")
    if label in CAUSES:
        top = ", ".join(f"{n} ({c:+.2f})" for n, c in model.contributions(f, label)[:3])
        if top:
            ev_sent.append(f"What weighed most in the {label} test (coefficient x value): "
                           f"{top}.")
    notes = list(notes) + list(unreadable)
    because = _untested_because(views_report)
    return {
        "task": ev.task,
        "trend": {"label": trend["label"], "confidence": trend["confidence"],
                  "label_probabilities": trend.get("label_probabilities"),
                  "reason": trend.get("reason")},
        "cause": {"label": label, "decided_by": decided,
                  "probabilities": {c: float(p) for c, p in zip(CLASSES, proba)},
                  "support": {c: (None if np.isnan(p) else float(p)) for c, p in zip(CAUSES, support)},
                  "p_inverse": f.get("p_inverse")},
        "tests": tests,
        "unreadable": list(unreadable),
        "untested_because": {c: because.get(c, "") for c, t in tests.items() if t == UNTESTED},
        "views": views_report or {},
        "evidence_level": "low" if notes else "normal",
        "evidence_notes": notes,
        "evidence": ev_sent + [f"Low evidence: {n}." for n in notes],
        "features": f,
        "models": [{"id": m.id, "n_params": m.n_params,
                    "accuracy": float(m.correct[m.scored].mean()) if m.scored.any() else None,
                    "n_scored": int(m.scored.sum())} for m in ev.models],
    }


def classify_unscorable(task: str, views_report: dict | None, unreadable: Sequence[str],
                        models: Sequence[Any] = ()) -> dict[str, Any]:
    """No example could be scored by every model (e.g. a class that encodes to zero
    tokens under the family's tokenizer): no trend, no evidence, ``undetermined``;
    ``unreadable``: the gate's reasons (``unreadable_reasons``)."""
    why = list(unreadable)
    return {
        "task": task,
        "trend": {"label": None, "confidence": None, "label_probabilities": None,
                  "reason": "no example could be scored by every model"},
        "cause": {"label": UNDETERMINED, "decided_by": "gate: the family cannot show "
                  "anything on this task", "probabilities": {}, "support": {}, "p_inverse": None},
        "tests": {c: UNTESTED for c in CAUSES},
        "unreadable": why,
        "untested_because": {c: "no example could be scored by every model" for c in CAUSES},
        "views": views_report or {},
        "evidence_level": "low", "evidence_notes": why,
        "evidence": [f"Low evidence: {n}." for n in why],
        "models": [{"id": s.model_id, "n_params": s.n_params,
                    "n_scored": int(np.asarray(s.scored).sum())} for s in models],
    }


def classify_sequence_prob(scores: Sequence[Any], task: str, views_report: dict | None,
                           unreadable: Sequence[str], seed: int = 0) -> dict[str, Any]:
    """A sequence_prob task: the trend of its ISP loss; the cause model reads class
    choices, so no cause is named (``undetermined`` when the loss is inverse-like)."""
    from diagnose.trends import trend_from_task_scores

    d = trend_from_task_scores(scores, seed=seed)["loss"].to_dict()
    note = ("sequence_prob task: the cause model reads which class each model picks, so "
            "only the trend of the ISP loss is reported")
    notes = [note] + list(unreadable)
    ruled = gate(d, unreadable)
    return {
        "task": task,
        "trend": {"label": d["label"], "confidence": d["confidence"], "metric": "loss",
                  "label_probabilities": d["label_probabilities"], "reason": d.get("reason")},
        "cause": {"label": ruled or UNDETERMINED,
                  "decided_by": ("gate" if ruled else "no cause model for sequence_prob"),
                  "probabilities": {}, "support": {}, "p_inverse": float(
                      sum(d["label_probabilities"].get(k, 0.0) for k in INVERSE_LIKE))},
        "tests": {c: UNTESTED for c in CAUSES},
        "unreadable": list(unreadable),
        "untested_because": {c: "sequence_prob: no class choices to compare" for c in CAUSES},
        "views": views_report or {},
        "evidence_level": "low", "evidence_notes": notes,
        "evidence": [d.get("reason", "")] + [f"Low evidence: {n}." for n in notes],
        "models": [{"id": s.model_id, "n_params": s.n_params,
                    "loss": float(np.nanmean(s.loss))} for s in scores],
    }


def format_classification(r: dict[str, Any]) -> str:
    c = r["cause"]
    probs = ", ".join(f"{k} {v:.2f}" for k, v in sorted(c["probabilities"].items(),
                                                         key=lambda kv: -kv[1]))
    tests = ", ".join(f"{k}: {v}" for k, v in r["tests"].items())
    lines = [f"{r['task']}: trend {r['trend']['label']} (confidence "
             f"{(r['trend']['confidence'] or 0):.2f}); verdict {c['label']} ({c['decided_by']})",
             f"  cause model [{probs}]", f"  tests: {tests}"]
    lines += [f"  - {s}" for s in r["evidence"]]
    return "\n".join(lines)


# -- validation across designs -------------------------------------------------------------

@dataclass
class TaskUnit:
    task: str
    design: str
    planted: str          # the planted cause, or no_inverse_scaling for a control
    control: bool
    evidence: FamilyEvidence
    label: str = NO_INVERSE   # the behavioural answer key

    def __post_init__(self) -> None:
        if not self.control and self.planted in CAUSES and scales_inversely(self.evidence):
            self.label = self.planted


def scales_inversely(ev: FamilyEvidence, seed: int = 0) -> bool:
    both = ev.scored_by_all
    correct = np.stack([m.correct[both] for m in ev.models]).astype(float)
    return trend_from_outcomes(ev.sizes, correct, higher_is_better=True,
                               seed=seed).scales_inversely


def design_folds(units: Sequence[TaskUnit]) -> list[tuple[list[str], list[str]]]:
    """Fold k trains on the k-th design of every cause and tests on the other designs."""
    by_cause: dict[str, list[str]] = {}
    for u in units:
        if not u.control:
            d = by_cause.setdefault(u.planted, [])
            if u.design not in d:
                d.append(u.design)
    short = {c: len(d) for c, d in by_cause.items() if len(d) < 2}
    if short or set(by_cause) != set(CAUSES):
        missing = [c for c in CAUSES if c not in by_cause]
        raise ValueError("leave-one-design-out needs at least two designs of every cause; "
                         f"missing: {missing or '-'}, with one design: {sorted(short) or '-'}")
    k = max(len(d) for d in by_cause.values())
    folds = []
    for i in range(k):
        train = sorted({d[i] for d in by_cause.values() if i < len(d)})
        test = sorted({x for d in by_cause.values() for x in d} - set(train))
        folds.append((train, test))
    return folds


def training_rows(units: Sequence[TaskUnit], augment: int = 8, seed: int = 0,
                  n_boot: int = 200) -> tuple[list[dict], list[str], list[str]]:
    """Features and labels for the cause model: each task whose label is a cause (it
    scales inversely), and each control as a unit where no cause is at work, with
    ``augment`` bootstrap resamples of its examples (the noise a real task has)."""
    rng = np.random.default_rng(seed)
    X, y, names = [], [], []
    for u in units:
        if not u.control and u.label == NO_INVERSE:
            continue  # a planted ingredient that did not take: neither cause nor control
        n = len(u.evidence.example_ids)
        for b in range(augment + 1):
            idx = None if b == 0 else rng.integers(0, n, size=n)
            f, _ = unit_features(u.evidence, idx, n_boot=n_boot, seed=seed + b)
            X.append(f), y.append(u.label), names.append(f"{u.task}#{b}")
    return X, y, names


def _confusion(y_true: Sequence[str], y_pred: Sequence[str]) -> list[list[int]]:
    m = np.zeros((len(VERDICTS), len(VERDICTS)), dtype=int)
    for t, p in zip(y_true, y_pred):
        m[VERDICTS.index(t), VERDICTS.index(p)] += 1
    return m.tolist()


def _label(model: Any, f: dict, trend: dict) -> str:
    return gate(trend) or str(model.predict([f])[0])


def _presence(f: dict) -> np.ndarray:
    return np.array([float(np.isfinite(f.get(f"{v}_tempt_large", np.nan))
                           or np.isfinite(f.get(f"{v}_acc_large", np.nan))) for v in VIEWS])


class PresenceOnly:
    """The model a reviewer fears: which views a task carries, and nothing else."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, X: list[dict], y: list[str]) -> "PresenceOnly":
        from sklearn.linear_model import LogisticRegression

        keep = [i for i, lab in enumerate(y) if lab in CAUSES]
        self.m = LogisticRegression(max_iter=2000, random_state=self.seed).fit(
            np.stack([_presence(X[i]) for i in keep]), [y[i] for i in keep])
        return self

    def predict(self, X: list[dict]) -> np.ndarray:
        return self.m.predict(np.stack([_presence(f) for f in X]))


def _drop_view(f: dict, view: str) -> dict:
    g = dict(f)
    for k in g:
        if k.startswith(f"{view}_"):
            g[k] = float("nan")
    return g


def validate_designs(units: Sequence[TaskUnit], augment: int = 8, seed: int = 0,
                     n_boot: int = 500) -> dict[str, Any]:
    """Leave-one-design-out validation at task level (``validation.json``)."""
    folds = design_folds(units)
    feats = {u.task: unit_features(u.evidence, None, n_boot=n_boot, seed=seed) for u in units}
    variants = {"main": dict(), "lens_probe_only": dict(views=False),
                "views_only": dict(lens=False), "presence_only": None}
    preds: dict[str, dict[str, str]] = {k: {} for k in variants}
    fold_out, unchanged = [], []
    for train_d, test_d in folds:
        train = [u for u in units if u.design in train_d]
        test = [u for u in units if u.design in test_d]
        X, y, _ = training_rows(train, augment=augment, seed=seed)
        models = {k: (PresenceOnly(seed).fit(X, y) if kw is None else
                      CauseModel(random_state=seed, **kw).fit(X, y))
                  for k, kw in variants.items()}
        for u in test:
            f, trend = feats[u.task]
            for k, m in models.items():
                preds[k][u.task] = _label(m, f, trend)
            # the label must not move when a view whose cause is not the label is removed
            lab = preds["main"][u.task]
            if lab in CAUSES:
                for v, spec in VIEWS.items():
                    if spec.tests != lab and np.isfinite(f.get(f"{v}_acc_large", np.nan)):
                        unchanged.append(_label(models["main"], _drop_view(f, v), trend) == lab)
        fold_out.append({"train_designs": train_d, "test_designs": test_d, "n": len(test),
                         "accuracy": float(np.mean([preds["main"][u.task] == u.label
                                                    for u in test])) if test else None})

    def summary(pred: dict[str, str]) -> dict[str, Any]:
        yt = [u.label for u in units]
        yp = [pred[u.task] for u in units]
        recall = {}
        for lab in VERDICTS:
            idx = [i for i, t in enumerate(yt) if t == lab]
            if idx:
                recall[lab] = float(np.mean([yp[i] == lab for i in idx]))
        ctrl = [pred[u.task] == NO_INVERSE for u in units if u.control]
        # the controls the gate hands to the cause model (every other control is
        # no_inverse_scaling by the gate), so the only ones a model can get wrong; the
        # answer key still counts them as no_inverse_scaling
        odd = {u.task: pred[u.task] for u in units
               if u.control and gate(feats[u.task][1]) is None}
        return {"accuracy": float(np.mean([a == b for a, b in zip(yt, yp)])), "n": len(yt),
                "confusion": _confusion(yt, yp), "per_cause_recall": recall,
                "controls_no_inverse": float(np.mean(ctrl)) if ctrl else None,
                "controls_with_inverse_like_trend": odd}

    main = summary(preds["main"])

    def views_of(u: TaskUnit) -> list[str]:
        return [v for v, on in zip(VIEWS, _presence(feats[u.task][0])) if on]

    # the tasks where which views exist cannot tell the cause: their views (beside
    # no_context, which every classification task has) test more than one cause
    crossings = [u for u in units if not u.control and len(
        {VIEWS[v].tests for v in views_of(u) if v != "no_context"}) > 1]
    blocks = sorted({n for c in CAUSES for n in cause_block(c)} | set(SHARED_FEATURES))
    return {
        "protocol": "leave-one-design-out", **main, "labels": list(VERDICTS),
        "folds": fold_out,
        "features": [n for n in feature_names() if n in blocks],
        "lens_probe_only": {**summary(preds["lens_probe_only"]),
                            "features": list(SHARED_FEATURES)},
        "views_only": {**summary(preds["views_only"]),
                       "features": sorted({n for c in CAUSES for n in cause_block(c)})},
        "presence_ablation": {
            "presence_only": {**summary(preds["presence_only"]),
                              "features": [f"{v}_present" for v in VIEWS],
                              "what": "a model that reads only which views each task carries"},
            "label_unchanged_when_a_view_not_in_play_is_removed": (
                float(np.mean(unchanged)) if unchanged else None),
            "n_removals": len(unchanged),
            "main_model_reads_presence": False,
            "crossings": {
                "what": "planted tasks whose views test more than one cause",
                "tasks": [u.task for u in crossings],
                "accuracy": {k: (float(np.mean([preds[k][u.task] == u.label for u in crossings]))
                                 if crossings else None) for k in ("main", "presence_only")},
            },
        },
        "units": [{"task": u.task, "design": u.design, "planted": u.planted,
                   "control": u.control, "true": u.label, "pred": preds["main"][u.task],
                   "pred_lens_probe_only": preds["lens_probe_only"][u.task],
                   "pred_views_only": preds["views_only"][u.task],
                   "pred_presence_only": preds["presence_only"][u.task],
                   "views": views_of(u),
                   "trend": feats[u.task][1]["label"]} for u in units],
        "augment": augment, "seed": seed,
    }


def fit_on_units(units: Sequence[TaskUnit], augment: int = 8, seed: int = 0) -> CauseModel:
    X, y, _ = training_rows(units, augment=augment, seed=seed)
    return CauseModel(random_state=seed).fit(X, y)


def format_validation(v: dict[str, Any]) -> str:
    short = ["prior", "imitation", "distractor", "few-shot", "no-inverse", "undetermined"]
    lines = [f"leave-one-design-out accuracy {v['accuracy']:.3f} on {v['n']} tasks"]
    for f in v["folds"]:
        lines.append(f"  fit on {', '.join(f['train_designs'])} -> test on "
                     f"{', '.join(f['test_designs'])}: {f['accuracy']:.3f} (n={f['n']})")
    lines.append("true \\ predicted".ljust(18) + "".join(f"{s:>13}" for s in short))
    for s, row in zip(short, v["confusion"]):
        lines.append(f"{s:<18}" + "".join(f"{x:>13}" for x in row))
    if v.get("controls_no_inverse") is not None:
        lines.append(f"controls labelled no_inverse_scaling: {v['controls_no_inverse']:.2f}")
    if v.get("controls_with_inverse_like_trend"):
        lines.append("  controls with an inverse-like trend (every other control is no_inverse_scaling "
                     "by the gate): " + ", ".join(
                         f"{t} -> {p}" for t, p in v["controls_with_inverse_like_trend"].items()))
    lines.append(f"lens/probe-only model: {v['lens_probe_only']['accuracy']:.3f}; views-only "
                 f"model: {v['views_only']['accuracy']:.3f}; presence-only model: "
                 f"{v['presence_ablation']['presence_only']['accuracy']:.3f}")
    x = v["presence_ablation"].get("crossings") or {}
    if x.get("tasks"):
        lines.append(f"on the {len(x['tasks'])} planted tasks whose views test more than one cause "
                     f"({', '.join(x['tasks'])}): main {x['accuracy']['main']:.3f}, presence-only "
                     f"{x['accuracy']['presence_only']:.3f}")
    u = v["presence_ablation"]["label_unchanged_when_a_view_not_in_play_is_removed"]
    if u is not None:
        lines.append(f"label unchanged when a view whose cause is not the label is removed: "
                     f"{u:.3f} (n={v['presence_ablation']['n_removals']})")
    return "\n".join(lines)


# -- the default classifier: fitted on the planted tasks of the default family -----------

def _default_source():
    from diagnose.families import DEFAULT_FAMILY
    from diagnose.registry import families

    src = families().get(DEFAULT_FAMILY)
    if src is None or src.classifier_path is None:
        raise FileNotFoundError(f"no default classifier: the family {DEFAULT_FAMILY!r} is not "
                                "registered (is the package installed with its plugins?); pass "
                                "--classifier FILE")
    return src


def default_classifier_path() -> Path:
    src = _default_source()
    return src.classifier_path(src.resolve())


def planted_units(family: Any = None, source: Any = None, seed: int = 0,
                  progress: bool = True) -> list[TaskUnit]:
    """Every planted and control task of a family, with its evidence (records cached in
    the family directory under ``evidence/<task>``)."""
    from diagnose.capture import capture_stage
    from diagnose.evidence import family_evidence
    from diagnose.readings import readings_stage
    from diagnose.runner import run_models
    from diagnose.views import build_views

    source = source or _default_source()
    family = family or source.resolve()
    root = Path(family.metadata.get("dir", ".")) / "evidence"
    units = []
    for task in source.planted_tasks(family):
        task, _ = build_views(task, seed)
        res = run_models([capture_stage(task), readings_stage(seed)], family, root / task.name,
                         progress=progress, label=task.name)
        ev = family_evidence(task.name, res["capture"], res["readings"], task.metadata)
        meta = task.metadata
        units.append(TaskUnit(task.name, str(meta.get("design") or meta.get("family_of_templates")),
                              meta.get("cause") or NO_INVERSE, bool(meta.get("control")), ev))
    return units


def fit_default(units: Sequence[TaskUnit] | None = None, path: str | Path | None = None,
                seed: int = 0, progress: bool = True) -> CauseModel:
    """Fit the cause model on every planted task of the default family and save it."""
    units = list(units) if units is not None else planted_units(seed=seed, progress=progress)
    model = fit_on_units(units, seed=seed)
    model.save(path or default_classifier_path(), provenance={
        "family": family_identity(units[0].evidence) if units else None,
        "fitted_on": [u.task for u in units], "designs": sorted({u.design for u in units}),
        "labels": {u.task: u.label for u in units}})
    return model


def family_identity(ev: FamilyEvidence) -> list[list]:
    """What identifies the family a classifier was fitted on: its models and their sizes."""
    return [[m.id, int(m.n_params)] for m in ev.models]


__all__ = ["classify", "classify_sequence_prob", "classify_unscorable", "unreadable_reasons", "TaskUnit",
           "validate_designs", "fit_on_units", "format_validation", "format_classification",
           "design_folds", "training_rows", "scales_inversely", "planted_units", "fit_default",
           "default_classifier_path"]
