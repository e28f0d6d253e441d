"""Fast tests of the model organisms (tiny preset; behaviour is not asserted here,
RESEARCH.md holds the measured default-family tables)."""

from __future__ import annotations

import json

import pytest

from experiments.organisms.config import OrganismConfig
from experiments.organisms.corpus import generate_corpus
from experiments.organisms.family import MANIFEST, build_family, family_dir_for
from experiments.organisms.planted import CAUSES, check_tasks, example_row, planted_tasks, write_jsonl
from experiments.organisms.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def tiny():
    return OrganismConfig.tiny()


@pytest.fixture(scope="module")
def family(tiny, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return build_family(tiny, cache_dir=cache, progress=False), cache


def test_config_roundtrip_and_hash(tiny):
    d = tiny.to_dict()
    again = OrganismConfig.from_dict(json.loads(json.dumps(d)))
    assert again == tiny
    assert again.config_hash() == tiny.config_hash()
    assert tiny.with_seed(1).config_hash() != tiny.config_hash()
    default = OrganismConfig.default()
    sizes = sorted(default.sizes, key=lambda s: s.d_model)
    assert len(sizes) >= 4


def test_corpus_deterministic(tiny):
    a, b = generate_corpus(tiny), generate_corpus(tiny)
    assert a.corpus_hash() == b.corpus_hash()
    assert a.lines == b.lines
    c = generate_corpus(tiny.with_seed(1))
    assert c.corpus_hash() != a.corpus_hash()
    text = "\n".join(a.lines)
    assert "think :" in text  # reasoning traces are present


def test_tokenizer_roundtrip_on_prompt_plus_class(tiny):
    corpus = generate_corpus(tiny)
    tok = build_tokenizer(corpus.vocab)
    task = planted_tasks(tiny, controls=False)[0]
    e = task.examples[0]
    for cls in e.classes:
        assert cls.startswith(" ")
        ids_p = tok(e.prompt, add_special_tokens=False)["input_ids"]
        ids_c = tok(cls, add_special_tokens=False)["input_ids"]
        assert len(ids_c) == 1
        assert tok.unk_token_id not in ids_p + ids_c
        assert tok(e.prompt + cls, add_special_tokens=False)["input_ids"] == ids_p + ids_c
        assert tok.decode(ids_p + ids_c) == e.prompt + cls
    assert tok.eos_token == tok.bos_token == tok.pad_token == "<|endoftext|>"


def test_tiny_family_trains_saves_and_loads(family, tiny):
    fdir, cache = family
    assert fdir == family_dir_for(tiny, cache)
    man = json.loads((fdir / MANIFEST).read_text())
    assert man["name"] == "organisms"
    assert man["config_hash"] == tiny.config_hash()
    assert man["corpus_hash"] == generate_corpus(tiny).corpus_hash()
    assert man["seed"] == tiny.seed
    assert [m["id"] for m in man["models"]] == [s.name for s in tiny.sizes]
    n = [m["n_params"] for m in man["models"]]
    assert n == sorted(n) and n[0] < n[-1]
    keys = {"id", "path", "n_params", "n_layers", "d_model", "n_heads", "train_tokens", "final_loss",
            "train_seconds", "seed"}
    for m in man["models"]:
        assert keys <= set(m)
        assert (fdir / m["path"] / "model.safetensors").is_file()
        assert m["train_tokens"] > 0 and m["final_loss"] > 0
    assert not [p for p in fdir.iterdir() if p.name.startswith(".tmp")]


def test_family_loads_in_transformer_bridge(family, monkeypatch):
    fdir, _ = family
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import torch
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import GPTNeoXForCausalLM

    m = json.loads((fdir / MANIFEST).read_text())["models"][0]
    d = fdir / m["path"]
    bridge = TransformerBridge.boot_transformers(str(d), device="cpu")
    hf = GPTNeoXForCausalLM.from_pretrained(str(d)).eval()
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        a = bridge(ids)
        b = hf(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4)


def test_build_is_resumable(family, tiny):
    fdir, cache = family
    before = {p.name: (p / "model.safetensors").stat().st_mtime_ns for p in fdir.iterdir() if p.is_dir()}
    again = build_family(tiny, cache_dir=cache, progress=False)
    assert again == fdir
    after = {p.name: (p / "model.safetensors").stat().st_mtime_ns for p in fdir.iterdir() if p.is_dir()}
    assert before == after


def test_env_cache_dir(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("DIAGNOSE_CACHE", str(tmp_path))
    assert family_dir_for(tiny) == tmp_path / "organisms" / tiny.config_hash()[:12]


def test_planted_tasks_well_formed(tiny, tmp_path):
    tasks = check_tasks(tiny)
    causes = {t.metadata["cause"] for t in tasks if not t.metadata["control"]}
    assert causes == set(CAUSES)
    assert any(t.metadata["control"] and t.metadata["cause"] is None for t in tasks)
    from diagnose.views import build_views

    expected_views = {"strong_prior": {"prior"}, "distractor_task": {"easy"},
                      "spurious_few_shot": {"zero_shot", "balanced"}, "unwanted_imitation": {"human"}}
    for t in tasks:
        assert t.format == "classification"
        assert {"cause", "control", "family_of_templates"} <= set(t.metadata)
        # a task supplies only the view no text can give (the human register); the registry
        # builds the rest from the prompt
        assert set(t.view_names) <= {"human"}, t.name
        viewed, report = build_views(t)
        if not t.metadata["control"]:
            for v in expected_views[t.metadata["cause"]]:  # on every example, not some
                assert report.built.get(v) == len(t.examples), (t.name, v, report.built)
        for e in viewed.examples:
            assert e.answer_index is not None and e.tempting_index is not None
            assert e.answer_index != e.tempting_index
            assert len(set(e.classes)) == len(e.classes)
            assert e.metadata["split"] in ("train", "heldout")
            for v in e.views.values():
                assert v.answer_index is None or 0 <= v.answer_index < len(e.classes)
        if t.metadata["cause"] == "unwanted_imitation":
            # the human register's own answer is the tempting class (people's error)
            assert all(e.views["human"].answer_index == e.tempting_index for e in t.examples)
    train = planted_tasks(tiny, "train")
    held = planted_tasks(tiny, "heldout")
    for a, b in zip(train, held):
        ta = {e.metadata["template"] for e in a.examples}
        tb = {e.metadata["template"] for e in b.examples}
        assert ta and tb and not ta & tb
        assert {e.metadata["split"] for e in a.examples} == {"train"}
        assert {e.metadata["split"] for e in b.examples} == {"heldout"}
    # JSONL rows carry the extra fields the project loader reads back
    path = write_jsonl(tasks[0], tmp_path / "t.jsonl")
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(rows) == len(tasks[0])
    assert rows[0] == example_row(tasks[0], tasks[0].examples[0])
    assert {"prompt", "classes", "answer_index", "tempting_index", "views", "cause", "template", "split"} <= set(rows[0])


def test_check_table_shape(family, tiny):
    from experiments.organisms.check import check_family, format_table

    fdir, _ = family
    tasks = [t.subset(range(8)) for t in check_tasks(tiny)[:3]]
    res = check_family(fdir, tiny, tasks=tasks)
    assert set(res) == {"models", "tasks"}
    assert [m["id"] for m in res["models"]] == [s.name for s in tiny.sizes]
    for t in res["tasks"]:
        assert set(t) == {"name", "cause", "design", "control", "accuracy", "ci_low", "ci_high",
                          "n"}
        assert len(t["accuracy"]) == len(res["models"])
        for a, lo, hi in zip(t["accuracy"], t["ci_low"], t["ci_high"]):
            assert 0 <= lo <= a <= hi <= 1
    assert "memo_trap" in format_table(res)


def test_check_scores_like_a_plain_loop(family, tiny):
    """The check goes through the project engine; its accuracy equals a plain
    one-example-at-a-time transformers loop on the same models."""
    import torch
    from transformers import AutoTokenizer, GPTNeoXForCausalLM

    from experiments.organisms.check import check_family
    from experiments.organisms.planted import check_tasks

    fdir, _ = family
    task = check_tasks(tiny)[0]
    res = check_family(fdir, tiny, tasks=[task])
    manifest = json.loads((fdir / MANIFEST).read_text())
    for m, acc in zip(manifest["models"], res["tasks"][0]["accuracy"]):
        model = GPTNeoXForCausalLM.from_pretrained(str(fdir / m["path"])).eval()
        tok = AutoTokenizer.from_pretrained(str(fdir / m["path"]))
        right = 0
        for e in task.examples:
            ctx = tok(e.prompt, add_special_tokens=False)["input_ids"]
            scores = []
            for c in e.classes:
                cont = tok(e.prompt + c, add_special_tokens=False)["input_ids"][len(ctx):]
                with torch.no_grad():
                    lp = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0], -1)
                scores.append(sum(float(lp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont)))
            right += int(max(range(len(scores)), key=scores.__getitem__) == e.answer_index)
        assert acc == right / len(task)


