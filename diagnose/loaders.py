"""Read and write task files in the Inverse Scaling Prize (ISP) formats.

Files are JSON Lines (``.jsonl``, or ``.json`` holding one object per line) or
CSV with a header row. The format of a file is detected from its fields
(``other_prompt`` -> logodds, else ``classes`` -> classification, else
``completion`` -> sequence_prob) unless the caller names it.

Everything is parsed as data: JSON with :func:`json.loads`, Python list
literals (the released files store ``classes`` as ``"[' heavy.', ' fonder.']"``)
with :func:`ast.literal_eval`; nothing is evaluated. Classes are kept exactly,
leading and trailing spaces included, because they are scored token by token.

Bad input raises :class:`TaskFormatError` naming the file, the line (JSONL)
or row (CSV, header = row 1) and what to do, at the first problem found
(DESIGN.md section 7): a wrong row must stop a run, not skew a number.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

from diagnose import store
from diagnose.tasks import FORMATS, Example, Task, View

__all__ = ["TaskFormatError", "load_task", "save_task_jsonl"]

#: Fields each format needs; every other field of a row goes to ``metadata``
#: (except the optional ``tempting_index`` and ``views``).
REQUIRED: dict[str, tuple[str, ...]] = {
    "classification": ("prompt", "classes", "answer_index"),
    "sequence_prob": ("prompt", "completion"),
    "logodds": ("prompt", "other_prompt", "classes", "answer_index"),
}
OPTIONAL = ("tempting_index", "views")
_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}
_FIX = "fix the row or remove it"
_FORMATS_HELP = (
    "classification: prompt, classes, answer_index; sequence_prob: prompt, completion; "
    "logodds: prompt, other_prompt, classes, answer_index"
)


class TaskFormatError(ValueError):
    """A task file that cannot be read as an ISP task.

    The message names the file, the line or row, the problem and the fix;
    ``path`` and ``where`` (e.g. ``"line 17"``, ``"row 3"``, or None for a
    whole-file problem) are kept for callers that report errors themselves.
    """

    def __init__(self, message: str, path: str | None = None, where: str | None = None):
        super().__init__(message)
        self.path = path
        self.where = where


class _Bad(Exception):
    """A problem in one row; the caller adds the file and line."""

    def __init__(self, problem: str, hint: str = _FIX):
        super().__init__(f"{problem}; {hint}")


class _DuplicateKey(Exception):
    pass


def _error(path: Path | str, where: str | None, message: str) -> TaskFormatError:
    place = f"{path}, {where}" if where else str(path)
    return TaskFormatError(f"{place}: {message}", path=str(path), where=where)


# --------------------------------------------------------------------------- loading


def load_task(
    path: str | os.PathLike[str], format: str | None = None, name: str | None = None
) -> Task:
    """Load one ISP task file.

    ``format`` overrides detection; then every row must have that format's
    fields, and fields of other formats are kept as metadata. ``name``
    (default: the file stem) prefixes example ids, ``f"{name}:{line}"``, so an
    id points back at its line in the file.
    """
    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown task format {format!r}; expected one of {FORMATS}")
    path = Path(path)
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise _error(
            path, None, f"unknown file extension {path.suffix!r}; use .jsonl, .json (JSON Lines) or .csv"
        )
    text = _read_text(path)
    if not text.strip():
        raise _error(path, None, "the file is empty; add one example per line (JSONL) or row (CSV)")
    name = name or path.stem
    rows = _jsonl_rows(path, text) if kind == "jsonl" else _csv_rows(path, text)

    fmt, first = format, None
    examples: list[Example] = []
    for where, number, row in rows:
        try:
            detected = _detect(row)
            if format is None:
                if fmt is None:
                    if detected is None:
                        raise _unknown_format(row)
                    fmt, first = detected, where
                elif detected is not None and detected != fmt:
                    raise _Bad(
                        f"this is a {detected} row ({_SIGNALS[detected]}) but {first} made the file {fmt}",
                        "a task file holds one format: fix the row or move it to a file of its own",
                    )
            assert fmt is not None
            examples.append(_example(row, fmt, f"{name}:{number}"))
        except _Bad as e:
            raise _error(path, where, str(e)) from None
    if not examples:
        raise _error(path, None, "no examples, only a header; add data rows")
    assert fmt is not None
    return Task(name=name, format=fmt, examples=tuple(examples), source=str(path))


def _read_text(path: Path) -> str:
    """The file as text; a BOM (spreadsheet exports) is dropped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _error(path, None, "no such file; check the path") from None
    except IsADirectoryError:
        raise _error(path, None, "is a directory; give a .jsonl or .csv task file") from None
    except OSError as e:
        raise _error(path, None, f"cannot be read ({e.strerror}); check the path and permissions") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise _error(path, f"line {line}", "not valid UTF-8; save the file as UTF-8") from None


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
    # Split on "\n" only: str.splitlines() would also split on U+2028 and
    # friends, which JSON allows raw inside strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        hint = "each line must hold one JSON object (JSON Lines); fix the line or remove it"
        try:
            row = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as e:
            raise _error(path, where, f"not valid JSON ({e.msg} at column {e.colno}); {hint}") from None
        except _DuplicateKey as e:
            raise _error(path, where, f"the key {e.args[0]!r} appears twice; {hint}") from None
        except (ValueError, RecursionError) as e:
            raise _error(path, where, f"not valid JSON ({e}); {hint}") from None
        if not isinstance(row, dict):
            raise _error(path, where, f"a JSON {_json_type(row)}, not an object; {hint}")
        yield where, number, row


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: a repeated key would otherwise silently keep the last value."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _csv_rows(path: Path, text: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Rows as dicts of strings; numbered by record, header = row 1.

    Rows, not physical lines: a quoted prompt may span several lines, and a
    spreadsheet shows the same row numbers.
    """
    records = iter(csv.reader(io.StringIO(text, newline=""), strict=True))
    header: list[str] = []
    number = 0
    while True:
        number += 1
        where = f"row {number}"
        try:
            record = next(records)
        except StopIteration:
            return
        except csv.Error as e:
            raise _error(
                path, where, f"malformed CSV ({e}); quote fields holding commas, quotes or newlines"
            ) from None
        if number == 1:
            header = [h.strip() for h in record]
            if not any(header):
                raise _error(path, where, "the first row must be a header naming the fields")
            repeated = sorted({h for h in header if header.count(h) > 1})
            if repeated:
                raise _error(path, where, f"the header names {repeated[0]!r} twice; rename or remove a column")
            continue
        if not record:  # a blank line
            continue
        if len(record) != len(header):
            raise _error(
                path,
                where,
                f"{len(record)} fields but the header has {len(header)}; "
                "quote fields holding commas, or fix the row",
            )
        yield where, number, dict(zip(header, record))


# --------------------------------------------------------------------------- one row

_SIGNAL_FIELDS = ("classes", "completion", "other_prompt")
_SIGNALS = {
    "logodds": "it has 'other_prompt'",
    "classification": "it has 'classes' and no 'other_prompt'",
    "sequence_prob": "it has 'completion' and no 'classes'",
}


def _given(value: Any) -> bool:
    """Null and "" (an empty CSV cell) count as absent."""
    return value is not None and value != ""


def _detect(row: Mapping[str, Any]) -> str | None:
    if _given(row.get("other_prompt")):
        return "logodds"
    if _given(row.get("classes")):
        return "classification"
    if _given(row.get("completion")):
        return "sequence_prob"
    return None


def _unknown_format(row: Mapping[str, Any]) -> _Bad:
    empty = [repr(k) for k in _SIGNAL_FIELDS if k in row]
    problem = f"{' and '.join(empty)} empty" if empty else "no 'classes', 'completion' or 'other_prompt'"
    return _Bad(
        f"{problem}, so the format is unknown",
        f"give the fields of one ISP format ({_FORMATS_HELP}) or pass format=",
    )


def _example(row: Mapping[str, Any], fmt: str, example_id: str) -> Example:
    """Validate one row as ``fmt`` and build its Example."""
    for key in REQUIRED[fmt]:
        if row.get(key) is None:
            raise _Bad(f"missing required field {key!r} (the {fmt} format needs {', '.join(REQUIRED[fmt])})")
    prompt = _text(row, "prompt", blank_ok=False)
    classes: tuple[str, ...] = ()
    answer = completion = other_prompt = None
    if fmt == "sequence_prob":
        completion = _text(row, "completion", blank_ok=True)
    else:
        classes = _classes(row["classes"], fmt)
        answer = _index(row["answer_index"], "'answer_index'", len(classes))
    if fmt == "logodds":
        other_prompt = _text(row, "other_prompt", blank_ok=False)

    tempting = None
    if _given(row.get("tempting_index")):
        if not classes:
            raise _Bad("'tempting_index' is given but a sequence_prob row has no classes", "remove it")
        tempting = _index(row["tempting_index"], "'tempting_index'", len(classes))
        if tempting == answer:
            raise _Bad(
                f"'tempting_index' equals 'answer_index' ({answer}); the tempting class must be a wrong one",
                "fix it or remove it",
            )
    views = _views(row["views"], len(classes)) if _given(row.get("views")) else {}
    used = set(REQUIRED[fmt]) | set(OPTIONAL)
    return Example(
        id=example_id,
        prompt=prompt,
        classes=classes,
        answer_index=answer,
        completion=completion,
        other_prompt=other_prompt,
        tempting_index=tempting,
        views=views,
        metadata={k: v for k, v in row.items() if k not in used},
    )


def _text(row: Mapping[str, Any], key: str, *, blank_ok: bool) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise _Bad(f"{key!r} must be a string, not a {_json_type(value)}")
    if value == "" or (not blank_ok and not value.strip()):
        raise _Bad(f"{key!r} is empty")
    return value


def _classes(value: Any, fmt: str) -> tuple[str, ...]:
    """A list of strings, given as a list, a JSON list string or a Python list literal."""
    example = 'write it like [" yes", " no"]'
    parsed = value
    if isinstance(value, str):
        source = value.strip()
        if not source:
            raise _Bad("'classes' is empty", example)
        try:
            parsed = json.loads(source)
        except (ValueError, RecursionError):
            try:
                with warnings.catch_warnings():  # e.g. invalid escapes in the literal
                    warnings.simplefilter("ignore")
                    parsed = ast.literal_eval(source)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                raise _Bad(
                    f"'classes' is {_short(value)}, neither a JSON list nor a Python list literal", example
                ) from None
    if not isinstance(parsed, list):
        raise _Bad(f"'classes' must be a list of strings, not {_short(parsed)}", example)
    for i, c in enumerate(parsed):
        if not isinstance(c, str):
            raise _Bad(f"class {i} is {_short(c)}, not a string", "quote every class")
        if c == "":
            raise _Bad(f"class {i} is the empty string", "give every class some text, e.g. ' yes'")
    if len(parsed) < 2:
        raise _Bad(f"'classes' has {len(parsed)} class(es); a task needs at least two")
    seen: dict[str, int] = {}
    for i, c in enumerate(parsed):
        if c in seen:
            raise _Bad(f"classes {seen[c]} and {i} are both {c!r}; classes must differ")
        seen[c] = i
    if fmt == "logodds" and len(parsed) != 2:
        raise _Bad(f"a logodds row needs exactly two classes, got {len(parsed)}")
    return tuple(parsed)


_INT = re.compile(r"[+-]?[0-9]+")


def _index(value: Any, label: str, n: int) -> int:
    """A class index: an int, or a string of digits (CSV); never a bool or float."""
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        index = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        index = value
    else:
        raise _Bad(f"{label} is {_short(value)}, not a whole number; give an integer 0..{n - 1}")
    if index < 0:
        raise _Bad(f"{label} is {index}, which is negative (valid: 0..{n - 1})")
    if index >= n:
        raise _Bad(f"{label} is {index} but there are only {n} classes (valid: 0..{n - 1})")
    return index


def _views(value: Any, n_classes: int) -> dict[str, View]:
    """``{name: prompt}`` or ``{name: {"prompt": ..., "answer_index": ...}}``, maybe JSON-encoded."""
    form = 'write it like {"prior": {"prompt": "...", "answer_index": 0}}'
    if isinstance(value, str):
        try:
            value = json.loads(value, object_pairs_hook=_unique_keys)
        except (ValueError, RecursionError, _DuplicateKey):
            raise _Bad(f"'views' is {_short(value)}, not a JSON object", form) from None
    if not isinstance(value, dict):
        raise _Bad(f"'views' must be an object, not {_short(value)}", form)
    views: dict[str, View] = {}
    for name, view in value.items():
        label = f"view {name!r}"
        if not name:
            raise _Bad("a view has an empty name", form)
        if isinstance(view, str):
            view = {"prompt": view}
        if not isinstance(view, dict):
            raise _Bad(f"{label} must be a prompt string or an object, not {_short(view)}", form)
        unknown = sorted(set(view) - {"prompt", "answer_index"})
        if unknown:
            raise _Bad(f"{label} has unknown field {unknown[0]!r} (allowed: prompt, answer_index)", form)
        prompt = view.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise _Bad(f"{label} needs a non-empty 'prompt' string", form)
        answer = view.get("answer_index")
        if answer is not None:
            if not n_classes:
                raise _Bad(f"{label} has an 'answer_index' but a sequence_prob row has no classes", form)
            answer = _index(answer, f"{label}: 'answer_index'", n_classes)
        views[name] = View(prompt=prompt, answer_index=answer)
    return views


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _short(value: Any, limit: int = 60) -> str:
    """A value for a message: its repr, cut so a long prompt doesn't flood the terminal."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- saving


