"""Does the marker trap follow the memory? For every marker_fewshot example, score the trap and
the recall of the same query key (``x is`` -> its value vs the trap's other class), per model,
and report the trap's accuracy on the examples whose key the model recalls and on those it
does not (the question left open in RESEARCH.md run 21: does d32 lack the memory or the gate?).

    PYTHONPATH=. python experiments/organisms/results/marker_recall_gate.py FAMILY_DIR
"""
import sys
from dataclasses import replace

from diagnose.capture import TASK, capture
from diagnose.families import free_model, load_family_manifest, load_model
from experiments.organisms.family import load_config
from experiments.organisms.planted import check_tasks

if len(sys.argv) != 2:
    sys.exit(__doc__)
fam = sys.argv[1]
family = load_family_manifest(fam)  # names the path when it holds no trained family
cfg = load_config(fam)
trap = next(t for t in check_tasks(cfg) if t.name == "marker_fewshot")
recall_ex = []
for e in trap.examples:
    tempting = e.classes[e.tempting_index]  # the demos' label = the key's memorised value
    correct = e.classes[e.answer_index]     # the bracketed word: another value
    recall_ex.append(replace(e, id=e.id + "-recall", prompt=f"{e.metadata['key']} is",
                             classes=(tempting, correct), answer_index=0, tempting_index=1, views={}))
recall = replace(trap, name="marker_fewshot_key_recall", examples=tuple(recall_ex))
print(f"{'model':10s} {'recall':>7s} {'trap | recalled':>16s} {'trap | not recalled':>20s}")
for spec in family.models:
    model = load_model(spec, device="cpu")
    try:
        t_ok = capture(model, trap, instruments=False).sets[TASK].scores.correct
        r_ok = capture(model, recall, instruments=False).sets[TASK].scores.correct
    finally:
        free_model(model)
    rec = [bool(x) for x in r_ok]
    a = [bool(t) for t, r in zip(t_ok, rec) if r]
    b = [bool(t) for t, r in zip(t_ok, rec) if not r]
    fmt = lambda v: f"{sum(v) / len(v):.2f} (n={len(v)})" if v else "-"  # noqa: E731
    print(f"{spec.id:10s} {sum(rec) / len(rec):7.2f} {fmt(a):>16s} {fmt(b):>20s}")
