"""Features, the cause model and its validation across designs, on evidence with a known
mechanism (tests/synthetic.py): the label must follow what the views do, never which
views a task carries."""

import json

import numpy as np
import pytest

from diagnose.causes import CAUSES, NO_INVERSE, UNDETERMINED, UNTESTED
from diagnose.classifier import CLASSES, CauseModel, gate, causes_under_test
from diagnose.classify_stage import TaskUnit, classify, training_rows, validate_designs
from diagnose.evidence import FamilyEvidence, ModelEvidence
from diagnose.features import feature_names, unit_features
from diagnose.trends import INVERSE_LIKE
from tests.synthetic import DEMO_VIEWS, unit

CTX = ("no_context",)
# design A: each cause with its own view; design B crosses view sets with other causes
DESIGNS = {
    "A": {"strong_prior": ("prior",) + CTX, "distractor_task": ("easy",) + CTX,
          "spurious_few_shot": DEMO_VIEWS + CTX, "unwanted_imitation": ("human",) + CTX},
    "B": {"strong_prior": ("prior",) + DEMO_VIEWS + CTX, "distractor_task": ("easy", "human") + CTX,
          "spurious_few_shot": DEMO_VIEWS + ("easy",) + CTX,
          "unwanted_imitation": ("human", "prior") + CTX},
}


def _units(seed=0):
    units = []
    for d, spec in DESIGNS.items():
        for k, (cause, views) in enumerate(spec.items()):
            s = seed * 100 + 10 * k + (d == "B")
            units.append(TaskUnit(f"{d}-{cause}", f"{cause}-{d}", cause, False,
                                  unit(cause, views, seed=s, name=f"{d}-{cause}")))
            units.append(TaskUnit(f"{d}-ctrl-{cause}", f"{cause}-{d}", NO_INVERSE, True,
                                  unit(None, views, seed=s + 5, name=f"{d}-ctrl-{cause}")))
    return units


def _ev(correct_small, correct_large, choice_large, view_choice_large):
    def m(size, correct, choice, vc):
        return ModelEvidence(id=str(size), n_params=size, n_layers=2, answer=np.zeros(4, int),
                             choice=np.array(choice), correct=np.array(correct, bool),
                             scored=np.ones(4, bool), tempting=np.ones(4, int),
                             view_choice={"prior": np.array(vc)}, view_own={})
    return FamilyEvidence("t", list("abcd"), ("prior",),
                          [m(1_000, correct_small, [0, 0, 0, 0], [1, 0, 0, 0]),
                           m(100_000, correct_large, choice_large, view_choice_large)])


def test_features_by_hand():
    # the large model answers 0, 1, 1, 1 (wrong on b, c, d); under the prior view it
    # answers 1, 1, 0, 1: tempting on 3 of 4, right on 1, the same answer on 2 of 4
    ev = _ev([1, 1, 1, 1], [1, 0, 0, 0], [0, 1, 1, 1], [1, 1, 0, 1])
    f, trend = unit_features(ev, n_boot=50)
    assert f["acc_small"] == 1.0 and f["acc_large"] == 0.25 and f["drop_large"] == 0.75
    assert f["prior_tempt_large"] == 0.75
    assert f["prior_tempt_slope"] == pytest.approx((0.75 - 0.25) / 2)   # per decade
    assert f["prior_acc_large"] == 0.25                                  # view right on 'c' only
    assert f["prior_follow_large"] == 0.5                                # same answer on b, d
    assert f["prior_follow_slope"] == pytest.approx((0.5 - 0.75) / 2)
    assert np.isnan(f["easy_tempt_large"]) and np.isnan(f["commit_large"])
    # a subset is features of that subset only
    f2, _ = unit_features(ev, np.array([0, 1]), n_boot=50)
    assert f2["acc_large"] == 0.5


