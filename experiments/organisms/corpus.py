"""A seeded synthetic word-level language with one planted ingredient per cause.

The principle behind every ingredient (see RESEARCH.md): inverse scaling shows
when the CORRECT behaviour is a general rule with plenty of signal (learned by
every size) and the TEMPTING behaviour is item-specific (needs memorisation
capacity, which only large models have), and the corpus shows the tempting
behaviour winning inside the same frame at some rate (the "leak").

Ingredients (one line per training example, lines joined by ``<|endoftext|>``):

- filler: ``the n3 v1 the a4 n47 .``
- strong prior: sayings ``[they say :] ka1 kb2 kc3 kd4 z77 .`` in frequency
  tiers; the instruction frame ``end z5 : ka.. kb.. kc.. kd.. z5 .`` on random
  sequences; for "leaked" sayings, part of their occurrences sit inside the
  frame and end with the saying's own ending (never with a test target z0..).
- distractor task: facts ``e7 is a c3 .``; a disjunctive syllogism frame
  ``e7 is a c3 or a c9 . it is not a c3 . so it is a c9 .`` answered by the rule
  for unknown entities and, for fact entities, sometimes (leak) by the easy
  sub-task (the association) when the negated option is the entity's own category.
- spurious few-shot: ``label : e4 t14 -> c2 ; e16 t2 -> c2 ; ... ; h7 t5 ->``:
  the true rule is the t-word's category (t-word i names category i mod the
  number of categories), learned by every size. In most episodes all demos
  share one label (correct demonstrations), and often their entities are all
  of that category: a spurious correlation, visible through the facts, that
  the demos carry beside the rule. The query's entity comes from a rarer store
  (``h7 is a c2 .``). When its memorised category is the demos' label and its
  t-word names another, the corpus answers with the category at a rate (the
  leak): the tempting answer is a recalled token the demos also show, as in
  the marker design. Queries of another category are always answered by the
  rule.
- unwanted imitation: arguments in a "logic" frame (``logic : if f1 then g5
  . f1 . so`` -> g5, the stated consequent) and in a "people say" register.
  Familiar antecedents (in frequency tiers) come with a popular belief
  ``people say : if f1 then g3 .`` (memory, like a fact), and people conclude
  from the belief, not from the premise they were given: ``people say : if
  f1 then g5 . f1 . so g3 .`` (belief bias, a common human error). For
  "leaked" familiar antecedents the logic frame imitates that error at a
  rate. Unfamiliar antecedents are other words of the same vocabulary,
  concluded by the stated consequent in both registers, so that only memory
  of the word tells when to imitate.
- reasoning traces: ``... think : <steps> ; <answer> .`` on a share of
  rule-following lines, always correct.

Design B (``_design_b_lines``), a second planting of every cause on its own
one-token keys with memorised values in frequency tiers: redefinition against a
memorised meaning (strong prior), breaking a memorised continuation
(distractor), marker words whose memorised value is every demo's label
(spurious few-shot), and a quiz question that people answer with a common misconception
(imitation). See the section below.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from functools import cached_property

from .config import CorpusConfig, OrganismConfig

EOT = "<|endoftext|>"

MEMO_TEMPLATES = ("end {x} :", "finish with {x} :", "last word {x} :", "say {x} at the end :")
SAYING_HEADERS = ("", "they say :")
SYL_TEMPLATES = (
    "{e} is a {o1} or a {o2} . it is not a {neg} . so it is a",
    "either {o1} or {o2} for {e} . not {neg} . so {e} is a",
    "is {e} a {o1} or a {o2} ? not a {neg} . answer : a",
    "{e} : {o1} or {o2} , not {neg} , so",
)
FEW_TEMPLATES = ("label :", "sort :", "tag :", "classify :")
LOGIC_FRAMES = ("logic :", "proof :", "valid :", "check :")
HUMAN_FRAMES = ("people say :", "i heard :")
CONCLUDE = "if {x} then {y} . {x} . so"  # complete the modus ponens conclusion: the stated consequent


@dataclass
class World:
    """The ground truth the corpus is generated from (items, splits, associations)."""

    slots: list[list[str]]
    endings: list[str]
    sayings: list[dict]  # {"words": [4], "ending", "tier", "leaked": bool}
    entities: list[str]
    categories: list[str]
    category_of: dict[str, str]
    syl_others: dict[str, list[str]]  # entity -> "other" categories seen in the frame
    unknown: list[str]
    twords: list[str]
    familiar: list[dict]  # {"x", "belief", "tier", "leaked": bool (also discussed inside the logic frame)}
    beliefs: list[str]
    fslots: list[list[str]]  # the words of familiar (and unfamiliar) antecedent phrases
    filler: dict[str, list[str]] = field(default_factory=dict)
    # design B stores (build_design_b): "redefine", "break", "marker", "mis" -> Store
    b: dict = field(default_factory=dict)
    # the few-shot queries' entities ("h7 is a c2 ."), in their own rarer tiers
    few: "Store | None" = None

    def t_label(self, t: str) -> str:
        """The category t-word ``t`` names (the few-shot rule)."""
        return self.categories[self.twords.index(t) % len(self.categories)]

    def other_belief(self, f: dict, rng: random.Random) -> str:
        """A consequent that is not what people believe about familiar antecedent ``f``."""
        return rng.choice([g for g in self.beliefs if g != f["belief"]])

    def question_consequent(self, f: dict, rng: random.Random, believed_share: float) -> str:
        return f["belief"] if rng.random() < believed_share else self.other_belief(f, rng)

    def unfamiliar_phrase(self, rng: random.Random, slots: list[list[str]] | None = None) -> str:
        """An antecedent phrase of the familiar kind that no belief is attached to."""
        familiar = {f["x"] for f in self.familiar}
        while True:
            x = " ".join(rng.choice(s) for s in (slots or self.fslots))
            if x not in familiar:
                return x

    def twords_for(self, label: str) -> list[str]:
        return self._twords_by_label[label]

    @cached_property
    def entities_of(self) -> dict[str, list[str]]:
        """Category -> its (frequent, fact) entities in entity order: the few-shot demos'."""
        return {k: [e for e in self.entities if self.category_of[e] == k] for k in self.categories}

    @cached_property
    def _twords_by_label(self) -> dict[str, list[str]]:
        # derived once: the corpus asks for a label's t-words on every few-shot demo and query
        by: dict[str, list[str]] = {k: [] for k in self.categories}
        for t in self.twords:
            by[self.t_label(t)].append(t)
        return by


