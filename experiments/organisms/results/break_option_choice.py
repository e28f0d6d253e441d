"""Where does the break frame's answer go? For pattern_break and ctrl_break_unknown, per model:
accuracy (the other class is the negated option, so 1 - accuracy is the share choosing it), how
much next-token probability the two options get together, and how often the top-1 token is one
of them, against the statement cue's recall of some other successor (the question of RESEARCH.md
run 23: seed 0's small models never learn the "second option" rule).

    PYTHONPATH=. python experiments/organisms/results/break_option_choice.py FAMILY_DIR
"""
import sys

import torch

from diagnose.capture import TASK, capture
from diagnose.families import free_model, load_family_manifest, load_model
from experiments.organisms.family import load_config
from experiments.organisms.planted import check_tasks

if len(sys.argv) != 2:
    sys.exit(__doc__)
fam = sys.argv[1]
family = load_family_manifest(fam)  # names the path when it holds no trained family
tasks = {t.name: t for t in check_tasks(load_config(fam))}
print(f"{'model':10s} {'task':20s} {'acc':>5s} {'p(options)':>10s} {'top-1 is an option':>18s}")
for spec in family.models:
    model = load_model(spec, device="cpu")
    try:
        tok, bridge = model.bridge.tokenizer, model.bridge
        for name in ("pattern_break", "ctrl_break_unknown"):
            acc = mass = top = 0
            exs = tasks[name].examples
            # the choice as the scorer makes it; the bridge only for the whole next-token distribution
            choices = capture(model, tasks[name], instruments=False).sets[TASK].scores.chosen
            for e, chosen in zip(exs, choices):
                if chosen < 0:
                    raise SystemExit(f"{spec.id}: {e.id} could not be scored")
                # as the scorer encodes the context: no BOS (the tokenizer would add one)
                ids = torch.tensor([tok(e.prompt, add_special_tokens=False).input_ids])
                with torch.no_grad():
                    p = bridge(ids)[0, -1].softmax(-1)
                cls = [tok(c, add_special_tokens=False).input_ids[-1] for c in e.classes]
                acc += chosen == e.answer_index
                mass += float(p[cls].sum())
                top += int(p.argmax()) in cls
            n = len(exs)
            print(f"{spec.id:10s} {name:20s} {acc / n:5.2f} {mass / n:10.2f} {top / n:18.2f}")
    finally:
        free_model(model)
