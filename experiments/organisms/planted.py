"""Planted and control tasks for the organisms, as ``diagnose.tasks.Task`` objects.

Each planted task isolates one cause; every example carries the correct
answer, the tempting answer (memorised / imitated / distractor / spurious) and
the counterfactual views that apply:

- ``strong_prior`` (memo_trap*): ``prior`` view = the saying without the
  instruction; its answer is the memorised ending.
- ``distractor_task`` (negated_syllogism): ``easy`` view = ``eI is a``; its
  answer is the entity's associated category (the easy sub-task).
- ``spurious_few_shot`` (spurious_fewshot): ``zero_shot`` view (demonstrations
  removed) and ``balanced`` view (the same demonstrations, still of the
  query's category, with mixed labels, so the shared category no longer
  predicts the label); both keep the true answer.
- ``unwanted_imitation`` (belief_bias*): ``human`` view = the same argument
  in the "people say" register, whose answer is the popular belief instead of
  the stated consequent (the human error the logic frame may imitate).

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
            views = {"prior": View(" ".join(s["words"]), tm)}
            return memo_prompt(t, x, s["words"]), classes, a, tm, views, {"tier": s["tier"], "leaked": s["leaked"]}
        return make

    def copy_ctrl(rng, t, split):
        words = [rng.choice(s) for s in w.slots]
        x = rng.choice(_pool(targets, split))
        other = rng.choice(w.endings[c.n_targets:])
        classes, a, tm = _two(rng, x, other)
        return memo_prompt(t, x, words), classes, a, tm, {"prior": View(" ".join(words), tm)}, {}

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
        views = {"easy": View(f"{e} is a", tm)}
        return syl_prompt(t, e, own, other, True), classes, a, tm, views, {"entity": e}

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
    flip = {"yes": "no", "no": "yes"}
    nd = cfg.corpus.n_demos

    def uniform(query_in: bool, query_flips: bool):
        """4 demos of one category and one label; the query entity is of that category (``query_in``) or not."""
        def make(rng, t, split):
            q = rng.choice(_pool(w.entities, split))
            own = w.category_of[q]
            k = own if query_in else rng.choice([c for c in w.categories if c != own])
            lab = rng.choice(["yes", "no"])
            demos = [(k, rng.choice(w.twords_for(lab)), lab) for _ in range(nd)]
            qlab = flip[lab] if query_flips else lab  # the true (t-word) label of the query
            query = (q, rng.choice(w.twords_for(qlab)))
            mixed = ["yes", "no"] * (nd // 2) + ["yes"] * (nd % 2)
            rng.shuffle(mixed)
            bal = [(k, rng.choice(w.twords_for(m)), m) for m in mixed]
            classes, ans, tm = _two(rng, qlab, flip[qlab])
            views = {"zero_shot": View(few_prompt(t, [], query)), "balanced": View(few_prompt(t, bal, query))}
            return few_prompt(t, demos, query), classes, ans, tm, views, {"query_category": own}
        return make

    def rule(rng, t, split):
        q = rng.choice(_pool(w.entities, split))
        demos = [(k, x, w.t_label(x)) for k, x in ((rng.choice(w.categories), rng.choice(w.twords)) for _ in range(nd))]
        query = (q, rng.choice(w.twords))
        lab = w.t_label(query[1])
        classes, ans, tm = _two(rng, lab, flip[lab])
        return few_prompt(t, demos, query), classes, ans, tm, {"zero_shot": View(few_prompt(t, [], query))}, {}

    tpl = [FEW_TEMPLATES[i] for i in tids]
    return [
        _task("spurious_fewshot", "spurious_few_shot", False, "fewshot", tpl,
              _examples("spurious_fewshot", n, tids, uniform(True, True)),
              "4 correct demos with one label, all about one category, which is the query entity's "
              "(memorised) category; the query's t-word says the other label"),
        _task("ctrl_fewshot_consistent", None, True, "fewshot", tpl,
              _examples("ctrl_fewshot_consistent", n, tids, uniform(True, False)),
              "the same demos; the query's t-word agrees with them (consistent demonstrations are followed)"),
        _task("ctrl_fewshot_other", None, True, "fewshot", tpl,
              _examples("ctrl_fewshot_other", n, tids, uniform(False, True)),
              "the same surface, demos of a category that is NOT the query's: the rule should win at every "
              "size (the shared category is the reason)"),
        _task("ctrl_fewshot_rule", None, True, "fewshot", tpl, _examples("ctrl_fewshot_rule", n, tids, rule),
              "demos of random categories and labels: the t-word rule"),
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


# -- public API -------------------------------------------------------------------------

def planted_tasks(cfg: OrganismConfig | None = None, templates: str = "all", controls: bool = True,
                  n: int | None = None) -> list[Task]:
    """Planted tasks (and, unless ``controls=False``, their controls) for ``templates``."""
    cfg = cfg or OrganismConfig.default()
    w = build_world(cfg)
    tids = _template_ids(templates)
    n = n or cfg.n_test
    tasks = _memo_tasks(cfg, w, tids, n) + _syl_tasks(cfg, w, tids, n) + _few_tasks(cfg, w, tids, n) + \
        _logic_tasks(cfg, w, tids, n)
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