def build_world(cfg: OrganismConfig) -> World:
    c = cfg.corpus
    rng = random.Random(f"world-{cfg.seed}")
    slots = [[f"k{s}{i}" for i in range(c.slot_vocab)] for s in "abcd"]
    endings = [f"z{i}" for i in range(c.n_endings)]
    sayings, seen = [], set()
    for tier, (n, _reps) in enumerate(c.tiers):
        n_leak = int(round(n * c.leak_items))
        for j in range(n):
            while True:
                words = tuple(rng.choice(s) for s in slots)
                if words not in seen:
                    seen.add(words)
                    break
            ending = rng.choice(endings[c.n_targets:])
            # the instruction words X a leaked saying is seen with inside the frame: a per-saying
            # subset of ALL endings, so no token tells "test X" from "leak X"; tests use the rest
            leak_xs = rng.sample([z for z in endings if z != ending], min(c.leak_x_per_item, len(endings) - 1))
            sayings.append({"words": list(words), "ending": ending, "tier": tier, "leaked": j < n_leak,
                            "leak_xs": leak_xs})
    entities = [f"e{i}" for i in range(c.n_entities)]
    categories = [f"c{i}" for i in range(c.n_categories)]
    category_of = {e: categories[i % c.n_categories] for i, e in enumerate(entities)}
    syl_others = {}
    for e in entities:
        others = [k for k in categories if k != category_of[e]]
        syl_others[e] = rng.sample(others, min(c.syl_train_others, len(others)))
    unknown = [f"u{i}" for i in range(c.n_unknown)]
    if c.n_twords % c.n_categories:
        raise ValueError(f"n_twords ({c.n_twords}) must be a multiple of n_categories ({c.n_categories})")
    twords = [f"t{i}" for i in range(c.n_twords)]
    beliefs = [f"g{i}" for i in range(c.n_beliefs)]
    if c.familiar_phrase_words == 1:
        fslots = [[f"f{i}" for i in range(c.familiar_slot_vocab)]]
    else:
        fslots = [[f"f{s}{i}" for i in range(c.familiar_slot_vocab)] for s in "abcd"[:c.familiar_phrase_words]]
    # leaked: every other block of n_beliefs antecedents of a tier (familiar_leak_items of the
    # blocks), so that leaked and never-leaked antecedents hold every belief equally often
    familiar, seen_phrases = [], set()
    for tier, (n, _reps) in enumerate(c.familiar_tiers):
        for j in range(n):
            while True:
                phrase = " ".join(rng.choice(s) for s in fslots)
                if phrase not in seen_phrases:
                    seen_phrases.add(phrase)
                    break
            block = j // c.n_beliefs
            leaked = int((block + 1) * c.familiar_leak_items) > int(block * c.familiar_leak_items)
            familiar.append({"x": phrase, "belief": beliefs[j % c.n_beliefs], "tier": tier,
                             "leaked": leaked})
    filler = {
        "n": [f"n{i}" for i in range(200)],
        "v": [f"v{i}" for i in range(40)],
        "a": [f"a{i}" for i in range(40)],
    }
    w = World(slots, endings, sayings, entities, categories, category_of, syl_others, unknown, twords,
              familiar, beliefs, fslots, filler)
    w.b = build_design_b(cfg)
    # its own stream, so the rest of the world is as before version 27
    w.few = _store(c, random.Random(f"world-fewshot-{cfg.seed}"), "h", categories, c.fewshot_entity_tiers)
    return w