def save_task_jsonl(task: Task, path: str | os.PathLike[str]) -> Path:
    """Write ``task`` as ISP-style JSONL, atomically; returns the path.

    Each row is checked with the loader's own rules first, so what is written
    loads back (``load_task(save_task_jsonl(task, p))``) with the same prompts,
    classes, answers, views, tempting indices and metadata. Ids are not
    stored: on loading they are rebuilt from line numbers.
    """
    path = Path(path)
    if _SUFFIXES.get(path.suffix.lower()) != "jsonl":
        raise ValueError(f"{path}: save a task as .jsonl (or .json), not {path.suffix or 'no extension'!r}")
    if not task.examples:
        raise ValueError(f"task {task.name!r} has no examples; an empty task file could not be loaded back")
    lines = []
    for e in task.examples:
        row = _row(e, task.format)
        try:
            lines.append(json.dumps(row, ensure_ascii=False))
        except (TypeError, ValueError) as err:
            raise ValueError(f"example {e.id}: cannot be written as JSON ({err})") from None
    store.write_text(path, "".join(line + "\n" for line in lines))
    return path


def _row(example: Example, fmt: str) -> dict[str, Any]:
    row: dict[str, Any] = {"prompt": example.prompt}
    if fmt == "sequence_prob":
        row["completion"] = example.completion
    else:
        row["classes"] = list(example.classes)
        row["answer_index"] = example.answer_index
    if fmt == "logodds":
        row["other_prompt"] = example.other_prompt
    if example.tempting_index is not None:
        row["tempting_index"] = example.tempting_index
    if example.views:
        row["views"] = {
            k: {"prompt": v.prompt, "answer_index": v.answer_index} for k, v in example.views.items()
        }
    clash = sorted(set(example.metadata) & (set(REQUIRED[fmt]) | set(OPTIONAL)))
    if clash:
        raise ValueError(f"example {example.id}: metadata key {clash[0]!r} is a field of the row itself")
    row.update(example.metadata)
    detected = _detect(row)
    if detected != fmt:
        raise ValueError(
            f"example {example.id}: the saved row would read as {detected or 'no known format'}, "
            f"not {fmt}; check its fields and metadata"
        )
    try:
        _example(row, fmt, example.id)
    except _Bad as e:
        raise ValueError(f"example {example.id}: {e}") from None
    return row
