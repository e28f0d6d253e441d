"""The trained default family, shipped with the repository.

Training the default family takes over 20 minutes on a 2-core machine, so the trained
weights (safetensors + tokenizer), the default cause classifier fitted on them and the
largest model's training checkpoints ship in ``experiments/organisms/shipped/<hash>/``
beside a manifest naming the config hash, the corpus hash, the code version and the
sha256 of every file. ``build_family`` installs a shipped family into the cache when the
config hash and the corpus hash both match what this code generates (and every file's
checksum holds), and trains otherwise; ``--retrain`` trains regardless.

To ship a family: ``python -m experiments.organisms.shipped FAMILY_DIR`` (after
``diagnose classify --fit`` wrote its classifier).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from diagnose.store import write_json

from .config import MANIFEST, load_config

SHIPPED_ROOT = Path(__file__).resolve().parent / "shipped"
SHIP_MANIFEST = "shipped.json"
CHECKPOINTS_OF = ("largest", "all", "none")   # whose training checkpoints ``ship`` copies


class ShippedFamilyError(RuntimeError):
    """A shipped family whose files do not match its manifest."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def shipped_dir(config_hash: str, root: Path | None = None) -> Path:
    return (root or SHIPPED_ROOT) / config_hash[:12]


def install(config_hash: str, corpus_hash: str, dest: Path, root: Path | None = None,
            log=None) -> bool:
    """Copy the shipped family for ``config_hash`` into ``dest`` when its manifest names
    the same config and corpus hashes; False when there is none or it does not match.
    A file whose checksum differs from the manifest is an error (a damaged checkout)."""
    src = shipped_dir(config_hash, root)
    man_path = src / SHIP_MANIFEST
    if not man_path.is_file():
        return False
    man = json.loads(man_path.read_text())
    if man.get("config_hash") != config_hash or man.get("corpus_hash") != corpus_hash:
        if log:
            log(f"shipped family {src.name} does not match this code (config or corpus hash "
                "differs): training instead")
        return False
    for rel, digest in man["files"].items():
        if _sha256(src / rel) != digest:
            raise ShippedFamilyError(
                f"{src / rel}: checksum differs from {man_path}; restore the file (git checkout) "
                "or retrain with `diagnose organisms build --retrain`")
    tmp = dest.parent / f".tmp-install-{dest.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    for rel in man["files"]:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, tmp / rel)
    dest.mkdir(parents=True, exist_ok=True)
    for item in tmp.iterdir():  # each model directory and file lands whole
        target = dest / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    shutil.rmtree(tmp, ignore_errors=True)
    if log:
        log(f"installed the shipped family {src.name} (trained by code version "
            f"{man.get('code_version')}) into {dest}")
    return True


def ship(family_dir: str | Path, root: Path | None = None,
         checkpoints_of: str = "largest") -> Path:
    """Copy a trained family (models, tokenizers, classifier and the training checkpoints
    of ``checkpoints_of``: ``largest``, ``all`` or ``none``) into the shipped folder with
    a checksummed manifest. The checkpoints are 3x the weights of their model; without
    them the training-time axis needs ``diagnose organisms build --retrain``."""
    if checkpoints_of not in CHECKPOINTS_OF:
        raise ValueError(f"checkpoints_of={checkpoints_of!r}: use largest, all or none")

    family_dir = Path(family_dir)
    cfg = load_config(family_dir)
    fam = json.loads((family_dir / MANIFEST).read_text())
    dest = shipped_dir(cfg.config_hash(), root)
    if dest.exists():
        shutil.rmtree(dest)
    models = sorted(fam["models"], key=lambda m: m["n_params"])
    keep_ckpt = {"largest": {models[-1]["path"]}, "all": {m["path"] for m in models},
                 "none": set()}[checkpoints_of]
    files = ["config.json", MANIFEST] + (["classifier.json"]
                                         if (family_dir / "classifier.json").is_file() else [])
    for m in models:
        mdir = family_dir / m["path"]
        for p in sorted(mdir.rglob("*")):
            rel = p.relative_to(family_dir)
            if p.is_file() and ("checkpoints" not in rel.parts or m["path"] in keep_ckpt):
                files.append(str(rel))
    digests = {}
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(family_dir / rel, dest / rel)
        digests[rel] = _sha256(dest / rel)
    for m in models:  # the records of models shipped without checkpoints list none
        if m["path"] not in keep_ckpt:
            rec_path = dest / m["path"] / "organism.json"
            rec = json.loads(rec_path.read_text())
            rec["checkpoints"] = []
            write_json(rec_path, rec)
            digests[str(rec_path.relative_to(dest))] = _sha256(rec_path)
    write_json(dest / SHIP_MANIFEST, {
        "config_hash": cfg.config_hash(), "corpus_hash": fam["corpus_hash"],
        "code_version": cfg.version, "seed": cfg.seed,
        "models": [m["id"] for m in models], "checkpoints_of": sorted(keep_ckpt),
        "files": digests,
        "reproduce": f"diagnose organisms build --retrain{'' if cfg.seed == 0 else f' --seed {cfg.seed}'}"})
    return dest


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("family_dir")
    ap.add_argument("--root", default=None, help="shipped folder (default: the package's)")
    ap.add_argument("--checkpoints", default="largest", choices=CHECKPOINTS_OF,
                    help="whose training checkpoints to ship (default: the largest model's)")
    a = ap.parse_args(argv)
    dest = ship(a.family_dir, Path(a.root) if a.root else None, checkpoints_of=a.checkpoints)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"shipped {a.family_dir} -> {dest} ({size / 2 ** 20:.1f} MiB)", file=sys.stderr)


if __name__ == "__main__":
    main()
