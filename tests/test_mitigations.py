"""Mitigations (issue 6): the PAD/CAD kernel, a = 0 parity with plain scoring, few-shot
prompts, CoT prefixes, parameter selection on held-out examples, `diagnose mitigate`."""

import json

import numpy as np
import pytest
import torch

from diagnose import cli, runner
from diagnose.families import ModelSpec, load_model
from diagnose.mitigations import (
    DEMO_SEPARATOR,
    cad_logits,
    contrastive_generate,
    contrastive_logits,
    few_shot_prompt,
    few_shot_task,
    greedy_generate,
    pad_logits,
    score_contrastive,
)
from diagnose.mitigations.prompting import (
    demo_indices,
    generated_cot_prompts,
    given_cot_prompts,
    resolve_cot_source,
)
from diagnose.mitigations.stage import (
    MitigationConfig,
    Selection,
    _choose_and_report,
    choose_param,
    selection_split,
    strategy_plan,
)
from diagnose.scoring import TaskScores, build_requests, score_task
from diagnose.tasks import Example, Task, View
from diagnose.tokenization import encode_prompt

# --------------------------------------------------------------------------- fixtures

PROMPTS = [
    ("Write a quote that ends in the word heavy: Absence makes the heart grow",
     "Absence makes the heart grow", [" heavy.", " fonder."], 0, 1),
    ("Write a quote that ends in the word dog: Actions speak louder than",
     "Actions speak louder than", [" words.", " dog."], 1, 0),
    ("Capitalize each sentence. Input: well, there you are. Output:",
     "Input: well, there you are. Output:", [" Well, there you are.", " well, there you are."], 0, 1),
    ("Write a quote that ends in the word fox: Accidents will happen in the best",
     "Accidents will happen in the best", [" families.", " fox."], 1, 0),
    ("Question: Is the conclusion correct?\n\nAnswer:", "Answer:", [" No", " Yes"], 1, 0),
    ("Write a quote that ends in the word lazy: The quick brown fox jumps over the",
     "The quick brown fox jumps over the", [" lazy dog.", " dog."], 0, 1),
]


def _task(n_rep=1, prior=True, split=True):
    ex = []
    for r in range(n_rep):
        for i, (p, pr, cls, a, pa) in enumerate(PROMPTS):
            j = r * len(PROMPTS) + i
            ex.append(Example(id=f"t-{j}", prompt=p, classes=tuple(cls), answer_index=a,
                              views={"prior": View(pr, pa)} if prior else {},
                              metadata={"split": "train" if j % 2 == 0 else "heldout"}
                              if split else {}))
    return Task(name="mini", format="classification", examples=tuple(ex))


@pytest.fixture(scope="module")
def neox(tiny_dirs):
    return load_model(ModelSpec(id="neox", path=str(tiny_dirs["neox"])), device="cpu")


@pytest.fixture(scope="module")
def gpt2(tiny_dirs):
    return load_model(ModelSpec(id="gpt2", path=str(tiny_dirs["gpt2"])), device="cpu")


# --------------------------------------------------------------------------- the kernel


def test_kernel_matches_both_formulas_on_a_hand_computed_case():
    strong = torch.tensor([2.0, 1.0, 0.0])
    weak = torch.tensor([1.0, 2.0, 0.0])
    # a = 1: (1 + 1) * [2, 1, 0] - [1, 2, 0] = [3, 0, 0]; PAD: [2,1,0] + ([2,1,0] - [1,2,0])
    for f in (contrastive_logits, cad_logits, pad_logits):
        assert torch.allclose(f(strong, weak, 1.0), torch.tensor([3.0, 0.0, 0.0]))
        assert torch.allclose(f(strong, weak, 0.5), torch.tensor([2.5, 0.5, 0.0]))
        assert torch.equal(f(strong, weak, 0.0), strong)
    lp = torch.log_softmax(contrastive_logits(strong, weak, 1.0), -1)
    z = np.log(np.exp(3) + 2)
    assert np.allclose(lp.numpy(), [3 - z, -z, -z])
    # the contrast moves mass away from what the weak prompt prefers (token 1)
    base = torch.log_softmax(strong, -1)
    assert lp[1] < base[1] and lp[0] > base[0]