def test_no_feature_says_whether_a_view_exists():
    assert not [n for n in feature_names() if "present" in n]
    # two tasks that differ only in carrying an inert extra view give the same features
    # for everything else
    import copy

    a = unit("strong_prior", ("prior",) + CTX, seed=3)
    b = copy.deepcopy(a)
    b.views = b.views + ("easy",)
    for m in b.models:
        m.view_choice["easy"] = m.choice.copy()
    fa, _ = unit_features(a, n_boot=50)
    fb, _ = unit_features(b, n_boot=50)
    for k in fa:
        if not k.startswith("easy_"):
            assert fa[k] == pytest.approx(fb[k], nan_ok=True), k


def _fit(design="A", seed=0):
    units = [u for u in _units(seed) if u.design.endswith(design)]
    X, y, _ = training_rows(units, augment=6, seed=seed)
    return CauseModel(random_state=seed).fit(X, y)


def test_cause_model_transfers_to_the_other_design_and_is_consistent():
    model = _fit("A")
    assert list(model.classes_) == list(CLASSES) and len(CLASSES) == len(CAUSES) + 1
    for cause, views in DESIGNS["B"].items():
        f, _ = unit_features(unit(cause, views, seed=77), n_boot=50)
        proba = model.predict_proba([f])[0]
        assert proba.sum() == pytest.approx(1.0)
        assert model.predict([f])[0] == CLASSES[int(proba.argmax())] == cause, (cause, proba)


def test_untested_causes_are_never_the_label_and_inert_views_do_not_move_it():
    # fitted on design B, where strong-prior tasks carry demonstrations that explain
    # nothing: the few-shot test has seen inert demonstrations on an inverse task
    model = _fit("B")
    f, _ = unit_features(unit("strong_prior", ("prior",) + CTX, seed=5), n_boot=50)
    assert model.predict([f])[0] == "strong_prior"
    t = model.tests([f])[0]
    assert t["strong_prior"] == "supported" and t["spurious_few_shot"] == UNTESTED
    assert np.isnan(model.support([f])[0][CAUSES.index("spurious_few_shot")])
    # the same task with demonstrations whose removal changes nothing: few-shot becomes
    # tested, is not supported, and the label stays
    g, _ = unit_features(unit("strong_prior", ("prior",) + DEMO_VIEWS + CTX, seed=5), n_boot=50)
    assert model.predict([g])[0] == "strong_prior"
    assert model.tests([g])[0]["spurious_few_shot"] == "not_supported"
    # removing the view that tests the cause: nothing tested supports anything
    h = {k: (np.nan if k.startswith("prior_") else v) for k, v in f.items()}
    assert model.predict([h])[0] == UNDETERMINED
    assert model.tests([h])[0]["strong_prior"] != UNTESTED  # no_context still tests it


def test_saved_model_gives_the_same_probabilities(tmp_path):
    model = _fit("A")
    model.save(tmp_path / "c.json", provenance={"x": 1})
    again = CauseModel.load(tmp_path / "c.json")
    X = [unit_features(unit(c, v, seed=9), n_boot=50)[0] for c, v in DESIGNS["B"].items()]
    np.testing.assert_allclose(again.predict_proba(X), model.predict_proba(X))
    d = json.loads((tmp_path / "c.json").read_text())
    d["feature_names"] = d["feature_names"][:-1]
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="another feature set"):
        CauseModel.load(tmp_path / "bad.json")


def test_gate_is_a_rule():
    assert gate({"label": "inverse"}) is None
    assert gate({"label": "u_shaped"}) is None
    assert gate({"label": "flat"}) == NO_INVERSE
    assert gate({"label": "inverse"}, ["every model is at chance"]) == UNDETERMINED


def test_classification_json_says_what_was_tested():
    model = _fit("A")
    ev = unit("distractor_task", ("easy",) + CTX, seed=11)
    views = {"built": ["easy", "no_context"], "not_applicable": {
        "prior": "no leading instruction clause naming exactly one class",
        "human": "only the task can supply it", "zero_shot": "no demonstrations",
        "balanced": "no demonstrations", "shuffled_labels": "no demonstrations"}}
    r = classify(model, ev, views, n_boot=100)
    assert r["cause"]["label"] == "distractor_task" and r["cause"]["decided_by"] == "cause model"
    assert r["tests"]["unwanted_imitation"] == UNTESTED
    assert "only the task can supply it" in r["untested_because"]["unwanted_imitation"]
    assert r["cause"]["support"]["unwanted_imitation"] is None
    flat = classify(model, unit(None, ("easy",) + CTX, seed=12), views, n_boot=100)
    assert flat["cause"]["label"] == NO_INVERSE and flat["cause"]["decided_by"].startswith("gate")


