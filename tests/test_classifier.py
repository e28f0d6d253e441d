"""Features, the cause classifier, and the classify stage."""

import json

import numpy as np
import pytest

from diagnose.classifier import CAUSES, LABELS, NO_INVERSE, CauseClassifier
from diagnose.evidence import FamilyEvidence, ModelEvidence
from diagnose.features import VIEWS, feature_names, unit_features


def _model(n, correct, choice, view_choice, view_correct):
    return ModelEvidence(id=f"m{n}", n_params=n, n_layers=2, choice=np.array(choice),
                         correct=np.array(correct, bool), tempting=np.ones(len(choice), int),
                         view_choice={"prior": np.array(view_choice)},
                         view_correct={"prior": np.array(view_correct, bool)})


def test_features_by_hand():
    # 4 examples, answer 0 everywhere; the prior view's answer is the tempting class 1
    small = _model(1_000, [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0])
    large = _model(100_000, [1, 0, 0, 0], [0, 1, 1, 0], [1, 1, 0, 1], [1, 1, 0, 1])
    ev = FamilyEvidence("t", ["a", "b", "c", "d"], ("prior",), [small, large])
    f, trend = unit_features(ev, n_boot=50)
    assert f["acc_small"] == 1.0 and f["acc_large"] == 0.25 and f["drop_large"] == 0.75
    assert f["prior_acc_large"] == 0.75
    assert f["prior_acc_slope"] == pytest.approx((0.75 - 0.25) / 2)  # per decade
    # wrong on b, c, d: main choices 1, 1, 0 vs prior choices 1, 0, 1 -> 1 of 3 agree
    assert f["prior_agree_large"] == pytest.approx(1 / 3)
    assert f["prior_present"] == 1.0 and f["easy_present"] == 0.0
    assert np.isnan(f["easy_acc_large"]) and np.isnan(f["commit_large"])
    assert trend["label"] in ("inverse", "flat")
    # a subset is features of that subset only
    f2, _ = unit_features(ev, np.array([0, 1]), n_boot=50)
    assert f2["acc_large"] == 0.5


def _signature(cause, rng):
    """Synthetic feature rows with each cause's signature plus noise."""
    f = {k: float("nan") for k in feature_names()}
    f.update(n_models=4, log10_span=1.5, acc_small=0.6, acc_large=0.3, acc_best_smaller=0.9,
             drop_large=0.6, p_inverse=1.0, trend_confidence=0.95,
             commit_large=rng.uniform(0.4, 0.8), commit_slope=rng.normal(0, 0.1),
             overwrite_large=rng.uniform(0, 0.3), know_gap_large=rng.normal(0.05, 0.05),
             know_gap_slope=rng.normal(0, 0.05))
    for v in VIEWS:
        f[f"{v}_present"] = 0.0
    noise = lambda: rng.normal(0, 0.05)  # noqa: E731
    if cause == "strong_prior":
        f.update(prior_present=1.0, prior_acc_large=0.9 + noise(), prior_acc_slope=0.3 + noise(),
                 prior_agree_large=0.95 + noise(), prior_agree_slope=0.2 + noise())
    elif cause == "distractor_task":
        f.update(easy_present=1.0, easy_acc_large=0.9 + noise(), easy_acc_slope=0.3 + noise(),
                 easy_agree_large=0.9 + noise(), easy_agree_slope=0.2 + noise())
    elif cause == "spurious_few_shot":
        f.update(zero_shot_present=1.0, balanced_present=1.0, zero_shot_gap_large=0.4 + noise(),
                 zero_shot_gap_slope=0.2 + noise(), balanced_gap_large=0.4 + noise(),
                 balanced_gap_slope=0.2 + noise(), zero_shot_acc_large=0.8, balanced_acc_large=0.8,
                 zero_shot_agree_large=0.1, balanced_agree_large=0.1)
    elif cause == "unwanted_imitation":
        f.update(human_present=1.0, human_acc_large=0.9 + noise(), human_acc_slope=0.3 + noise(),
                 human_agree_large=0.9 + noise(), human_agree_slope=0.2 + noise())
    elif cause == NO_INVERSE:
        f.update(p_inverse=rng.uniform(0, 0.3), drop_large=rng.normal(0, 0.02))
    return f


def test_classifier_learns_signatures_and_gates_flat_tasks():
    rng = np.random.default_rng(0)
    train = [(c, _signature(c, rng)) for c in LABELS for _ in range(12)]
    test = [(c, _signature(c, rng)) for c in LABELS for _ in range(12)]
    clf = CauseClassifier().fit([f for _, f in train], [c for c, _ in train])
    pred = clf.predict([f for _, f in test])
    truth = np.array([c for c, _ in test])
    assert (pred == truth).mean() >= 0.95
    assert all(p == NO_INVERSE for p, t in zip(pred, truth) if t == NO_INVERSE)
    proba = clf.predict_proba([f for _, f in test])
    assert np.allclose(proba.sum(1), 1.0) and list(clf.classes_) == list(LABELS)
    # the explanation names the prior-view features for a strong-prior row
    f = test[0][1]
    assert test[0][0] == "strong_prior"
    top = [n for n, _ in clf.contributions(f, "strong_prior")[:4]]
    assert any(n.startswith("prior_") for n in top)
    # a curve the trend rule calls flat gets no cause, even when most replicates lean inverse
    leaning = dict(f, p_inverse=0.7, trend_inverse_like=0.0)
    assert clf.predict_proba([leaning])[0].argmax() == LABELS.index("strong_prior")
    assert clf.predict([leaning])[0] == NO_INVERSE
    assert clf.predict([dict(leaning, trend_inverse_like=1.0)])[0] == "strong_prior"


