"""The view registry: views come from a task's structure, never from its name or cause."""

from dataclasses import replace

import pytest

from diagnose.loaders import load_task
from diagnose.tasks import Example, Task, View
from diagnose.views import (VIEWS, answer_of, build_views, instruction_clause,
                            parse_demonstrations, remove_negation, view_task)
from tests.conftest import SHARED_ISP

needs_isp = pytest.mark.skipif(not SHARED_ISP.is_dir(), reason="../shared/isp not present")


def _task(*examples, name="t"):
    return Task(name, "classification", tuple(examples))


def test_prior_removes_an_instruction_naming_one_class():
    e = Example("1", 'Write a quote that ends in the word "heavy": Absence makes the heart grow',
                (" heavy.", " fonder."), 0)
    t, rep = build_views(_task(e))
    assert t.examples[0].views["prior"] == View("Absence makes the heart grow", None)
    assert answer_of("prior", t.examples[0]) is None
    assert instruction_clause("end z5 : ka1 kb2", (" z5", " z9")) == len("end z5 :")
    assert instruction_clause("let e7 be a c9 . e7 is a", (" c9", " c3")) == len("let e7 be a c9 .")
    # a clause naming both classes lists options: no instruction
    assert instruction_clause("e7 is a c3 or a c9 . it is not a c3 . so", (" c9", " c3")) is None
    assert instruction_clause("Question: is it?", (" A", " B")) is None


def test_easy_removes_the_first_negation_and_flips_a_two_class_answer():
    assert remove_negation("it isn't in\nA. danger") == "it is in\nA. danger"
    assert remove_negation("e7 is a c3 . it is not a c3 . so") == "e7 is a c3 . it is a c3 . so"
    assert remove_negation("we never go and cannot stay") == "we go and cannot stay"
    assert remove_negation("no negation here") is None
    e = Example("1", "there is not a greater chance of\nA. sun\nB. rain\nAnswer:", (" A", " B"), 1)
    t, _ = build_views(_task(e))
    assert t.examples[0].views["easy"] == View("there is a greater chance of\nA. sun\nB. rain\nAnswer:", 0)


FEW = ("label : c7 t2 -> yes ; c7 t1 -> yes ; c7 t0 -> yes ; e31 t5 ->", (" yes", " no"), 1)


def test_demonstrations_are_parsed_with_their_header_and_rendered_back():
    d = parse_demonstrations(FEW[0], FEW[1])
    assert d.header == "label : " and [x.label for x in d.demos] == ["yes"] * 3
    assert d.query == "e31 t5 ->" and d.render() == FEW[0]
    q = ("Intro text.\n\nQuestion: a?\nAnswer: Y\nQuestion: b?\nAnswer: N\nQuestion: c?\nAnswer:")
    d = parse_demonstrations(q, (" Y", " N"))
    assert d.header == "Intro text.\n\n" and d.query == "Question: c?\nAnswer:"
    assert d.render() == q
    # a cue followed by a class inside running text is not a demonstration
    assert parse_demonstrations("is e7 a c3 or a c9 ? not a c3 . answer : a", (" c9", " c3")) is None
    # segments of one template that begin "<key> :" have no header: the first key stays
    t = "p9 : q1 or q2 ? not q1 . so p9 then q2 ; p4 : q3 or q1 ? not q3 . so p4 then q1 ; " \
        "p7 : q2 or q3 ? not q2 . so p7 then"
    d = parse_demonstrations(t, (" q1", " q2"))
    assert d.header == "" and d.query == "p7 : q2 or q3 ? not q2 . so p7 then"
    assert d.demos[0].text.startswith("p9 :")
    # a real header of the same shape is still split off ("label :" before templated demos)
    assert parse_demonstrations("rate : t1 x5 = up , t2 x5 = up , t3 x5 =", (" up", " down")).header \
        == "rate : "


def test_demonstration_views_keep_the_query_and_its_answer():
    examples = [Example(str(i), f"label : c7 t2 -> yes ; c7 t1 -> yes ; c7 t0 -> yes ; e{i} t{5 + i % 2} ->",
                        (" yes", " no"), 1) for i in range(3)]
    examples.append(Example("y", "label : c1 t5 -> no ; c1 t6 -> no ; e9 t1 ->", (" yes", " no"), 0))
    t, rep = build_views(_task(*examples))
    e = t.examples[0]
    assert e.views["zero_shot"].prompt == "label : e0 t5 ->"
    assert {"zero_shot", "balanced", "shuffled_labels"} <= set(rep.built)
    # balanced: one of the three 'yes' demonstrations becomes another example's query,
    # answered correctly; the query stays last
    bal = e.views["balanced"].prompt
    assert bal.endswith("e0 t5 ->") and bal.count("->") == 4 and bal != e.prompt
    assert "e0 t5 -> " not in bal[:-len("e0 t5 ->")]
    for v in ("zero_shot", "balanced", "shuffled_labels"):
        assert answer_of(v, e) == e.answer_index
    # the same seed gives the same views; another seed may differ, never the query
    again, _ = build_views(_task(*examples))
    assert again == t


