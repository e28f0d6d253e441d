"""Scoring benchmark: a plain loop, lm-evaluation-harness, and our engine, in one run.

    python -m experiments.bench.score_bench [--model DIR] [--threads 2] [--out results/bench]

Model: the largest model of the default family (the organisms) when it is built, else
a ~1M-parameter GPT-NeoX with a BPE tokenizer built here (speed does not depend on what
the weights know). Tasks: ISP memo-trap (936 examples), a multi-token-class variant of
it (the prompt's last word moved into every class), and hindsight-neglect (long
prompts). Each path runs in its own process (so its peak RSS is its own):
(a) ``plain``: one transformers forward per prompt + class; (b) ``lm_eval``:
lm-evaluation-harness 0.4 through a local task YAML (wall time of the whole call, and
of its log-likelihood calls alone as ``lm_eval_core``); (c) ``engine``: scores only;
(d) ``engine_full``: scores + logit lens on every layer + the counterfactual views.
Agreement of (a), (b), (c) is checked: identical accuracy and choices, log-probs within
1e-4. Also: a lower bound from forward FLOPs / measured matmul throughput, and how the
engine's time and memory grow with examples (x1, x4, x16) and with model size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from diagnose import store  # noqa: E402
from diagnose.loaders import load_task, save_task_jsonl  # noqa: E402
from diagnose.tasks import Example  # noqa: E402

ISP = Path(__file__).resolve().parents[3] / "shared" / "isp"
PATHS = ("plain", "lm_eval", "engine", "engine_full")


def build_bench_model(task, out_dir: Path, d_model: int = 128, n_layers: int = 4,
                      vocab: int = 2048, seed: int = 0) -> Path:
    """A ~1M-parameter GPT-NeoX with a byte-level BPE tokenizer trained on the task text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    text = [e.prompt + " " + " ".join(e.classes) for e in task.examples]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(text, trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>",
                                  eos_token="<|endoftext|>")
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=d_model, num_hidden_layers=n_layers,
                        num_attention_heads=4, intermediate_size=4 * d_model,
                        max_position_embeddings=2048, rotary_pct=0.25, tie_word_embeddings=False)
    GPTNeoXForCausalLM(cfg).save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def default_model(tmp: Path) -> tuple[str, str]:
    """(model dir, how it was chosen)."""
    try:
        from diagnose.families import resolve_family

        fam = resolve_family("organisms")
        return fam.models[-1].source, f"largest organism ({fam.models[-1].id})"
    except Exception as e:  # not built: say so and build the stand-in
        task = load_task(ISP / "memo-trap.jsonl")
        return str(build_bench_model(task, tmp / "bench-1m")), (
            f"~1M-parameter stand-in (organisms not available: {e})")


