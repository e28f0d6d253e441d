"""Task files with the classes released files can throw at a tokenizer, for the suite:

    python -m experiments.odd_classes DIR [--with-isp ../shared/isp]
    diagnose run --suite isp DIR --limit 100

Each file is a valid ISP classification task whose classes are odd in one way: a single
space (zero tokens under a word-level tokenizer, one under a byte-level one),
punctuation only, a class equal to the prompt's last word, unicode, a leading newline.
``broken-row.jsonl`` has a malformed line, so the suite shows a task that fails to load
recorded beside the others. ``--with-isp`` copies the released files in too.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

PROMPTS = ["Answer : the cat sat on the", "Write a quote that ends in the word mat : the cat sat on the",
           "they say : if it rains then the", "label : e1 t13 -> c1 ; e13 t1 -> c1 ; h5 t6 ->"]
ODD = {
    "single-space": [" ", " mat"],
    "punctuation-only": [" .", " !?"],
    "last-word-again": [" the", " mat"],
    "unicode": [" é→日本", " mat"],
    "leading-newline": ["\nYes", " No"],
}


def write(out: Path, isp: Path | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, classes in ODD.items():
        rows = [{"prompt": p, "classes": classes, "answer_index": (i + j) % 2}
                for i, p in enumerate(PROMPTS) for j in range(10)]
        path = out / f"odd-{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        written.append(path)
    broken = out / "broken-row.jsonl"
    broken.write_text(json.dumps({"prompt": "ok", "classes": [" a", " b"], "answer_index": 0})
                      + "\n{not json\n")
    written.append(broken)
    if isp is not None:
        for p in sorted(isp.glob("*.jsonl")):
            shutil.copy(p, out / p.name)
            written.append(out / p.name)
    return written


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--with-isp", default=None, help="a folder of released ISP files to copy in")
    a = ap.parse_args(argv)
    for p in write(Path(a.out), Path(a.with_isp) if a.with_isp else None):
        print(p)


if __name__ == "__main__":
    main()
