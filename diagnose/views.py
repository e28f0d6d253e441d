"""Counterfactual views: interventions on a task's prompts, built from its structure.

One registry (``VIEWS``) for every command that reads a task. A view is an
intervention with a structural precondition: it is built for an example wherever the
example's text and fields permit it, and never chosen from the task's name, file name
or presumed cause. An example whose structure does not permit a view gets none, with
the reason; a view built on too few examples is reported as not applicable.

| view | intervention (precondition) | the view's answer |
|---|---|---|
| ``prior`` | the instruction removed (a leading clause, up to the first ``:``, ``.``, ``?`` or newline, that names exactly one of the classes) | none (memory's choice is read) |
| ``easy`` | the first negation removed (``not``, ``never``, ``cannot``, the ``n't`` forms) | the other class (two classes) |
| ``zero_shot`` | the demonstrations removed (answered demonstrations detected, see ``parse_demonstrations``) | the task's |
| ``balanced`` | half of the demonstrations replaced by other examples' queries with their correct answers, chosen to balance the labels | the task's |
| ``shuffled_labels`` | every demonstration's label replaced by a random class label (Min et al. 2022) | the task's |
| ``no_context`` | the classes scored after an empty context (lm-eval's ``acc_mutual_info`` prior) | none |
| ``human`` | the question in the register whose habits a model may imitate; only where the task supplies it (``views.human``) | given by the task |

Each view names the cause whose mechanism it probes (``ViewSpec.tests``); the cause
classifier reads what the views *do* (``diagnose.features``), and a cause none of whose
views could be built is reported as untested, never as absent. Views a task file
supplies itself (``views`` field) are kept as given and take precedence.

Builders are pure functions of the task's text and a seed (the random draws of
``balanced`` and ``shuffled_labels`` are seeded by the example's position and prompt,
not its id, which carries the file name), so the same task gives the same views.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from diagnose.tasks import Example, Task, View

# a builder returns, per example, the view or the reason it does not apply
Built = list["View | str"]
Builder = Callable[[Task, int], Built]

# answer policies: whose answer a view's choice is compared with
ANSWER_TASK, ANSWER_OTHER, ANSWER_NONE, ANSWER_GIVEN = "task", "other", "none", "given"


@dataclass(frozen=True)
class ViewSpec:
    name: str
    summary: str
    answer: str        # task | other | none | given
    tests: str         # the cause whose mechanism this intervention probes
    build: Builder | None = None   # None: only a task can supply it


VIEWS: dict[str, ViewSpec] = {}


def register_view(name: str, *, summary: str, answer: str, tests: str):
    """Register a structural view builder (a decorator), or with ``build=None`` below a
    view only a task can supply."""
    def deco(fn: Builder | None) -> Builder | None:
        if name in VIEWS:
            raise ValueError(f"view {name!r} is registered twice")
        VIEWS[name] = ViewSpec(name, summary, answer, tests, fn)
        return fn
    return deco


def view_order(names) -> list[str]:
    """Registry order first, then any other (task-supplied) name alphabetically."""
    order = {v: i for i, v in enumerate(VIEWS)}
    return sorted(names, key=lambda v: (order.get(v, len(order)), v))


def views_testing(cause: str) -> tuple[str, ...]:
    return tuple(v.name for v in VIEWS.values() if v.tests == cause)


# -- structure -------------------------------------------------------------------------

_CLAUSE_END = re.compile(r"[:.?\n]")
_PUNCT = " \t\n\"'.,;:!?()[]{}"


def class_word(c: str) -> str:
    """A class's text as it would be named in a prompt: no surrounding space or punctuation."""
    return c.strip().strip(_PUNCT)


def _names(text: str, word: str) -> bool:
    return bool(word) and re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text) is not None


def instruction_clause(text: str, classes: Sequence[str]) -> int | None:
    """End offset of a leading instruction clause in ``text``, or None.

    The clause runs to the first ``:``, ``.``, ``?`` or newline; it is an instruction when
    it names exactly one of the classes (the instructed answer: ``end z5 :``, ``Write a
    quote that ends in the word "heavy":``, ``let e7 be a c9 .``). A clause naming several
    classes lists options (a question), and one naming none sets no answer."""
    m = _CLAUSE_END.search(text)
    if m is None:
        return None
    clause = text[:m.end()]
    named = {w for w in (class_word(c) for c in classes) if _names(clause, w)}
    if len(named) != 1 or not text[m.end():].strip():
        return None
    return m.end()