def _manual_contrastive(model, task, weak_prompts, alphas):
    """Independent path: the model's own full-sequence logits, combined per class token."""
    reqs, keys, _ = build_requests(task, model)
    out = np.full((len(alphas), len(task.examples), 2), np.nan)
    for r, (i, _, k) in zip(reqs, keys):
        wctx = encode_prompt(model.tokenizer, weak_prompts[i])
        cont = list(r.continuation)
        with torch.no_grad():
            ls = model.bridge(torch.tensor([list(r.context) + cont])).float()[0]
            lw = model.bridge(torch.tensor([wctx + cont])).float()[0]
        for j, a in enumerate(alphas):
            total = 0.0
            for t, tok in enumerate(cont):
                comb = (1 + a) * ls[len(r.context) - 1 + t] - a * lw[len(wctx) - 1 + t]
                total += torch.log_softmax(comb, -1)[tok].item()
            out[j, i, k] = total
    return out


def test_contrastive_class_scores_match_token_by_token_formula(neox):
    task = _task()
    reqs, _, _ = build_requests(task, neox)
    assert max(len(r.continuation) for r in reqs) >= 3  # multi-token classes are exercised
    weak = [e.views["prior"].prompt for e in task.examples]
    alphas = [0.0, 1.5]
    got = score_contrastive(neox, task, weak, alphas)
    want = _manual_contrastive(neox, task, weak, alphas)
    for s, w in zip(got, want):
        assert np.allclose(s.class_scores, w, atol=2e-4)
    assert not np.allclose(got[0].class_scores, got[1].class_scores)


@pytest.mark.parametrize("which", ["neox", "gpt2"])
def test_a_zero_reproduces_plain_scoring_exactly(which, request):
    model = request.getfixturevalue(which)
    task = _task()
    plain = score_task(model, task)
    weak = [e.views["prior"].prompt for e in task.examples]
    zero = score_contrastive(model, task, weak, [0.0, 2.0])[0]
    np.testing.assert_array_equal(zero.class_scores, plain.class_scores)
    np.testing.assert_array_equal(zero.loss, plain.loss)
    np.testing.assert_array_equal(zero.class_mass, plain.class_mass)
    np.testing.assert_array_equal(zero.chosen, plain.chosen)


@pytest.mark.parametrize("kind", ["neox", "gpt2"])
def test_batched_cached_greedy_equals_one_prompt_at_a_time(kind, request):
    """Prompts of different lengths share a left-padded batch and a KV cache: each
    continuation equals an argmax loop over the model's full logits, one prompt alone."""
    from diagnose.mitigations.contrastive import kv_cache_ok

    model = request.getfixturevalue(kind)
    if kind == "neox":  # the cached path is the one exercised here (GPT-2's falls back)
        assert kv_cache_ok(model)
    prompts = [p for p, *_ in PROMPTS]
    got = greedy_generate(model, prompts, max_new_tokens=5)
    for p, text, ids in zip(prompts, got.texts, got.token_ids):
        ctx, want = encode_prompt(model.tokenizer, p), []
        with torch.no_grad():
            for _ in range(5):
                nxt = int(model.bridge(torch.tensor([ctx + want]))[0, -1].argmax())
                if nxt == model.tokenizer.eos_token_id:
                    break
                want.append(nxt)
        assert ids == want and text == model.tokenizer.decode(want)


def test_contrastive_generation(neox):
    prompt, weak = PROMPTS[0][0], PROMPTS[0][1]
    # a = 0 is plain greedy decoding: check against an argmax loop over the model's logits
    ids = encode_prompt(neox.tokenizer, prompt)
    want = []
    with torch.no_grad():
        for _ in range(4):
            nxt = int(neox.bridge(torch.tensor([ids + want]))[0, -1].argmax())
            if nxt == neox.tokenizer.eos_token_id:
                break
            want.append(nxt)
    assert contrastive_generate(neox, prompt, weak, 0.0, max_new_tokens=4) == \
        neox.tokenizer.decode(want)
    # a > 0 uses the combined logits: the first token is the argmax of (1+a)Ls - aLw
    a = 3.0
    wids = encode_prompt(neox.tokenizer, weak)
    with torch.no_grad():
        ls = neox.bridge(torch.tensor([ids]))[0, -1].float()
        lw = neox.bridge(torch.tensor([wids]))[0, -1].float()
    first = int(((1 + a) * ls - a * lw).argmax())
    g = greedy_generate(neox, [prompt], 1, [weak], a)
    assert g.token_ids[0][:1] == ([first] if first != neox.tokenizer.eos_token_id else [])


