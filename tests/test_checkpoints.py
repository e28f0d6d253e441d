"""The training-time axis: one model's checkpoints as a family on the steps axis."""

import json
import shutil

import pytest

from diagnose import cli
from diagnose.families import (FamilyError, ModelSpec, checkpoint_family, family_from_models,
                               load_family_manifest)

ROWS = [{"prompt": f"Write a quote that ends in the word {b}: {p}", "classes": [f" {a}.", f" {b}."],
         "answer_index": 1} for p, a, b in [("Absence makes the heart grow", "fonder", "heavy"),
                                            ("Actions speak louder than", "words", "dog")] * 6]


@pytest.fixture(scope="module")
def ckpt_model(tmp_path_factory, tiny_family_dirs):
    """A 'trained' model directory whose organism.json lists two checkpoints (the two tiny
    models stand in for the weights at steps 10 and 20; the model itself is step 30)."""
    root = tmp_path_factory.mktemp("ck")
    model = root / "m"
    shutil.copytree(tiny_family_dirs[1], model)
    for step, src in ((10, tiny_family_dirs[1]), (20, tiny_family_dirs[1])):
        shutil.copytree(src, model / "checkpoints" / f"step{step}")
    (model / "organism.json").write_text(json.dumps({
        "id": "m", "path": "m", "n_params": 1, "steps": 30,
        "checkpoints": [{"step": 20, "path": "checkpoints/step20"},
                        {"step": 10, "path": "checkpoints/step10"}]}))
    (root / "family.json").write_text(json.dumps({"name": "fam", "models": [
        {"id": "m", "path": "m", "n_params": 1}]}))
    return root, model


def test_checkpoint_family_orders_steps_and_resolves_paths(ckpt_model):
    root, model = ckpt_model
    fam = checkpoint_family(load_family_manifest(root))
    assert fam.axis == "steps" and [m.step for m in fam.models] == [10, 20, 30]
    assert fam.models[0].source.endswith("checkpoints/step10")
    assert fam.models[-1].source == str(model)
    by_arg = family_from_models([f"{model}@step20", f"{model}@step10"], over="checkpoints")
    assert [m.step for m in by_arg.models] == [10, 20]
    with pytest.raises(FamilyError, match="no checkpoint 'step15'.*step10"):
        family_from_models([f"{model}@step15"])
    with pytest.raises(FamilyError, match="needs a step"):
        family_from_models([str(model)], over="checkpoints")
    # a hub name takes the step as its revision (Pythia's stepN)
    assert family_from_models(["EleutherAI/pythia-70m@step3000"]).models[0] == ModelSpec(
        id="EleutherAI/pythia-70m@step3000", revision="step3000", step=None)


def test_run_over_checkpoints_reads_the_axis_as_training_steps(ckpt_model, tmp_path):
    root, _ = ckpt_model
    task = tmp_path / "t.jsonl"
    task.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "o"
    assert cli.main(["run", str(task), "--family", str(root), "--over", "checkpoints",
                     "--no-mitigations", "--no-classify", "--out", str(out), "--no-progress"]) == 0
    s = json.loads((out / "score" / "summary.json").read_text())
    assert s["axis"] == "steps" and [m["size"] for m in s["models"]] == [10, 20, 30]
    assert json.loads((out / "trend.json").read_text())["accuracy"]["n_params"] == [10, 20, 30]
    p = json.loads((out / "probes" / "probes.json").read_text())
    assert p["axis"] == "steps" and [m["step"] for m in p["models"]] == [10, 20, 30]


def test_the_organisms_trainer_saves_its_checkpoints(tiny_organisms):
    """Every trained organism lists checkpoints at 25/50/75 % of its steps, each a loadable
    model whose scores differ from the final model's (the weights moved in between)."""
    import torch

    from diagnose.families import load_model

    from pathlib import Path

    fam = load_family_manifest(tiny_organisms[1])
    for spec in fam.models:
        rec = json.loads((Path(spec.source) / "organism.json").read_text())
        steps = [c["step"] for c in rec["checkpoints"]]
        assert steps == sorted({round(f * rec["steps"]) for f in (0.25, 0.5, 0.75)}), steps
    ck = checkpoint_family(fam)
    assert [m.step for m in ck.models] == steps + [rec["steps"]]
    first, last = load_model(ck.models[0], device="cpu"), load_model(ck.models[-1], device="cpu")
    ids = torch.tensor([[1, 2, 3, 4]])
    assert not torch.allclose(first.bridge(ids), last.bridge(ids))
