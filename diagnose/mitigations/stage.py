"""The ``mitigate`` stage: strategies over a model family, one model in memory at a time.

For every model (smallest first) the stage scores the task plainly (the baseline,
strategy ``none``) and with each strategy at every value of its parameter (``a`` for
PAD/CAD, ``k`` for few-shot; chain-of-thought has none). The parameter is CHOSEN per
model on the *selection* examples and the strategy is REPORTED on the disjoint
*evaluation* examples (``selection_split``): examples that carry
``metadata["split"]`` are split by it (the organisms: ``train`` templates select,
``heldout`` templates evaluate), others by a seeded half/half permutation. The
baseline is reported on the same evaluation examples, so every line of the result is
comparable. The choice maximises selection accuracy (ties: lower mean ISP loss, then
the earlier grid value, i.e. the milder intervention); for ``sequence_prob`` tasks
it minimises the loss.

Results (``DIR/mitigation.json``): per strategy, per model: accuracy with a 95 %
bootstrap interval, mean ISP loss, the chosen value and the sweep table, and the
trend label (``diagnose.trends``) of the evaluation outcomes across sizes, next to
the baseline's (``trend_before``). Per model, the raw per-example outcomes are kept
under ``DIR/models/<slug>/mitigation.json`` with a key of the inputs, so a rerun
skips finished models.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from diagnose import metrics, store
from diagnose.families import Family, LoadedModel
from diagnose.mitigations.contrastive import DEFAULT_ALPHAS, score_contrastive
from diagnose.mitigations.prompting import (
    DEFAULT_SHOTS,
    DEFAULT_STOP,
    DEFAULT_TRIGGER,
    cot_task,
    few_shot_task,
    generated_cot_prompts,
    given_cot_prompts,
    has_given_cot,
    resolve_cot_source,
)
from diagnose.scoring import TaskScores, score_task
from diagnose.tasks import Task
from diagnose.views import view_task

STRATEGIES = ("pad", "cad", "few-shot", "cot")
BASELINE = "none"


class MitigationError(ValueError):
    """A configuration or task that the mitigate stage cannot run (a user error)."""


@dataclass(frozen=True)
class MitigationConfig:
    strategies: tuple[str, ...] = STRATEGIES
    alphas: tuple[float, ...] = DEFAULT_ALPHAS          # PAD and CAD grid
    pad_view: str = "auto"                               # PAD's weak prompt
    cad_view: str = "auto"                               # CAD's x-only prompt
    shots: tuple[int, ...] = DEFAULT_SHOTS
    cot_source: str = "auto"                             # auto | given | generated
    cot_trigger: str = DEFAULT_TRIGGER
    cot_stop: str = DEFAULT_STOP
    cot_max_tokens: int = 8
    selection: str = "auto"                              # auto | split | half
    seed: int = 0
    prepend_bos: bool = False
    n_boot: int = 1000

    def __post_init__(self) -> None:
        bad = [s for s in self.strategies if s not in STRATEGIES]
        if bad:
            raise MitigationError(f"unknown strategy {bad[0]!r}; choose from {', '.join(STRATEGIES)}")
        if not self.alphas or not self.shots:
            raise MitigationError("the a and k grids must not be empty")
        if any(k < 0 for k in self.shots):
            raise MitigationError("the few-shot grid k must not be negative")
        if self.cot_source not in ("auto", "given", "generated"):
            raise MitigationError(f"cot source must be auto, given or generated, not "
                                  f"{self.cot_source!r}")


# -- choosing the parameter on examples it is not evaluated on -----------------------


@dataclass(frozen=True)
class Selection:
    select: np.ndarray      # example indices the parameter is chosen on
    evaluate: np.ndarray    # disjoint example indices the strategy is reported on
    how: str

    def to_dict(self, task: Task) -> dict[str, Any]:
        return {"how": self.how, "n_select": int(len(self.select)),
                "n_eval": int(len(self.evaluate)),
                "select_ids": [task.examples[i].id for i in self.select],
                "eval_ids": [task.examples[i].id for i in self.evaluate]}


def selection_split(task: Task, how: str = "auto", seed: int = 0) -> Selection:
    """Disjoint selection / evaluation examples.

    ``split`` (and ``auto`` when every example has ``metadata["split"]`` and there are
    at least two values): select on ``split == "train"`` (or the first value in sorted
    order when there is no ``train``), evaluate on the rest. ``half`` (and ``auto``
    otherwise): a seeded random half selects, the other half evaluates.
    """
    n = len(task.examples)
    if n < 2:
        raise MitigationError(f"task {task.name!r}: choosing a parameter on held-out examples "
                         "needs at least two examples")
    splits = [e.metadata.get("split") for e in task.examples]
    values = sorted({str(s) for s in splits if s is not None})
    usable = all(s is not None for s in splits) and len(values) >= 2
    if how == "split" and not usable:
        raise MitigationError(f"task {task.name!r}: selection by metadata['split'] needs a split on "
                         "every example with at least two values")
    if how not in ("auto", "split", "half"):
        raise MitigationError(f"selection must be auto, split or half, not {how!r}")
    if how in ("auto", "split") and usable:
        sel_value = "train" if "train" in values else values[0]
        sel = np.array([i for i, s in enumerate(splits) if str(s) == sel_value], dtype=np.int64)
        ev = np.array([i for i, s in enumerate(splits) if str(s) != sel_value], dtype=np.int64)
        others = [v for v in values if v != sel_value]
        return Selection(sel, ev, f"chosen on the {len(sel)} examples with metadata['split'] == "
                         f"{sel_value!r}, evaluated on the {len(ev)} with split in {others}")
    perm = np.random.default_rng(seed).permutation(n)
    sel, ev = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
    return Selection(sel, ev, f"chosen on a seeded random half ({len(sel)} examples, seed {seed}), "
                     f"evaluated on the other {len(ev)}")


def choose_param(correct: np.ndarray | None, loss: np.ndarray, select: np.ndarray) -> int:
    """Index of the grid value to use, from ``[P, N]`` per-example outcomes, looking ONLY
    at the columns in ``select``: max accuracy, ties -> min mean loss -> earliest."""
    select = np.asarray(select, dtype=np.int64)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-unscorable selection
        lo = np.nanmean(np.asarray(loss, dtype=np.float64)[:, select], axis=1)
        lo = np.where(np.isfinite(lo), lo, np.inf)
        if correct is None:
            return int(np.argmin(lo))
        acc = np.nan_to_num(np.nanmean(np.asarray(correct, dtype=np.float64)[:, select], axis=1),
                            nan=-1.0)
    order = sorted(range(len(acc)), key=lambda p: (-acc[p], lo[p], p))
    return int(order[0])


# -- one model -----------------------------------------------------------------------------


def _outcomes(s: TaskScores) -> tuple[np.ndarray | None, np.ndarray]:
    """Per-example correctness (1/0, NaN where the model could not score the example)
    and ISP loss (NaN likewise)."""
    ok = s.scored
    correct = None if s.correct is None else np.where(ok, s.correct.astype(float), np.nan)
    return correct, np.where(ok, np.asarray(s.loss, float), np.nan)


def _mean(x: np.ndarray | None, idx: np.ndarray) -> float | None:
    if x is None:
        return None
    v = np.asarray(x, dtype=float)[idx]
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


def _choose_and_report(name: str, param_name: str | None, values: Sequence[Any],
                       sweep: Sequence[TaskScores], sel: Selection,
                       **extra: Any) -> dict[str, Any]:
    """Per-model record: the sweep table, the value chosen on ``sel.select``, and the
    chosen value's per-example outcomes on ``sel.evaluate``."""
    cs = [_outcomes(s) for s in sweep]
    correct = None if cs[0][0] is None else np.stack([c for c, _ in cs])
    loss = np.stack([lo for _, lo in cs])
    p = choose_param(correct, loss, sel.select) if len(values) > 1 else 0
    table = [{"value": v,
              "select_accuracy": _mean(None if correct is None else correct[j], sel.select),
              "select_loss": _mean(loss[j], sel.select),
              "eval_accuracy": _mean(None if correct is None else correct[j], sel.evaluate),
              "eval_loss": _mean(loss[j], sel.evaluate)}
             for j, v in enumerate(values)]
    rec = {"name": name, "param_name": param_name, "values": list(values), "chosen": values[p],
           "sweep": table,
           "correct": None if correct is None else correct[p][sel.evaluate].tolist(),
           "loss": loss[p][sel.evaluate].tolist(),
           "n_truncated": int(sweep[p].n_truncated)}
    rec.update(extra)
    return rec


