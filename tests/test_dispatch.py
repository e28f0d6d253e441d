"""Models larger than one device: accelerate's dispatch through ``boot_transformers``.

The largest tiny organism is loaded with a CPU budget of 60 % of its weights, so
accelerate puts the rest on disk (the placement is asserted, not assumed). On it,
TransformerLens refuses ``enable_compatibility_mode()`` and its own weight readers;
every stage of ``diagnose run`` must still give the records of the same model on one
device (within 1e-5), and an instrument that cannot read an offloaded weight must say
so instead of failing the capture.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch

from diagnose import cli
from diagnose.dispatch import DispatchError, dispatch_from_args, parse_device_map, \
    parse_max_memory
from diagnose.families import Family, free_model, load_family_manifest, load_model
from experiments.scale.parity import compare_records, offload_parity, weights_bytes


@pytest.fixture(scope="module")
def offload(tiny_organisms):
    """(family dir, the largest model's spec, a Dispatch that puts part of it on disk)."""
    _, fam_dir = tiny_organisms
    spec = load_family_manifest(fam_dir).models[-1]
    budget = int(weights_bytes(spec.source) * 0.6)
    return fam_dir, spec, dispatch_from_args(max_memory=json.dumps({"cpu": budget}))


def test_offload_is_real_and_transformer_lens_refuses_what_we_avoid(offload):
    from transformer_lens.tools.analysis import logit_readout

    from probes.devices import readout, unembed_columns

    fam_dir, spec, disp = offload
    plain = load_model(spec, device="cpu")
    model = load_model(spec, dispatch=disp)
    try:
        assert "disk" in model.device_map.values() and model.offloaded, model.device_map
        assert model.device == "cpu" and os.path.isdir(model.offload_dir)
        bridge = model.bridge
        assert bridge.W_U.device.type == "meta"   # no data outside a forward
        x = torch.randn(3, int(bridge.cfg.d_model))
        with pytest.raises(NotImplementedError, match="meta"):
            logit_readout(bridge, x, return_type="logits")
        with pytest.raises(RuntimeError, match="offload"):
            bridge.enable_compatibility_mode()
        # our readers materialize the weights for the read only
        got = readout(bridge, x, return_type="logits").values
        want = readout(plain.bridge, x, return_type="logits").values
        assert torch.equal(got, want)
        ids = np.array([3, 1, 4])
        assert torch.equal(unembed_columns(bridge, ids), unembed_columns(plain.bridge, ids))
        assert bridge.W_U.device.type == "meta"   # offloaded again after the read
    finally:
        where = model.offload_dir
        free_model(model)
        free_model(plain)
    assert not os.path.exists(where)   # our offload folder goes with the model


def test_every_stage_on_a_disk_offloaded_model_matches_one_device(offload, tmp_path):
    fam_dir, spec, _ = offload
    res = offload_parity(fam_dir, tmp_path, "memo_trap", limit=6, share=0.6, lens="logit",
                         records_only=True)
    assert "disk" in res["device_map"].values()
    assert res["compatibility_mode"].startswith("RuntimeError")
    c = res["comparison"]
    stages = {k.split("/")[0] for k in c["records"]}
    assert stages == {"capture", "readings", "patching", "mitigation"}, stages
    assert c["equal"], c
    assert c["max_abs"] <= 1e-5, c
    # the attribution ran on the offloaded model (its numbers are in the comparison)
    assert res["attribution"] == ["attn", "bias", "embed", "heads", "mlp", "total"]
    assert res["offloaded_notes"] == []


def test_tuned_lens_trains_the_same_on_a_disk_offloaded_model(offload, tmp_path):
    from diagnose.capture import capture_stage
    from diagnose.probe_stage import tuned_lens_stage
    from diagnose.runner import run_models
    from diagnose.views import build_views
    from experiments.organisms.family import load_config
    from experiments.organisms.planted import planted_tasks

    fam_dir, spec, disp = offload
    task = next(t for t in planted_tasks(load_config(fam_dir), "all", controls=True)
                if t.name == "belief_bias")
    task, _ = build_views(task.subset(range(6)))
    one = Family("f", (spec,))
    for name, d in (("a", None), ("b", disp)):
        stages = [capture_stage(task),
                  tuned_lens_stage(task, steps=10, lens_dir=tmp_path / name / "tl")]
        run_models(stages, one, tmp_path / name, progress=False,
                   load=dict(device=None if d else "cpu", dispatch=d))
    c = compare_records(tmp_path / "a", tmp_path / "b")
    assert {k.split("/")[0] for k in c["records"]} == {"capture", "tuned_lens"}
    assert c["equal"] and c["max_abs"] <= 1e-5, c


def test_attribution_that_cannot_read_an_offloaded_weight_says_so(offload, tmp_path, monkeypatch):
    """Where TransformerLens cannot give a weight of an offloaded model (here its own
    ``attn.W_O`` accessor, which refuses the meta placeholder), the capture keeps the
    scores and the lens, patching still runs, and the probes report says why the
    attribution is missing; on one device the same accessor works and nothing is skipped."""
    import probes.attribution as pa
    from diagnose.capture import capture_stage
    from diagnose.probe_stage import patching_stage, write_probes
    from diagnose.readings import readings_stage
    from diagnose.runner import run_models
    from diagnose.views import build_views
    from experiments.organisms.family import load_config
    from experiments.organisms.planted import planted_tasks

    monkeypatch.setattr(pa, "attn_W_O", lambda bridge, l: bridge.blocks[l].attn.W_O.float().cpu())
    fam_dir, spec, disp = offload
    task = next(t for t in planted_tasks(load_config(fam_dir), "all", controls=True)
                if t.name == "memo_trap")
    task, _ = build_views(task.subset(range(6)))
    summary = {}
    for name, d in (("plain", None), ("offloaded", disp)):
        res = run_models([capture_stage(task), readings_stage(), patching_stage(task, None)],
                         Family("f", (spec,)), tmp_path / name, progress=False,
                         load=dict(device=None if d else "cpu", dispatch=d))
        summary[name] = write_probes(task, "f", res["capture"], res["readings"], tmp_path / name,
                                     patching=res["patching"], plots=False)["models"][0]
    plain, off = summary["plain"], summary["offloaded"]
    assert plain["attribution"] is not None and not any("skipped" in n for n in plain["notes"])
    assert off["attribution"] is None and off["top_heads"] == []
    note = [n for n in off["notes"] if "direct logit attribution skipped" in n]
    assert note and "disk" in note[0] and "meta" in note[0], off["notes"]
    assert "direct logit attribution skipped" in (tmp_path / "offloaded" / "probes.json").read_text()
    assert off["patching"] is not None          # the interventions still ran
    # the lens, the probes and the patching read what they read on one device
    c = compare_records(tmp_path / "plain", tmp_path / "offloaded")
    for k, r in c["records"].items():
        if not k.startswith("capture/"):
            assert r["max_abs"] <= 1e-5 and not r["differs"], (k, r)
    assert off["lens_margin"] == pytest.approx(plain["lens_margin"], abs=1e-5)
    assert off["probe_accuracy"] == pytest.approx(plain["probe_accuracy"], abs=1e-5)


# -- the command line ---------------------------------------------------------------------


def test_dispatch_flags_parse():
    assert parse_device_map("auto") == "auto"
    assert parse_device_map('{"gpt_neox.layers": 1, "": "DISK"}') == (("", "disk"),
                                                                        ("gpt_neox.layers", 1))
    assert parse_max_memory('{"0": "20GiB", "cpu": 1000}') == ((0, "20GiB"), ("cpu", 1000))
    d = dispatch_from_args(max_memory='{"cpu": "1GiB"}')
    assert d.boot_kwargs() == {"device_map": "auto", "max_memory": {"cpu": "1GiB"}}
    assert dispatch_from_args() is None
    for bad, flag in ((dict(max_memory="{cpu: 1}"), "--max-memory"),
                      (dict(max_memory='{"cpu": "lots"}'), "--max-memory"),
                      (dict(max_memory='{"gpu0": "1GiB"}'), "--max-memory"),
                      (dict(device_map='{"": "gpu7"}'), "--device-map"),
                      (dict(device_map="everywhere"), "--device-map"),
                      (dict(device_map="auto", device="cpu"), "--device"),
                      (dict(n_devices=0), "--n-devices")):
        with pytest.raises(DispatchError, match=flag):
            dispatch_from_args(**bad)


@pytest.fixture(scope="module")
def mini_task(tmp_path_factory):
    p = tmp_path_factory.mktemp("disp") / "t.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"the cat sat on the {w}", "classes": [" mat", " hat"],
                                     "answer_index": i % 2}) + "\n"
                         for i, w in enumerate(["red", "big", "old", "new"])))
    return str(p)