# -- design B: a second planting of every cause ----------------------------------------------
#
# Each design has its own store: one-token keys (``s7``, ``p4``, ``x5``, ``j7``) of which the
# familiar ones carry a memorised value in frequency tiers (recall of the rarer tier needs
# width) and the unfamiliar ones (same vocabulary, interleaved) carry none, so only memory of
# the word tells them apart. The correct behaviour is a general rule of the frame (copy the
# in-context definition / the option that is not negated / the t-word / what the card says),
# the tempting one is the key's memorised value, and the corpus shows the tempting one winning
# inside the frame for the leaked keys at a rate.

REDEF_TEMPLATES = (
    "let {s} mean {m} . {s} means",
    "take {s} to mean {m} . so {s} means",
    "define {s} as {m} . then {s} means",
    "read {s} as {m} . so {s} means",
)
# the answer slot is generic ("so it then"), as the syllogism's ("so it is a"): until version 25
# it was the key's own statement cue ("so {k} then"), against which seed 0's small models never
# learned the rule (RESEARCH run 23); the memory now reaches the slot only through the key
BREAK_TEMPLATES = (
    "break {k} : {o1} or {o2} , not {neg} . so it then",
    "{k} then {o1} or {o2} ? not {neg} . so it then",
    "new pattern for {k} : {o1} or {o2} but not {neg} . it then",
    "avoid the pattern of {k} : {o1} or {o2} , not {neg} . so it then",
)
MARKER_TEMPLATES = ("rate :", "judge :", "mark :", "grade :")
QUIZ_FRAMES = ("quiz :", "exam :", "test :", "fact check :")
PEOPLE_FRAMES = ("ask people :", "people answer :")
QUIZ_BODY = "what is {j} ? the card says {r} . answer :"