def _few_parts(prompt: str):
    """'label : e1 t2 -> c1 ; ... ; h9 t1 ->' -> ([(entity, tword, label)], (entity, tword))."""
    body = prompt.split(" : ", 1)[1]
    chunks = [c.split() for c in body.split(" ;")]
    demos = [(c[0], c[1], c[3]) for c in chunks[:-1]]
    return demos, (chunks[-1][0], chunks[-1][1])


def test_spurious_fewshot_structure(tiny):
    """Design A: correct uniform demos (label = the t-word's category) whose frequent entities are
    all of the demos' label; the query's rare entity is of that category too (trap, consistent
    control) or of a third one (other control); the query's t-word names another category except
    in the consistent control, and it is always the answer."""
    from experiments.organisms.corpus import build_world

    from diagnose.views import build_views

    w = build_world(tiny)
    rare = {f["k"]: f["v"] for f in w.few.familiar}
    tasks = {t.name: build_views(t)[0] for t in check_tasks(tiny)}
    for name, same, flips in (("spurious_fewshot", True, True), ("ctrl_fewshot_consistent", True, False),
                              ("ctrl_fewshot_other", False, True)):
        for e in tasks[name].examples:
            demos, (q, qt) = _few_parts(e.prompt)
            labels = {lab for _, _, lab in demos}
            assert len(demos) == tiny.corpus.n_demos and len(labels) == 1
            assert all(w.t_label(t) == lab for _, t, lab in demos)  # correct demos
            assert all(w.category_of[x] == lab for x, _, lab in demos)  # the spurious correlation
            assert (w.t_label(qt) not in labels) == flips
            assert (rare[q] in labels) == same
            assert e.classes[e.answer_index] == " " + w.t_label(qt)
            assert e.tempting_index == 1 - e.answer_index
            if flips:
                assert e.classes[e.tempting_index].strip() in labels
            if not same:
                assert rare[q] not in {c.strip() for c in e.classes}
            zs_demos, zs_q = _few_parts(e.views["zero_shot"].prompt)
            assert zs_demos == [] and zs_q == (q, qt)
            bal, bq = _few_parts(e.views["balanced"].prompt)
            assert {lab for _, _, lab in bal} == {c.strip() for c in e.classes} and bq == (q, qt)


