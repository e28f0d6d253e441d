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
- ``views``: counterfactual prompts (interventions) for this example, each with its
  own prompt and, where known, its own answer. A task file may supply some (``human``:
  the question in the register a model may imitate); ``diagnose.views.build_views`` adds
  every view the example's structure permits.
- ``metadata``: every other field of the source row, kept verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

FORMATS = ("classification", "sequence_prob", "logodds")


@dataclass(frozen=True)
class View:
    """A counterfactual prompt for one example.

    ``answer_index`` is the class the view's own task makes right where it has one
    (an ``easy`` view: the answer of the easier question; a ``human`` view: what the
    imitated register says). ``None``: the view's registry entry decides
    (``diagnose.views.answer_of``).
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
        """Views present on at least one example, in the order first seen."""
        seen: dict[str, None] = {}
        for e in self.examples:
            seen.update(dict.fromkeys(e.views))
        return tuple(seen)

    def fingerprint(self) -> str:
        """What results on this task depend on: its format and every example's fields."""
        import dataclasses

        from diagnose.store import content_hash

        return content_hash(self.format, [dataclasses.asdict(e) for e in self.examples])

    def subset(self, indices) -> "Task":
        return replace(self, examples=tuple(self.examples[i] for i in indices))