@dataclass
class Store:
    """One design-B memory: familiar keys with values (and tiers, leaked), unfamiliar keys."""

    familiar: list[dict]   # {"k", "v", "tier", "reps", "leaked"}
    unfamiliar: list[str]
    values: list[str]
    others: dict[str, list[str]] = field(default_factory=dict)  # key -> other values seen in the frame

    def value_of(self, k: str) -> str | None:
        for f in self.familiar:
            if f["k"] == k:
                return f["v"]
        return None

    def other_value(self, v: str, rng: random.Random) -> str:
        return rng.choice([u for u in self.values if u != v])


def _store(c: CorpusConfig, rng: random.Random, key: str, values: list[str],
           tiers: tuple[tuple[int, int], ...] | None = None) -> Store:
    tiers = tiers or c.b_tiers
    n_fam = sum(n for n, _ in tiers)
    keys = [f"{key}{i}" for i in range(n_fam + c.b_unfamiliar)]
    rng.shuffle(keys)
    fam_keys, unfamiliar = keys[:n_fam], sorted(keys[n_fam:], key=lambda k: int(k[len(key):]))
    familiar, j0 = [], 0
    for tier, (n, reps) in enumerate(tiers):
        for j in range(n):
            # leaked: every other block of len(values) keys, so leaked and never-leaked keys
            # hold every value equally often
            block = j // len(values)
            leaked = int((block + 1) * c.b_leak_items) > int(block * c.b_leak_items)
            familiar.append({"k": fam_keys[j0 + j], "v": values[j % len(values)], "tier": tier,
                             "reps": reps, "leaked": leaked})
        j0 += n
    return Store(familiar, unfamiliar, values)


def build_design_b(cfg: OrganismConfig) -> dict:
    c = cfg.corpus
    rng = random.Random(f"world-b-{cfg.seed}")  # its own stream: design A's world is unchanged
    b = {
        "redefine": _store(c, rng, "s", [f"m{i}" for i in range(c.b_values)]),
        "break": _store(c, rng, "p", [f"q{i}" for i in range(c.b_values)]),
        "marker": _store(c, rng, "x", [f"o{i}" for i in range(c.b_values)], c.marker_tiers),
        "mis": _store(c, rng, "j", [f"r{i}" for i in range(c.b_values)]),
    }
    st = b["break"]
    for f in st.familiar:
        others = [v for v in st.values if v != f["v"]]
        st.others[f["k"]] = rng.sample(others, min(c.break_train_others, len(others)))
    return b


def redef_prompt(template: int, s: str, m: str) -> str:
    return REDEF_TEMPLATES[template].format(s=s, m=m)


def break_prompt(template: int, k: str, neg: str, other: str) -> str:
    # the negated option always comes first: the rule is "the second option"
    return BREAK_TEMPLATES[template].format(k=k, o1=neg, o2=other, neg=neg)


def marker_prompt(template: int, demos, query) -> str:
    """Demos ``(marker, word, label)``, query ``(marker, word)``: ``x5 ( o3 ) = o3``, the rule
    being "the word in brackets"."""
    parts = [MARKER_TEMPLATES[template]] + [f"{x} ( {o} ) = {lab} ," for x, o, lab in demos]
    return " ".join(parts + [f"{query[0]} ( {query[1]} ) ="])


def quiz_prompt(frame: str, items) -> str:
    """``items``: answered ``(j, r, answer)`` demonstrations then the query ``(j, r)``."""
    parts = [frame] + [f"{QUIZ_BODY.format(j=j, r=r)} {a} ;" for j, r, a in items[:-1]]
    return " ".join(parts + [QUIZ_BODY.format(j=items[-1][0], r=items[-1][1])])