_NEGATIONS = [(re.compile(p), r) for p, r in (
    (r"\bcan't\b", "can"), (r"\bcannot\b", "can"), (r"\bwon't\b", "will"),
    (r"\b(is|are|was|were|does|do|did|has|have|had|should|would|could|must|need)n't\b", r"\1"),
    (r"\s+not\b", ""), (r"\s+never\b", ""), (r"^not\s+", ""), (r"^never\s+", ""))]


def remove_negation(text: str) -> str | None:
    """``text`` with its first negation removed (the earliest match of any form)."""
    best = None
    for pat, rep in _NEGATIONS:
        m = pat.search(text)
        if m and (best is None or m.start() < best[0].start()):
            best = (m, pat, rep)
    if best is None:
        return None
    m, pat, rep = best
    return text[:m.start()] + m.expand(rep) + text[m.end():]


@dataclass(frozen=True)
class Demo:
    text: str      # the demonstration up to and including its answer cue
    space: str     # whitespace between the cue and the label
    label: str     # the label, as written (a class's text without its leading space)
    sep: str       # whitespace/punctuation after the label, before what follows

    def render(self, label: str | None = None) -> str:
        return f"{self.text}{self.space}{self.label if label is None else label}{self.sep}"


@dataclass(frozen=True)
class Demonstrations:
    """A prompt read as ``header + demos + query``; ``render`` gives the prompt back."""

    header: str
    demos: tuple[Demo, ...]
    query: str     # ends with the answer cue (and the prompt's trailing whitespace)

    def render(self, demos: Sequence[str] | None = None) -> str:
        body = "".join(d.render() for d in self.demos) if demos is None else "".join(demos)
        return self.header + body + self.query


def _first_token(s: str) -> str:
    parts = s.split()
    return parts[0] if parts else ""


def parse_demonstrations(prompt: str, classes: Sequence[str]) -> Demonstrations | None:
    """Answered demonstrations before the query, or None.

    The answer cue is the prompt's last whitespace-separated token (``->``, ``Answer:``);
    a demonstration ends wherever the cue occurs earlier followed by whitespace and one of
    the classes' labels; at least two are needed. The run of whitespace and punctuation
    after a label separates it from what follows, and must be the same newline or
    punctuation after every demonstration. A leading header (an instruction
    paragraph, or ``label :``) that the other segments do not start with is split off,
    so every view keeps it.
    """
    body = prompt.rstrip()
    trail = prompt[len(body):]
    cue = body.split()[-1] if body.split() else ""
    labels = sorted({c.strip() for c in classes if c.strip()}, key=len, reverse=True)
    if not cue or not labels:
        return None
    final = len(body) - len(cue)
    pat = re.compile(rf"(?<!\S){re.escape(cue)}(\s+)({'|'.join(map(re.escape, labels))})(?!\w)")
    matches = [m for m in pat.finditer(body, 0, final) if m.end() <= final]
    if len(matches) < 2:
        return None
    demos, start = [], 0
    for m in matches:
        sep = re.match(r"[^\w]*", body[m.end():final]).group()
        demos.append(Demo(body[start:m.start(1)], m.group(1), m.group(2), sep))
        start = m.end() + len(sep)
    query = body[start:] + trail
    if not body[start:final].strip() or any(not d.text[:-len(cue)].strip() for d in demos):
        return None
    # demonstrations are delimited alike (a newline or punctuation, the same each time);
    # a cue-and-label pair inside running text ("is e7 a c3 or a c9") is not one
    marks = {d.sep.replace(" ", "") for d in demos}
    if len(marks) != 1 or not next(iter(marks)):
        return None
    header = _header(demos[0].text, [d.text for d in demos[1:]] + [query])
    if header:
        demos[0] = replace(demos[0], text=demos[0].text[len(header):])
    out = Demonstrations(header, tuple(demos), query)
    assert out.render() == prompt, "demonstration parse must give the prompt back"
    return out


def _header(first: str, others: Sequence[str]) -> str:
    """The part of the first demonstration that the other segments do not share."""
    heads = {_first_token(o) for o in others}
    if len(heads) == 1:
        (t,) = heads
        if not t or first.startswith(t):
            return ""
        m = re.search(rf"(?:^|\n|:\s)\s*(?={re.escape(t)})", first)
        if not m:
            return ""
        cut = m.end()
        return first[:cut] if first[cut:].startswith(t) and cut > 0 else ""
    # segments of one template ("p9 : a or b ? ... then", "p4 : ...") have one length; a
    # first segment of that length has no header, whatever its first ":" splits off
    lengths = {len(o.split()) for o in others}
    if len(lengths) == 1 and len(first.split()) in lengths:
        return ""
    m = re.search(r"[:\n]\s*", first)
    if not m or any(o.startswith(first[:m.start()].strip()) for o in others):
        return ""
    return first[:m.end()]