@pytest.mark.parametrize("argv,needle", [
    (["--max-memory", "{cpu: 1}"], "--max-memory: '{cpu: 1}' is not valid JSON"),
    (["--device-map", '{"": "gpu7"}'], "--device-map: module '' is mapped to 'gpu7'"),
    (["--device", "cpu", "--device-map", "auto"], "--device cpu cannot be combined"),
])
def test_bad_dispatch_input_is_one_line(argv, needle, mini_task, tiny_dirs, tmp_path, capsys):
    rc = cli.main(["score", "--task", mini_task, "--model", str(tiny_dirs["neox"]),
                   "--out", str(tmp_path / "o"), "--no-progress", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "o" / "summary.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_gpu_split_on_a_cpu_machine_is_one_line(mini_task, tiny_dirs, tmp_path, capsys):
    rc = cli.main(["score", "--task", mini_task, "--model", str(tiny_dirs["neox"]),
                   "--out", str(tmp_path / "o"), "--no-progress", "--n-devices", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "requires CUDA" in err[0] and "neox" in err[0], err


@pytest.mark.parametrize("command", ["score", "probe", "mitigate", "classify", "run"])
def test_every_command_that_loads_models_passes_the_dispatch(command, mini_task, tiny_dirs,
                                                             tmp_path, monkeypatch, capsys):
    import diagnose.families as fm

    seen = []

    def spy(spec, device, dtype, trust, dispatch=None):
        seen.append((device, dispatch))
        raise fm.ModelUnavailableError("stop here")

    monkeypatch.setattr(fm, "_load_model", spy)
    task_args = [mini_task] if command == "run" else ["--task", mini_task]
    models = ["--model", str(tiny_dirs["neox"]), "--model", str(tiny_dirs["gpt2"])]
    rc = cli.main([command, *task_args, *models, "--out", str(tmp_path / "o"), "--no-progress",
                   "--max-memory", '{"cpu": "1GiB"}', "--offload-folder", str(tmp_path / "off")])
    assert rc == 2 and "stop here" in capsys.readouterr().err
    device, d = seen[0]
    assert device is None and d.boot_kwargs(offload_folder="X") == {
        "device_map": "auto", "max_memory": {"cpu": "1GiB"}, "offload_folder": "X"}
    assert d.offload_folder == str(tmp_path / "off")


def test_executor_flags_need_a_suite_and_ray(mini_task, tiny_dirs, tmp_path, capsys, monkeypatch):
    rc = cli.main(["run", mini_task, "--model", str(tiny_dirs["neox"]), "--executor", "ray",
                   "--out", str(tmp_path / "o")])
    assert rc == 2 and "--suite" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)   # as if Ray were not installed
    rc = cli.main(["run", "--suite", "isp", os.path.dirname(mini_task), "--model",
                   str(tiny_dirs["neox"]),
                   "--executor", "ray", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "needs Ray" in err[0] and "[cluster]" in err[0], err
