"""Does each size know the design-B marker memory (RESEARCH.md run 19)? In context: "is x like w ?" yes/no,
and recall: "x is like" -> its head, rare-tier keys, every finished size. Needs the version-18 or -20
code (git apply results/run17-version18.patch or run19-version20.patch): the store is rebuilt from the
config by this checkout's corpus code. Usage: PYTHONPATH=. python experiments/organisms/results/marker_memory_probe.py FAMILY_DIR"""
import sys
from experiments.organisms.check import check_family
from experiments.organisms.family import load_config
from experiments.organisms.corpus import build_world
from experiments.organisms import planted as P

fam = sys.argv[1]
cfg = load_config(fam)
w = build_world(cfg)
st = w.b["marker"]
rare_tier = len(cfg.corpus.b_tiers) - 1
keys = [f for f in st.familiar if f["tier"] == rare_tier]

def cmp(rng, t, split):
    f = rng.choice(keys)
    same = rng.random() < 0.5
    h = f["v"] if same else rng.choice([v for v in st.values if v != f["v"]])
    classes, a, tm = P._two(rng, "yes" if same else "no", "no" if same else "yes")
    return f"is {f['k']} like {h} ?", classes, a, tm, {}, {}

def recall(rng, t, split):
    f = rng.choice(keys)
    other = rng.choice([v for v in st.values if v != f["v"]])
    classes, a, tm = P._two(rng, f["v"], other)
    return f"{f['k']} is like", classes, a, tm, {}, {}

tasks = [P._task("like_compare_rare", None, True, "marker", ["-"], P._examples("like_compare_rare", 300, (0,), cmp), "-"),
         P._task("like_recall_rare", None, True, "marker", ["-"], P._examples("like_recall_rare", 300, (0,), recall), "-")]
r = check_family(fam, cfg, tasks=tasks, views=False)
print(fam, [m["id"] for m in r["models"]])
for row in r["tasks"]:
    print(f"  {row.get('task', row.get('name')):30s}", [round(a, 2) for a in row["accuracy"]])
