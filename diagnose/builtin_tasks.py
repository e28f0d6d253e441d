"""Built-in tasks by name: registered suites' tasks and the released ISP files.

``diagnose run memo_trap`` runs a planted task; ``diagnose run memo-trap`` the ISP file,
looked up in ``$DIAGNOSE_ISP_DIR``, then ``../shared/isp`` beside the repository or the
current directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from diagnose.tasks import Task

ISP_NAMES = ("memo-trap", "prompt-injection", "modus-tollens", "neqa", "hindsight-neglect")
# the cause the ISP paper assigns (McKenzie et al. 2023, table 1): shown in reports as the
# paper's view, labelled so; the diagnosis never reads it
PAPER_CAUSES = {"memo-trap": "strong_prior", "prompt-injection": "strong_prior",
                "modus-tollens": "unwanted_imitation", "neqa": "distractor_task",
                "hindsight-neglect": "spurious_few_shot", "redefine": "strong_prior",
                "resisting-correction": "strong_prior", "pattern-matching-suppression":
                "distractor_task", "sig-figs": "distractor_task",
                "into-the-unknown": "distractor_task", "repetitive-algebra": "spurious_few_shot"}


def paper_cause(task: Task) -> dict | None:
    """The ISP paper's cause for a released task file, for display only."""
    cause = PAPER_CAUSES.get(Path(task.source or "").stem.lower())
    return None if cause is None else {
        "cause": cause, "note": "the Inverse Scaling Prize paper's assignment (McKenzie et al. "
        "2023), shown for reference; the diagnosis does not read it"}


def isp_dir() -> Path | None:
    cands = []
    if os.environ.get("DIAGNOSE_ISP_DIR"):
        cands.append(Path(os.environ["DIAGNOSE_ISP_DIR"]))
    cands += [Path(__file__).resolve().parents[2] / "shared" / "isp",
              Path.cwd().parent / "shared" / "isp", Path.cwd() / "shared" / "isp"]
    return next((c for c in cands if c.is_dir()), None)


def suite_tasks(name: str) -> list[Task]:
    """The tasks of a registered suite (``planted``: the model organisms' planted and
    control tasks)."""
    from diagnose.registry import suites

    found = suites()
    if name not in found:
        raise FileNotFoundError(f"no task suite {name!r}; registered: {', '.join(found) or 'none'}")
    return found[name].tasks()


def resolve_task(name_or_path: str) -> Task:
    """A task file, a task of a registered suite by name, or an ISP task name."""
    from diagnose.loaders import load_task
    from diagnose.registry import suites

    p = Path(name_or_path)
    if p.suffix.lower() in (".jsonl", ".json", ".csv") or p.exists():
        return load_task(p)
    known: list[str] = []
    for suite in suites().values():
        tasks = suite.tasks()
        for t in tasks:
            if t.name == name_or_path:
                return t
        known += [t.name for t in tasks]
    if name_or_path in ISP_NAMES:
        d = isp_dir()
        if d is None or not (d / f"{name_or_path}.jsonl").is_file():
            raise FileNotFoundError(
                f"ISP task {name_or_path!r}: its file was not found; set DIAGNOSE_ISP_DIR to the "
                "folder holding the released .jsonl files, or pass the file's path")
        return load_task(d / f"{name_or_path}.jsonl")
    raise FileNotFoundError(
        f"{name_or_path!r} is neither a task file nor a built-in task; built-in: "
        f"{', '.join(known + list(ISP_NAMES))}")
