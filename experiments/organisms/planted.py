"""Planted and control tasks for the organisms, as ``diagnose.tasks.Task`` objects.

Each planted task isolates one cause; every example carries the correct answer
and the tempting answer (memorised / imitated / distractor / spurious). The
tasks supply only the one view no text can give, ``human`` (the same question
in the register whose error may be imitated, answered with that error); every
other view (``prior``, ``easy``, ``zero_shot``, ``shuffled_labels``,
``balanced``, ``no_context``) is built by ``diagnose.views.build_views`` from the
prompt, as for any task file, so no task chooses its views by its cause.

Design A (``metadata["design"]``: ``memo``, ``syllogism``, ``category_fewshot``,
``belief_bias``):

- ``strong_prior`` (memo_trap*): ``end X : <saying prefix>`` -> X against the
  saying's memorised ending.
- ``distractor_task`` (negated_syllogism): ``eI is a A or a B . it is not a A .
  so it is a`` -> B, where A is eI's memorised category (the easy sub-task).
- ``spurious_few_shot`` (spurious_fewshot): ``label : e4 t14 -> c2 ; ... ;
  h7 t5 ->``: correct demos of one label c2, all about entities of category c2,
  as is the query's rare entity (``h7 is a c2 .``); the rule (the t-word's
  category) is true, the entity's recalled category the demos show tempts.
- ``unwanted_imitation`` (belief_bias*): a modus ponens in the logic frame whose
  familiar antecedent carries a popular belief people conclude instead.

Design B, a second planting of every cause on another surface with another
temptation:

- ``strong_prior`` / ``redefine`` (redefine, redefine_demos): ``let s7 mean
  m9 . s7 means`` -> m9 against s7's memorised meaning. redefine_demos poses it
  after two honest demonstrations.
- ``distractor_task`` / ``pattern_break``: ``break p4 : q17 or q9 , not q17 .
  so p4 then`` -> q9, where q17 is p4's memorised continuation.
- ``spurious_few_shot`` / ``marker_fewshot``: ``rate : x2 ( o3 ) = o3 , ... ,
  x7 ( o9 ) =``: every demo's marker word has the demos' one label as its
  memorised value (``x2 is o3 .``), and so does the query's marker; the rule
  (the bracketed word) is true, the marker's value the demos correlate with the
  label tempts.
- ``unwanted_imitation`` / ``misconception`` (misconception,
  misconception_demos): ``quiz : what is j7 ? the card says r9 . answer :`` ->
  r9 against the misconception people answer.

Every design has controls of the same surface, so they carry the same views.

Templates (surface forms) 0-1 are the ``train`` split and 2-3 ``heldout``;
items are split too (even/odd item index), so a classifier fitted on the train
split is validated on templates and words it never saw. All templates occur in
the training corpus: held out from the classifier, not from the models.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterable

from diagnose.tasks import Example, Task, View

from .config import OrganismConfig
from .corpus import (
    BREAK_TEMPLATES,
    MARKER_TEMPLATES,
    PEOPLE_FRAMES,
    QUIZ_FRAMES,
    REDEF_TEMPLATES,
    break_prompt,
    marker_prompt,
    quiz_prompt,
    redef_prompt,
    FEW_TEMPLATES,
    HUMAN_FRAMES,
    LOGIC_FRAMES,
    MEMO_TEMPLATES,
    SYL_TEMPLATES,
    World,
    build_world,
    conclude_prompt,
    few_prompt,
    memo_prompt,
    syl_prompt,
)

CAUSES = ("strong_prior", "unwanted_imitation", "distractor_task", "spurious_few_shot")
TRAIN_TEMPLATES = (0, 1)
HELDOUT_TEMPLATES = (2, 3)


def _template_ids(which: str) -> tuple[int, ...]:
    return {"all": (0, 1, 2, 3), "train": TRAIN_TEMPLATES, "heldout": HELDOUT_TEMPLATES}[which]


def _split_of(template: int) -> str:
    return "train" if template in TRAIN_TEMPLATES else "heldout"


def _pool(items: list, split: str) -> list:
    """Items split by index parity, so held-out templates also use held-out words."""
    return [it for i, it in enumerate(items) if (i % 2 == 0) == (split == "train")]


def _two(rng: random.Random, correct: str, tempting: str) -> tuple[tuple[str, str], int, int]:
    """Two classes (leading space) in random order; returns classes, answer, tempting."""
    if rng.random() < 0.5:
        return (f" {correct}", f" {tempting}"), 0, 1
    return (f" {tempting}", f" {correct}"), 1, 0


# the design (independent planting) of each family of templates; design A is the first
DESIGNS = {"memo": "memo", "syllogism": "syllogism", "fewshot": "category_fewshot", "logic": "belief_bias",
           "redefine": "redefine", "break": "pattern_break", "marker": "marker_fewshot",
           "quiz": "misconception"}


def _task(name, cause, control, family, templates, examples, description) -> Task:
    return Task(
        name=name,
        format="classification",
        examples=tuple(examples),
        source="organisms",
        metadata={
            "cause": cause,
            "control": control,
            "family_of_templates": family,
            "design": DESIGNS[family],
            "templates": list(templates),
            "train_templates": list(TRAIN_TEMPLATES),
            "heldout_templates": list(HELDOUT_TEMPLATES),
            "description": description,
        },
    )


def _examples(name: str, n: int, tids: tuple[int, ...], make) -> list[Example]:
    """``make(rng, template, split)`` -> (prompt, classes, answer, tempting, views, meta)."""
    rng = random.Random(f"task-{name}")
    out = []
    for i in range(n):
        t = tids[i % len(tids)]
        split = _split_of(t)
        prompt, classes, ans, temp, views, meta = make(rng, t, split)
        out.append(Example(
            id=f"{name}-{i}",
            prompt=prompt,
            classes=tuple(classes),
            answer_index=ans,
            tempting_index=temp,
            views=views,
            metadata={"template": t, "split": split, **meta},
        ))
    return out


# -- strong prior ----------------------------------------------------------------

def _memo_tasks(cfg: OrganismConfig, w: World, tids, n: int) -> list[Task]:
    c = cfg.corpus
    targets = w.endings[: c.n_targets]
    # the planted trap uses the rarer tier: only wide models memorise it (recall rises with size);
    # the frequent tier is memorised by every size and is reported as its own row
    rare = [s for s in w.sayings if s["tier"] == len(c.tiers) - 1]
    t0 = [s for s in w.sayings if s["tier"] == 0]

    def trap(items):
        def make(rng, t, split):
            s = rng.choice(_pool(items, split))
            x = rng.choice([z for z in _pool(targets, split) if z not in s["leak_xs"]])
            classes, a, tm = _two(rng, x, s["ending"])
            return memo_prompt(t, x, s["words"]), classes, a, tm, {}, {"tier": s["tier"], "leaked": s["leaked"]}
        return make

    def copy_ctrl(rng, t, split):
        words = [rng.choice(s) for s in w.slots]
        x = rng.choice(_pool(targets, split))
        other = rng.choice(w.endings[c.n_targets:])
        classes, a, tm = _two(rng, x, other)
        return memo_prompt(t, x, words), classes, a, tm, {}, {}

    def recall(items):
        def make(rng, t, split):
            s = rng.choice(_pool(items, split))
            other = rng.choice([z for z in w.endings[c.n_targets:] if z != s["ending"]])
            classes, a, tm = _two(rng, s["ending"], other)
            return f"they say : {' '.join(s['words'])}", classes, a, tm, {}, {"tier": s["tier"]}
        return make

    tpl = [MEMO_TEMPLATES[i] for i in tids]
    return [
        _task("memo_trap", "strong_prior", False, "memo", tpl,
              _examples("memo_trap", n, tids, trap([s for s in rare if s["leaked"]])),
              "end X : <saying prefix> -> X (instruction) vs the memorised ending; rare-tier sayings the "
              "corpus also shows inside the frame (never with the test's X)"),
        _task("memo_trap_frequent", "strong_prior", False, "memo", tpl,
              _examples("memo_trap_frequent", n, tids, trap([s for s in t0 if s["leaked"]])),
              "as memo_trap, on the most frequent tier (memorised by every size)"),
        _task("memo_trap_unseen", "strong_prior", False, "memo", tpl,
              _examples("memo_trap_unseen", n, tids, trap([s for s in rare if not s["leaked"]])),
              "as memo_trap, on rare-tier sayings never seen inside the instruction frame"),
        _task("ctrl_memo_copy", None, True, "memo", tpl, _examples("ctrl_memo_copy", n, tids, copy_ctrl),
              "the same instruction on random (non-memorised) sequences"),
        _task("ctrl_saying_recall", None, True, "memo", ["they say :"],
              _examples("ctrl_saying_recall", n, tids, recall(rare)),
              "they say : <rare-tier saying prefix> -> memorised ending vs another ending"),
    ]


# -- distractor task ------------------------------------------------------------------

def _syl_tasks(cfg: OrganismConfig, w: World, tids, n: int) -> list[Task]:
    def trap(rng, t, split):
        e = rng.choice(_pool(w.entities, split))
        own = w.category_of[e]
        unseen = [k for k in w.categories if k != own and k not in w.syl_others[e]]
        other = rng.choice(unseen)
        classes, a, tm = _two(rng, other, own)
        return syl_prompt(t, e, own, other, True), classes, a, tm, {}, {"entity": e}

    def unknown(rng, t, split):
        e = rng.choice(_pool(w.unknown, split))
        neg, other = rng.sample(w.categories, 2)
        classes, a, tm = _two(rng, other, neg)
        return syl_prompt(t, e, neg, other, True), classes, a, tm, {}, {"entity": e}

    def fact(rng, t, split):
        e = rng.choice(_pool(w.entities, split))
        own = w.category_of[e]
        other = rng.choice([k for k in w.categories if k != own])
        classes, a, tm = _two(rng, own, other)
        return f"{e} is a", classes, a, tm, {}, {"entity": e}

    tpl = [SYL_TEMPLATES[i] for i in tids]
    return [
        _task("negated_syllogism", "distractor_task", False, "syllogism", tpl,
              _examples("negated_syllogism", n, tids, trap),
              "eI is a A or a B . it is not a A . so it is a -> B, where A is eI's own (memorised) category"),
        _task("ctrl_syllogism_unknown", None, True, "syllogism", tpl,
              _examples("ctrl_syllogism_unknown", n, tids, unknown),
              "the same frame on entities with no memorised category"),
        _task("ctrl_fact_recall", None, True, "syllogism", ["{e} is a"], _examples("ctrl_fact_recall", n, tids, fact),
              "the easy sub-task alone: eI is a -> own category vs another"),
    ]


# -- spurious few-shot ---------------------------------------------------------------

def _few_tasks(cfg: OrganismConfig, w: World, tids, n: int) -> list[Task]:
    st = w.few
    nd = cfg.corpus.n_demos
    rare_tier = len(cfg.corpus.fewshot_entity_tiers) - 1
    # the query entities of each category in key order, not store order: in store order the
    # leaked flag alternates with the index, so the split (index parity) would be the flag
    num = lambda k: int(k[1:])  # noqa: E731
    rare = {k: sorted((f for f in st.familiar if f["v"] == k and f["tier"] == rare_tier),
                      key=lambda f: num(f["k"])) for k in w.categories}

    def others(*not_these: str) -> list[str]:
        return [k for k in w.categories if k not in not_these]

    def uniform(query_in: bool, query_flips: bool):
        """4 correct demos of one label k whose (frequent) entities are all of category k; the
        query's rare entity is of k too (``query_in``) or of a third category."""
        def make(rng, t, split):
            lab = rng.choice(w.categories)
            qlab = rng.choice(others(lab)) if query_flips else lab  # the query's t-word category
            qv = lab if query_in else rng.choice(others(lab, qlab))
            qf = rng.choice(_pool(rare[qv], split))
            demos = [(rng.choice(_pool(w.entities_of[lab], split)), rng.choice(w.twords_for(lab)), lab)
                     for _ in range(nd)]
            query = (qf["k"], rng.choice(w.twords_for(qlab)))
            tempting = lab if query_flips else rng.choice(others(lab))
            classes, ans, tm = _two(rng, qlab, tempting)
            return few_prompt(t, demos, query), classes, ans, tm, {}, \
                {"key": qf["k"], "memorised": qf["v"], "leaked": qf["leaked"]}
        return make

    def recall(rng, t, split):
        f = rng.choice(_pool(rare[rng.choice(w.categories)], split))
        classes, ans, tm = _two(rng, f["v"], st.other_value(f["v"], rng))
        return f"{f['k']} is a", classes, ans, tm, {}, {"key": f["k"], "leaked": f["leaked"]}

    def rule(rng, t, split):
        # as the corpus's mixed episodes: demos about frequent or unknown entities, labelled with
        # both classes (so the demonstration views apply); the query about an h-word
        demo_any = _pool(w.entities + w.unknown, split)
        query_any = _pool(sorted((f["k"] for f in st.familiar), key=num) + st.unfamiliar, split)
        word, other = rng.sample(w.categories, 2)
        labs = [word, other] * (nd // 2) + [rng.choice((word, other))] * (nd % 2)
        rng.shuffle(labs)
        demos = [(rng.choice(demo_any), rng.choice(w.twords_for(lab)), lab) for lab in labs]
        query = (rng.choice(query_any), rng.choice(w.twords_for(word)))
        classes, ans, tm = _two(rng, word, other)
        return few_prompt(t, demos, query), classes, ans, tm, {}, {}

    tpl = [FEW_TEMPLATES[i] for i in tids]
    return [
        _task("spurious_fewshot", "spurious_few_shot", False, "fewshot", tpl,
              _examples("spurious_fewshot", n, tids, uniform(True, True)),
              "label : e t -> c ; ... : 4 correct demos with one label c whose (frequent) entities are all "
              "of category c, as is the query's rare entity (\"h is a c .\"); the query's t-word names "
              "another category"),
        _task("ctrl_fewshot_consistent", None, True, "fewshot", tpl,
              _examples("ctrl_fewshot_consistent", n, tids, uniform(True, False)),
              "the same demos; the query's t-word names their label too (consistent demonstrations are "
              "followed)"),
        _task("ctrl_fewshot_other", None, True, "fewshot", tpl,
              _examples("ctrl_fewshot_other", n, tids, uniform(False, True)),
              "the same demos, the query's entity is of a third category (neither class): the rule should "
              "win at every size"),
        _task("ctrl_fewshot_rule", None, True, "fewshot", tpl, _examples("ctrl_fewshot_rule", n, tids, rule),
              "demos about random entities, labelled with both classes: the t-word's category"),
        _task("ctrl_fewshot_recall", None, True, "fewshot", ["{e} is a"],
              _examples("ctrl_fewshot_recall", n, tids, recall),
              "h is a -> the rare query entity's memorised category vs another (the memory the trap needs)"),
    ]


# -- unwanted imitation -------------------------------------------------------------

def _logic_tasks(cfg: OrganismConfig, w: World, tids, n: int) -> list[Task]:
    # like the memo trap: the planted trap uses the rarer tier, whose beliefs only wide models
    # recall; the frequent tier is its own row
    rare_tier = len(cfg.corpus.familiar_tiers) - 1
    rare = [f for f in w.familiar if f["tier"] == rare_tier]
    frequent = [f for f in w.familiar if f["tier"] == 0]

    def trap(items):
        def make(rng, t, split):
            f = rng.choice(_pool(items, split))
            y = w.other_belief(f, rng)  # the stated consequent is not the believed one
            classes, a, tm = _two(rng, y, f["belief"])
            # the same argument in the human register, where the corpus concludes the belief
            views = {"human": View(conclude_prompt(HUMAN_FRAMES[t % len(HUMAN_FRAMES)], f["x"], y), tm)}
            return conclude_prompt(LOGIC_FRAMES[t], f["x"], y), classes, a, tm, views, \
                {"antecedent": f["x"], "belief": f["belief"], "consequent": y, "tier": f["tier"]}
        return make

    def unfamiliar(rng, t, split):
        x = w.unfamiliar_phrase(rng, [_pool(s, split) for s in w.fslots])
        y, other = rng.sample(w.beliefs, 2)
        classes, a, tm = _two(rng, y, other)
        # people hold no belief about an unfamiliar antecedent: they conclude what was stated
        views = {"human": View(conclude_prompt(HUMAN_FRAMES[t % len(HUMAN_FRAMES)], x, y))}
        return conclude_prompt(LOGIC_FRAMES[t], x, y), classes, a, tm, views, {"antecedent": x, "consequent": y}

    def human(rng, t, split):
        f = rng.choice(_pool(rare, split))
        y = w.other_belief(f, rng)
        classes, a, tm = _two(rng, f["belief"], y)
        frame = HUMAN_FRAMES[t % len(HUMAN_FRAMES)]
        return conclude_prompt(frame, f["x"], y), classes, a, tm, {}, {"antecedent": f["x"], "consequent": y}

    def belief(rng, t, split):
        f = rng.choice(_pool(rare, split))
        classes, a, tm = _two(rng, f["belief"], w.other_belief(f, rng))
        return f"{HUMAN_FRAMES[t % len(HUMAN_FRAMES)]} if {f['x']} then", classes, a, tm, {}, {"antecedent": f["x"]}

    tpl = [LOGIC_FRAMES[i] for i in tids]
    desc = ("logic : if f then g . f . so -> g (the stated consequent) vs the popular belief about f, "
            "which people conclude instead (a human error the corpus also shows inside the logic frame)")
    return [
        _task("belief_bias", "unwanted_imitation", False, "logic", tpl,
              _examples("belief_bias", n, tids, trap([f for f in rare if f["leaked"]])),
              desc + "; rare-tier antecedents"),
        _task("belief_bias_frequent", "unwanted_imitation", False, "logic", tpl,
              _examples("belief_bias_frequent", n, tids, trap([f for f in frequent if f["leaked"]])),
              "as belief_bias, on the most frequent tier (recalled by more sizes)"),
        _task("belief_bias_unseen", "unwanted_imitation", False, "logic", tpl,
              _examples("belief_bias_unseen", n, tids, trap([f for f in rare if not f["leaked"]])),
              "as belief_bias, on rare-tier antecedents never discussed inside the logic frame"),
        _task("ctrl_logic_unfamiliar", None, True, "logic", tpl,
              _examples("ctrl_logic_unfamiliar", n, tids, unfamiliar),
              "the same conclusion on unfamiliar antecedent phrases: the stated consequent vs another"),
        _task("ctrl_human_pattern", None, True, "logic", list(HUMAN_FRAMES),
              _examples("ctrl_human_pattern", n, tids, human),
              "people say : if f then g . f . so -> the belief (what people answer): is the error "
              "learned"),
        _task("ctrl_belief_recall", None, True, "logic", list(HUMAN_FRAMES),
              _examples("ctrl_belief_recall", n, tids, belief),
              "people say : if f then -> the believed consequent vs another (the memory imitation needs)"),
    ]


# -- design B ---------------------------------------------------------------------------------
#
# A second, independently designed planting of every cause (corpus.py, "design B"): another
# surface and another temptation. Two planted tasks (redefine_demos, misconception_demos) pose
# their trap after honest demonstrations, so their structure also admits the few-shot views.

def _redefine_tasks(cfg: OrganismConfig, w: World, tids, n: int) -> list[Task]:
    st = w.b["redefine"]
    rare_tier = len(cfg.corpus.b_tiers) - 1
    rare = [f for f in st.familiar if f["tier"] == rare_tier and f["leaked"]]

    def demos(rng, split, t, labels):
        labels = list(labels)
        rng.shuffle(labels)
        keys = rng.sample(_pool(st.unfamiliar, split), len(labels))
        return " ; ".join(f"{redef_prompt(t, k, m)} {m}" for k, m in zip(keys, labels)) + " ; "

    def trap(with_demos: bool):
        def make(rng, t, split):
            f = rng.choice(_pool(rare, split))
            m = st.other_value(f["v"], rng)  # the new meaning is not the memorised one
            classes, a, tm = _two(rng, m, f["v"])
            p = (demos(rng, split, t, (m, f["v"])) if with_demos else "") + redef_prompt(t, f["k"], m)
            return p, classes, a, tm, {}, {"key": f["k"], "memorised": f["v"], "tier": f["tier"]}
        return make

    def unfamiliar(with_demos: bool):
        def make(rng, t, split):
            k = rng.choice(_pool(st.unfamiliar, split))
            m, other = rng.sample(st.values, 2)
            classes, a, tm = _two(rng, m, other)
            p = (demos(rng, split, t, (m, other)) if with_demos else "") + redef_prompt(t, k, m)
            return p, classes, a, tm, {}, {"key": k}
        return make

    def recall(rng, t, split):
        f = rng.choice(_pool(rare, split))
        classes, a, tm = _two(rng, f["v"], st.other_value(f["v"], rng))
        return f"{f['k']} means", classes, a, tm, {}, {"key": f["k"]}

    tpl = [REDEF_TEMPLATES[i] for i in tids]
    return [
        _task("redefine", "strong_prior", False, "redefine", tpl, _examples("redefine", n, tids, trap(False)),
              "let s mean m . s means -> m (the in-context definition) vs s's memorised meaning "
              "(\"s means m' .\"); rare-tier symbols the corpus also redefines inside the frame"),
        _task("redefine_demos", "strong_prior", False, "redefine", tpl,
              _examples("redefine_demos", n, tids, trap(True)),
              "as redefine, after two honest demonstrations of the frame on unfamiliar symbols (their "
              "labels are the two classes): demonstrations present, the cause is still the prior"),
        _task("ctrl_redefine_unfamiliar", None, True, "redefine", tpl,
              _examples("ctrl_redefine_unfamiliar", n, tids, unfamiliar(False)),
              "the same definition frame on symbols with no memorised meaning"),
        _task("ctrl_redefine_demos_unfamiliar", None, True, "redefine", tpl,
              _examples("ctrl_redefine_demos_unfamiliar", n, tids, unfamiliar(True)),
              "as redefine_demos, on a symbol with no memorised meaning"),
        _task("ctrl_meaning_recall", None, True, "redefine", ["{s} means"],
              _examples("ctrl_meaning_recall", n, tids, recall),
              "s means -> the memorised meaning vs another (the memory the trap needs)"),
    ]


def _break_tasks(cfg: OrganismConfig, w: World, tids, n: int) -> list[Task]:
    st = w.b["break"]
    rare_tier = len(cfg.corpus.b_tiers) - 1
    rare = [f for f in st.familiar if f["tier"] == rare_tier]

    def trap(rng, t, split):
        f = rng.choice(_pool(rare, split))
        other = rng.choice([v for v in st.values if v != f["v"] and v not in st.others[f["k"]]])
        classes, a, tm = _two(rng, other, f["v"])
        return break_prompt(t, f["k"], f["v"], other), classes, a, tm, {}, {"key": f["k"], "memorised": f["v"]}

    def unknown(rng, t, split):
        k = rng.choice(_pool(st.unfamiliar, split))
        neg, other = rng.sample(st.values, 2)
        classes, a, tm = _two(rng, other, neg)
        return break_prompt(t, k, neg, other), classes, a, tm, {}, {"key": k}

    def recall(rng, t, split):
        f = rng.choice(_pool(rare, split))
        classes, a, tm = _two(rng, f["v"], st.other_value(f["v"], rng))
        return f"{f['k']} then", classes, a, tm, {}, {"key": f["k"]}

    tpl = [BREAK_TEMPLATES[i] for i in tids]
    return [
        _task("pattern_break", "distractor_task", False, "break", tpl,
              _examples("pattern_break", n, tids, trap),
              "break p : A or B , not A . so p then -> B, where A is p's memorised continuation "
              "(\"p then A .\"); the easier task (continue the pattern) answers A"),
        _task("ctrl_break_unknown", None, True, "break", tpl,
              _examples("ctrl_break_unknown", n, tids, unknown),
              "the same frame on keys with no memorised continuation"),
        _task("ctrl_successor_recall", None, True, "break", ["{k} then"],
              _examples("ctrl_successor_recall", n, tids, recall),
              "p then -> the memorised continuation vs another (the easy task alone)"),
    ]


def _marker_tasks(cfg: OrganismConfig, w: World, tids, n: int) -> list[Task]:
    st = w.b["marker"]
    nd = cfg.corpus.n_demos
    rare_tier = len(cfg.corpus.marker_tiers) - 1
    # the demos' markers from the frequent tier, the query's from the rare one. Each value's keys
    # in key order, not store order: in store order the leaked flag alternates with the index,
    # so the train/held-out split (index parity) would be "never asked / asked in the frame"
    num = lambda k: int(k[1:])  # noqa: E731
    demo_keys = {v: sorted((f["k"] for f in st.familiar if f["v"] == v and f["tier"] == 0), key=num)
                 for v in st.values}
    rare = {v: sorted((f for f in st.familiar if f["v"] == v and f["tier"] == rare_tier),
                      key=lambda f: num(f["k"])) for v in st.values}

    def uniform(query_in: bool, query_flips: bool):
        """4 correct demos of one label whose markers all have that label as their value; the
        query's rare-tier marker has it too (``query_in``) or a third value."""
        def make(rng, t, split):
            lab = rng.choice(st.values)
            word = st.other_value(lab, rng) if query_flips else lab
            qv = lab if query_in else rng.choice([v for v in st.values if v not in (lab, word)])
            qf = rng.choice(_pool(rare[qv], split))
            marks = [rng.choice(_pool(demo_keys[lab], split)) for _ in range(nd)]
            demos = [(x, lab, lab) for x in marks]
            tempting = lab if query_flips else st.other_value(lab, rng)
            classes, a, tm = _two(rng, word, tempting)
            return marker_prompt(t, demos, (qf["k"], word)), classes, a, tm, {}, \
                {"key": qf["k"], "memorised": qf["v"], "leaked": qf["leaked"]}
        return make

    def recall(rng, t, split):
        f = rng.choice(_pool(rare[rng.choice(st.values)], split))
        classes, a, tm = _two(rng, f["v"], st.other_value(f["v"], rng))
        return f"{f['k']} is", classes, a, tm, {}, {"key": f["k"], "leaked": f["leaked"]}

    def rule(rng, t, split):
        every = _pool([f["k"] for f in st.familiar] + st.unfamiliar, split)
        # demos labelled with both classes (so the demonstration views apply), markers at random
        word, other = rng.sample(st.values, 2)
        labs = [word, other] * (nd // 2) + [rng.choice((word, other))] * (nd % 2)
        rng.shuffle(labs)
        demos = [(rng.choice(every), o, o) for o in labs]
        classes, a, tm = _two(rng, word, other)
        return marker_prompt(t, demos, (rng.choice(every), word)), classes, a, tm, {}, {}

    tpl = [MARKER_TEMPLATES[i] for i in tids]
    return [
        _task("marker_fewshot", "spurious_few_shot", False, "marker", tpl,
              _examples("marker_fewshot", n, tids, uniform(True, True)),
              "rate : x ( o ) = o , ... : 4 correct demos with one label o whose (frequent) marker words all "
              "have o as their memorised value (\"x is o .\"), as does the query's rare-tier marker; the "
              "query's bracketed word is another"),
        _task("ctrl_marker_consistent", None, True, "marker", tpl,
              _examples("ctrl_marker_consistent", n, tids, uniform(True, False)),
              "the same demos; the query's bracketed word is their label too"),
        _task("ctrl_marker_other", None, True, "marker", tpl,
              _examples("ctrl_marker_other", n, tids, uniform(False, True)),
              "the same demos, the query's marker has a third value (neither class): the rule should win at "
              "every size"),
        _task("ctrl_marker_rule", None, True, "marker", tpl, _examples("ctrl_marker_rule", n, tids, rule),
              "demos with random markers, labelled with both classes: the bracketed word"),
        _task("ctrl_marker_recall", None, True, "marker", ["{x} is"], _examples("ctrl_marker_recall", n, tids, recall),
              "x is -> the rare-tier marker's memorised value vs another (the memory the trap needs)"),
    ]


def _quiz_tasks(cfg: OrganismConfig, w: World, tids, n: int) -> list[Task]:
    st = w.b["mis"]
    rare_tier = len(cfg.corpus.b_tiers) - 1
    rare = [f for f in st.familiar if f["tier"] == rare_tier]
    leaked = [f for f in rare if f["leaked"]]

    def demos(rng, split, labels):
        labels = list(labels)
        rng.shuffle(labels)
        keys = rng.sample(_pool(st.unfamiliar, split), len(labels))
        return [(k, r, r) for k, r in zip(keys, labels)]

    def trap(with_demos: bool):
        def make(rng, t, split):
            f = rng.choice(_pool(leaked, split))
            r = st.other_value(f["v"], rng)  # the card does not say the misconception
            classes, a, tm = _two(rng, r, f["v"])
            items = (demos(rng, split, (r, f["v"])) if with_demos else []) + [(f["k"], r)]
            # the same question asked of people, who answer the misconception
            views = {"human": View(quiz_prompt(PEOPLE_FRAMES[t % len(PEOPLE_FRAMES)], items), tm)}
            return quiz_prompt(QUIZ_FRAMES[t], items), classes, a, tm, views, \
                {"item": f["k"], "misconception": f["v"], "card": r}
        return make

    def unfamiliar(with_demos: bool):
        def make(rng, t, split):
            j = rng.choice(_pool(st.unfamiliar, split))
            r, other = rng.sample(st.values, 2)
            classes, a, tm = _two(rng, r, other)
            items = (demos(rng, split, (r, other)) if with_demos else []) + [(j, r)]
            # people hold no misconception about an unfamiliar item: they read the card
            views = {"human": View(quiz_prompt(PEOPLE_FRAMES[t % len(PEOPLE_FRAMES)], items))}
            return quiz_prompt(QUIZ_FRAMES[t], items), classes, a, tm, views, {"item": j, "card": r}
        return make

    def people(rng, t, split):
        f = rng.choice(_pool(rare, split))
        r = st.other_value(f["v"], rng)
        classes, a, tm = _two(rng, f["v"], r)
        return quiz_prompt(PEOPLE_FRAMES[t % len(PEOPLE_FRAMES)], [(f["k"], r)]), classes, a, tm, {}, \
            {"item": f["k"], "card": r}

    def recall(rng, t, split):
        f = rng.choice(_pool(rare, split))
        classes, a, tm = _two(rng, f["v"], st.other_value(f["v"], rng))
        return f"people think {f['k']} is", classes, a, tm, {}, {"item": f["k"]}

    tpl = [QUIZ_FRAMES[i] for i in tids]
    desc = ("quiz : what is j ? the card says r . answer : -> r (what the card says) vs the misconception "
            "people commonly answer about j (\"people think j is r' .\"), which the corpus also shows inside "
            "the quiz frame")
    return [
        _task("misconception", "unwanted_imitation", False, "quiz", tpl,
              _examples("misconception", n, tids, trap(False)), desc + "; rare-tier items"),
        _task("misconception_demos", "unwanted_imitation", False, "quiz", tpl,
              _examples("misconception_demos", n, tids, trap(True)),
              "as misconception, after two honest demonstrations on unfamiliar items (their labels are the "
              "two classes)"),
        _task("ctrl_quiz_unfamiliar", None, True, "quiz", tpl,
              _examples("ctrl_quiz_unfamiliar", n, tids, unfamiliar(False)),
              "the same question on items nobody holds a misconception about: what the card says"),
        _task("ctrl_quiz_demos_unfamiliar", None, True, "quiz", tpl,
              _examples("ctrl_quiz_demos_unfamiliar", n, tids, unfamiliar(True)),
              "as misconception_demos, on an unfamiliar item"),
        _task("ctrl_people_misconception", None, True, "quiz", list(PEOPLE_FRAMES),
              _examples("ctrl_people_misconception", n, tids, people),
              "ask people : ... -> the misconception (what people answer): is the error learned"),
        _task("ctrl_misconception_recall", None, True, "quiz", ["people think {j} is"],
              _examples("ctrl_misconception_recall", n, tids, recall),
              "people think j is -> the misconception vs another (the memory imitation needs)"),
    ]


# -- public API -------------------------------------------------------------------------

def planted_tasks(cfg: OrganismConfig | None = None, templates: str = "all", controls: bool = True,
                  n: int | None = None) -> list[Task]:
    """Planted tasks (and, unless ``controls=False``, their controls) for ``templates``."""
    cfg = cfg or OrganismConfig.default()
    w = build_world(cfg)
    tids = _template_ids(templates)
    n = n or cfg.n_test
    tasks = _memo_tasks(cfg, w, tids, n) + _syl_tasks(cfg, w, tids, n) + _few_tasks(cfg, w, tids, n) + \
        _logic_tasks(cfg, w, tids, n) + _redefine_tasks(cfg, w, tids, n) + _break_tasks(cfg, w, tids, n) + \
        _marker_tasks(cfg, w, tids, n) + _quiz_tasks(cfg, w, tids, n)
    return [t for t in tasks if controls or not t.metadata["control"]]


def check_tasks(cfg: OrganismConfig | None = None) -> list[Task]:
    """The tasks the check table shows: every planted task and every control, all templates."""
    return planted_tasks(cfg, "all", controls=True)


def example_row(task: Task, e: Example) -> dict:
    """One JSONL row in the ISP classification format plus our extra fields."""
    return {
        "id": e.id,
        "prompt": e.prompt,
        "classes": list(e.classes),
        "answer_index": e.answer_index,
        "tempting_index": e.tempting_index,
        "views": {k: {"prompt": v.prompt, "answer_index": v.answer_index} for k, v in e.views.items()},
        "cause": task.metadata.get("cause"),
        "template": e.metadata.get("template"),
        "split": e.metadata.get("split"),
    }


def write_jsonl(task: Task, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        for e in task.examples:
            f.write(json.dumps(example_row(task, e)) + "\n")
    tmp.replace(path)
    return path


def write_tasks(tasks: Iterable[Task], out_dir: str | Path) -> list[Path]:
    return [write_jsonl(t, Path(out_dir) / f"{t.name}.jsonl") for t in tasks]


def main(argv=None) -> None:
    """``python -m experiments.organisms.planted OUT_DIR [--templates all|train|heldout] [--seed N]``"""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--templates", default="all", choices=["all", "train", "heldout"])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    for p in write_tasks(planted_tasks(OrganismConfig.default().with_seed(a.seed), a.templates), a.out_dir):
        print(p)


if __name__ == "__main__":
    main()
