"""Train (or find cached) the organisms family and write its manifest.

Layout under the cache: ``organisms/<config_hash[:12]>/`` holding
``config.json``, ``family.json`` and one Hugging Face model directory per size.
A model is trained into a temporary directory and renamed when complete, so an
interrupted build never leaves a directory that looks finished, and a second
call skips the sizes already trained (resumable).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from diagnose.store import write_json

from .config import MANIFEST, OrganismConfig, load_config  # noqa: F401 - load_config: the family's face
from .corpus import generate_corpus
from .tokenizer import build_tokenizer
from .train import pack_windows, train_model

MODEL_RECORD = "organism.json"  # written last inside a model dir: marks it complete


def cache_root() -> Path:
    if os.environ.get("DIAGNOSE_CACHE"):
        return Path(os.environ["DIAGNOSE_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "inverse-scaling-diagnose"
    return Path.home() / ".cache" / "inverse-scaling-diagnose"


def family_dir_for(cfg: OrganismConfig, cache_dir: str | Path | None = None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    return root / "organisms" / cfg.config_hash()[:12]


def is_complete(model_dir: Path) -> bool:
    return (model_dir / MODEL_RECORD).is_file()


def _manifest(cfg: OrganismConfig, corpus_hash: str, family_dir: Path) -> dict:
    models = []
    for size in cfg.sizes:
        d = family_dir / size.name
        if is_complete(d):
            models.append(json.loads((d / MODEL_RECORD).read_text()))
    models.sort(key=lambda m: m["n_params"])
    return {
        "name": "organisms",
        "config_hash": cfg.config_hash(),
        "corpus_hash": corpus_hash,
        "seed": cfg.seed,
        "models": models,
    }


def build_family(
    cfg: OrganismConfig | None = None,
    cache_dir: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    only: list[str] | None = None,
) -> Path:
    """Train every size not yet trained; return the family directory."""
    cfg = cfg or OrganismConfig.default()
    fdir = family_dir_for(cfg, cache_dir)
    fdir.mkdir(parents=True, exist_ok=True)
    log = (lambda msg: print(f"[organisms] {msg}", file=sys.stderr, flush=True)) if progress else None

    todo = [s for s in cfg.sizes if (force or not is_complete(fdir / s.name)) and (not only or s.name in only)]
    corpus = generate_corpus(cfg)
    corpus_hash = corpus.corpus_hash()
    write_json(fdir / "config.json", cfg.to_dict())
    if todo and not force:  # the trained family shipped with the repository, if it matches
        from .shipped import install

        if install(cfg.config_hash(), corpus_hash, fdir, log=log):
            todo = [s for s in todo if not is_complete(fdir / s.name)]
    if not todo:
        write_json(fdir / MANIFEST, _manifest(cfg, corpus_hash, fdir))
        return fdir

    tok = build_tokenizer(corpus.vocab)
    vocab = tok.get_vocab()
    windows = pack_windows(corpus.lines, vocab, cfg.train.seq_len, eot_id=tok.eos_token_id)
    if log:
        log(f"corpus {len(corpus.lines)} lines, {corpus.n_tokens} tokens, {len(windows)} windows, "
            f"vocab {len(vocab)}; family dir {fdir}")
    for size in todo:
        final = fdir / size.name
        tmp = fdir / f".tmp-{size.name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        ckpts: list[dict] = []

        def save(model, where: Path) -> None:   # a loadable model directory
            model.save_pretrained(str(where), safe_serialization=True)
            tok.save_pretrained(str(where))

        def save_checkpoint(step: int, model, tmp=tmp, ckpts=ckpts) -> None:
            rel = f"checkpoints/step{step}"
            save(model, tmp / rel)
            ckpts.append({"step": step, "path": rel})

        res = train_model(size, windows, len(vocab), cfg.train, cfg.seed, log=log,
                          on_checkpoint=save_checkpoint)
        save(res.model, tmp)
        n_params = sum(p.numel() for p in res.model.parameters())
        record = {
            "id": size.name,
            "path": size.name,
            "n_params": n_params,
            "n_layers": size.n_layers,
            "d_model": size.d_model,
            "n_heads": size.n_heads,
            "train_tokens": res.train_tokens,
            "final_loss": round(res.final_loss, 4),
            "train_seconds": round(res.train_seconds, 1),
            "seed": cfg.seed,
            "lr": size.lr,
            "steps": size.steps,
            "checkpoints": ckpts,
        }
        write_json(tmp / MODEL_RECORD, record)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_json(fdir / MANIFEST, _manifest(cfg, corpus_hash, fdir))
        if log:
            log(f"{size.name}: {n_params} params, loss {res.final_loss:.3f}, {res.train_seconds:.0f}s -> {final}")
        del res
    return fdir


def main(argv=None) -> None:
    """``python -m experiments.organisms.family [default|tiny] [--seed N]`` (for background runs)."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("preset", nargs="?", default="default", choices=["default", "tiny"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--only", nargs="*", default=None, help="train only these sizes (in this order)")
    a = ap.parse_args(argv)
    cfg = getattr(OrganismConfig, a.preset)().with_seed(a.seed)
    t0 = time.time()
    d = build_family(cfg, cache_dir=a.cache_dir, force=a.force, only=a.only)
    print(d)
    print(f"total {time.time() - t0:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
