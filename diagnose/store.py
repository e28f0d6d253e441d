"""Results on disk: atomic writes and a stable layout.

Every file is written to a temporary sibling and moved into place with ``os.replace``,
so an interrupted run never leaves a half-written file that a later run would trust.
Layout of a ``diagnose score`` directory::

    DIR/summary.json                 task, format, n_examples, models[] (smallest first)
    DIR/summary.csv                  the same models[] as a table
    DIR/scaling.png                  accuracy and loss vs parameters
    DIR/models/<slug>/summary.json   one model's summary (+ "key": the inputs' hash)
    DIR/models/<slug>/examples.jsonl per-example rows (pandas.read_json(lines=True))
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable


def write_bytes(path: Path, data: bytes) -> None:
    """The one atomic writer: a temp sibling, fsync, ``os.replace``. The file gets the mode
    a plain write would give (``mkstemp`` makes it private), or keeps its old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def clean(obj: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            obj = obj.item()
        except (ValueError, AttributeError):
            obj = obj.tolist()
            return clean(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, (json.dumps(clean(obj), indent=2, allow_nan=False) + "\n").encode())


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    buf = "".join(json.dumps(clean(r), allow_nan=False) + "\n" for r in rows)
    write_bytes(path, buf.encode())


def write_csv(path: Path, rows: list[dict]) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow({k: (json.dumps(clean(v)) if isinstance(v, (list, dict)) else clean(v))
                    for k, v in r.items()})
    write_bytes(path, buf.getvalue().encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def save_figure(fig: Any, path: Path, dpi: int = 120) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    write_bytes(path, buf.getvalue())


def slug(model_id: str) -> str:
    """A directory name for a model id (hub name or path), readable and unique enough."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id.strip("/"))[-60:].strip("_.") or "model"
    return f"{base}-{hashlib.sha1(model_id.encode()).hexdigest()[:6]}"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """A file's sha256, read in chunks (model files are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def content_hash(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(clean(p), sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()
