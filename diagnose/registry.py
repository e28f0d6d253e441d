"""Task suites, model families and commands that register themselves.

The core never imports the subjects it studies: a package that provides tasks or a
family (the model organisms, say) registers them when it is loaded, as Inspect's
``@task`` does, and is found through the ``inverse_scaling_diagnose.plugins`` entry
point group (``pyproject.toml``). A registered family may name its default cause
classifier file and the planted tasks (with ground truth) the classifier is fitted and
validated on.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

from diagnose.tasks import Task

ENTRY_POINTS = "inverse_scaling_diagnose.plugins"


@dataclass(frozen=True)
class TaskSuite:
    name: str
    tasks: Callable[[], list[Task]]
    description: str = ""


@dataclass(frozen=True)
class FamilySource:
    """``resolve()`` gives the ``Family`` (or raises ``FamilyError`` saying how to get it);
    ``classifier_path(family)`` the default classifier's file; ``planted_tasks(family)`` the
    tasks with known causes, designs and controls it is fitted and validated on."""

    name: str
    resolve: Callable[[], Any]
    classifier_path: Callable[[Any], Path] | None = None
    planted_tasks: Callable[[Any], list[Task]] | None = None
    description: str = ""


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


_SUITES: dict[str, TaskSuite] = {}
_FAMILIES: dict[str, FamilySource] = {}
_COMMANDS: dict[str, Command] = {}
_loaded = False


def register_suite(suite: TaskSuite) -> TaskSuite:
    _SUITES[suite.name] = suite
    return suite


def register_family(source: FamilySource) -> FamilySource:
    _FAMILIES[source.name] = source
    return source


def register_command(command: Command) -> Command:
    _COMMANDS[command.name] = command
    return command


def load_plugins() -> None:
    """Import every registered plugin once (each registers what it provides)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for ep in entry_points(group=ENTRY_POINTS):
        ep.load()


def suites() -> dict[str, TaskSuite]:
    load_plugins()
    return dict(_SUITES)


def families() -> dict[str, FamilySource]:
    load_plugins()
    return dict(_FAMILIES)


def commands() -> dict[str, Command]:
    load_plugins()
    return dict(_COMMANDS)