# --------------------------------------------------------------------------- prompting


def test_few_shot_prompts_k_demos_three_newlines_no_query_seeded():
    task = _task(n_rep=2)
    for i in range(len(task)):
        for k in (1, 3):
            p = few_shot_prompt(task, i, k, seed=7)
            parts = p.split(DEMO_SEPARATOR)
            assert len(parts) == k + 1 and parts[-1] == task.examples[i].prompt
            idx = demo_indices(task, i, k, seed=7)
            assert i not in idx and len(set(idx)) == k
            for part, j in zip(parts[:-1], idx):
                e = task.examples[j]
                assert part == e.prompt + e.classes[e.answer_index]  # the correct answer
                assert e.prompt != task.examples[i].prompt           # not the query itself
        assert few_shot_prompt(task, i, 0) == task.examples[i].prompt
        assert few_shot_prompt(task, i, 3, seed=7) == few_shot_prompt(task, i, 3, seed=7)
        # nested: the 1-shot demonstration is the first of the 3-shot ones
        assert demo_indices(task, i, 1, 7) == demo_indices(task, i, 3, 7)[:1]
    assert any(few_shot_prompt(task, i, 3, 7) != few_shot_prompt(task, i, 3, 8)
               for i in range(len(task)))
    ft = few_shot_task(task, 3, seed=7)
    assert [e.prompt for e in ft.examples] == [few_shot_prompt(task, i, 3, 7)
                                               for i in range(len(task))]
    assert [e.answer_index for e in ft.examples] == [e.answer_index for e in task.examples]


def test_cot_given_and_generated(neox):
    task = _task()
    assert resolve_cot_source(task, "auto") == "generated"
    given = Task("g", "classification", tuple(
        Example(id=e.id, prompt=e.prompt + " ", classes=e.classes, answer_index=e.answer_index,
                metadata={"cot": "think : the word ;"}) for e in task.examples))
    assert resolve_cot_source(given, "auto") == "given"
    c = given_cot_prompts(given)
    assert c.source == "given"
    assert c.prompts[0] == task.examples[0].prompt + " think : the word ;"
    gen = generated_cot_prompts(neox, task, trigger="think :", stop=";", max_new_tokens=3)
    assert gen.source == "generated" and len(gen.prompts) == len(task)
    for p, e, r in zip(gen.prompts, task.examples, gen.reasoning):
        assert p.startswith(e.prompt + " think :") and p.rstrip().endswith(";")
        assert r.startswith("think :")


# --------------------------------------------------------------------------- selection


def test_selection_split_disjoint_by_metadata_or_seeded_half():
    task = _task(n_rep=2)
    s = selection_split(task)
    assert set(s.select).isdisjoint(s.evaluate)
    assert sorted([*s.select, *s.evaluate]) == list(range(len(task)))
    assert all(task.examples[i].metadata["split"] == "train" for i in s.select)
    assert "split" in s.how
    h = selection_split(_task(n_rep=2, split=False), seed=3)
    assert set(h.select).isdisjoint(h.evaluate) and len(h.select) == len(task) // 2
    assert "half" in h.how
    h2 = selection_split(_task(n_rep=2, split=False), seed=3)
    assert np.array_equal(h.select, h2.select)