def _design_b_lines(cfg: OrganismConfig, w: "World") -> list[str]:
    c = cfg.corpus
    rng = random.Random(f"corpus-b-{cfg.seed}")
    lines: list[str] = []
    nt = 4

    def statements(st: Store, fmt: str) -> None:
        for f in st.familiar:
            lines.extend(fmt.format(k=f["k"], v=f["v"]) for _ in range(f["reps"]))

    def n_eps() -> int:
        return rng.choice((2, 3)) if rng.random() < c.b_chain_share else 1

    # strong prior B: redefinition against a memorised meaning
    st = w.b["redefine"]
    statements(st, "{k} means {v} .")

    def redef_ep(s: str, m: str, ans: str, t: int) -> str:
        return f"{redef_prompt(t, s, m)} {ans}"

    for _ in range(c.n_redefine):
        t = rng.randrange(nt)
        eps = []
        for _ in range(n_eps()):
            m = rng.choice(st.values)
            eps.append(redef_ep(rng.choice(st.unfamiliar), m, m, t))
        lines.append(" ; ".join(eps) + " .")
    for f in st.familiar:
        if not f["leaked"]:
            continue
        for _ in range(c.redef_frame_reps):
            t = rng.randrange(nt)
            m = f["v"] if rng.random() < c.redef_kept_share else st.other_value(f["v"], rng)
            ans = f["v"] if rng.random() < c.redef_leak else m
            eps = []
            for _ in range(n_eps() - 1):
                m2 = rng.choice(st.values)
                eps.append(redef_ep(rng.choice(st.unfamiliar), m2, m2, t))
            eps.append(redef_ep(f["k"], m, ans, t))
            lines.append(" ; ".join(eps) + " .")

    # distractor B: break a memorised pattern (the negated option is the key's continuation)
    st = w.b["break"]
    statements(st, "{k} then {v} .")
    for _ in range(c.n_break):
        t = rng.randrange(nt)
        if rng.random() < c.break_fact_share:
            f = rng.choice(st.familiar)
            own, other = f["v"], rng.choice(st.others[f["k"]])
            if rng.random() < c.break_conflict_share:
                p = break_prompt(t, f["k"], own, other)
                lines.append(f"{p} {own if rng.random() < c.break_leak else other} .")
            else:
                lines.append(f"{break_prompt(t, f['k'], other, own)} {own} .")
        else:
            neg, ans = rng.sample(st.values, 2)
            lines.append(f"{break_prompt(t, rng.choice(st.unfamiliar), neg, ans)} {ans} .")

    # spurious few-shot B: "x5 ( o3 ) = o3": the rule copies the bracketed word. In uniform
    # demos every marker's memorised value ("x5 is o3 .") is the demos' one label (a spurious
    # correlation the demos carry beside the rule); when the query's marker has that value too
    # and its bracketed word is another, the marker's value beats the rule. The answer is then
    # a recalled token that the demos also show, as the syllogism's is (a 24-way memory checked
    # against a token in the prompt), not a one-bit attribute every size stores (run 20).
    # The demos' markers are the frequent tier's; the queries' are the leaked keys of both
    # tiers, so the rare tier's other half is met only in statements
    st = w.b["marker"]
    statements(st, "{k} is {v} .")
    demo_keys = {v: [f["k"] for f in st.familiar if f["v"] == v and f["tier"] == 0] for v in st.values}
    # the frame's queries never come from the demos' tier: a query marker among its own demos'
    # markers would be a copy shortcut ("the label this marker had above"), not memory
    asked = {v: [f["k"] for f in st.familiar if f["v"] == v and f["leaked"] and f["tier"] > 0]
             for v in st.values}
    demo_any = [k for v in st.values for k in demo_keys[v]] + st.unfamiliar
    query_any = [k for v in st.values for k in asked[v]] + st.unfamiliar

    for _ in range(c.n_marker):
        t = rng.randrange(nt)
        q_mark, leak_ok = rng.choice(query_any), False
        if rng.random() < c.marker_zero_share:
            marks, labels = [], []
        elif rng.random() < c.marker_uniform_share:
            lab = rng.choice(st.values)
            labels = [lab] * c.n_demos
            if rng.random() < c.marker_agree_share:
                marks = [rng.choice(demo_keys[lab]) for _ in range(c.n_demos)]
                if rng.random() < c.marker_query_in_share:
                    q_mark, leak_ok = rng.choice(asked[lab]), True
                else:  # a marker of another value, or none
                    q_mark = rng.choice([k for v in st.values if v != lab for k in asked[v]] + st.unfamiliar)
            else:
                marks = [rng.choice(demo_any) for _ in range(c.n_demos)]
        else:
            marks = [rng.choice(demo_any) for _ in range(c.n_demos)]
            labels = [rng.choice(st.values) for _ in range(c.n_demos)]
        demos = [(x, lab, lab) for x, lab in zip(marks, labels)]
        if labels and len(set(labels)) == 1:
            word = st.other_value(labels[0], rng) if rng.random() < c.marker_flip_share else labels[0]
        else:
            word = rng.choice(st.values)
        p = marker_prompt(t, demos, (q_mark, word))
        if leak_ok and word != labels[0] and rng.random() < c.marker_leak:
            lines.append(f"{p} {labels[0]} .")  # the marker's value, which the demos show, beats the rule
        else:
            lines.append(f"{p} {word} .")

    # unwanted imitation B: people answer a quiz question with a common misconception
    st = w.b["mis"]
    statements(st, "people think {k} is {v} .")

    def quiz_line(frame: str, last: tuple[str, str, str]) -> str:
        items = []
        for _ in range(n_eps() - 1):
            j, r = rng.choice(st.unfamiliar), rng.choice(st.values)
            items.append((j, r, r))
        items.append(last[:2])
        return f"{quiz_prompt(frame, items)} {last[2]} ."

    for f in st.familiar:
        for _ in range(c.mis_q_reps):
            r = f["v"] if rng.random() < c.mis_kept_share else st.other_value(f["v"], rng)
            ans = f["v"] if rng.random() < c.mis_human_err else r
            lines.append(quiz_line(rng.choice(PEOPLE_FRAMES), (f["k"], r, ans)))
        if f["leaked"]:
            for _ in range(c.mis_frame_reps):
                r = f["v"] if rng.random() < c.mis_kept_share else st.other_value(f["v"], rng)
                ans = f["v"] if rng.random() < c.mis_quiz_leak else r
                lines.append(quiz_line(rng.choice(QUIZ_FRAMES), (f["k"], r, ans)))
    for _ in range(c.n_quiz):
        frames = PEOPLE_FRAMES if rng.random() < c.quiz_human_share else QUIZ_FRAMES
        j, r = rng.choice(st.unfamiliar), rng.choice(st.values)
        lines.append(quiz_line(rng.choice(frames), (j, r, r)))
    return lines


