"""The ``diagnose`` command line.

    diagnose score --task memo-trap.jsonl --family pythia --out results/memo-trap
    diagnose score --task T.jsonl --model DIR_OR_NAME --model ... --out DIR
    diagnose organisms build
    diagnose organisms check --out DIR

Errors a user can cause (a bad task file, an unknown family, a model that cannot be
loaded) print one line naming the input and what to do, and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence


TASK_HELP = ("task file (.jsonl or .csv) in an ISP format, or a built-in task name (a planted "
             "task such as memo_trap, or an ISP task such as neqa)")


class UserError(Exception):
    """An error in the user's input, reported without a traceback."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from diagnose.engine import ContextTooLongError
    from diagnose.families import FamilyError, ModelUnavailableError
    from diagnose.loaders import TaskFormatError

    return (UserError, TaskFormatError, FamilyError, ModelUnavailableError, ContextTooLongError,
            FileNotFoundError)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--family", help="built-in family (pythia, pythia-deduped, gpt2, organisms), "
                   "or a path to a family.json; default: organisms")
    g.add_argument("--model", action="append", metavar="DIR_OR_NAME",
                   help="a model (hub name or local HF directory); repeat, smallest first")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), float32, "
                   "bfloat16, float16")
    p.add_argument("--batch-tokens", type=int, default=None,
                   help="padded tokens per forward batch (default: 65536 on a GPU; on a CPU "
                   "2^18 / d_model, between 512 and 8192)")
    p.add_argument("--prepend-bos", action="store_true",
                   help="prepend the BOS token to every prompt (off, as lm-eval and the ISP)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow a model directory's own Python code to run (off by default)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _family(args: argparse.Namespace):
    from diagnose.families import DEFAULT_FAMILY, family_from_models, resolve_family

    if args.model:
        return family_from_models(args.model)
    return resolve_family(args.family or DEFAULT_FAMILY)


def _load_task_arg(args: argparse.Namespace):
    """``--task``: a task file (``--format`` overrides detection) or a built-in task name
    (a planted task such as ``memo_trap``, or an ISP task such as ``neqa``)."""
    from diagnose.builtin_tasks import resolve_task
    from diagnose.loaders import load_task

    fmt = getattr(args, "format", None)
    return load_task(args.task, format=fmt) if fmt else resolve_task(args.task)


def cmd_score(args: argparse.Namespace) -> int:
    from diagnose.family_scores import score_family

    task = _load_task_arg(args)
    if args.limit:
        task = task.subset(range(min(args.limit, len(task))))
    family = _family(args)
    summary = score_family(
        task, family, args.out, device=args.device, dtype=args.dtype,
        prepend_bos=args.prepend_bos, batch_tokens=args.batch_tokens,
        trust_remote_code=args.trust_remote_code, progress=not args.no_progress,
        seed=args.seed,
    )
    print(format_summary(summary))
    print(f"wrote {os.path.join(args.out, 'summary.json')} and {os.path.join(args.out, 'scaling.png')}")
    return 0


def format_summary(summary: dict) -> str:
    from diagnose.plots import format_params

    lines = [f"{summary['task']} ({summary['format']}, {summary['n_examples']} examples)"]
    lines.append(f"{'model':<40} {'params':>8} {'accuracy [95% CI]':>22} {'loss':>8} {'mass':>6}")
    for m in summary["models"]:
        acc = ("-" if m["accuracy"] is None
               else f"{m['accuracy']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]")
        mass = "-" if m["class_mass"] is None else f"{m['class_mass']:.3f}"
        lines.append(f"{m['id'][-40:]:<40} {format_params(m['n_params']):>8} {acc:>22} "
                     f"{m['loss']:>8.3f} {mass:>6}")
    return "\n".join(lines)


def cmd_probe(args: argparse.Namespace) -> int:
    from diagnose.probe_stage import ProbeError, probe_family

    task = _load_task_arg(args)
    if args.limit:
        task = task.subset(range(min(args.limit, len(task))))
    family = _family(args)
    try:
        summary = probe_family(
            task, family, args.out, device=args.device, dtype=args.dtype,
            trust_remote_code=args.trust_remote_code, progress=not args.no_progress,
            lens=args.lens, lens_steps=args.lens_steps, lens_cache=args.lens_cache,
            patch_view=args.patch_view, patch_limit=args.patch_limit,
            patch_positions=args.patch_positions, patching=not args.no_patching,
            probe_folds=args.probe_folds, prepend_bos=args.prepend_bos,
            batch_tokens=args.batch_tokens, seed=args.seed,
        )
    except ProbeError as e:
        raise UserError(str(e)) from e
    print(f"{'model':<40} {'params':>8} {'commit':>7} {'sign@':>6} {'output':>7}  top heads")
    from diagnose.plots import format_params

    for m in summary["models"]:
        commit = "-" if m["commit_layer_mean"] is None else f"{m['commit_layer_mean']:.2f}"
        sign = "-" if m["margin_sign_change_layer"] is None else str(m["margin_sign_change_layer"])
        heads = ", ".join(f"L{l}H{h} {a:+.2f}" for l, h, a in m["top_heads"][:3])
        print(f"{m['id'][-40:]:<40} {format_params(m['n_params']):>8} {commit:>7} {sign:>6} "
              f"{m['output_accuracy']:>7.3f}  {heads}")
        for note in m.get("notes", []):
            print(f"  note: {note}")
    print(f"wrote {os.path.join(args.out, 'probes.json')} and "
          f"{len(summary.get('plots', []))} plots in {args.out}")
    return 0


def cmd_organisms(args: argparse.Namespace) -> int:
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
        from diagnose import store

        store.write_json(os.path.join(args.out, "check.json"), result)
        print(f"wrote {os.path.join(args.out, 'check.json')}")
    return 0


def cmd_mitigate(args: argparse.Namespace) -> int:
    from diagnose.mitigations.stage import (STRATEGIES, MitigationConfig, MitigationError,
                                            format_mitigation, run_mitigations)

    task = _load_task_arg(args)
    if args.limit:
        task = task.subset(range(min(args.limit, len(task))))
    names = tuple(s.strip() for s in args.strategy.split(",") if s.strip())
    bad = [s for s in names if s not in STRATEGIES]
    if bad or not names:
        raise UserError(f"--strategy: unknown strategy {bad[0] if bad else args.strategy!r}; "
                        f"use a comma-separated subset of {','.join(STRATEGIES)}")
    try:
        shots = tuple(int(x) for x in args.shots.split(",") if x.strip())
        alphas = tuple(float(x) for x in args.alphas.split(",") if x.strip())
    except ValueError:
        raise UserError(f"--shots/--alphas: expected comma-separated numbers, got "
                        f"{args.shots!r} / {args.alphas!r}") from None
    try:
        cfg = MitigationConfig(
            strategies=names, alphas=alphas, pad_view=args.pad_view,
            cad_view=args.cad_view, shots=shots, cot_source=args.cot_source,
            cot_trigger=args.cot_trigger, cot_stop=args.cot_stop,
            cot_max_tokens=args.cot_max_tokens, selection=args.selection, seed=args.seed,
            prepend_bos=args.prepend_bos)
        summary = run_mitigations(
            task, _family(args), args.out, cfg, device=args.device, dtype=args.dtype,
            batch_tokens=args.batch_tokens, trust_remote_code=args.trust_remote_code,
            progress=not args.no_progress)
    except MitigationError as e:
        raise UserError(str(e)) from None
    print(format_mitigation(summary))
    print(f"wrote {os.path.join(args.out, 'mitigation.json')} and "
          f"{os.path.join(args.out, 'mitigation.png')}")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from diagnose import classify_stage as cs
    from diagnose import store

    if args.heldout:
        units, _ = cs.organisms_units(family_dir=args.organisms_dir,
                                      progress=not args.no_progress)
        result = cs.heldout_validation(units, augment=args.augment, seed=args.seed)
        store.write_json(os.path.join(args.out, "heldout.json"), result)
        print(cs.format_heldout(result))
        print(f"wrote {os.path.join(args.out, 'heldout.json')}")
        return 0
    if not args.task:
        raise UserError("classify needs --task FILE, or --heldout for the validation")
    from diagnose.classifier import CauseClassifier

    task = _load_task_arg(args)
    clf = CauseClassifier.load(args.classifier) if args.classifier else None
    try:
        result = cs.classify_task(task, _family(args), args.out, clf=clf, seed=args.seed,
                                  progress=not args.no_progress, device=args.device,
                                  dtype=args.dtype)
    except ValueError as e:
        raise UserError(str(e)) from e
    print(cs.format_classification(result))
    print(f"wrote {os.path.join(args.out, 'classification.json')}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from diagnose import pipeline
    from diagnose.builtin_tasks import planted, resolve_task

    strategies = tuple(x for x in args.strategy.split(",") if x) if not args.no_mitigations else ()
    cfg = pipeline.RunConfig(probes=not args.no_probes, classify=not args.no_classify,
                             mitigations=strategies, seed=args.seed, device=args.device,
                             dtype=args.dtype, classifier=args.classifier)
    family = _family(args)
    progress = not args.no_progress
    if args.suite:
        kind = args.suite[0]
        if kind == "planted" and len(args.suite) == 1:
            tasks = planted()
        elif kind == "isp" and len(args.suite) == 2:
            from pathlib import Path

            from diagnose.loaders import load_task

            files = sorted(p for p in Path(args.suite[1]).glob("*")
                           if p.suffix in (".jsonl", ".csv"))
            if not files:
                raise UserError(f"--suite isp {args.suite[1]}: no .jsonl or .csv task files there")
            tasks = [load_task(p) for p in files]
        else:
            raise UserError("--suite takes 'planted' or 'isp DIR'")
        if args.limit:
            tasks = [t.subset(range(min(args.limit, len(t)))) for t in tasks]
        out = args.out or f"results/suite-{kind}"
        rows = pipeline.run_suite(kind, tasks, family, out, cfg, progress)
        for r in rows:
            print(pipeline.format_row(r))
        print(f"index: {os.path.join(out, 'index.html')}")
        return 0
    if not args.task:
        raise UserError("run needs TASK (a file or a built-in name) or --suite")
    task = resolve_task(args.task)
    if args.limit:
        task = task.subset(range(min(args.limit, len(task))))
    out = args.out or f"results/{task.name}"
    run = pipeline.run_task(task, family, out, cfg, progress)
    print(pipeline.format_verdict(run))
    for s in (run.get("classification") or {}).get("evidence", [])[:4]:
        print(f"  - {s}")
    print(f"report: {os.path.join(out, 'report.html')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diagnose", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="score a task on every model of a family (ISP rules)")
    s.add_argument("--task", required=True, help=TASK_HELP)
    s.add_argument("--format", choices=["classification", "sequence_prob", "logodds"],
                   help="override the format detected from the fields")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--limit", type=int, default=None, help="score only the first N examples")
    s.add_argument("--seed", type=int, default=0, help="seed for bootstrap intervals")
    _add_model_args(s)
    s.set_defaults(func=cmd_score)

    pr = sub.add_parser("probe", help="look inside every model of a family: logit/tuned lens, "
                        "commitment layer, linear probes, attribution, patching")
    pr.add_argument("--task", required=True, help=TASK_HELP)
    pr.add_argument("--format", choices=["classification", "sequence_prob", "logodds"],
                    help="override the format detected from the fields")
    pr.add_argument("--out", required=True, help="output directory")
    pr.add_argument("--limit", type=int, default=None, help="probe only the first N examples")
    pr.add_argument("--seed", type=int, default=0, help="seed for probe folds and lens training")
    pr.add_argument("--lens", choices=["logit", "tuned"], default="logit",
                    help="lens for margins and commitment (tuned: trained or loaded per model)")
    pr.add_argument("--lens-steps", type=int, default=200, help="tuned-lens training steps")
    pr.add_argument("--lens-cache", default=None,
                    help="directory of tuned lenses by model (default: OUT/tuned_lens)")
    pr.add_argument("--patch-view", default=None,
                    help="second prompt for patching: a view name (default: prior when "
                    "present) or other_prompt (logodds)")
    pr.add_argument("--patch-limit", type=int, default=64,
                    help="examples used for activation patching (default 64)")
    pr.add_argument("--patch-positions", type=int, default=8,
                    help="positions from the end patched in the residual stream (default 8)")
    pr.add_argument("--no-patching", action="store_true", help="skip activation patching")
    pr.add_argument("--probe-folds", type=int, default=5, help="cross-validation folds")
    _add_model_args(pr)
    pr.set_defaults(func=cmd_probe)

    mg = sub.add_parser("mitigate", help="test mitigations (PAD, CAD, few-shot, chain-of-thought) "
                        "per model size: does the inverse trend go away?")
    mg.add_argument("--task", required=True, help=TASK_HELP)
    mg.add_argument("--format", choices=["classification", "sequence_prob", "logodds"],
                    help="override the format detected from the fields")
    mg.add_argument("--out", required=True, help="output directory (mitigation.json, .png)")
    mg.add_argument("--strategy", default="pad,cad,few-shot,cot",
                    help="comma-separated strategies: pad, cad, few-shot, cot (default: all)")
    mg.add_argument("--alphas", default="0,0.5,1,2,4", help="PAD/CAD strength grid a")
    mg.add_argument("--pad-view", default="auto",
                    help="view used as PAD's weak prompt (default auto: the first of prior, "
                    "easy, human the task has)")
    mg.add_argument("--cad-view", default="auto",
                    help="view used as CAD's x-only prompt, i.e. without the context "
                    "(default auto: prior = the prompt with the instruction removed, else easy)")
    mg.add_argument("--shots", default="0,1,3", help="few-shot grid k")
    mg.add_argument("--cot-source", choices=["auto", "given", "generated"], default="auto",
                    help="reasoning prefix: given in each row's 'cot' field, or generated "
                    "greedily by the model (auto: given when every row has one)")
    mg.add_argument("--cot-trigger", default="think :", help="text that starts generated reasoning")
    mg.add_argument("--cot-stop", default=";", help="string that ends generated reasoning")
    mg.add_argument("--cot-max-tokens", type=int, default=8, help="tokens of generated reasoning")
    mg.add_argument("--selection", choices=["auto", "split", "half"], default="auto",
                    help="examples the parameter is chosen on: metadata 'split' (train selects, "
                    "the rest evaluates) or a seeded half; auto: split when present")
    mg.add_argument("--limit", type=int, default=None, help="use only the first N examples")
    mg.add_argument("--seed", type=int, default=0,
                    help="seed for demonstrations, the half split and bootstrap intervals")
    _add_model_args(mg)
    mg.set_defaults(func=cmd_mitigate)

    c = sub.add_parser("classify", help="label why a task scales inversely (cause + evidence), "
                       "or validate the classifier on held-out planted templates")
    c.add_argument("--task", help=TASK_HELP)
    c.add_argument("--out", required=True, help="output directory")
    c.add_argument("--heldout", action="store_true",
                   help="validate on planted tasks with held-out templates (writes heldout.json)")
    c.add_argument("--classifier", help="a saved classifier JSON (default: fitted on the "
                   "organisms' planted tasks, cached in the family directory)")
    c.add_argument("--organisms-dir", default=None, help="(--heldout) an organisms family "
                   "directory (default: the default preset, built if missing)")
    c.add_argument("--augment", type=int, default=8,
                   help="(--heldout) bootstrap resamples per training unit")
    c.add_argument("--seed", type=int, default=0)
    _add_model_args(c)
    c.set_defaults(func=cmd_classify)

    r = sub.add_parser("run", help="every stage for a task (or a suite), ending in report.html")
    r.add_argument("task", nargs="?", help="a task file, or a built-in task name "
                   "(planted tasks; memo-trap, neqa, ... for the ISP files)")
    r.add_argument("--suite", nargs="+", metavar="NAME",
                   help="'planted' (every planted and control task) or 'isp DIR'")
    r.add_argument("--out", default=None, help="output directory (default results/<task>)")
    r.add_argument("--strategy", default="pad,cad,few-shot,cot", help="mitigations to test")
    r.add_argument("--no-probes", action="store_true")
    r.add_argument("--no-classify", action="store_true")
    r.add_argument("--no-mitigations", action="store_true")
    r.add_argument("--classifier", help="a saved classifier JSON (default: the organisms')")
    r.add_argument("--limit", type=int, default=None, help="use only the first N examples")
    r.add_argument("--seed", type=int, default=0)
    _add_model_args(r)
    r.set_defaults(func=cmd_run)

    o = sub.add_parser("organisms", help="build or check the model organisms family")
    o.add_argument("action", choices=["build", "check"])
    o.add_argument("--out", default=None, help="(check) directory for check.json")
    o.add_argument("--seed", type=int, default=None, help="training seed (default: the preset's)")
    o.add_argument("--tiny", action="store_true", help="the tiny test configuration")
    o.add_argument("--force", action="store_true", help="(build) retrain even if cached")
    o.add_argument("--views", action="store_true",
                   help="(check) also score every task's counterfactual views (rows task[view])")
    o.add_argument("--no-progress", action="store_true")
    o.set_defaults(func=cmd_organisms)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as e:
        print(f"diagnose: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diagnose: interrupted; finished models are kept and a rerun resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