# -- the registry ----------------------------------------------------------------------

def _classification_only(task: Task) -> str | None:
    if task.format != "classification":
        return f"built for classification tasks, not {task.format}"
    return None


@register_view("prior", summary="the instruction removed: what memory alone answers",
               answer=ANSWER_NONE, tests="strong_prior")
def _prior(task: Task, seed: int) -> Built:
    if (why := _classification_only(task)):
        return [why] * len(task)
    out: Built = []
    for e in task.examples:
        d = parse_demonstrations(e.prompt, e.classes)
        head, text = (d.header + "".join(x.render() for x in d.demos), d.query) if d else ("", e.prompt)
        end = instruction_clause(text, e.classes)
        out.append(View(head + text[end:].lstrip(), None) if end is not None else
                   "no leading instruction clause naming exactly one class")
    return out


@register_view("easy", summary="the first negation removed: the easier question it hides",
               answer=ANSWER_OTHER, tests="distractor_task")
def _easy(task: Task, seed: int) -> Built:
    if task.format == "logodds":
        return ["built for classification and sequence_prob tasks, not logodds"] * len(task)
    out: Built = []
    for e in task.examples:
        d = parse_demonstrations(e.prompt, e.classes) if e.classes else None
        if d:
            q = remove_negation(d.query)
            p = None if q is None else d.header + "".join(x.render() for x in d.demos) + q
        else:
            p = remove_negation(e.prompt)
        if p is None:
            out.append("no negation to remove")
            continue
        other = 1 - e.answer_index if len(e.classes) == 2 else None
        out.append(View(p, other))
    return out


def _demos_of(task: Task) -> list[Demonstrations | None]:
    return [parse_demonstrations(e.prompt, e.classes) for e in task.examples]


NO_DEMOS = "no answered demonstrations before the query"


@register_view("zero_shot", summary="the demonstrations removed", answer=ANSWER_TASK,
               tests="spurious_few_shot")
def _zero_shot(task: Task, seed: int) -> Built:
    if (why := _classification_only(task)):
        return [why] * len(task)
    return [View(d.header + d.query, None) if d else NO_DEMOS for d in _demos_of(task)]


@register_view("shuffled_labels", summary="the demonstrations' labels replaced by random labels",
               answer=ANSWER_TASK, tests="spurious_few_shot")
def _shuffled(task: Task, seed: int) -> Built:
    if (why := _classification_only(task)):
        return [why] * len(task)
    out: Built = []
    for i, (e, d) in enumerate(zip(task.examples, _demos_of(task))):
        if d is None:
            out.append(NO_DEMOS)
            continue
        rng = random.Random(f"{seed}:shuffled_labels:{i}:{e.prompt}")
        labels = [c.strip() for c in e.classes]
        out.append(View(d.render([x.render(rng.choice(labels)) for x in d.demos]), None))
    return out


@register_view("balanced", summary="half the demonstrations replaced by other examples' queries "
               "answered correctly, chosen to balance the labels", answer=ANSWER_TASK,
               tests="spurious_few_shot")