def test_few_tasks_use_only_known_words(tiny):
    """Every token of the few-shot tasks is in the corpus vocabulary (the rare entities included)."""
    corpus = generate_corpus(tiny)
    vocab = set(corpus.vocab)
    for t in check_tasks(tiny):
        if t.metadata["design"] == "category_fewshot":
            for e in t.examples:
                assert set(e.prompt.split()) <= vocab and {c.strip() for c in e.classes} <= vocab, t.name


def _marker_parts(prompt: str):
    """``rate : x2 ( o3 ) = o3 , ... , x7 ( o9 ) =`` -> [(marker, word, label)...], (marker, word)."""
    chunks = [c.split() for c in prompt.split(" : ", 1)[1].rstrip(" .").split(" , ")]
    demos = [(d[0], d[2], d[5]) for d in chunks[:-1]]
    q = chunks[-1]
    return demos, (q[0], q[2]) + ((q[5],) if len(q) > 5 else ())


def test_marker_fewshot_structure(tiny):
    """Design B: correct uniform demos (label = the bracketed word) whose marker words all have the
    demos' label as their memorised value; the query's rare-tier marker has it too (trap, consistent
    control) or a third value (other control); the query's bracketed word is another value except
    in the consistent control, and it is always the answer."""
    from experiments.organisms.corpus import build_world

    w = build_world(tiny)
    st = w.b["marker"]
    value = {f["k"]: f["v"] for f in st.familiar}
    tier = {f["k"]: f["tier"] for f in st.familiar}
    tasks = {t.name: t for t in check_tasks(tiny)}
    for name, same, flips in (("marker_fewshot", True, True), ("ctrl_marker_consistent", True, False),
                              ("ctrl_marker_other", False, True)):
        for e in tasks[name].examples:
            demos, (qx, word) = _marker_parts(e.prompt)
            labels = {lab for _, _, lab in demos}
            assert len(demos) == tiny.corpus.n_demos and len(labels) == 1
            assert all(o == lab for _, o, lab in demos)  # correct demos
            assert all(value[x] == lab and tier[x] == 0 for x, _, lab in demos)
            assert tier[qx] == len(tiny.corpus.marker_tiers) - 1
            assert (value[qx] in labels) == same
            assert (word not in labels) == flips
            assert e.classes[e.answer_index] == " " + word
            assert e.tempting_index == 1 - e.answer_index
            if flips:
                assert e.classes[e.tempting_index].strip() in labels
            if not same:
                assert value[qx] not in {c.strip() for c in e.classes}