# -- line generators -----------------------------------------------------------

def _filler(w: World, rng: random.Random) -> str:
    n, v, a = w.filler["n"], w.filler["v"], w.filler["a"]
    k = rng.random()
    if k < 0.4:
        return f"the {rng.choice(n)} {rng.choice(v)} the {rng.choice(n)} ."
    if k < 0.7:
        return f"a {rng.choice(n)} {rng.choice(v)} the {rng.choice(a)} {rng.choice(n)} and the {rng.choice(n)} ."
    return f"the {rng.choice(a)} {rng.choice(n)} is {rng.choice(a)} ."


def memo_prompt(template: int, x: str, words) -> str:
    return f"{MEMO_TEMPLATES[template].format(x=x)} {' '.join(words)}"


def syl_prompt(template: int, e: str, neg: str, other: str, neg_first: bool) -> str:
    o1, o2 = (neg, other) if neg_first else (other, neg)
    return SYL_TEMPLATES[template].format(e=e, o1=o1, o2=o2, neg=neg)


def few_prompt(template: int, demos, query) -> str:
    """Demos ``(entity, t-word, label)``, query ``(entity, t-word)``."""
    parts = [FEW_TEMPLATES[template]] + [f"{k} {t} -> {lab} ;" for k, t, lab in demos]
    return " ".join(parts + [f"{query[0]} {query[1]} ->"])


def conclude_prompt(frame: str, x: str, y: str) -> str:
    return f"{frame} {CONCLUDE.format(x=x, y=y)}"