def distinct_words(model_dir: str, n: int) -> list[str]:
    """``n`` words that are single, distinct tokens of the model's tokenizer."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    out, seen = [], set()
    for w in sorted(tok.get_vocab()):
        w = w.lstrip("Ġ▁")
        if not w.isalnum() or w in seen:
            continue
        ids = tok(w, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and ids[0] != tok.unk_token_id:
            out.append(w)
            seen.add(w)
        if len(out) == n:
            break
    return out


def multitoken_variant(task):
    """memo-trap with the prompt's last word moved into each class: every class has at
    least two tokens, as in tasks with multi-word answers."""
    ex = []
    for e in task.examples:
        head, _, last = e.prompt.rpartition(" ")
        ex.append(Example(e.id, head, tuple(f" {last}{c}" for c in e.classes), e.answer_index,
                          views={}, metadata=dict(e.metadata)))
    from dataclasses import replace

    return replace(task, name="memo-trap-multitoken", examples=tuple(ex))


def run_path(path: str, model: str, task_file: Path, threads: int, tmp: Path) -> dict:
    out = tmp / f"{path}-{task_file.stem}.json"
    cmd = [sys.executable, "-m", "experiments.bench.paths", path, model, str(task_file),
           str(out), "--threads", str(threads)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{path} on {task_file.name} failed:\n{r.stderr[-3000:]}")
    return json.loads(out.read_text())


def matmul_flops_per_s(threads: int, n: int = 1024, reps: int = 10) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def forward_flops(model_dir: str, task) -> tuple[float, int]:
    """Forward FLOPs of the tokens the engine processes: 2 x non-embedding parameters per
    token, causal attention 2 x layers x d x length per token, and the unembedding at
    the read positions only."""
    from transformers import AutoConfig

    from diagnose.engine import plan_reads
    from diagnose.families import load_model
    from diagnose.scoring import build_requests

    cfg = AutoConfig.from_pretrained(model_dir)
    model = load_model(model_dir, device="cpu")
    reqs, _, _ = build_requests(task, model)
    plan = plan_reads(reqs)
    d, L, V = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    emb = sum(p.numel() for n, p in model.bridge.original_model.named_parameters()
              if "embed" in n)
    non_emb = model.n_params - emb
    tokens = sum(len(x) for x in plan.inputs)
    # causal QK^T and AV: 4 d p flops at position p, summed over p: about 2 d T^2 a layer
    attn = sum(2 * L * d * len(x) * len(x) for x in plan.inputs)
    flops = 2 * non_emb * tokens + attn + 2 * d * V * len(plan.read_seq)
    return float(flops), tokens


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="a local HF model directory; 'stand-in' for "
                   "the ~1M-parameter model built here (default: the largest organism if built)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="results/bench")
    p.add_argument("--no-scaling", action="store_true")
    p.add_argument("--no-profile", action="store_true", help="skip the torch.profiler pass")
    p.add_argument("--limit", type=int, default=None, help="first N examples (a quick check)")
    p.add_argument("--paths", default=",".join(PATHS), help=f"a subset of {','.join(PATHS)}")
    p.add_argument("--tasks", default="memo-trap,memo-trap-multitoken,hindsight-neglect")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="score-bench-"))
    if args.model == "stand-in":
        model = str(build_bench_model(load_task(ISP / "memo-trap.jsonl"), tmp / "bench-1m"))
        how = "~1M-parameter stand-in (asked for)"
    else:
        model, how = (args.model, "given") if args.model else default_model(tmp)
    def first(task):
        return task.subset(range(min(args.limit, len(task)))) if args.limit else task

    memo = first(load_task(ISP / "memo-trap.jsonl"))
    tasks = {"memo-trap": save_task_jsonl(memo, tmp / "memo-trap.jsonl"),
             "memo-trap-multitoken": save_task_jsonl(multitoken_variant(memo),
                                                     tmp / "memo-trap-multitoken.jsonl"),
             "hindsight-neglect": save_task_jsonl(first(load_task(ISP / "hindsight-neglect.jsonl")),
                                                  tmp / "hindsight-neglect.jsonl")}
    paths = [k for k in PATHS if k in args.paths.split(",")]
    if "engine" not in paths:
        raise SystemExit("--paths must include engine (every ratio is against it)")
    tasks = {k: v for k, v in tasks.items() if k in args.tasks.split(",")}
    thr = matmul_flops_per_s(args.threads)
    per_task = {}
    for name, f in tasks.items():
        res = {k: run_path(k, model, f, args.threads, tmp) for k in paths}
        n = res["engine"]["n_examples"]
        sc = {k: res[k]["scores"] for k in ("plain", "lm_eval", "engine") if k in res}
        diff = max((float(np.max(np.abs(np.array(a) - np.array(b))))
                    for k in sc if k != "engine"
                    for a, b in zip(sc[k], sc["engine"])), default=float("nan"))
        choices = {k: [int(np.argmax(r)) for r in v] for k, v in sc.items()}
        flops, tokens = forward_flops(model, load_task(f))
        sec = {k: res[k]["seconds"] for k in paths}
        ratios = {"engine_vs_plain": sec["plain"] / sec["engine"] if "plain" in sec else None,
                  "engine_vs_lm_eval": (sec["lm_eval"] / sec["engine"]
                                        if "lm_eval" in sec else None),
                  "engine_vs_lm_eval_core": (res["lm_eval"]["core_seconds"] / sec["engine"]
                                             if "lm_eval" in sec else None),
                  "full_vs_engine": (sec["engine_full"] / sec["engine"]
                                     if "engine_full" in sec else None)}
        per_task[name] = {
            "n_examples": n,
            "examples_per_s": {k: n / sec[k] for k in paths},
            "examples_per_s_lm_eval_core": (n / res["lm_eval"]["core_seconds"]
                                            if "lm_eval" in res else None),
            "seconds": sec,
            "accuracy": {k: res[k]["accuracy"] for k in paths},
            "identical_choices": len({tuple(v) for v in choices.values()}) == 1,
            "max_abs_logprob_diff": diff,
            "peak_mem_mb": {k: res[k]["peak_rss_mb"] for k in paths},
            "engine_tokens": tokens, "forward_flops": flops, "flop_bound_s": flops / thr,
            "ratios": ratios,
            "engine_full_views": res.get("engine_full", {}).get("views"),
        }
    prof = None
    if not args.no_profile:
        main_file = tasks.get("memo-trap") or next(iter(tasks.values()))
        prof = run_path("profile", model, main_file, args.threads, tmp)
        prof.pop("scores", None)
    scaling_examples, scaling_models = [], []
    if not args.no_scaling:
        from dataclasses import replace

        marks = distinct_words(model, 16)
        for k in (1, 4, 16):
            # copy c of every example starts with its own vocabulary word, so no copy is
            # token-identical to another (the engine would run identical rows once)
            big = replace(memo, examples=tuple(
                replace(e, id=f"{e.id}#{c}", prompt=(f"{marks[c]} {e.prompt}" if c else e.prompt))
                for c in range(k) for e in memo.examples))
            f = save_task_jsonl(big, tmp / f"memo-x{k}.jsonl")
            r = run_path("engine", model, f, args.threads, tmp)
            scaling_examples.append({"copies": k, "n_examples": len(big),
                                     "seconds": r["seconds"], "peak_mem_mb": r["peak_rss_mb"]})
        try:
            from diagnose.families import resolve_family

            for spec in resolve_family("organisms").models:
                r = run_path("engine", spec.source, tasks["memo-trap"], args.threads, tmp)
                scaling_models.append({"id": spec.id, "n_params": spec.n_params,
                                       "seconds": r["seconds"], "peak_mem_mb": r["peak_rss_mb"]})
        except Exception as e:
            scaling_models.append({"note": f"family scaling skipped: {e}"})
    main_name = "memo-trap" if "memo-trap" in per_task else next(iter(per_task))
    main_task = per_task[main_name]
    result = {
        "model": model, "model_choice": how, "task": main_name, "threads": args.threads,
        "device": "cpu", "torch": torch.__version__,
        "examples_per_s": {k: main_task["examples_per_s"].get(k) for k in PATHS},
        "max_abs_logprob_diff": max(t["max_abs_logprob_diff"] for t in per_task.values()),
        "accuracy": main_task["accuracy"], "peak_mem_mb": main_task["peak_mem_mb"],
        "flop_bound_s": main_task["flop_bound_s"], "matmul_flops_per_s": thr,
        "tasks": per_task, "scaling_examples": scaling_examples,
        "scaling_models": scaling_models, "profile": prof,
    }
    print(format_result(result))
    store.write_json(Path(args.out) / "bench.json", result)
    print(f"wrote {Path(args.out) / 'bench.json'}")
    return result


def format_result(r: dict) -> str:
    lines = [f"model: {r['model_choice']} ({r['model']}); {r['threads']} threads; matmul "
             f"{r['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s"]
    for name, t in r["tasks"].items():
        lines.append(f"\n{name}: {t['n_examples']} examples; flop bound {t['flop_bound_s']:.3f} s;"
                     f" max |dlogp| {t['max_abs_logprob_diff']:.1e}; identical choices "
                     f"{t['identical_choices']}")
        lines.append(f"  {'path':<12}{'seconds':>9}{'ex/s':>10}{'accuracy':>10}{'peak MB':>9}")
        for k in t["seconds"]:
            lines.append(f"  {k:<12}{t['seconds'][k]:>9.2f}{t['examples_per_s'][k]:>10.1f}"
                         f"{t['accuracy'][k]:>10.3f}{t['peak_mem_mb'][k]:>9.0f}")
        fmt = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
        ra = t["ratios"]
        lines.append(f"  c/a {fmt(ra['engine_vs_plain'])}x   c/b {fmt(ra['engine_vs_lm_eval'])}x "
                     f"(core: {fmt(ra['engine_vs_lm_eval_core'])}x)   "
                     f"d/c {fmt(ra['full_vs_engine'], 2)}")
    if r["scaling_examples"]:
        lines.append("\nengine vs number of examples: " + ", ".join(
            f"x{s['copies']} {s['seconds']:.1f}s {s['peak_mem_mb']:.0f}MB"
            for s in r["scaling_examples"]))
    if r.get("profile"):
        pr = r["profile"]
        lines.append(f"\nprofile of one engine pass ({pr['profile_wall_s']:.2f} s wall, "
                     f"{pr['torch_ops_s']:.2f} s in torch ops, "
                     f"{100 * pr['outside_torch_share']:.0f}% outside them):")
        for o in pr["top_ops"][:8]:
            lines.append(f"  {o['op'][:40]:<40}{o['self_cpu_ms']:>9.1f} ms{o['calls']:>7} calls "
                         f"{100 * o['share_of_wall']:>5.1f}%")
    if r["scaling_models"]:
        lines.append("engine vs model size: " + ", ".join(
            f"{s['id']} {s['seconds']:.1f}s {s['peak_mem_mb']:.0f}MB" if "id" in s else s["note"]
            for s in r["scaling_models"]))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