# ``auto``: the first view the task has, in this order. PAD's weak prompt must be more
# prone to the tempting answer than the prompt: the instruction removed (prior), the
# negation removed (easy), the imitated register (human), or no context at all (the
# classes' own prior, as in PMI scoring). CAD's must be the input without the context to
# amplify: prior, or easy; the human view keeps the whole context, so it is no CAD prompt.
AUTO_WEAK_VIEWS = {"pad": ("prior", "easy", "human", "no_context"), "cad": ("prior", "easy")}


def _asked_view(cfg: MitigationConfig, strategy: str) -> str:
    return cfg.pad_view if strategy == "pad" else cfg.cad_view


def weak_view(task: Task, cfg: MitigationConfig, strategy: str) -> str:
    """The view PAD or CAD uses on ``task`` (``auto`` resolved; may be absent)."""
    want = _asked_view(cfg, strategy)
    if want != "auto":
        return want
    return next((v for v in AUTO_WEAK_VIEWS[strategy] if v in task.view_names),
                AUTO_WEAK_VIEWS[strategy][0])


def strategy_plan(task: Task, cfg: MitigationConfig) -> tuple[list[str], list[dict[str, str]]]:
    """The strategies that apply to ``task``, and a note for each one skipped."""
    run, skipped = [], []
    for s in cfg.strategies:
        if s in ("pad", "cad"):
            view = weak_view(task, cfg, s)
            if task.format not in ("classification", "sequence_prob"):
                skipped.append({"name": s, "reason": f"contrastive scoring is implemented for "
                                f"classification and sequence_prob tasks, not {task.format}"})
            elif view not in task.view_names:
                which = (f"none of the views {list(AUTO_WEAK_VIEWS[s])}"
                         if _asked_view(cfg, s) == "auto"
                         else f"no {view!r} view")
                skipped.append({"name": s, "reason": (
                    f"task has {which} on every example (views on all examples: "
                    f"{list(task.view_names) or 'none'}); {s.upper()} needs one as the weak prompt. "
                    f"Add a 'prior' view (the prompt with the instruction removed) or pick "
                    f"another with --{s}-view")})
            else:
                run.append(s)
        elif s == "cot" and task.format == "logodds":
            skipped.append({"name": s, "reason": "chain-of-thought is not defined for logodds tasks"})
        elif s == "cot" and cfg.cot_source == "given" and not has_given_cot(task):
            raise MitigationError(f"task {task.name!r}: --cot-source given needs a 'cot' field "
                                  "(metadata['cot']) on every example; use auto or generated")
        else:
            run.append(s)
    return run, skipped


