"""When during training does the tempting answer take over, and on which layer?

    python -m experiments.checkpoint_axis [--family DIR] [--tasks memo_trap,...] [--out DIR]

For the largest model of the organisms family, every planted task is run over its
training checkpoints (``diagnose run TASK --over checkpoints``: the family's axis is the
training step) and the table gives, per step: accuracy, the share of the examples where
the model picks the tempting answer, the logit-lens layer from which the tempting answer
leads on the examples it gets wrong (mean commitment layer, the final choice held from
there on), and the layer where the mean correct-minus-tempting margin last changes sign.
Writes ``DIR/checkpoint_axis.json`` and prints the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def axis_table(family_dir: str | None, tasks: list[str] | None, out: Path,
               progress: bool = False) -> list[dict]:
    from diagnose import store
    from diagnose.families import checkpoint_family, load_family_manifest, resolve_family
    from diagnose.pipeline import RunConfig, run_task
    from diagnose.registry import families

    base = load_family_manifest(family_dir) if family_dir else resolve_family("organisms")
    family = checkpoint_family(base)
    src = families()["organisms"]
    planted = [t for t in src.planted_tasks(base) if not t.metadata.get("control")]
    if tasks:
        planted = [t for t in planted if t.name in tasks]
    rows = []
    for task in planted:
        run = run_task(task, family, out / task.name,
                       RunConfig(classify=False, mitigations=(), patching=False), progress)
        probes = store.read_json(out / task.name / "probes" / "probes.json")
        for m, s in zip(probes["models"], run["score"]["models"]):
            committed = [c for c in m["commit_layer"] if c is not None]
            rows.append({
                "task": task.name, "design": task.metadata.get("design"),
                "cause": task.metadata.get("cause"), "model": m["id"], "step": m["step"],
                "accuracy": s["accuracy"], "ci": [s["ci_low"], s["ci_high"]],
                "tempting_share": 1 - m["first_token_accuracy"],
                "commit_layer_wrong": m.get("commit_depth_mean_tempting"),
                "commit_layer_mean": m["commit_layer_mean"],
                "margin_sign_change_layer": m["margin_sign_change_layer"],
                "n_layers": m["n_layers"], "n_committed": len(committed)})
    store.write_json(out / "checkpoint_axis.json", {"family": base.name,
                                                    "model": family.models[-1].id, "rows": rows})
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'task':<24} {'step':>5} {'accuracy [95% CI]':>20} {'tempting':>9} "
             f"{'commit (wrong, depth)':>22} {'margin sign@':>12}"]
    for r in rows:
        cw = r["commit_layer_wrong"]
        commit = "-" if cw is None else "%.1f of %d" % (cw * r["n_layers"], r["n_layers"])
        lines.append(f"{r['task']:<24} {r['step']:>5} {r['accuracy']:>7.2f} [{r['ci'][0]:.2f},"
                     f"{r['ci'][1]:.2f}] {r['tempting_share']:>9.2f} {commit:>22} "
                     f"{str(r['margin_sign_change_layer']):>12}")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default=None, help="an organisms family directory (default: "
                    "the default family)")
    ap.add_argument("--tasks", default=None, help="comma-separated planted task names")
    ap.add_argument("--out", default="results/checkpoint-axis")
    a = ap.parse_args(argv)
    rows = axis_table(a.family, a.tasks.split(",") if a.tasks else None, Path(a.out))
    print(format_rows(rows))
    print(f"wrote {Path(a.out) / 'checkpoint_axis.json'}")


if __name__ == "__main__":
    main()
