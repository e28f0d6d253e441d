"""What the subjects provide to the toolkit, registered through ``diagnose.registry``
(entry point ``inverse_scaling_diagnose.plugins`` in pyproject.toml): the model
organisms family (the default), its planted tasks as the ``planted`` suite, and the
``diagnose organisms`` command."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from diagnose.registry import Command, FamilySource, TaskSuite, register_command, \
    register_family, register_suite


def _default_dir() -> Path:
    from experiments.organisms.config import OrganismConfig
    from experiments.organisms.family import family_dir_for

    return family_dir_for(OrganismConfig.default())


def _resolve():
    from diagnose.families import FamilyError, load_family_manifest

    d = _default_dir()
    if not (d / "family.json").is_file():
        raise FamilyError("the model organisms are not built yet; run `diagnose organisms build` "
                          f"(it trains the default family into {d})")
    return load_family_manifest(d)


def _family_dir(family) -> Path:
    return Path(family.metadata.get("dir") or _default_dir())


def _planted(family) -> list:
    """The planted tasks of a family's own world (its config: seed, corpus)."""
    from experiments.organisms.family import load_config
    from experiments.organisms.planted import planted_tasks

    return planted_tasks(load_config(_family_dir(family)), "all", controls=True)


def _suite_tasks() -> list:
    from experiments.organisms.config import OrganismConfig
    from experiments.organisms.planted import planted_tasks

    return planted_tasks(OrganismConfig.default(), "all", controls=True)


register_family(FamilySource(
    "organisms", resolve=_resolve,
    classifier_path=lambda family: _family_dir(family) / "classifier.json",
    planted_tasks=_planted,
    description="GPT-NeoX model organisms trained here with the four causes planted"))
register_suite(TaskSuite("planted", _suite_tasks,
                         "every planted and control task of the model organisms"))


def _configure(o: argparse.ArgumentParser) -> None:
    o.add_argument("action", choices=["build", "check"])
    o.add_argument("--out", default=None, help="(check) directory for check.json")
    o.add_argument("--seed", type=int, default=None, help="training seed (default: the preset's)")
    o.add_argument("--tiny", action="store_true", help="the tiny test configuration")
    o.add_argument("--force", "--retrain", dest="force", action="store_true",
                   help="(build) retrain even if a trained family is present")
    o.add_argument("--views", action="store_true",
                   help="(check) also score every view the registry builds (rows task[view])")
    o.add_argument("--no-progress", action="store_true")


def _run(args: argparse.Namespace) -> int:
    from diagnose import store
    from experiments.organisms.check import check_family, format_table
    from experiments.organisms.config import OrganismConfig
    from experiments.organisms.family import build_family

    cfg = OrganismConfig.tiny() if args.tiny else OrganismConfig.default()
    if args.seed is not None:
        cfg = cfg.with_seed(args.seed)
    if args.action == "build":
        path = build_family(cfg, force=args.force, progress=not args.no_progress)
        print(f"organisms family ready: {path / 'family.json'}")
        return 0
    path = build_family(cfg, progress=not args.no_progress)
    result = check_family(path, cfg, views=args.views)
    print(format_table(result))
    if args.out:
        store.write_json(Path(args.out) / "check.json", result)
        print(f"wrote {os.path.join(args.out, 'check.json')}")
    return 0


register_command(Command("organisms", "build or check the model organisms family", _configure,
                         _run))
