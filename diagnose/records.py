"""One per-model record mechanism: arrays plus JSON facts, keyed by their inputs.

A record is written once per (stage, model) by the stage that produces it and read by
every stage after it: ``DIR/records/<stage>/<model slug>.npz``, holding the arrays and a
``__meta__`` JSON string (the model's facts, the record's ``key``: a hash of everything
it depends on). A record whose key still matches is reused without loading the model,
so an interrupted run resumes where it stopped and a changed input recomputes exactly
what depends on it. Records are written through ``store`` (temp file + rename), last,
so a present record is a finished one.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from diagnose import store

# bumped when a record's layout or meaning changes, so old records are recomputed
RECORDS_VERSION = 3


def record_path(root: str | Path, stage: str, model_id: str) -> Path:
    return Path(root) / "records" / stage / f"{store.slug(model_id)}.npz"


def record_key(*parts: Any) -> str:
    return store.content_hash(RECORDS_VERSION, *parts)


def save(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Arrays (numeric only: no pickles) and JSON-able facts, atomically."""
    buf = io.BytesIO()
    clean = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
    for k, v in clean.items():
        if v.dtype == object:
            raise TypeError(f"record array {k!r} is not numeric")
    np.savez_compressed(buf, __meta__=np.array(json.dumps(store.clean(meta))), **clean)
    store.write_bytes(Path(path), buf.getvalue())


def load(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["__meta__"]))
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
    return arrays, meta


def load_if_current(path: str | Path, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The record at ``path`` when it exists and was made from the same inputs."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        arrays, meta = load(path)
    except (OSError, ValueError, KeyError):  # a foreign or damaged file: recompute it
        return None
    return (arrays, meta) if meta.get("key") == key else None