def test_parameter_is_never_chosen_on_evaluated_examples():
    rng = np.random.default_rng(0)
    n, p = 20, 4
    sel = np.arange(0, n, 2)
    ev = np.arange(1, n, 2)
    correct = np.zeros((p, n), dtype=bool)
    correct[1, sel] = True   # value 1 is best where the choice is made
    correct[3, ev] = True    # value 3 is best on the evaluated examples
    loss = rng.random((p, n))
    assert choose_param(correct, loss, sel) == 1
    # whatever happens on the evaluated examples, the choice does not move
    for _ in range(20):
        c2, l2 = correct.copy(), loss.copy()
        c2[:, ev] = rng.random((p, len(ev))) < 0.5
        l2[:, ev] = rng.random((p, len(ev))) * 100
        assert choose_param(c2, l2, sel) == 1
    # ties on accuracy go to the lower selection loss, then to the earlier value
    tie = np.ones((3, n), dtype=bool)
    lo = np.ones((3, n))
    lo[2, sel] = 0.5
    assert choose_param(tie, lo, sel) == 2
    assert choose_param(tie, np.ones((3, n)), sel) == 0

    # and the per-model record reports the chosen value's outcomes on `evaluate` only
    def ts(c, lo_):
        return TaskScores("t", "classification", "m", 1, [str(i) for i in range(n)],
                          np.zeros(n, int), None, None, c, lo_, None)
    rec = _choose_and_report("pad", "a", [0, 1, 2, 4], [ts(correct[j], loss[j]) for j in range(p)],
                             Selection(sel, ev, "test"))
    assert rec["chosen"] == 1
    assert rec["correct"] == correct[1, ev].tolist() and len(rec["loss"]) == len(ev)


def test_task_without_prior_view_skips_pad_and_cad_with_a_note():
    run, skipped = strategy_plan(_task(prior=False), MitigationConfig())
    assert run == ["few-shot", "cot"]
    assert {s["name"] for s in skipped} == {"pad", "cad"}
    assert all("'prior' view" in s["reason"] for s in skipped)


def test_auto_weak_view_takes_the_first_view_that_fits_each_strategy():
    """auto: PAD takes prior, else easy, else human; CAD takes prior, else easy, and
    never the human view (it keeps the whole context); an explicit view is kept."""
    from dataclasses import replace

    from diagnose.mitigations.stage import weak_view

    base = _task(prior=True)

    def renamed(name):
        return replace(base, examples=tuple(replace(e, views={name: e.views["prior"]})
                                            for e in base.examples))

    cfg = MitigationConfig()
    assert weak_view(base, cfg, "pad") == weak_view(base, cfg, "cad") == "prior"
    easy = renamed("easy")
    assert weak_view(easy, cfg, "pad") == weak_view(easy, cfg, "cad") == "easy"
    human = renamed("human")
    run, skipped = strategy_plan(human, cfg)
    assert "pad" in run and "cad" not in run and weak_view(human, cfg, "pad") == "human"
    assert [s["name"] for s in skipped] == ["cad"]
    assert weak_view(human, MitigationConfig(cad_view="human"), "cad") == "human"


# --------------------------------------------------------------------------- end to end


