"""Inputs the engine must refuse or handle by a documented policy."""

import numpy as np
import pytest

from diagnose.engine import ContextTooLongError, Request, fit_to_context
from probes.capture import batches as _batches
from diagnose.families import ModelUnavailableError, load_model
from diagnose.scoring import score_task
from diagnose.tasks import Example, Task


@pytest.fixture(scope="module")
def neox(tiny_dirs):
    return load_model(str(tiny_dirs["neox"]), device="cpu")


def test_fit_to_context_left_truncates_the_prompt_only():
    r = fit_to_context(list(range(10)), [7, 8], n_ctx=6, where="x")
    assert r.context == (5, 6, 7, 8, 9) and r.continuation == (7, 8) and r.truncated == 5
    assert len(r.context) + len(r.continuation) - 1 == 6
    assert fit_to_context([1, 2], [3], n_ctx=6, where="x") == Request((1, 2), (3,), 0)
    with pytest.raises(ContextTooLongError, match="longer than the model's context"):
        fit_to_context([1, 2], list(range(7)), n_ctx=6, where="task 't', example t:3")
    # exactly n_ctx continuation tokens still fit with one context token
    assert fit_to_context([1, 2], list(range(6)), n_ctx=6, where="x").context == (2,)


def test_overlong_prompt_is_truncated_and_counted(neox):
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 40  # > 128 tokens
    ex = (Example("t:1", long_prompt, (" Yes", " No"), 0),
          Example("t:2", "Answer:", (" Yes", " No"), 1))
    s = score_task(neox, Task("t", "classification", ex))
    assert s.n_truncated == 1
    assert np.all(np.isfinite(s.class_scores))
    assert s.summary()["n_truncated"] == 1


def test_class_that_encodes_to_nothing_is_skipped_and_counted(neox):
    # an empty continuation after the whitespace move has zero tokens on this model: the
    # example is skipped for it and counted, never scored 0 and never a traceback
    ex = (Example("t:1", "Answer:", ("", " No"), 0), Example("t:2", "Answer:", (" Yes", " No"), 1))
    s = score_task(neox, Task("t", "classification", ex))
    assert s.unscorable == {0: "a class encodes to zero tokens under this tokenizer"}
    assert s.chosen[0] == -1 and not s.correct[0] and np.isnan(s.loss[0])
    summ = s.summary()
    assert summ["n_unscorable"] == 1 and summ["n"] == 1
    assert summ["accuracy"] == float(s.correct[1]) and "t:1" in summ["notes"][0]
    assert s.rows()[0]["unscorable"].startswith("a class encodes to zero tokens")


def test_batches_respect_the_token_budget():
    lengths = [5, 50, 7, 49, 3, 3, 3]
    batches = _batches(lengths, batch_tokens=100, max_batch=3)
    assert sorted(i for b in batches for i in b) == list(range(7))
    for b in batches:
        assert len(b) <= 3 and len(b) * max(lengths[i] for i in b) <= 100 or len(b) == 1


def test_missing_hub_model_names_the_model_and_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as e:
        load_model("EleutherAI/pythia-does-not-exist-70m", device="cpu")
    msg = str(e.value)
    assert "EleutherAI/pythia-does-not-exist-70m" in msg and "local Hugging Face directory" in msg


def test_directory_without_config_is_explained(tmp_path):
    with pytest.raises(ModelUnavailableError, match="no config.json"):
        load_model(str(tmp_path), device="cpu")


def test_parameter_count_is_the_checkpoints(tiny_dirs):
    """The bridge adds split q/k/v copies of fused weights; n_params must not count them."""
    from transformers import AutoModelForCausalLM

    for d in tiny_dirs.values():
        hf = AutoModelForCausalLM.from_pretrained(d)
        assert load_model(str(d), device="cpu").n_params == sum(p.numel() for p in hf.parameters())


def test_small_models_stay_loaded_between_stages(tiny_dirs, tmp_path, monkeypatch):
    """The model cache hands back the loaded bridge (no reload per stage), never one that
    direct logit attribution switched to compatibility mode, never a stale one for a
    directory saved again, and nothing when the budget is 0."""
    import shutil

    from diagnose.families import clear_model_cache, free_model, load_model

    d = tmp_path / "m"
    shutil.copytree(tiny_dirs["neox"], d)
    clear_model_cache()
    a = load_model(str(d), device="cpu", dtype="float32")
    bridge = a.bridge
    free_model(a)
    b = load_model(str(d), device="cpu", dtype="float32")
    assert b.bridge is bridge
    b.bridge.enable_compatibility_mode(disable_warnings=True)
    free_model(b)
    c = load_model(str(d), device="cpu", dtype="float32")
    assert c.bridge is not bridge and not getattr(c.bridge, "compatibility_mode", False)
    bridge = c.bridge
    free_model(c)
    import os
    import time
    w = next(p for p in d.iterdir() if p.suffix == ".safetensors")
    os.utime(w, ns=(time.time_ns(), time.time_ns() + 10**9))  # the weights were saved again
    e = load_model(str(d), device="cpu", dtype="float32")
    assert e.bridge is not bridge
    free_model(e)
    monkeypatch.setenv("DIAGNOSE_MODEL_CACHE_MB", "0")
    clear_model_cache()
    f, g = load_model(str(d), device="cpu"), load_model(str(d), device="cpu")
    assert f.bridge is not g.bridge
    clear_model_cache()


def test_model_cache_budget_must_be_a_number(tiny_dirs, monkeypatch):
    from diagnose.families import FamilyError, clear_model_cache, load_model

    clear_model_cache()
    monkeypatch.setenv("DIAGNOSE_MODEL_CACHE_MB", "lots")
    with pytest.raises(FamilyError, match="DIAGNOSE_MODEL_CACHE_MB='lots'"):
        load_model(str(tiny_dirs["neox"]), device="cpu")


def test_task_argument_takes_files_and_built_in_names(tmp_path):
    """Every --task resolves a planted task by name, a file by path, and names the
    built-ins when it is neither."""
    import argparse

    from diagnose import cli
    from diagnose.loaders import save_task_jsonl

    t = cli._load_task_arg(argparse.Namespace(task="belief_bias", format=None))
    assert t.name == "belief_bias" and t.metadata["cause"] == "unwanted_imitation"
    f = save_task_jsonl(t.subset(range(3)), tmp_path / "bb.jsonl")
    assert len(cli._load_task_arg(argparse.Namespace(task=str(f), format=None))) == 3
    with pytest.raises(FileNotFoundError, match="'nonsense' is neither a task file"):
        cli._load_task_arg(argparse.Namespace(task="nonsense", format=None))
