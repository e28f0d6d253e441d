"""The ``classify`` stage: label a task's cause, and validate the classifier on planted
tasks it never saw.

Units. A planted task is cut by template: each (task, template) is one unit with a
known label. The answer key is behavioural: a planted task's units carry its planted
cause when the whole task (every template) scales inversely on the family by the trend
rule, else ``no_inverse_scaling`` (a planted ingredient that did not take, such as a
saying never seen inside the instruction frame, has no cause to find); controls are
``no_inverse_scaling``. The key that labels every planted unit with its cause, whatever
the models did, is reported beside it (``accuracy_planted_key``). Templates
0-1 (and their words) are the classifier's training split, 2-3 the held-out split, so
held-out accuracy measures generalisation to surface forms and vocabulary the
classifier never saw. Training units are augmented with bootstrap resamples of their
examples (the sampling noise a real task has); held-out units are scored once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from diagnose import store
from diagnose.classifier import (CAUSES, LABELS, NO_INVERSE, CauseClassifier, _pct,
                                 evidence_sentences)
from diagnose.evidence import FamilyEvidence, family_evidence
from diagnose.families import Family
from diagnose.features import VIEWS, unit_features
from diagnose.tasks import Task


@dataclass
class Unit:
    task: str
    template: Any
    split: str
    label: str
    evidence: FamilyEvidence
    idx: np.ndarray
    planted: str = NO_INVERSE  # the planted cause (NO_INVERSE for a control)

    @property
    def name(self) -> str:
        return f"{self.task}/t{self.template}"


def task_label(task: Task) -> str:
    cause = task.metadata.get("cause")
    return cause if cause in CAUSES else NO_INVERSE


def scales_inversely(ev: FamilyEvidence, seed: int = 0) -> bool:
    """Does the whole task scale inversely on this family (trend rule on accuracy)?"""
    from diagnose.trends import trend_from_outcomes

    correct = np.stack([m.correct for m in ev.models]).astype(float)
    return trend_from_outcomes(ev.n_params, correct, higher_is_better=True,
                               seed=seed).scales_inversely


def units_of(task: Task, ev: FamilyEvidence) -> list[Unit]:
    planted = task_label(task)
    label = planted if planted != NO_INVERSE and scales_inversely(ev) else NO_INVERSE
    by_t: dict[Any, list[int]] = {}
    for i, e in enumerate(task.examples):
        by_t.setdefault(e.metadata.get("template"), []).append(i)
    out = []
    for t, idx in sorted(by_t.items(), key=lambda kv: str(kv[0])):
        split = task.examples[idx[0]].metadata.get("split", "train")
        out.append(Unit(task.name, t, split, label, ev, np.array(idx), planted))
    return out


def planted_units(tasks: Sequence[Task], family: Family, cache_dir: Path,
                  progress: bool = True) -> list[Unit]:
    units = []
    for task in tasks:
        ev = family_evidence(task, family, cache_dir=cache_dir / task.name, progress=progress)
        units += units_of(task, ev)
    return units


def unit_matrix(units: Sequence[Unit], augment: int = 0, seed: int = 0, n_boot: int = 300,
                key: str = "behavioural") -> tuple[list[dict], list[str], list[str]]:
    """Feature dicts, labels and unit names; ``augment`` bootstrap copies per unit.
    ``key``: ``behavioural`` (``Unit.label``) or ``planted`` (``Unit.planted``)."""
    rng = np.random.default_rng(seed)
    X, y, names = [], [], []
    for u in units:
        lab = u.label if key == "behavioural" else u.planted
        f, _ = unit_features(u.evidence, u.idx, n_boot=n_boot, seed=seed)
        X.append(f), y.append(lab), names.append(u.name)
        for b in range(augment):
            idx = rng.choice(u.idx, size=len(u.idx), replace=True)
            f, _ = unit_features(u.evidence, idx, n_boot=n_boot, seed=seed + b + 1)
            X.append(f), y.append(lab), names.append(f"{u.name}#b{b}")
    return X, y, names


def confusion(y_true: Sequence[str], y_pred: Sequence[str]) -> list[list[int]]:
    m = np.zeros((len(LABELS), len(LABELS)), dtype=int)
    for t, p in zip(y_true, y_pred):
        m[LABELS.index(t), LABELS.index(p)] += 1
    return m.tolist()


def heldout_validation(units: Sequence[Unit], augment: int = 8, seed: int = 0,
                       key: str = "behavioural") -> dict[str, Any]:
    """Fit on the train-template units, evaluate on the held-out-template units.
    ``key`` labels the training units (the held-out report gives both keys)."""
    train = [u for u in units if u.split == "train"]
    held = [u for u in units if u.split != "train"]
    if not held:
        raise ValueError("no held-out units: planted tasks carry templates split train/heldout")
    Xtr, ytr, _ = unit_matrix(train, augment=augment, seed=seed, key=key)
    if len(set(ytr) - {NO_INVERSE}) < 2:
        raise ValueError(
            f"only {sorted(set(ytr) - {NO_INVERSE})} of the planted causes scale inversely on this "
            "family's training templates; the cause model needs at least two (train the default "
            "organisms, or pass key='planted' to label every planted unit with its cause)")
    clf = CauseClassifier(random_state=seed).fit(Xtr, ytr)
    Xh, yh, names = unit_matrix(held, augment=0, seed=seed)
    proba = clf.predict_proba(Xh)
    pred = list(clf.predict(Xh))
    acc = float(np.mean([p == t for p, t in zip(pred, yh)]))
    controls = [p for p, u in zip(pred, held) if u.planted == NO_INVERSE]
    took = [(p, t) for p, t, u in zip(pred, yh, held) if u.planted != NO_INVERSE and t != NO_INVERSE]
    planted_key = [u.planted for u in held]
    return {
        "accuracy": acc, "n": len(yh), "labels": list(LABELS),
        "confusion": confusion(yh, pred),
        "controls_no_inverse": (float(np.mean([p == NO_INVERSE for p in controls]))
                                if controls else None),
        "cause_accuracy_where_planted_and_inverse": (float(np.mean([p == t for p, t in took]))
                                                     if took else None),
        "n_planted_and_inverse": len(took),
        "accuracy_planted_key": float(np.mean([p == t for p, t in zip(pred, planted_key)])),
        "confusion_planted_key": confusion(planted_key, pred),
        "n_train_units": len(train), "n_train_rows": len(Xtr), "augment": augment,
        "units": [{"unit": n, "true": t, "planted": u.planted, "pred": p,
                   "probabilities": dict(zip(LABELS, map(float, pr)))}
                  for n, t, u, p, pr in zip(names, yh, held, pred, proba)],
    }


def fit_on_units(units: Sequence[Unit], augment: int = 8, seed: int = 0,
                 key: str = "behavioural") -> CauseClassifier:
    X, y, _ = unit_matrix(units, augment=augment, seed=seed, key=key)
    if len(set(y) - {NO_INVERSE}) < 2:  # e.g. a family too small to show the causes
        X, y, _ = unit_matrix(units, augment=augment, seed=seed, key="planted")
    return CauseClassifier(random_state=seed).fit(X, y)


def classify_evidence(clf: CauseClassifier, ev: FamilyEvidence, n_boot: int = 1000,
                      seed: int = 0, notes: Sequence[str] = ()) -> dict[str, Any]:
    """``classification.json`` for one task."""
    f, trend = unit_features(ev, None, n_boot=n_boot, seed=seed)
    proba = clf.predict_proba([f])[0]
    label = str(clf.predict([f])[0])
    from diagnose.plots import display_name

    largest = display_name(ev.models[-1].id)
    evidence = evidence_sentences(f, trend, largest=f"the largest model ({largest})")
    top_cause = LABELS[int(proba.argmax())]
    if label == NO_INVERSE and top_cause != NO_INVERSE:
        evidence.append(f"The trend rule does not call this curve inverse ('{trend['label']}'), "
                        f"so no cause is named, although {_pct(f['p_inverse'])} of the bootstrap "
                        f"replicates are inverse-like (the cause model's probabilities, led by "
                        f"{top_cause}, are shown for reference).")
    drivers = clf.contributions(f, label) if label != NO_INVERSE else []
    if drivers:
        top = ", ".join(f"{n} ({c:+.2f})" for n, c in drivers[:3])
        evidence.append(f"Features that pushed the label most (coefficient x standardized "
                        f"value): {top}.")
    low = [n for n in notes]
    if not any(f.get(f"{v}_present") for v in VIEWS):
        low.append("no counterfactual views")
    evidence += [f"Low evidence: {n}." for n in low]
    return {
        "task": ev.task,
        "trend": {"label": trend["label"], "confidence": trend["confidence"],
                  "label_probabilities": trend.get("label_probabilities")},
        "cause": {"label": label, "probabilities": dict(zip(LABELS, map(float, proba)))},
        "evidence_level": "low" if low else "normal",
        "evidence_notes": low,
        "evidence": evidence,
        "features": f,
        "models": [{"id": m.id, "n_params": m.n_params,
                    "accuracy": float(m.correct.mean())} for m in ev.models],
    }


# -- the default classifier and the two entry points ---------------------------------------

def organisms_units(cfg: Any = None, family_dir: Path | None = None,
                    progress: bool = True) -> tuple[list[Unit], Path]:
    """Units of every planted and control task on the organisms family (built if needed)."""
    from diagnose.families import load_family_manifest
    from experiments.organisms.config import OrganismConfig
    from experiments.organisms.family import build_family
    from experiments.organisms.planted import planted_tasks

    if family_dir is not None and cfg is None:
        # the planted tasks come from the family's own world (its seed), not the default's
        from experiments.organisms.family import load_config

        cfg = load_config(family_dir)
    cfg = cfg or OrganismConfig.default()
    family_dir = Path(family_dir) if family_dir else build_family(cfg, progress=progress)
    family = load_family_manifest(family_dir)
    tasks = planted_tasks(cfg, "all", controls=True)
    return planted_units(tasks, family, family_dir / "evidence", progress=progress), family_dir


def default_classifier(cfg: Any = None, family_dir: Path | None = None, progress: bool = True,
                       refit: bool = False) -> CauseClassifier:
    """The classifier fitted on every planted unit of the organisms, cached as JSON in the
    family directory (``classifier.json``)."""
    units, family_dir = organisms_units(cfg, family_dir, progress)
    path = family_dir / "classifier.json"
    if path.is_file() and not refit:
        try:
            return CauseClassifier.load(path)
        except (ValueError, KeyError):
            pass  # fitted on another feature set: refit below
    clf = fit_on_units(units)
    clf.save(path)
    return clf


def evidence_notes(task: Task, ev: FamilyEvidence | None, tokenizer: Any = None) -> list[str]:
    """Reasons a label rests on weak evidence, each one measured."""
    notes = []
    if tokenizer is not None and getattr(tokenizer, "unk_token_id", None) is not None:
        ids = tokenizer([e.prompt for e in task.examples], add_special_tokens=False)["input_ids"]
        total = sum(len(x) for x in ids)
        unk = sum(sum(t == tokenizer.unk_token_id for t in x) for x in ids)
        if total and unk / total > 0.1:
            notes.append(f"{100 * unk / total:.0f}% of the prompt tokens are unknown to the "
                         "models' tokenizer: the models do not speak this task's language")
    n_cls = task.n_classes
    if n_cls and ev is not None:
        from diagnose.metrics import bootstrap_ci

        chance = 1.0 / n_cls
        cis = [bootstrap_ci(m.correct.astype(float)) for m in ev.models]
        if all(lo <= chance <= hi for lo, hi in cis):
            notes.append(f"every model is within its 95% interval of chance ({chance:.2f})")
    return notes


def classify_task(task: Task, family: Family, out_dir: str | Path,
                  clf: CauseClassifier | None = None, progress: bool = True, seed: int = 0,
                  device: str | None = None, dtype: str | None = None) -> dict[str, Any]:
    """Label ``task`` over ``family``; write ``out_dir/classification.json``."""
    from transformers import AutoTokenizer

    from experiments.isp_adapters import adapt

    if len(family.models) < 2:
        raise ValueError("a scaling trend needs at least two models")
    adapted = adapt(task)
    task = adapted.task
    out = Path(out_dir)
    if task.format != "classification":
        result = _trend_only(task, family, seed, progress, device, dtype)
        result.update(views=list(task.view_names), adapter=adapted.adapter)
        store.write_json(out / "classification.json", result)
        return result
    clf = clf or default_classifier(progress=progress)
    ev = family_evidence(task, family, cache_dir=out / "evidence", seed=seed, device=device,
                         dtype=dtype, progress=progress)
    tok = AutoTokenizer.from_pretrained(family.models[0].source)
    result = classify_evidence(clf, ev, seed=seed, notes=evidence_notes(task, ev, tok))
    result["views"] = list(task.view_names)
    result["adapter"] = adapted.adapter
    if adapted.adapter:
        result["isp_cause"] = task.metadata.get("isp_cause")
    store.write_json(out / "classification.json", result)
    return result


def _trend_only(task: Task, family: Family, seed: int, progress: bool, device: str | None,
                dtype: str | None) -> dict[str, Any]:
    """A sequence_prob or logodds task: the trend of its ISP loss, and no cause, since the
    cause model reads which class each model picks."""
    from diagnose.families import free_model, load_model
    from diagnose.scoring import score_task
    from diagnose.trends import INVERSE_LIKE, trend_from_task_scores

    scores = []
    for spec in family.models:
        model = load_model(spec, device=device, dtype=dtype)
        try:
            scores.append(score_task(model, task))
        finally:
            free_model(model)
    tr = trend_from_task_scores(scores, seed=seed)["loss"]
    d = tr.to_dict()
    q = float(sum(d["label_probabilities"].get(k, 0.0)
                  for k in INVERSE_LIKE))
    label = NO_INVERSE if q < 0.5 else None
    from transformers import AutoTokenizer

    note = (f"{task.format} task: the cause model reads class choices, so only the trend of "
            "the ISP loss is reported")
    notes = [note] + evidence_notes(task, None,
                                    AutoTokenizer.from_pretrained(family.models[0].source))
    return {
        "task": task.name,
        "trend": {"label": d["label"], "confidence": d["confidence"], "metric": "loss",
                  "label_probabilities": d["label_probabilities"]},
        "cause": {"label": label, "probabilities": {NO_INVERSE: 1.0 - q}},
        "evidence_level": "low", "evidence_notes": notes,
        "evidence": [d.get("reason", "")] + [f"Low evidence: {n}." for n in notes],
        "models": [{"id": s.model_id, "n_params": s.n_params,
                    "loss": float(np.mean(s.loss))} for s in scores],
    }


def format_classification(r: dict[str, Any]) -> str:
    probs = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["cause"]["probabilities"].items(),
                                                         key=lambda kv: -kv[1]))
    if r["cause"]["label"] is None:
        probs += "; cause not determinable"
    lines = [f"{r['task']}: trend {r['trend']['label']} (confidence {r['trend']['confidence']:.2f});"
             f" cause {r['cause']['label']} [{probs}]; evidence {r['evidence_level']}"]
    lines += [f"  - {s}" for s in r["evidence"]]
    return "\n".join(lines)


def format_heldout(h: dict[str, Any]) -> str:
    short = ["prior", "imitation", "distractor", "few-shot", "no-inverse"]
    lines = [f"held-out accuracy {h['accuracy']:.3f} on {h['n']} units "
             f"(trained on {h['n_train_units']} units x {h['augment'] + 1} resamples)",
             "true \\ predicted".ljust(18) + "".join(f"{s:>11}" for s in short)]
    for s, row in zip(short, h["confusion"]):
        lines.append(f"{s:<18}" + "".join(f"{v:>11}" for v in row))
    if h.get("controls_no_inverse") is not None:
        lines.append(f"controls labelled no_inverse_scaling: {h['controls_no_inverse']:.2f}")
    if h.get("cause_accuracy_where_planted_and_inverse") is not None:
        lines.append(f"cause right on planted units that scale inversely: "
                     f"{h['cause_accuracy_where_planted_and_inverse']:.2f} "
                     f"(n={h['n_planted_and_inverse']})")
    if h.get("accuracy_planted_key") is not None:
        lines.append(f"accuracy against the planted key (every planted unit = its cause, "
                     f"whatever the models did): {h['accuracy_planted_key']:.3f}")
    return "\n".join(lines)
