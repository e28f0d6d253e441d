"""Offload parity: every stage on a model that accelerate dispatched with part of it on
disk gives the records of the same model loaded on one device.

    python -m experiments.scale.parity [--family DIR] [--task NAME] [--limit N] [--out DIR]

The largest model of the family (default: the tiny organisms preset, trained into
``--out`` in seconds when no family is given) runs ``diagnose run``'s per-model stages
twice: on the CPU, and with ``--max-memory '{"cpu": B}'`` where B is ``--share`` of its
weights' bytes, so accelerate puts the rest on disk. It prints, per stage, the largest
absolute difference over every number of the records (scores, residuals, lens
read-outs, probe accuracies, attributions, patching, tuned lens, mitigations) and
which instruments said they could not run on the offloaded model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

IGNORED_META = ("key", "device", "device_map", "tuned_lens_path")


def _meta_diffs(x: Any, y: Any, path: str = "") -> tuple[float, list[str]]:
    """Largest numeric difference between two JSON values, and the paths that differ
    otherwise (strings, lengths, missing keys)."""
    if isinstance(x, dict) and isinstance(y, dict):
        worst, bad = 0.0, []
        for k in sorted(set(x) | set(y), key=str):
            if k in IGNORED_META:
                continue
            if k not in x or k not in y:
                bad.append(f"{path}/{k}: missing")
                continue
            w, b = _meta_diffs(x[k], y[k], f"{path}/{k}")
            worst, bad = max(worst, w), bad + b
        return worst, bad
    if isinstance(x, list) and isinstance(y, list):
        if len(x) != len(y):
            return 0.0, [f"{path}: lengths {len(x)} != {len(y)}"]
        worst, bad = 0.0, []
        for i, (u, v) in enumerate(zip(x, y)):
            w, b = _meta_diffs(u, v, f"{path}[{i}]")
            worst, bad = max(worst, w), bad + b
        return worst, bad
    if isinstance(x, float) or isinstance(y, float):
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) \
                and not isinstance(x, bool) and not isinstance(y, bool):
            if np.isnan(x) and np.isnan(y):
                return 0.0, []
            return float(abs(x - y)), []
    return (0.0, []) if x == y else (0.0, [f"{path}: {x!r} != {y!r}"])


def compare_records(a: str | Path, b: str | Path) -> dict[str, Any]:
    """Every per-model record under ``a/records`` against ``b/records``: per
    ``stage/model``, the largest absolute difference over float arrays and numeric
    facts (NaN = NaN), and what differs otherwise (integer arrays, shapes, strings,
    records present in one only)."""
    from diagnose.records import load

    a, b = Path(a), Path(b)
    fa = {p.relative_to(a) for p in (a / "records").rglob("*.npz")}
    fb = {p.relative_to(b) for p in (b / "records").rglob("*.npz")}
    out: dict[str, Any] = {"only_in_a": sorted(map(str, fa - fb)),
                           "only_in_b": sorted(map(str, fb - fa)), "records": {}}
    for rel in sorted(fa & fb):
        A, ma = load(a / rel)
        B, mb = load(b / rel)
        worst, bad = _meta_diffs(ma, mb)
        for k in sorted(set(A) | set(B)):
            x, y = A.get(k), B.get(k)
            if x is None or y is None or x.shape != y.shape:
                bad.append(f"{k}: missing or shape")
            elif np.issubdtype(x.dtype, np.floating):
                if not np.array_equal(np.isnan(x), np.isnan(y)):
                    bad.append(f"{k}: NaN in different places")
                elif x.size:
                    worst = max(worst, float(np.nanmax(np.abs(np.where(np.isnan(x), 0, x - y)))))
            elif not np.array_equal(x, y):
                bad.append(f"{k}: values differ")
        out["records"][f"{rel.parent.name}/{rel.stem}"] = {"max_abs": worst, "differs": bad}
    vals = [r["max_abs"] for r in out["records"].values()]
    out["max_abs"] = max(vals) if vals else None
    out["n_records"] = len(vals)
    out["equal"] = (not out["only_in_a"] and not out["only_in_b"] and bool(vals)
                    and not any(r["differs"] for r in out["records"].values()))
    return out


def weights_bytes(model_dir: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(model_dir).glob("*.safetensors"))


def offload_parity(family_dir: str | Path, out: str | Path, task_name: str = "memo_trap",
                   limit: int = 8, share: float = 0.6, lens: str = "tuned",
                   records_only: bool = False) -> dict[str, Any]:
    """Run the per-model stages of ``task_name`` on the family's largest model plain and
    disk-offloaded; the comparison, the realized placement and the notes (the family
    stages and plots too unless ``records_only``)."""
    from diagnose import pipeline
    from diagnose.dispatch import dispatch_from_args
    from diagnose.families import Family, free_model, load_family_manifest, load_model
    from experiments.organisms.family import load_config
    from experiments.organisms.planted import planted_tasks

    fam = load_family_manifest(family_dir)
    spec = fam.models[-1]
    tasks = {t.name: t for t in planted_tasks(load_config(family_dir), "all", controls=True)}
    task = tasks[task_name]
    task = task.subset(range(min(limit, len(task))))
    budget = int(weights_bytes(spec.source) * share)
    disp = dispatch_from_args(max_memory=json.dumps({"cpu": budget}))
    model = load_model(spec, dispatch=disp)
    placement = dict(model.device_map or {})
    refused = None
    try:
        model.bridge.enable_compatibility_mode()
    except Exception as e:  # noqa: BLE001 - what TransformerLens says, reported as is
        refused = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    free_model(model)
    one = Family(fam.name, (spec,), fam.metadata)
    out = Path(out)
    runs = {}
    for name, d in (("one_device", None), ("offloaded", disp)):
        cfg = pipeline.RunConfig(classify=False, lens=lens, dispatch=d,
                                 mitigations=("pad", "cad", "few-shot", "cot"),
                                 mitigate_all=True)  # parity of every stage
        runs[name] = pipeline.run_task(task, one, out / name, cfg, progress=False,
                                       per_model_only=records_only)
    cmp = compare_records(out / "one_device", out / "offloaded")
    from diagnose.capture import Capture
    from diagnose.records import load, record_path

    cap = Capture.from_record(*load(record_path(out / "offloaded", "capture", spec.id)))
    notes = list(cap.notes)
    return {"model": spec.id, "task": task.name, "n_examples": len(task),
            "max_memory": {"cpu": budget}, "weights_bytes": weights_bytes(spec.source),
            "device_map": placement, "compatibility_mode": refused or "allowed",
            "comparison": cmp, "offloaded_notes": notes,
            "attribution": sorted(k for k in cap.dla if k != "tempting")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default=None, help="a family directory (default: build the "
                   "tiny organisms preset under OUT)")
    p.add_argument("--task", default="memo_trap")
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--share", type=float, default=0.6,
                   help="CPU budget as a share of the weights' bytes (the rest goes to disk)")
    p.add_argument("--out", default="results/offload-parity")
    args = p.parse_args(argv)
    family = args.family
    if family is None:
        from experiments.organisms.config import OrganismConfig
        from experiments.organisms.family import build_family

        family = build_family(OrganismConfig.tiny(), cache_dir=Path(args.out) / "cache",
                              progress=False)
    res = offload_parity(family, args.out, args.task, args.limit, args.share)
    c = res["comparison"]
    print(f"{res['model']} on {res['task']} ({res['n_examples']} examples), max_memory "
          f"{res['max_memory']} of {res['weights_bytes']} weight bytes")
    print(f"placement: {res['device_map']}")
    print(f"enable_compatibility_mode(): {res['compatibility_mode']}")
    for k, r in c["records"].items():
        print(f"  {k:<40} max|diff| {r['max_abs']:.3g}" + (f"  DIFFERS: {r['differs']}"
                                                           if r["differs"] else ""))
    print(f"records compared: {c['n_records']}; max |diff| over all: {c['max_abs']:.3g}; "
          f"only one side: {c['only_in_a'] + c['only_in_b']}")
    print("attribution on the offloaded model: " + (", ".join(res["attribution"]) or "none"))
    print("instruments that said they could not run on it: "
          + ("; ".join(res["offloaded_notes"]) or "none"))
    from diagnose import store

    store.write_json(Path(args.out) / "parity.json", res)
    print(f"wrote {os.path.join(args.out, 'parity.json')}")
    return 0 if c["equal"] and (c["max_abs"] or 0) <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
