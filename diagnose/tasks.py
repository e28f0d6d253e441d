"""Tasks and examples in the Inverse Scaling Prize (ISP) formats.

A task is plain data: a name, a format and a list of examples. Everything that
scores, probes or classifies a task takes it as input and never mutates it.

Formats (DESIGN.md section 4):
- ``classification``: ``prompt``, ``classes``, ``answer_index``;
- ``sequence_prob``: ``prompt``, ``completion``;
- ``logodds``: ``prompt``, ``other_prompt``, ``classes``, ``answer_index``.

Beyond the ISP fields an example may carry:
- ``tempting_index``: the class a failing model picks (the memorized,
  imitated or distractor answer). Probes measure "correct minus tempting".
  For two-class tasks it defaults to the other class.
- ``views``: counterfactual prompts that isolate one cause (``prior``: the
  instruction removed; ``easy``: the distractor sub-task alone;
  ``zero_shot``: demonstrations removed; ``balanced``: demonstrations whose
  spurious feature no longer predicts the label; ``human``: the same question
  put in the register whose habits the model may imitate, e.g. what "people
  say", so its answer is the human error). Each view has its own prompt and,
  where known, its own answer.
- ``metadata``: every other field of the source row, kept verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

FORMATS = ("classification", "sequence_prob", "logodds")
VIEW_NAMES = ("prior", "easy", "zero_shot", "balanced", "human")


@dataclass(frozen=True)
class View:
    """A counterfactual prompt for one example.

    ``answer_index`` is the class the view's own task makes right (for a
    ``prior`` view: the class memory predicts; for an ``easy`` view: the
    answer of the sub-task). ``None`` means "same as the example".
    """

    prompt: str
    answer_index: int | None = None


@dataclass(frozen=True)
class Example:
    id: str
    prompt: str
    classes: tuple[str, ...] = ()
    answer_index: int | None = None
    completion: str | None = None
    other_prompt: str | None = None
    tempting_index: int | None = None
    views: Mapping[str, View] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def tempting(self) -> int | None:
        """The tempting class: explicit, or the other class of a two-class task."""
        if self.tempting_index is not None:
            return self.tempting_index
        if len(self.classes) == 2 and self.answer_index is not None:
            return 1 - self.answer_index
        return None


@dataclass(frozen=True)
class Task:
    name: str
    format: str
    examples: tuple[Example, ...]
    source: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown task format {self.format!r}; expected one of {FORMATS}")

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def n_classes(self) -> int | None:
        """The number of classes when every example has the same number."""
        sizes = {len(e.classes) for e in self.examples}
        return sizes.pop() if len(sizes) == 1 else None

    @property
    def view_names(self) -> tuple[str, ...]:
        """Views present on every example, in canonical order then by name."""
        if not self.examples:
            return ()
        common = set(self.examples[0].views)
        for e in self.examples[1:]:
            common &= set(e.views)
        order = {v: i for i, v in enumerate(VIEW_NAMES)}
        return tuple(sorted(common, key=lambda v: (order.get(v, len(order)), v)))

    def view(self, name: str) -> "Task":
        """The task with every prompt replaced by its ``name`` view.

        The view's answer (when it has one) becomes the example's answer, so the
        result scores like any task: its accuracy is "how often the model does
        what the view's own task asks".
        """
        missing = [e.id for e in self.examples if name not in e.views]
        if missing:
            raise KeyError(
                f"task {self.name!r}: view {name!r} is missing on {len(missing)} examples "
                f"(first: {missing[0]}); available on all: {list(self.view_names)}"
            )
        examples = []
        for e in self.examples:
            v = e.views[name]
            answer = e.answer_index if v.answer_index is None else v.answer_index
            examples.append(replace(e, prompt=v.prompt, answer_index=answer, views={}))
        return replace(self, name=f"{self.name}[{name}]", examples=tuple(examples))

    def subset(self, indices) -> "Task":
        return replace(self, examples=tuple(self.examples[i] for i in indices))