def mitigate_model(model: LoadedModel, task: Task, cfg: MitigationConfig, sel: Selection,
                   strategies: Sequence[str], cap: Any = None,
                   batch_tokens: int | None = None) -> dict[str, dict[str, Any]]:
    """Every strategy on one model: ``{name: per-model record}`` (baseline under ``none``).
    With ``cap`` (the model's capture) the baseline and PAD/CAD whose weak prompt is a
    view are read from it; only the prompts a mitigation adds run forward."""
    from diagnose.mitigations.contrastive import scores_from_capture

    kw = dict(prepend_bos=cfg.prepend_bos, batch_tokens=batch_tokens)
    base = cap.scores if cap is not None else score_task(model, task, **kw)
    out = {BASELINE: _choose_and_report(BASELINE, None, [None], [base], sel)}
    contrastive_cache: dict[tuple[str, tuple[float, ...]], list[TaskScores]] = {}
    for s in strategies:
        if s in ("pad", "cad"):
            view = weak_view(task, cfg, s)
            ck = (view, tuple(cfg.alphas))
            if ck not in contrastive_cache:
                got = (scores_from_capture(model, task, cap, view, cfg.alphas)
                       if cap is not None and task.format == "classification" else None)
                if got is None:
                    vt, idx = view_task(task, view)
                    weak = [e.prompt for e in task.examples]
                    for j, i in enumerate(idx):
                        weak[i] = vt.examples[j].prompt
                    got = score_contrastive(model, task, weak, cfg.alphas, **kw)
                contrastive_cache[ck] = got
            out[s] = _choose_and_report(s, "a", list(cfg.alphas), contrastive_cache[ck], sel,
                                        weak_view=view)
        elif s == "few-shot":
            sweep = [base if k == 0 else score_task(model, few_shot_task(task, k, cfg.seed), **kw)
                     for k in cfg.shots]
            out[s] = _choose_and_report(s, "k", list(cfg.shots), sweep, sel)
        elif s == "cot":
            source = resolve_cot_source(task, cfg.cot_source)
            if source == "given":
                cot = given_cot_prompts(task)
            else:
                cot = generated_cot_prompts(model, task, cfg.cot_trigger, cfg.cot_stop,
                                            cfg.cot_max_tokens, **kw)
            scores = score_task(model, cot_task(task, cot), **kw)
            out[s] = _choose_and_report(
                s, None, [source], [scores], sel, source=source,
                trigger=cot.trigger, n_unterminated=cot.n_unterminated,
                reasoning_examples=[{"id": task.examples[i].id, "reasoning": cot.reasoning[i]}
                                    for i in sel.evaluate[:3]])
    return out


