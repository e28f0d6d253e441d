"""Property tests (hypothesis) for what any released or user task file can throw at the
toolkit: files either load or fail with one line naming the file and line; loaded tasks
either score or skip examples with counts; odd classes go through every stage on a
word-level and a byte-level tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diagnose.loaders import TaskFormatError, load_task
from tests.tinymodels import make_model, make_tokenizer, make_word_tokenizer

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

# JSON values a hand-written or broken task file may hold
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 5), st.floats(allow_nan=False),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) |
                      st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=6)
keys = st.sampled_from(["prompt", "classes", "answer_index", "completion", "other_prompt",
                        "tempting_index", "views", "extra"])
rows = st.dictionaries(keys, values, max_size=6)
lines = st.one_of(rows.map(json.dumps), st.text(max_size=30))


@SETTINGS
@given(st.lists(lines, min_size=0, max_size=6))
def test_any_jsonl_file_loads_or_fails_with_one_line_naming_file_and_line(tmp_path_factory, body):
    path = tmp_path_factory.mktemp("f") / "gen.jsonl"
    path.write_text("\n".join(body))
    try:
        task = load_task(path)
    except TaskFormatError as e:
        msg = str(e)
        assert "\n" not in msg and msg.startswith(str(path))
        assert e.where is None or e.where.startswith("line ")
        return
    assert len(task) >= 1 and task.format in ("classification", "sequence_prob", "logodds")


# ---------------------------------------------------------------------------- scoring

WORDS = ("Answer : yes no maybe the cat sat on mat . , ! ? z1 z2 end with so it is a "
         "Write quote word heavy : fonder").split()
ODD = [" ", ".", " !?", "\nYes", " é→日本", " mat", " yes", "  ", " fonder."]


@pytest.fixture(scope="module")
def tokenizers_and_models(tmp_path_factory):
    """A byte-level (BPE) and a word-level tiny GPT-NeoX, two sizes each."""
    from diagnose.families import family_from_models

    root = tmp_path_factory.mktemp("odd")
    out = {}
    for kind, tok in (("bpe", make_tokenizer()), ("word", make_word_tokenizer(WORDS))):
        dirs = [make_model("neox", root / kind / str(d), d_model=d, n_layers=1, tokenizer=tok,
                           seed=d) for d in (16, 32)]
        out[kind] = family_from_models([str(d) for d in dirs], name=kind)
    return out


prompts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
                  min_size=0, max_size=30)
classes = st.lists(st.one_of(st.sampled_from(ODD), st.text(min_size=1, max_size=8)),
                   min_size=2, max_size=3, unique=True)


@SETTINGS
@given(st.lists(st.tuples(prompts, classes), min_size=1, max_size=4), st.data())
def test_any_loaded_task_scores_or_skips_with_counts(tokenizers_and_models, tmp_path_factory,
                                                     examples, data):
    from diagnose.families import load_model
    from diagnose.scoring import score_task

    path = tmp_path_factory.mktemp("s") / "t.jsonl"
    path.write_text("".join(json.dumps({"prompt": p or "x", "classes": c,
                                        "answer_index": data.draw(st.integers(0, len(c) - 1))})
                            + "\n" for p, c in examples))
    try:
        task = load_task(path)
    except TaskFormatError:
        return  # e.g. a blank prompt: refused with its line, tested above
    for fam in tokenizers_and_models.values():
        model = load_model(fam.models[0], device="cpu")
        s = score_task(model, task)
        summ = s.summary()
        assert summ["n"] + summ["n_unscorable"] == len(task)
        assert np.all(np.isfinite(s.loss[s.scored]))
        assert np.all(s.chosen[~s.scored] == -1) and not s.correct[~s.scored].any()
        if summ["n_unscorable"]:
            assert summ["notes"] and "cannot be scored" in summ["notes"][0]


def _odd_task(path: Path) -> Path:
    rows = []
    for i, c in enumerate(ODD):
        other = " maybe" if c.strip() != "maybe" else " no"
        rows.append({"prompt": "the cat sat on the mat" if c == " mat" else
                     'Write a quote that ends in the word "heavy": so it is a',
                     "classes": [c, other], "answer_index": i % 2, "split": ["train", "heldout"][i % 2]})
    rows += [{"prompt": f"Answer : the cat sat on z{i % 2 + 1}", "classes": [" yes", " no"],
              "answer_index": i % 2, "split": ["train", "heldout"][i % 2]} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("kind", ["bpe", "word"])
def test_odd_classes_go_through_every_stage(tokenizers_and_models, tmp_path, kind):
    """A single space, punctuation only, a leading newline, unicode, a class equal to the
    prompt's last token: through score, probes and mitigations (``diagnose run``), skipped
    and counted on the model whose tokenizer cannot score them."""
    from diagnose.pipeline import RunConfig, run_task

    task = load_task(_odd_task(tmp_path / "odd-classes.jsonl"))
    fam = tokenizers_and_models[kind]
    run = run_task(task, fam, tmp_path / "run", RunConfig(
        classify=False, mitigations=("pad", "cad", "few-shot", "cot"), patch_limit=8,
        mitigate_all=True),
        progress=False)
    skips = [m["n_unscorable"] for m in run["score"]["models"]]
    if kind == "word":  # " " and "  " encode to zero tokens under a whitespace split
        assert all(k >= 2 for k in skips)
        assert any("zero tokens" in n for n in run["score"]["notes"])
    else:
        assert skips == [0, 0]
    probes = json.loads((tmp_path / "run" / "probes" / "probes.json").read_text())
    assert [m["n_unscorable"] for m in probes["models"]] == skips
    mit = run["mitigation"]
    assert {s["name"] for s in mit["strategies"]} >= {"none", "few-shot", "cot"}
    n_eval = mit["selection"]["n_eval"]
    for s in mit["strategies"]:
        assert s["n_compared"] <= n_eval and s["n_compared"] >= n_eval - max(skips)
    assert (tmp_path / "run" / "report.html").is_file()


def test_a_task_no_model_can_score_is_undetermined_not_an_error(tokenizers_and_models, tmp_path):
    """Every example has a class that encodes to zero tokens under a word-level tokenizer:
    no trend, the verdict ``undetermined`` with the reason, every stage still writes."""
    from diagnose.pipeline import RunConfig, run_task

    path = tmp_path / "single-space.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"the cat sat on the {w}", "classes": [" ", " mat"],
                                          "answer_index": 1}) for w in WORDS[:6]) + "\n")
    fam = tokenizers_and_models["word"]
    clf = tmp_path / "none.json"   # the gate decides before any classifier is read
    run = run_task(load_task(path), fam, tmp_path / "run", RunConfig(
        classifier=str(clf), mitigations=("pad",), patch_limit=4), progress=False)
    assert [m["n_unscorable"] for m in run["score"]["models"]] == [6, 6]
    assert run["trend"] == {"accuracy": None, "loss": None}
    c = run["classification"]
    assert c["cause"]["label"] == "undetermined"
    assert any("only 0 examples could be scored" in r for r in c["unreadable"])
    assert (tmp_path / "run" / "report.html").is_file()


def test_a_sequence_prob_task_no_model_can_score_is_undetermined(tokenizers_and_models, tmp_path):
    """The same for a sequence_prob task whose completions encode to zero tokens."""
    from diagnose.pipeline import RunConfig, run_task

    path = tmp_path / "space-completion.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"the cat sat on the {w}", "completion": " "})
                              for w in WORDS[:6]) + "\n")
    run = run_task(load_task(path), tokenizers_and_models["word"], tmp_path / "run",
                   RunConfig(classifier=str(tmp_path / "none.json"), mitigations=()),
                   progress=False)
    assert [m["n_unscorable"] for m in run["score"]["models"]] == [6, 6]
    c = run["classification"]
    assert c["cause"]["label"] == "undetermined" and c["trend"]["label"] is None
    assert any("only 0 examples could be scored" in r for r in c["unreadable"])