def _write_task(path, prior=True):
    rows = []
    for e in _task(n_rep=2, prior=prior).examples:
        r = {"prompt": e.prompt, "classes": list(e.classes), "answer_index": e.answer_index,
             "split": e.metadata["split"]}
        if prior:
            r["views"] = {"prior": {"prompt": e.views["prior"].prompt,
                                    "answer_index": e.views["prior"].answer_index}}
        rows.append(r)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mitigate_cli_end_to_end(tiny_family_dirs, tmp_path, capsys, monkeypatch):
    task = _write_task(tmp_path / "mini-trap.jsonl")
    out = tmp_path / "out"
    small, big = (str(d) for d in tiny_family_dirs)
    argv = ["mitigate", "--task", str(task), "--model", big, "--model", small,
            "--strategy", "pad,cad,few-shot,cot", "--alphas", "0,1,4", "--shots", "0,1",
            "--cot-max-tokens", "2", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    res = json.loads((out / "mitigation.json").read_text())
    assert res["task"] == "mini-trap"
    assert [m["id"] for m in res["models"]] == [small, big]
    assert res["models"][0]["n_params"] < res["models"][1]["n_params"]
    names = [s["name"] for s in res["strategies"]]
    assert names == ["none", "pad", "cad", "few-shot", "cot"]
    sel = res["selection"]
    assert set(sel["select_ids"]).isdisjoint(sel["eval_ids"]) and sel["n_eval"] == 6
    for s in res["strategies"]:
        assert {"name", "param", "accuracy", "ci_low", "ci_high", "trend", "loss"} <= set(s)
        assert len(s["accuracy"]) == len(s["ci_low"]) == len(s["ci_high"]) == 2
        for a, lo, hi in zip(s["accuracy"], s["ci_low"], s["ci_high"]):
            assert lo <= a <= hi
        # the trend is the trend rule applied to the per-model records' evaluation outcomes
        from diagnose.store import slug
        from diagnose.trends import trend_from_outcomes

        recs = [json.loads((out / "models" / slug(m["id"]) / "mitigation.json").read_text())
                ["strategies"][s["name"]] for m in res["models"]]
        outcomes = np.array([r["correct"] for r in recs], dtype=float)
        expect = trend_from_outcomes([m["n_params"] for m in res["models"]], outcomes,
                                     n_boot=res["config"]["n_boot"], seed=res["config"]["seed"],
                                     metric="accuracy")
        assert s["trend"] == expect.label
        assert s["accuracy"] == pytest.approx(outcomes.mean(1).tolist())
        assert s["trend_before"] == res["strategies"][0]["trend"]
    pad = res["strategies"][1]
    assert pad["param"]["name"] == "a" and pad["param"]["grid"] == [0.0, 1.0, 4.0]
    assert all(c in (0.0, 1.0, 4.0) for c in pad["param"]["chosen"])
    assert "split" in pad["param"]["chosen_by"] and pad["weak_view"] == "prior"
    assert len(pad["sweep"][0]["rows"]) == 3
    fs = res["strategies"][3]
    assert fs["param"]["name"] == "k" and all(c in (0, 1) for c in fs["param"]["chosen"])
    cot = res["strategies"][4]
    assert cot["source"] == ["generated", "generated"] and cot["generated"] == [True, True]
    assert len(cot["cannot_use"]) == 2
    assert (out / "mitigation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "mini-trap" in capsys.readouterr().out

    # a rerun with the same inputs reuses every finished model
    first = (out / "mitigation.json").read_text()

    def boom(*a, **k):
        raise AssertionError("a finished model was loaded again")

    monkeypatch.setattr(runner, "load_model", boom)
    assert cli.main(argv) == 0
    assert (out / "mitigation.json").read_text() == first
    monkeypatch.undo()

    # a task without an instruction or a negation: CAD has no x-only prompt and is skipped
    # with a note; PAD falls back to the classes' context-free prior (no_context)
    task2 = tmp_path / "no-prior.jsonl"
    task2.write_text("".join(json.dumps({"prompt": pr, "classes": cls, "answer_index": a,
                                         "split": ["train", "heldout"][j % 2]}) + "\n"
                             for j, (_, pr, cls, a, _) in enumerate(PROMPTS * 2)))
    out2 = tmp_path / "out2"
    assert cli.main(["mitigate", "--task", str(task2), "--model", small, "--model", big,
                     "--strategy", "pad,cad,few-shot", "--shots", "0,1", "--out", str(out2),
                     "--no-progress"]) == 0
    res2 = json.loads((out2 / "mitigation.json").read_text())
    assert [s["name"] for s in res2["strategies"]] == ["none", "pad", "few-shot"]
    assert res2["strategies"][1]["weak_view"] == "no_context"
    assert res2["skipped"][0]["name"] == "cad" and "prior" in res2["skipped"][0]["reason"]
    assert any("cad skipped" in n for n in res2["notes"])


def test_mitigate_cli_rejects_unknown_strategy(tmp_path, capsys):
    task = _write_task(tmp_path / "t.jsonl")
    rc = cli.main(["mitigate", "--task", str(task), "--model", "x", "--strategy", "pad,beam",
                   "--out", str(tmp_path / "o")])
    assert rc == 2 and "beam" in capsys.readouterr().err