def mitigation_stage(task: Task, cfg: MitigationConfig, batch_tokens: int | None = None):
    """The per-model stage (needs the model for the prompts mitigations add)."""
    from diagnose.runner import ModelStage
    from probes.capture import TokenCount

    sel = selection_split(task, cfg.selection, cfg.seed)
    strategies, _ = strategy_plan(task, cfg)

    def compute(model: LoadedModel, inputs: dict) -> tuple[dict, dict]:
        with TokenCount() as count:
            recs = mitigate_model(model, task, cfg, sel, strategies, inputs["capture"],
                                  batch_tokens)
        return {}, {"id": model.id, "n_params": model.n_params, "step": model.spec.step,
                    "size": model.n_params if model.spec.step is None else model.spec.step,
                    "source": model.spec.source,
                    "dtype": str(model.dtype).replace("torch.", ""), "device": model.device,
                    "strategies": recs, "tokens": count.tokens}

    return ModelStage(name="mitigation", reads=("capture",), needs_model=True,
                      key=[task.fingerprint(), dataclasses.asdict(cfg), strategies, sel.how],
                      compute=compute, decode=lambda arrays, meta: meta)


# -- the family ------------------------------------------------------------------------------


def run_mitigations(
    task: Task,
    family: Family,
    out_dir: str | Path,
    cfg: MitigationConfig = MitigationConfig(),
    device: str | None = None,
    dtype: str | None = None,
    batch_tokens: int | None = None,
    trust_remote_code: bool = False,
    progress: bool = True,
    records_root: str | Path | None = None,
    dispatch: Any = None,
) -> dict[str, Any]:
    """``diagnose mitigate``: build the task's views, capture each model once and run
    ``cfg.strategies``; write and return ``DIR/mitigation.json`` (and the plot)."""
    from diagnose.capture import capture_stage
    from diagnose.runner import run_models
    from diagnose.views import build_views

    task, _ = build_views(task, cfg.seed)
    res = run_models([capture_stage(task, cfg.prepend_bos, batch_tokens),
                      mitigation_stage(task, cfg, batch_tokens)], family,
                     records_root or out_dir,
                     load=dict(device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                               dispatch=dispatch),
                     progress=progress)
    return write_mitigations(task, family.name, res["mitigation"], out_dir, cfg)


def write_mitigations(task: Task, family_name: str, per_model: list[dict[str, Any]],
                      out_dir: str | Path, cfg: MitigationConfig) -> dict[str, Any]:
    """``mitigation.json``, ``mitigation.csv``, ``mitigation.png`` and each model's record,
    from the per-model records."""
    from diagnose.mitigation_plots import write_mitigation_plot

    out = Path(out_dir)
    sel = selection_split(task, cfg.selection, cfg.seed)
    strategies, skipped = strategy_plan(task, cfg)
    per_model = sorted(per_model, key=lambda m: m.get("size") or m["n_params"])
    for m in per_model:
        store.write_json(out / "models" / store.slug(m["id"]) / "mitigation.json", m)
    summary = summarize(task, family_name, per_model, sel, cfg, strategies, skipped)
    store.write_json(out / "mitigation.json", summary)
    store.write_csv(out / "mitigation.csv", summary_rows(summary))
    write_mitigation_plot(summary, out / "mitigation.png")
    return summary


def _chance(task: Task) -> float | None:
    if task.format == "sequence_prob" or not task.examples:
        return None
    return float(np.mean([1.0 / len(e.classes) for e in task.examples]))


def _trend(n_params: list[int], rows: list[list[float]], higher_is_better: bool, cfg, metric
           ) -> tuple[dict[str, Any] | None, str | None]:
    if len(n_params) < 2:
        return None, "a trend needs at least two models"
    try:
        from diagnose.trends import trend_from_outcomes

        t = trend_from_outcomes(n_params, np.asarray(rows, dtype=float),
                                higher_is_better=higher_is_better, n_boot=cfg.n_boot,
                                seed=cfg.seed, metric=metric)
    except (ValueError, ImportError) as e:
        return None, str(e)
    d = t.to_dict() if hasattr(t, "to_dict") else {"label": t.label}
    return d, None