def _balanced(task: Task, seed: int) -> Built:
    """The task's own queries are the cases its demonstrations' regularities do not
    cover, so putting half of them in as demonstrations (answered correctly, labels
    balanced) breaks whatever feature made the demonstrations' labels predictable."""
    if (why := _classification_only(task)):
        return [why] * len(task)
    parsed = _demos_of(task)
    pool: dict[str, list[tuple[int, str]]] = {}
    for i, d in enumerate(parsed):
        if d is not None:
            e = task.examples[i]
            pool.setdefault(e.classes[e.answer_index].strip(), []).append((i, d.query.rstrip()))
    out: Built = []
    for i, (e, d) in enumerate(zip(task.examples, parsed)):
        if d is None:
            out.append(NO_DEMOS)
            continue
        rng = random.Random(f"{seed}:balanced:{i}:{e.prompt}")
        labels = [c.strip() for c in e.classes]
        counts = Counter({lab: 0 for lab in labels})
        counts.update(x.label for x in d.demos)
        # replace half the demonstrations, those of the commonest labels first
        order = sorted(range(len(d.demos)), key=lambda j: (-counts[d.demos[j].label], rng.random()))
        rendered = [x.render() for x in d.demos]
        # another example may pose this very query: as a demonstration it would hand over the answer
        own_query = d.query.rstrip()
        used = {i} | {k for ks in pool.values() for k, q in ks if q == own_query}
        replaced = 0
        for j in order[:len(d.demos) // 2]:
            counts[d.demos[j].label] -= 1
            for lab in sorted(labels, key=lambda lab: (counts[lab], rng.random())):
                cands = [c for c in pool.get(lab, []) if c[0] not in used]
                if cands:
                    k, q = rng.choice(cands)
                    used.add(k)
                    rendered[j] = f"{q}{d.demos[j].space}{lab}{d.demos[j].sep}"
                    counts[lab] += 1
                    replaced += 1
                    break
            else:
                counts[d.demos[j].label] += 1
        if replaced < len(d.demos) // 2 or len(d.demos) < 2:
            out.append("too few other examples to replace half of the demonstrations")
            continue
        out.append(View(d.render(rendered), None))
    return out


@register_view("no_context", summary="the classes scored after an empty context (their prior)",
               answer=ANSWER_NONE, tests="strong_prior")
def _no_context(task: Task, seed: int) -> Built:
    if task.format == "logodds":
        return ["built for classification and sequence_prob tasks, not logodds"] * len(task)
    return [View("", None) for _ in task.examples]


register_view("human", summary="the question in the register whose habits a model may imitate "
              "(supplied by the task)", answer=ANSWER_GIVEN, tests="unwanted_imitation")(None)


# -- building ----------------------------------------------------------------------------

@dataclass
class ViewReport:
    """Which views a task got: built (with the examples they cover) or not applicable."""

    n_examples: int
    built: dict[str, int] = field(default_factory=dict)          # view -> examples covered
    supplied: list[str] = field(default_factory=list)            # views the task file gave
    not_applicable: dict[str, str] = field(default_factory=dict)  # view -> reason

    def to_dict(self) -> dict:
        return {"built": view_order(self.built), "coverage": {v: self.built[v] for v in
                                                             view_order(self.built)},
                "supplied": view_order(self.supplied), "not_applicable": dict(self.not_applicable),
                "n_examples": self.n_examples}


def build_views(task: Task, seed: int = 0, min_share: float = 0.5) -> tuple[Task, ViewReport]:
    """``task`` with every registered view its structure permits, and the report.

    A view whose precondition holds on fewer than ``min_share`` of the examples is
    dropped and reported as not applicable (with the commonest reason); otherwise it is
    built on the examples where it holds. Views the task supplies are kept as given.
    """
    n = len(task.examples)
    report = ViewReport(n_examples=n)
    supplied = Counter(v for e in task.examples for v in e.views)
    report.supplied = list(supplied)
    new_views: list[dict[str, View]] = [dict(e.views) for e in task.examples]
    for name, spec in VIEWS.items():
        if supplied.get(name):
            report.built[name] = supplied[name]
            continue
        if spec.build is None:
            report.not_applicable[name] = "only the task can supply it (a 'views' field)"
            continue
        got = spec.build(task, seed)
        ok = [isinstance(g, View) for g in got]
        k = sum(ok)
        if n == 0 or k < max(1, min_share * n):
            reasons = Counter(g for g in got if isinstance(g, str))
            why = reasons.most_common(1)[0][0] if reasons else "no examples"
            report.not_applicable[name] = (why if k == 0 else
                                           f"applies to {k} of {n} examples only; elsewhere: {why}")
            continue
        for views, g in zip(new_views, got):
            if isinstance(g, View):
                views[name] = g
        report.built[name] = k
    for name in supplied:
        report.built.setdefault(name, supplied[name])
    examples = tuple(replace(e, views=v) for e, v in zip(task.examples, new_views))
    return replace(task, examples=examples), report


def answer_of(name: str, e: Example) -> int | None:
    """The class a view's own task makes right, or None when the view has none (its
    choice is then read against the task's answer and the tempting class)."""
    v = e.views[name]
    if v.answer_index is not None:
        return v.answer_index
    spec = VIEWS.get(name)
    return e.answer_index if spec is None or spec.answer == ANSWER_TASK else None


def view_task(task: Task, name: str) -> tuple[Task, list[int]]:
    """The examples that have view ``name``, their prompts replaced by the view's, and
    their indices in ``task``. Each example's answer is the view's own answer where it has
    one and the task's otherwise (``metadata["view_has_answer"]`` says which), so a view
    scores like any task."""
    idx = [i for i, e in enumerate(task.examples) if name in e.views]
    examples = []
    for i in idx:
        e = task.examples[i]
        own = answer_of(name, e) if e.classes else None
        examples.append(replace(e, prompt=e.views[name].prompt, views={},
                                answer_index=e.answer_index if own is None else own,
                                metadata={**e.metadata, "view_has_answer": own is not None}))
    return replace(task, name=f"{task.name}[{name}]", examples=tuple(examples)), idx