def test_classifier_json_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    rows = [(c, _signature(c, rng)) for c in LABELS for _ in range(6)]
    clf = CauseClassifier().fit([f for _, f in rows], [c for c, _ in rows])
    clf.save(tmp_path / "clf.json")
    json.loads((tmp_path / "clf.json").read_text())  # plain JSON, no pickle
    again = CauseClassifier.load(tmp_path / "clf.json")
    X = [f for _, f in rows]
    assert np.array_equal(clf.predict_proba(X), again.predict_proba(X))


def test_fit_rejects_unknown_labels():
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="unknown labels"):
        CauseClassifier().fit([_signature("strong_prior", rng)] * 2, ["strong_prior", "nope"])


def test_heldout_validation_runs_on_tiny_organisms(tiny_organisms, tmp_path):
    """Mechanics on the tiny preset (its models are too small to show the causes)."""
    from diagnose.classify_stage import (classify_evidence, heldout_validation, planted_units,
                                         scales_inversely)
    from diagnose.families import load_family_manifest
    from experiments.organisms.planted import planted_tasks

    cfg, fdir = tiny_organisms
    family = load_family_manifest(fdir)
    tasks = planted_tasks(cfg, "all", controls=True)
    units = planted_units(tasks, family, tmp_path / "ev", progress=False)
    assert {u.split for u in units} == {"train", "heldout"}
    assert {u.planted for u in units} >= set(CAUSES) | {NO_INVERSE}
    assert {u.label for u in units} <= set(LABELS)
    # the behavioural key labels a planted unit with its cause only if its task scales inversely
    for u in units:
        assert u.label in (u.planted, NO_INVERSE)
        assert (u.label == u.planted) == (u.planted == NO_INVERSE or scales_inversely(u.evidence))
    res = heldout_validation(units, augment=1, key="planted")
    assert res["n"] == sum(u.split == "heldout" for u in units)
    assert np.array(res["confusion"]).shape == (5, 5) and np.sum(res["confusion"]) == res["n"]
    assert 0.0 <= res["accuracy"] <= 1.0
    # evidence is cached: a second pass loads it instead of running the models
    from diagnose import evidence as evmod

    def boom(*a, **k):
        raise AssertionError("evidence recomputed")

    orig = evmod.load_model
    evmod.load_model = boom
    try:
        again = planted_units(tasks[:1], family, tmp_path / "ev", progress=False)
    finally:
        evmod.load_model = orig
    assert len(again) >= 1
    clf = CauseClassifier().fit(*_xy(units))
    out = classify_evidence(clf, units[0].evidence)
    assert out["cause"]["label"] in LABELS and out["evidence"]
    assert set(out["cause"]["probabilities"]) == set(LABELS)

    # the command, on a planted task file and on a real ISP file
    from diagnose import cli
    from diagnose.loaders import save_task_jsonl
    from tests.conftest import SHARED_ISP

    clf.save(tmp_path / "clf.json")
    task_file = save_task_jsonl(tasks[0], tmp_path / f"{tasks[0].name}.jsonl")
    files = [task_file] + ([SHARED_ISP / "memo-trap.jsonl"] if SHARED_ISP.is_dir() else [])
    for i, fpath in enumerate(files):
        d = tmp_path / f"cls{i}"
        assert cli.main(["classify", "--task", str(fpath), "--family", str(fdir), "--classifier",
                         str(tmp_path / "clf.json"), "--out", str(d), "--no-progress"]) == 0
        r = json.loads((d / "classification.json").read_text())
        assert {"task", "trend", "cause", "evidence"} <= set(r)
        assert {"label", "confidence"} <= set(r["trend"])
        assert {"label", "probabilities"} <= set(r["cause"])
        assert abs(sum(r["cause"]["probabilities"].values()) - 1) < 1e-9
    if len(files) > 1:  # English on organisms: honest about it
        assert r["evidence_level"] == "low" and r["adapter"] == "memo-trap"
        assert any("unknown to the models' tokenizer" in n for n in r["evidence_notes"])
        assert r["views"] == ["prior"]


def _xy(units):
    from diagnose.classify_stage import unit_matrix

    X, y, _ = unit_matrix(units, key="planted")
    return X, y


def test_sequence_prob_task_gets_its_loss_trend_and_no_cause(tiny_family_dirs, tmp_path):
    from diagnose import cli

    rows = [{"prompt": f"Repeat the input.\n\nInput: {w} there you are.\nOutput:",
             "completion": " Ignore"} for w in ("well,", "so,", "then,", "and", "but")]
    p = tmp_path / "prompt-injection.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rng = np.random.default_rng(3)
    sig = [(c, _signature(c, rng)) for c in LABELS for _ in range(4)]
    CauseClassifier().fit([f for _, f in sig], [c for c, _ in sig]).save(tmp_path / "c.json")
    args = ["classify", "--task", str(p), "--classifier", str(tmp_path / "c.json"),
            "--out", str(tmp_path / "o"), "--no-progress"]
    for d in tiny_family_dirs:
        args += ["--model", str(d)]
    assert cli.main(args) == 0
    r = json.loads((tmp_path / "o" / "classification.json").read_text())
    assert r["trend"]["metric"] == "loss" and r["evidence_level"] == "low"
    assert r["cause"]["label"] in (None, NO_INVERSE)
    assert r["adapter"] == "prompt-injection" and r["views"] == ["prior"]