def test_balanced_never_demonstrates_the_query_itself():
    """Another example posing the very same query must not become one of its demonstrations:
    the view would hand over the answer."""
    same = [Example(str(i), f"label : c7 t2 -> yes ; c7 t1 -> yes ; e{min(i, 1)} t5 ->", (" yes", " no"), 1)
            for i in range(12)]  # e1 t5 asked 11 times, e0 t5 once: e0's is the only query to borrow
    t, _ = build_views(_task(*same))
    for e in t.examples[1:]:
        query = e.prompt.rsplit(" ; ", 1)[1]
        bal = e.views["balanced"]
        assert isinstance(bal, View) and query + " no" not in bal.prompt


def test_views_do_not_depend_on_the_task_name_or_metadata():
    e = Example("1", 'end z5 : ka1 kb2 kc3 kd4', (" z5", " z9"), 0)
    a, ra = build_views(_task(e, name="memo-trap"))
    b, rb = build_views(replace(_task(e, name="renamed.jsonl"), metadata={"cause": "distractor_task"}))
    assert a.examples == b.examples and ra.to_dict() == rb.to_dict()


def test_supplied_views_are_kept_and_unbuildable_views_say_why():
    e = Example("1", "logic : if f1 then g5 . f1 . so", (" g5", " g3"), 0,
                views={"human": View("people say : if f1 then g5 . f1 . so", 1)})
    t, rep = build_views(_task(e))
    assert set(rep.built) == {"human", "no_context"} and rep.supplied == ["human"]
    assert rep.not_applicable["prior"].startswith("no leading instruction")
    assert rep.not_applicable["zero_shot"].startswith("no answered demonstrations")
    assert answer_of("human", t.examples[0]) == 1
    vt, idx = view_task(t, "human")
    assert idx == [0] and vt.examples[0].answer_index == 1
    assert set(VIEWS) == {"prior", "easy", "zero_shot", "shuffled_labels", "balanced",
                          "no_context", "human"}


def test_partial_preconditions_build_on_the_examples_that_hold():
    es = [Example(str(i), f"end z{i} : ka kb" if i < 3 else "ka kb kc", (f" z{i}", " z9"), 0)
          for i in range(4)]
    t, rep = build_views(_task(*es))
    assert rep.built["prior"] == 3
    vt, idx = view_task(t, "prior")
    assert idx == [0, 1, 2] and not vt.examples[0].metadata["view_has_answer"]
    t, rep = build_views(_task(*es), min_share=0.9)
    assert "prior" not in rep.built and "applies to 3 of 4" in rep.not_applicable["prior"]


@needs_isp
@pytest.mark.parametrize("name,built", [
    ("memo-trap", {"prior", "no_context"}), ("neqa", {"easy", "no_context"}),
    ("hindsight-neglect", {"zero_shot", "balanced", "shuffled_labels", "no_context"}),
    ("modus-tollens", {"easy", "no_context"}), ("prompt-injection", {"easy", "no_context"})])
def test_released_files_get_the_views_their_text_permits(name, built, tmp_path):
    task = load_task(SHARED_ISP / f"{name}.jsonl")
    t, rep = build_views(task)
    assert set(rep.built) == built
    # renaming the file changes nothing
    (tmp_path / "x.jsonl").write_bytes((SHARED_ISP / f"{name}.jsonl").read_bytes())
    t2, rep2 = build_views(load_task(tmp_path / "x.jsonl"))
    assert rep2.built == rep.built and [e.views for e in t2.examples] == [e.views for e in t.examples]
    if name == "hindsight-neglect":
        e = t.examples[0]
        assert e.views["zero_shot"].prompt == e.prompt[e.prompt.rindex("Question:"):]
        bal = e.views["balanced"].prompt
        assert bal.count("Question:") == e.prompt.count("Question:") and bal != e.prompt


def test_views_command_prints_and_writes_the_table(tmp_path, capsys):
    import json

    from diagnose import cli

    f = tmp_path / "neg.jsonl"
    f.write_text("\n".join(json.dumps({"prompt": f"Q{i}: the cat is not a dog. Answer:",
                                       "classes": [" yes", " no"], "answer_index": 1})
                           for i in range(4)) + "\n")
    assert cli.main(["views", str(f), "--json", str(tmp_path / "v.json")]) == 0
    out = capsys.readouterr().out
    assert "easy             built on 4/4" in out
    assert "zero_shot        not applicable: no answered demonstrations" in out
    rep = json.loads((tmp_path / "v.json").read_text())["neg"]
    assert rep["built"] == ["easy", "no_context"] and "human" in rep["not_applicable"]