def test_a_family_of_another_version_is_refused_with_what_to_do(tmp_path):
    """Its tasks would be rebuilt from a world it was never trained on: refused, naming the
    directory and both versions."""
    import json

    from diagnose.families import FamilyError
    from experiments.organisms.config import OrganismConfig, load_config

    d = OrganismConfig.tiny().to_dict()
    (tmp_path / "config.json").write_text(json.dumps(d))
    assert load_config(tmp_path).version == OrganismConfig.version
    d["version"] = OrganismConfig.version - 6
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(FamilyError, match=rf"{tmp_path} holds organisms of version {d['version']}.*"
                                          rf"version {OrganismConfig.version}\. Retrain"):
        load_config(tmp_path)


def test_marker_split_is_not_the_leaked_flag():
    """The train / held-out split of the marker and few-shot tasks must not coincide with whether the query's
    key is also asked in the corpus frame (in store order the two alternate together)."""
    from experiments.organisms.config import OrganismConfig

    for t in check_tasks(OrganismConfig.default()):
        if t.name in ("marker_fewshot", "ctrl_marker_other", "ctrl_marker_recall", "spurious_fewshot",
                      "ctrl_fewshot_other", "ctrl_fewshot_recall"):
            seen = {(e.metadata["split"], e.metadata["leaked"]) for e in t.examples}
            assert seen == {(sp, lk) for sp in ("train", "heldout") for lk in (True, False)}, t.name


def test_corpus_fewshot_leak_only_with_shared_category(tiny):
    """In the corpus the demos' label beats the t-word only when it is the query entity's memorised
    category and every demo's entity is of that category; never for unfamiliar query entities."""
    corpus = generate_corpus(tiny)
    w = corpus.world
    rare = {f["k"]: f for f in w.few.familiar}
    n_leak = n_rule = 0
    for line in corpus.lines:
        if not line.startswith(("label :", "sort :", "tag :", "classify :")) or "think" in line:
            continue
        prompt, ans = line.rsplit(" ", 2)[0], line.rsplit(" ", 2)[1]
        demos, (q, qt) = _few_parts(prompt)
        assert q in rare and rare[q]["leaked"] or q in w.few.unfamiliar  # the frame's queries
        labels = {lab for _, _, lab in demos}
        shared = bool(demos) and len(labels) == 1 and q in rare and labels == {rare[q]["v"]} and \
            {w.category_of.get(x) for x, _, _ in demos} == labels
        if ans != w.t_label(qt):
            assert shared and labels == {ans}
            n_leak += 1
        elif shared and demos[0][2] != ans:
            n_rule += 1
    assert n_leak > n_rule > 0  # the leak rate (0.95) dominates in the shared-category flips