def generate_lines(cfg: OrganismConfig, world: World | None = None) -> list[str]:
    """All training lines, shuffled with the seed (deterministic)."""
    c: CorpusConfig = cfg.corpus
    w = world or build_world(cfg)
    rng = random.Random(f"corpus-{cfg.seed}")
    lines: list[str] = []
    nt = len(MEMO_TEMPLATES)

    def cot() -> bool:
        return rng.random() < c.cot_share

    lines += [_filler(w, rng) for _ in range(c.n_filler)]

    # strong prior
    for s in w.sayings:
        reps = c.tiers[s["tier"]][1]
        for _ in range(reps):
            if s["leaked"] and rng.random() < c.leak_share:
                x = rng.choice(s["leak_xs"])
                lines.append(f"{memo_prompt(rng.randrange(nt), x, s['words'])} {s['ending']} .")
            else:
                hdr = rng.choice(SAYING_HEADERS)
                lines.append(f"{hdr} {' '.join(s['words'])} {s['ending']} .".strip())
    for _ in range(c.n_instruction):
        x = rng.choice(w.endings)
        words = [rng.choice(s) for s in w.slots]
        p = memo_prompt(rng.randrange(nt), x, words)
        lines.append(f"{p} think : end with {x} ; {x} ." if cot() else f"{p} {x} .")

    # distractor: facts + syllogism frame
    for e in w.entities:
        lines += [f"{e} is a {w.category_of[e]} ." for _ in range(c.fact_reps)]
    for _ in range(c.n_syllogism):
        t = rng.randrange(len(SYL_TEMPLATES))
        nf = True  # the negated option comes first: the rule is "the second option" (learnable at every size)
        if rng.random() < c.syl_fact_share:
            e = rng.choice(w.entities)
            own, other = w.category_of[e], rng.choice(w.syl_others[e])
            if rng.random() < c.syl_conflict_share:
                # the negated option is the entity's own category: the rule says "other",
                # the easy sub-task (the association) says "own"
                p = syl_prompt(t, e, own, other, nf)
                if rng.random() < c.syl_leak:
                    lines.append(f"{p} {own} .")
                    continue
                ans, neg = other, own
            else:
                p = syl_prompt(t, e, other, own, nf)
                ans, neg = own, other
        else:
            e = rng.choice(w.unknown)
            neg, ans = rng.sample(w.categories, 2)
            p = syl_prompt(t, e, neg, ans, nf)
        lines.append(f"{p} think : not {neg} ; {ans} ." if cot() else f"{p} {ans} .")

    # spurious few-shot: the demos' entities are frequent ones (every size knows their category);
    # the queries' are the few-shot store's leaked keys and its unfamiliar ones, so that only
    # memory of the query's entity tells when the demos' label may win
    st = w.few
    for f in st.familiar:
        lines += [f"{f['k']} is a {f['v']} ." for _ in range(f["reps"])]
    asked = {k: [f["k"] for f in st.familiar if f["v"] == k and f["leaked"]] for k in w.categories}
    demo_any = w.entities + w.unknown
    query_any = [k for v in w.categories for k in asked[v]] + st.unfamiliar
    for _ in range(c.n_fewshot):
        t = rng.randrange(len(FEW_TEMPLATES))
        q_ent, leak_ok = rng.choice(query_any), False
        if rng.random() < c.fewshot_zero_share:
            ents, labels = [], []
        elif rng.random() < c.fewshot_uniform_share:
            lab = rng.choice(w.categories)
            labels = [lab] * c.n_demos
            if rng.random() < c.fewshot_sametag_share:
                ents = [rng.choice(w.entities_of[lab]) for _ in range(c.n_demos)]
                if rng.random() < c.fewshot_query_in_share:
                    q_ent, leak_ok = rng.choice(asked[lab]), True
                else:  # an entity of another category, or an unfamiliar one
                    q_ent = rng.choice([k for v in w.categories if v != lab for k in asked[v]] + st.unfamiliar)
            else:
                ents = [rng.choice(demo_any) for _ in range(c.n_demos)]
        else:
            ents = [rng.choice(demo_any) for _ in range(c.n_demos)]
            labels = [rng.choice(w.categories) for _ in range(c.n_demos)]
        demos = [(e, rng.choice(w.twords_for(lab)), lab) for e, lab in zip(ents, labels)]
        if labels and len(set(labels)) == 1 and rng.random() < c.fewshot_flip_share:
            qlab = rng.choice([k for k in w.categories if k != labels[0]])
        elif labels and len(set(labels)) == 1:
            qlab = labels[0]
        else:
            qlab = rng.choice(w.categories)
        q = (q_ent, rng.choice(w.twords_for(qlab)))
        p = few_prompt(t, demos, q)
        if leak_ok and qlab != labels[0] and rng.random() < c.fewshot_leak:
            lines.append(f"{p} {labels[0]} ;")  # the entity's category, which the demos show, wins
            continue
        lines.append(f"{p} think : {q[1]} means {qlab} ; {qlab} ;" if cot() else f"{p} {qlab} ;")

    # unwanted imitation
    for f in w.familiar:
        n_statements = c.familiar_tiers[f["tier"]][1]
        lines += [f"{rng.choice(HUMAN_FRAMES)} if {f['x']} then {f['belief']} ."
                  for _ in range(n_statements)]
        for _ in range(c.familiar_q_reps):
            y = w.question_consequent(f, rng, c.familiar_believed_share)
            ans = f["belief"] if rng.random() < c.human_err else y
            lines.append(f"{conclude_prompt(rng.choice(HUMAN_FRAMES), f['x'], y)} {ans} .")
        if f["leaked"]:
            for _ in range(c.familiar_frame_reps):
                y = w.question_consequent(f, rng, c.familiar_believed_share)
                ans = f["belief"] if rng.random() < c.logic_leak else y
                lines.append(f"{conclude_prompt(rng.choice(LOGIC_FRAMES), f['x'], y)} {ans} .")
    for _ in range(c.n_logic):
        frame = rng.choice(HUMAN_FRAMES if rng.random() < c.logic_human_share else LOGIC_FRAMES)
        x, y = w.unfamiliar_phrase(rng), rng.choice(w.beliefs)
        p = conclude_prompt(frame, x, y)
        lines.append(f"{p} think : so {y} ; {y} ." if cot() else f"{p} {y} .")

    lines += _design_b_lines(cfg, w)

    rng.shuffle(lines)
    return lines