_FORMULAS = {
    "pad": "logits = L(prompt) + a * (L(prompt) - L(weak prompt)); weak prompt = the {view!r} view",
    "cad": "logits = (1 + a) * L(context, x) - a * L(x); context = the instruction, "
           "x-only prompt = the {view!r} view",
}


def summarize(task: Task, family_name: str, per_model: list[dict[str, Any]], sel: Selection,
              cfg: MitigationConfig, strategies: Sequence[str],
              skipped: list[dict[str, str]]) -> dict[str, Any]:
    n_params = [float(m.get("size") or m["n_params"]) for m in per_model]  # the family's axis
    chance = _chance(task)
    has_acc = task.format != "sequence_prob"
    entries: list[dict[str, Any]] = []
    base_trend: dict[str, Any] | None = None
    base_loss_trend: dict[str, Any] | None = None
    for name in [BASELINE, *strategies]:
        recs = [m["strategies"][name] for m in per_model]
        e: dict[str, Any] = {"name": name}
        if name == BASELINE:
            e["param"] = None
        else:
            r0 = recs[0] if recs else {}
            e["param"] = {
                "name": r0.get("param_name"), "grid": r0.get("values"),
                "chosen": [r["chosen"] for r in recs],
                "chosen_by": (sel.how + "; per model: max selection accuracy, ties -> lower "
                              "mean ISP loss -> earlier grid value"
                              if r0.get("param_name") else "no parameter to choose"),
            }
        acc, lo, hi, loss, llo, lhi = [], [], [], [], [], []
        # examples some model could not score are left out of every model's numbers, so
        # sizes are compared on the same examples
        both = np.logical_and.reduce([np.isfinite(np.asarray(r["loss"], dtype=float))
                                      for r in recs]) if recs else np.zeros(0, bool)
        for r in recs:
            r = {**r, "loss": np.asarray(r["loss"], dtype=float)[both],
                 "correct": None if r["correct"] is None else
                 np.asarray(r["correct"], dtype=float)[both]}
            lv = r["loss"]
            a, b = metrics.bootstrap_ci(lv, seed=cfg.seed)
            loss.append(float(lv.mean()))
            llo.append(a)
            lhi.append(b)
            if r["correct"] is not None:
                c = np.asarray(r["correct"], dtype=float)
                a, b = metrics.bootstrap_ci(c, seed=cfg.seed)
                acc.append(float(c.mean()))
                lo.append(a)
                hi.append(b)
            else:
                acc.append(None)
                lo.append(None)
                hi.append(None)
        e.update(accuracy=acc, ci_low=lo, ci_high=hi, loss=loss, loss_ci_low=llo,
                 loss_ci_high=lhi, n_truncated=[r["n_truncated"] for r in recs])
        acc_trend, acc_note = ((_trend(n_params, [np.asarray(r["correct"], dtype=float)[both]
                                                  for r in recs], True, cfg, "accuracy"))
                               if has_acc else (None, "no accuracy"))
        loss_trend, _ = _trend(n_params, [np.asarray(r["loss"], dtype=float)[both] for r in recs],
                               False, cfg, "isp_loss")
        e["n_compared"] = int(both.sum())
        if name == BASELINE:
            base_trend, base_loss_trend = acc_trend, loss_trend
        main = acc_trend if has_acc else loss_trend
        before = base_trend if has_acc else base_loss_trend
        e["trend"] = main["label"] if main else None
        e["trend_before"] = before["label"] if before else None
        e["trend_changed"] = (None if main is None or before is None
                              else main["label"] != before["label"])
        e["loss_trend"] = loss_trend["label"] if loss_trend else None
        e["loss_trend_before"] = base_loss_trend["label"] if base_loss_trend else None
        e["trend_detail"] = {"accuracy": acc_trend, "loss": loss_trend}
        if acc_note and has_acc and acc_trend is None:
            e["trend_note"] = acc_note
        if entries and has_acc:
            e["delta_accuracy"] = [None if x is None or y is None else x - y
                                   for x, y in zip(acc, entries[0]["accuracy"])]
        if name in ("pad", "cad"):
            view = recs[0]["weak_view"] if recs else None
            e["weak_view"] = view
            e["formula"] = _FORMULAS[name].format(view=view)
        if name != BASELINE:
            e["sweep"] = [{"model": m["id"], "n_params": m["n_params"], "rows": r["sweep"]}
                          for m, r in zip(per_model, recs)]
        if name == "cot":
            e["source"] = [r["source"] for r in recs]
            e["generated"] = [r["source"] == "generated" for r in recs]
            e["trigger"] = recs[0].get("trigger") if recs else None
            e["n_unterminated"] = [r.get("n_unterminated", 0) for r in recs]
            e["reasoning_examples"] = [{"model": m["id"], "examples": r.get("reasoning_examples")}
                                       for m, r in zip(per_model, recs)]
            if chance is not None:
                # "cannot use it": the CoT accuracy's 95% interval does not exclude chance
                e["cannot_use"] = [None if x is None else bool(x <= chance) for x in lo]
                e["cannot_use_rule"] = (f"cot accuracy's 95% CI lower bound <= chance "
                                        f"({chance:.3f})")
        entries.append(e)
    notes = []
    if ("pad" in strategies and "cad" in strategies
            and weak_view(task, cfg, "pad") == weak_view(task, cfg, "cad")):
        notes.append(f"PAD and CAD use the same weak prompt ({weak_view(task, cfg, 'pad')!r} view) "
                     "and the same "
                     "a grid, so they compute the same logits ((1 + a) L - a L_weak) and report "
                     "identical numbers; they differ once --pad-view and --cad-view differ")
    for s in skipped:
        notes.append(f"{s['name']} skipped: {s['reason']}")
    return {
        "task": task.name,
        "format": task.format,
        "n_examples": len(task),
        "n_classes": task.n_classes,
        "chance": chance,
        "family": family_name,
        "models": [{"id": m["id"], "n_params": m["n_params"], "size": m.get("size"),
                    "step": m.get("step")} for m in per_model],
        "axis": "steps" if per_model and per_model[0].get("step") is not None else "params",
        "selection": sel.to_dict(task),
        "config": dataclasses.asdict(cfg),
        "strategies": entries,
        "skipped": skipped,
        "notes": notes,
    }