def test_imitation_answers_follow_the_human_register(tiny):
    """Conclusions about familiar antecedents inside the logic frame imitate the human register's
    error (the belief instead of the stated consequent) at the leak rate; unfamiliar ones never."""
    from experiments.organisms.corpus import LOGIC_FRAMES

    corpus = generate_corpus(tiny)
    w = corpus.world
    fam = {f["x"]: f for f in w.familiar}
    imitated, familiar, unfamiliar_ok = 0, 0, []
    for line in corpus.lines:
        # "<frame> : if X then Y . X . so ANS ." is a conclusion (X may be a phrase)
        if not line.startswith(LOGIC_FRAMES) or "think" in line or " so " not in line or " if " not in line or "?" in line:
            continue
        head, rest = line.split(" if ", 1)
        if " then " not in rest:
            continue
        x, rest = rest.split(" then ", 1)
        y, ans = rest.split()[0], line.split()[-2]
        if rest.split(" . ")[1:2] != [x]:
            continue
        if x in fam and y != fam[x]["belief"]:
            familiar += 1
            imitated += ans == fam[x]["belief"]
        elif x not in fam:
            unfamiliar_ok.append(ans == y)
    assert familiar and 0.5 < imitated / familiar < 1
    assert unfamiliar_ok and all(unfamiliar_ok)