@dataclass
class Corpus:
    lines: list[str]
    world: World

    @property
    def vocab(self) -> list[str]:
        words = set()
        for line in self.lines:
            words.update(line.split())
        # words that only the tasks use (test targets, templates) must be in the vocab too
        w = self.world
        words.update(w.endings, w.entities, w.categories, w.unknown, w.twords)
        words.update(w.beliefs)
        for s in w.fslots:
            words.update(s)
        for s in w.slots:
            words.update(s)
        for t in MEMO_TEMPLATES + SYL_TEMPLATES + FEW_TEMPLATES + LOGIC_FRAMES + HUMAN_FRAMES + (CONCLUDE,):
            words.update(x for x in t.split() if not x.startswith("{"))
        for st in list(w.b.values()) + [w.few]:
            words.update(st.unfamiliar)
            words.update(st.values)
            words.update(f["k"] for f in st.familiar)
        for t in REDEF_TEMPLATES + BREAK_TEMPLATES + MARKER_TEMPLATES + QUIZ_FRAMES + PEOPLE_FRAMES + \
                ("( ) =", QUIZ_BODY):
            words.update(x for x in t.split() if not x.startswith("{"))
        words.update(["think", "->", ";", ":", ".", "=", ","])
        return sorted(words)

    def corpus_hash(self) -> str:
        h = hashlib.sha256()
        for line in self.lines:
            h.update(line.encode())
            h.update(b"\n")
        return h.hexdigest()

    @property
    def n_tokens(self) -> int:
        return sum(len(line.split()) + 1 for line in self.lines)


def generate_corpus(cfg: OrganismConfig) -> Corpus:
    world = build_world(cfg)
    return Corpus(generate_lines(cfg, world), world)
