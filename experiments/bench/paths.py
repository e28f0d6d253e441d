"""The measured paths of the scoring benchmark, each run in its own process so that its
peak memory (max RSS) is its own:

    python -m experiments.bench.paths PATH MODEL_DIR TASK_FILE OUT_JSON [--threads N]

PATH: ``plain`` (one transformers forward per prompt + class), ``lm_eval``
(lm-evaluation-harness 0.4 through a local task YAML, multiple-choice log-likelihoods),
``engine`` (diagnose's engine, scores only), ``engine_full`` (scores + logit lens on
every layer + the task's counterfactual views, fused). Each writes the per-example
class log-probs, accuracy, seconds and peak RSS.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _task(task_file: str):
    from diagnose.loaders import load_task

    return load_task(task_file)


@torch.no_grad()
def plain(model_dir: str, task_file: str) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from diagnose.engine import fit_to_context
    from diagnose.tokenization import encode_pair

    task = _task(task_file)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    n_ctx = int(model.config.max_position_embeddings)
    t0 = time.perf_counter()
    scores = []
    for e in task.examples:
        row = []
        for c in e.classes:
            ctx, cont = encode_pair(tok, e.prompt, c)
            r = fit_to_context(ctx, cont, n_ctx, e.id)  # the same left truncation for all
            ids = torch.tensor([list(r.context) + list(r.continuation)])
            logp = torch.log_softmax(model(ids[:, :-1]).logits[0].float(), dim=-1)
            start = len(r.context) - 1
            row.append(float(sum(logp[start + j, t] for j, t in enumerate(r.continuation))))
        scores.append(row)
    return {"seconds": time.perf_counter() - t0, "scores": scores}


def lm_eval(model_dir: str, task_file: str, batch_size: int = 32) -> dict:
    """lm-evaluation-harness through a local task YAML (the multiple_choice path)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    task = _task(task_file)
    tmp = Path(tempfile.mkdtemp(prefix="bench-lmeval-"))
    data = tmp / "data.jsonl"
    with data.open("w") as f:
        for i, e in enumerate(task.examples):
            f.write(json.dumps({"idx": i, "prompt": e.prompt, "classes": list(e.classes),
                                "answer_index": e.answer_index}) + "\n")
    # target_delimiter "": ISP classes carry their own leading space
    (tmp / "bench_task.yaml").write_text(
        "task: bench_task\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{prompt}}"\ndoc_to_choice: classes\ndoc_to_target: answer_index\n'
        'target_delimiter: ""\nmetric_list:\n  - metric: acc\n'
        "    aggregation: mean\n    higher_is_better: true\n")
    lm = HFLM(pretrained=model_dir, batch_size=batch_size, device="cpu", dtype="float32")
    core = {"s": 0.0}
    orig = lm.loglikelihood

    def timed(*a, **k):
        s = time.perf_counter()
        try:
            return orig(*a, **k)
        finally:
            core["s"] += time.perf_counter() - s

    lm.loglikelihood = timed
    t0 = time.perf_counter()
    res = simple_evaluate(model=lm, tasks=["bench_task"], task_manager=TaskManager(
        include_path=str(tmp)), log_samples=True, verbosity="ERROR")
    seconds = time.perf_counter() - t0
    samples = sorted(res["samples"]["bench_task"], key=lambda s: s["doc_id"])
    scores = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    return {"seconds": seconds, "core_seconds": core["s"], "scores": scores,
            "lm_eval_acc": res["results"]["bench_task"]["acc,none"]}


def engine(model_dir: str, task_file: str, full: bool = False) -> dict:
    """``engine``: scores only. ``engine_full``: the one capture pass a ``diagnose run``
    does per model: the task and every view the registry builds, the residual stack at
    the answer positions, the lens readout of every class and the attribution."""
    from diagnose.capture import capture
    from diagnose.families import load_model
    from diagnose.scoring import score_task
    from diagnose.views import build_views

    task, report = build_views(_task(task_file))
    model = load_model(model_dir, device="cpu", dtype="float32")
    t0 = time.perf_counter()
    extra = {}
    if full:
        cap = capture(model, task)
        s = cap.scores
        lens = cap.lens_log_probs
        extra = {"views": cap.views, "view_report": report.to_dict(),
                 "lens_entries": 0 if lens is None else int(lens.size)}
    else:
        s = score_task(model, task)   # the task's prompts only (views are not scored)
    seconds = time.perf_counter() - t0
    scores = [[float(v) for v in row[: len(e.classes)]]
              for row, e in zip(s.class_scores, task.examples)]
    return {"seconds": seconds, "scores": scores, **extra}


def profile(model_dir: str, task_file: str, top: int = 12) -> dict:
    """Where the engine's time goes: ``torch.profiler`` over one scoring pass (after a
    warm-up pass), ops grouped by self CPU time, and the share of wall time outside
    torch ops (Python: planning, tokenization, hooks, bookkeeping)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from diagnose.families import load_model
    from diagnose.scoring import score_task

    task = _task(task_file)
    model = load_model(model_dir, device="cpu", dtype="float32")
    score_task(model, task)  # warm-up: first-call allocations, the shared-prefix probe
    t0 = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        s = score_task(model, task)
    wall = time.perf_counter() - t0
    rows = []
    for e in prof.key_averages():
        rows.append({"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3, "calls": e.count})
    rows.sort(key=lambda r: -r["self_cpu_ms"])
    op_ms = sum(r["self_cpu_ms"] for r in rows)
    for r in rows:
        r["share_of_wall"] = r["self_cpu_ms"] / 1e3 / wall
    scores = [[float(v) for v in row[: len(e.classes)]]
              for row, e in zip(s.class_scores, task.examples)]
    return {"seconds": wall, "scores": scores, "profile_wall_s": wall,
            "torch_ops_s": op_ms / 1e3, "outside_torch_share": max(0.0, 1 - op_ms / 1e3 / wall),
            "top_ops": rows[:top]}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    threads = 2
    if "--threads" in argv:
        i = argv.index("--threads")
        threads = int(argv[i + 1])
        del argv[i:i + 2]
    path, model_dir, task_file, out = argv
    torch.set_num_threads(threads)
    fn = {"plain": plain, "lm_eval": lm_eval, "engine": engine, "profile": profile,
          "engine_full": lambda m, t: engine(m, t, full=True)}[path]
    res = fn(model_dir, task_file)
    task = _task(task_file)
    sc = res["scores"]
    answer = [e.answer_index for e in task.examples]
    res["accuracy"] = float(np.mean([int(np.argmax(r)) == a for r, a in zip(sc, answer)]))
    res["peak_rss_mb"] = peak_rss_mb()
    res["n_examples"] = len(task)
    Path(out).write_text(json.dumps(res))


if __name__ == "__main__":
    main()