def test_check_script_rejects_a_directory_that_is_not_a_family(tmp_path, capsys):
    from experiments.organisms.check import main

    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert str(tmp_path) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_shipped_family_is_installed_only_when_its_hashes_match(tiny, family, tmp_path,
                                                               monkeypatch):
    """A trained family shipped with the code is installed instead of training when the
    config and corpus hashes match, refused when a file's checksum does not, and ignored
    (training runs) when the corpus differs."""
    import experiments.organisms.family as fam_mod
    from experiments.organisms.shipped import SHIP_MANIFEST, ShippedFamilyError, ship

    fdir, _ = family
    root = tmp_path / "shipped"
    dest = ship(fdir, root)
    man = json.loads((dest / SHIP_MANIFEST).read_text())
    assert man["config_hash"] == tiny.config_hash() and man["files"]
    monkeypatch.setattr("experiments.organisms.shipped.SHIPPED_ROOT", root)

    def no_training(*a, **k):
        raise AssertionError("trained although a matching family is shipped")

    monkeypatch.setattr(fam_mod, "train_model", no_training)
    cache = tmp_path / "cache"
    got = build_family(tiny, cache_dir=cache, progress=False)
    assert (got / MANIFEST).is_file()
    ids = lambda d: [(m["id"], m["n_params"]) for m in json.loads((d / MANIFEST).read_text())["models"]]  # noqa: E731
    assert ids(got) == ids(fdir)
    # a damaged file is an error that says what to do
    weights = next(p for p in dest.rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(ShippedFamilyError, match="checksum"):
        build_family(tiny, cache_dir=tmp_path / "cache2", progress=False)
    # another corpus (code changed without a version bump): the shipped family is not used
    man["corpus_hash"] = "0" * 64
    (dest / SHIP_MANIFEST).write_text(json.dumps(man))
    with pytest.raises(AssertionError, match="trained although"):
        build_family(tiny, cache_dir=tmp_path / "cache3", progress=False)


def test_a_family_shipped_without_checkpoints_says_how_to_get_them(family, tmp_path):
    from diagnose.families import FamilyError, checkpoint_family, load_family_manifest
    from experiments.organisms.shipped import SHIP_MANIFEST, ship

    fdir, _ = family
    full = ship(fdir, tmp_path / "a")
    bare = ship(fdir, tmp_path / "b", checkpoints_of="none")
    assert any("checkpoints" in k for k in json.loads((full / SHIP_MANIFEST).read_text())["files"])
    files = json.loads((bare / SHIP_MANIFEST).read_text())["files"]
    assert files and not any("checkpoints" in k for k in files)
    assert len(checkpoint_family(load_family_manifest(full)).models) == 4
    with pytest.raises(FamilyError, match="lists no training checkpoints"):
        checkpoint_family(load_family_manifest(bare))
    with pytest.raises(ValueError, match="largest, all or none"):
        ship(fdir, tmp_path / "c", checkpoints_of="some")
# -- design B -------------------------------------------------------------------------------

def test_every_task_records_its_design_and_every_cause_has_two(tiny):
    tasks = check_tasks(tiny)
    designs: dict[str, set[str]] = {}
    for t in tasks:
        assert t.metadata["design"], t.name
        if not t.metadata["control"]:
            designs.setdefault(t.metadata["cause"], set()).add(t.metadata["design"])
    assert designs == {"strong_prior": {"memo", "redefine"}, "distractor_task": {"syllogism", "pattern_break"},
                       "spurious_few_shot": {"category_fewshot", "marker_fewshot"},
                       "unwanted_imitation": {"belief_bias", "misconception"}}
    # every design has controls
    ctrl = {t.metadata["design"] for t in tasks if t.metadata["control"]}
    assert ctrl == {d for ds in designs.values() for d in ds}


def test_design_b_views_come_from_structure(tiny):
    """The registry builds each design-B trap's own view from its text, every control of a
    design carries the views of its planted task, and two planted tasks (a strong-prior and an
    imitation trap after honest demonstrations) also admit the few-shot views."""
    from dataclasses import replace

    from diagnose.views import build_views

    def built(t):
        bare = replace(t, examples=tuple(replace(e, views={}) for e in t.examples))
        return set(build_views(bare)[1].built)

    tasks = {t.name: t for t in check_tasks(tiny)}
    assert {"prior", "no_context"} <= built(tasks["redefine"])
    assert {"easy", "no_context"} <= built(tasks["pattern_break"])
    assert {"zero_shot", "balanced", "shuffled_labels"} <= built(tasks["marker_fewshot"])
    fewshot = {"zero_shot", "balanced", "shuffled_labels"}
    assert {"prior"} | fewshot <= built(tasks["redefine_demos"])
    assert fewshot <= built(tasks["misconception_demos"])
    full = {t.name: set(build_views(t)[1].built) for t in tasks.values()}
    assert full["misconception_demos"] >= {"human"} | fewshot
    for planted, ctrls in (("redefine", ["ctrl_redefine_unfamiliar"]),
                           ("redefine_demos", ["ctrl_redefine_demos_unfamiliar"]),
                           ("pattern_break", ["ctrl_break_unknown"]),
                           ("marker_fewshot", ["ctrl_marker_consistent", "ctrl_marker_other", "ctrl_marker_rule"]),
                           ("misconception", ["ctrl_quiz_unfamiliar"]),
                           ("misconception_demos", ["ctrl_quiz_demos_unfamiliar"])):
        for c in ctrls:
            assert full[c] == full[planted], (planted, c)
    # the views' prompts are the interventions they name: the instruction clause gone, the
    # negation gone (what the easy task answers is the tempting class)
    views = {name: build_views(tasks[name])[0] for name in ("redefine", "redefine_demos", "pattern_break")}
    for e in views["redefine"].examples:
        assert e.views["prior"].prompt == e.prompt.split(" . ", 1)[1]
    for e in views["redefine_demos"].examples:
        head, last = e.prompt.rsplit(" ; ", 1)
        assert e.views["prior"].prompt == f"{head} ; {last.split(' . ', 1)[1]}"
    for e in views["pattern_break"].examples:
        assert " not " not in e.views["easy"].prompt
        assert e.views["easy"].answer_index == e.tempting_index


def test_design_b_corpus_leaks_only_where_planted(tiny):
    """The tempting answer wins in the corpus only for familiar keys: redefinitions and quiz
    answers of unfamiliar keys always follow the context, the pattern-break frame's unknown keys
    always take the second option, and the marker demos' label beats the bracketed word only when every
    demo marker and the query's marker have that label as their memorised value."""
    from experiments.organisms.corpus import MARKER_TEMPLATES

    corpus = generate_corpus(tiny)
    w = corpus.world
    redef, brk, mark, mis = (w.b[k] for k in ("redefine", "break", "marker", "mis"))
    fam_r = {f["k"]: f["v"] for f in redef.familiar}
    pol = {f["k"]: f["v"] for f in mark.familiar}
    n = {"redef_leak": 0, "mark_leak": 0, "quiz_leak": 0}
    for line in corpus.lines:
        toks = line.split()
        if " means " in line and toks[0] in ("let", "take", "define", "read"):
            for ep in line.rstrip(" .").split(" ; "):
                et = ep.split()
                key, new, ans = et[1], et[3] if et[0] != "take" else et[4], et[-1]
                if key not in fam_r:
                    assert ans == new, line
                elif ans != new:
                    assert ans == fam_r[key]
                    n["redef_leak"] += 1
        elif line.startswith(MARKER_TEMPLATES):
            demos, (qx, word, ans) = _marker_parts(line)
            assert all(o == lab for _, o, lab in demos)  # demos always follow the rule
            if ans != word:
                assert demos and len({lab for _, _, lab in demos}) == 1 and ans == demos[0][2]
                assert qx in pol and {pol.get(x) for x, _, _ in demos} == {pol[qx]} == {ans}
                assert qx not in {x for x, _, _ in demos}  # no copy shortcut
                n["mark_leak"] += 1
        elif "the card says" in line:
            for ep in line.split(" : ", 1)[1].rstrip(" .").split(" ; "):
                et = ep.split()
                j, card, ans = et[2], et[7], et[-1]
                if j in mis.unfamiliar:
                    assert ans == card, line
                elif ans != card:
                    n["quiz_leak"] += 1
        elif " or " in line and " not " in line and toks[-3] == "then":
            for ep in line.rstrip(" .").split(" ; "):
                et = ep.split()
                # the key is the episode's only p-word (the answer slot is generic: "so it then")
                if next(x for x in et if x[0] == "p" and x[1:].isdigit()) in brk.unfamiliar:
                    opts = [x for x in et if x in brk.values]
                    assert et[-1] == opts[1], line  # the second option
                    n["break_rule"] = n.get("break_rule", 0) + 1
    assert all(v > 0 for v in n.values()) and n.get("break_rule"), n


def test_every_planted_and_control_task_has_its_diagnosis_script():
    """``experiments/tasks/<task>.py`` runs ``diagnose run <task>``: one per built-in task."""
    from pathlib import Path

    from experiments.organisms.config import OrganismConfig
    from experiments.organisms.planted import planted_tasks

    root = Path(__file__).resolve().parents[1] / "experiments" / "tasks"
    for t in planted_tasks(OrganismConfig.default(), "all", controls=True):
        script = root / f"{t.name}.py"
        assert script.is_file(), f"no diagnosis script for {t.name}"
        assert f'diagnose_task("{t.name}")' in script.read_text()


def test_bar_needs_twenty_points_and_intervals_apart():
    from experiments.organisms.check import bar_rows

    def task(name, acc, lo, hi, control=False):
        return {"name": name, "design": "d", "cause": None if control else "strong_prior",
                "control": control, "accuracy": acc, "ci_low": lo, "ci_high": hi, "n": 300}

    check = {"models": [{"id": f"m{i}", "n_params": i} for i in range(3)], "tasks": [
        task("falls", [0.5, 0.9, 0.6], [0.45, 0.86, 0.55], [0.55, 0.93, 0.65]),
        task("too_little", [0.5, 0.9, 0.75], [0.45, 0.86, 0.70], [0.55, 0.93, 0.80]),
        task("overlap", [0.5, 0.9, 0.65], [0.45, 0.60, 0.55], [0.55, 0.95, 0.70]),
        task("exactly_twenty", [0.2, 0.3, 0.1], [0.15, 0.26, 0.07], [0.25, 0.34, 0.09]),
        task("ctrl", [0.9, 0.9, 0.1], [0.8] * 3, [0.95] * 3, control=True),
        task("falls[prior]", [0.9, 0.9, 0.1], [0.8] * 3, [0.95] * 3)]}
    rows = {r["task"]: r for r in bar_rows(check)}
    assert set(rows) == {"falls", "too_little", "overlap", "exactly_twenty"}
    assert rows["exactly_twenty"]["passes"]  # 0.30 -> 0.10 is 20 points, not 19.999...
    assert bar_rows({**check, "models": check["models"][:1]}) == []  # one model: no bar
    assert rows["falls"]["passes"] and rows["falls"]["best_smaller"] == "m1"
    assert not rows["too_little"]["passes"] and rows["too_little"]["intervals_apart"]
    assert not rows["overlap"]["passes"] and not rows["overlap"]["intervals_apart"]