def summary_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (strategy, model) for ``mitigation.csv``."""
    rows = []
    for s in summary["strategies"]:
        chosen = (s["param"] or {}).get("chosen") or [None] * len(summary["models"])
        for j, m in enumerate(summary["models"]):
            rows.append({"strategy": s["name"], "model": m["id"], "n_params": m["n_params"],
                         "param": (s["param"] or {}).get("name"), "chosen": chosen[j],
                         "accuracy": s["accuracy"][j], "ci_low": s["ci_low"][j],
                         "ci_high": s["ci_high"][j], "loss": s["loss"][j],
                         "trend": s["trend"], "trend_before": s["trend_before"]})
    return rows


def format_mitigation(summary: dict[str, Any]) -> str:
    """A plain-text table of the result (what ``diagnose mitigate`` prints)."""
    from diagnose.plots import format_params

    sel = summary["selection"]
    lines = [f"{summary['task']} ({summary['format']}, {summary['n_examples']} examples; "
             f"{sel['how']})"]
    lines.append(f"{'strategy':<10} {'model':>8} {'param':>10} {'accuracy [95% CI]':>22} "
                 f"{'loss':>8}  trend (before)")
    for s in summary["strategies"]:
        p = s["param"] or {}
        for j, m in enumerate(summary["models"]):
            acc = s["accuracy"][j]
            acc_s = "-" if acc is None else f"{acc:.3f} [{s['ci_low'][j]:.3f}, {s['ci_high'][j]:.3f}]"
            ch = p.get("chosen", [None] * (j + 1))[j] if p else None
            par = "-" if not p.get("name") else f"{p['name']}={ch}"
            if s["name"] == "cot":
                par = s["source"][j]
            tr = f"{s['trend']} ({s['trend_before']})" if j == 0 else ""
            lines.append(f"{s['name']:<10} {format_params(m['n_params']):>8} {par:>10} "
                         f"{acc_s:>22} {s['loss'][j]:>8.3f}  {tr}")
    for n in summary["notes"]:
        lines.append(f"note: {n}")
    return "\n".join(lines)


__all__ = ["STRATEGIES", "BASELINE", "MitigationError", "MitigationConfig", "Selection", "selection_split",
           "choose_param", "strategy_plan", "mitigate_model", "run_mitigations", "summarize",
           "format_mitigation"]