def test_leave_one_design_out_on_synthetic_mechanisms():
    # plus a control that does scale inversely (a planting that failed): it stays in the
    # answer key as no_inverse_scaling, and is named with what it was called
    failed = TaskUnit("B-ctrl-failed", "spurious_few_shot-B", NO_INVERSE, True,
                      unit("spurious_few_shot", DEMO_VIEWS + CTX, seed=91, name="B-ctrl-failed"))
    units = _units(0) + [failed]
    v = validate_designs(units, augment=4, seed=0, n_boot=100)
    assert v["protocol"] == "leave-one-design-out" and v["n"] == len(units)
    assert [f["train_designs"] for f in v["folds"]] == [
        sorted(f"{c}-A" for c in CAUSES), sorted(f"{c}-B" for c in CAUSES)]
    pred = {u["task"]: u["pred"] for u in v["units"]}
    assert v["controls_with_inverse_like_trend"] == {"B-ctrl-failed": pred["B-ctrl-failed"]}
    assert v["units"][-1]["true"] == NO_INVERSE and v["units"][-1]["trend"] in INVERSE_LIKE
    ctrl = [pred[u.task] == NO_INVERSE for u in units if u.control]
    assert v["controls_no_inverse"] == pytest.approx(np.mean(ctrl))
    assert v["accuracy"] >= 0.85 and v["controls_no_inverse"] >= 8 / 9
    assert all(n.split("_")[0] in ("prior", "easy", "zero", "balanced", "shuffled", "no",
                                   "human", "commit", "overwrite", "know") for n in v["features"])
    pa = v["presence_ablation"]
    assert pa["main_model_reads_presence"] is False
    assert pa["label_unchanged_when_a_view_not_in_play_is_removed"] == 1.0
    # the crossed design B defeats a model that reads only which views exist
    assert pa["presence_only"]["accuracy"] < v["accuracy"]
    x = pa["crossings"]
    assert x["tasks"] and all(u["design"].endswith("-B") for u in v["units"] if u["task"] in x["tasks"])
    assert x["accuracy"]["main"] > x["accuracy"]["presence_only"]
    assert set(v["lens_probe_only"]) >= {"accuracy", "confusion", "features"}


def test_tested_reads_the_view_evidence():
    f, _ = unit_features(unit("strong_prior", ("prior",) + CTX, seed=1), n_boot=20)
    assert causes_under_test([f])[0].tolist() == [True, False, False, False]


def test_fit_writes_beside_the_family_it_was_fitted_on(tmp_path, monkeypatch):
    """``classify --fit --organisms-dir F`` saves F/classifier.json (it used to look for the
    default family's directory, and failed when that was not built); ``--out`` wins."""
    from diagnose import classify_stage as cs
    from diagnose import cli

    seen = {}
    monkeypatch.setattr("diagnose.families.load_family_manifest", lambda d: ("family", d))
    monkeypatch.setattr(cs, "planted_units", lambda family=None, **kw: ["units of", family])
    monkeypatch.setattr(cs, "fit_default", lambda units, path=None, seed=0: seen.update(
        units=units, path=path))
    monkeypatch.setattr(cs, "default_classifier_path", lambda: pytest.fail("default family used"))
    fam = tmp_path / "fam"
    assert cli.main(["classify", "--fit", "--organisms-dir", str(fam), "--no-progress"]) == 0
    assert seen == {"units": ["units of", ("family", str(fam))], "path": str(fam / "classifier.json")}
    assert cli.main(["classify", "--fit", "--organisms-dir", str(fam), "--out", str(tmp_path / "o"),
                     "--no-progress"]) == 0
    assert seen["path"] == str(tmp_path / "o" / "classifier.json")
