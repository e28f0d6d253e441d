"""The instruments of ``probes/`` and ``diagnose probe`` end to end, on tiny models."""

import json

import numpy as np
import pytest
import torch

from diagnose import cli
from diagnose.families import load_model
from probes.attribution import logit_diff_attribution
from probes.capture import capture_at, resid_hooks
from probes.linear_probe import layer_probes
from probes.logit_lens import class_logit_lens, commitment_layer, sign_change_layer
from probes.patching import Patch, activation_patching, logit_diff, run_patched
from probes.tuned_lens import (LogitLens, TunedLens, lens_kl, residual_sample,
                               train_tuned_lens)
from tests.tinymodels import CORPUS

CLASSES = np.array([[268, 258], [275, 258], [266, 268]])  # distinct first tokens


def _contexts(tok, lengths=(5, 9, 14, 7, 11, 6)):
    texts = [tok(s, add_special_tokens=False)["input_ids"] for s in CORPUS[:5]]
    return [texts[i % 5][:n] for i, n in enumerate(lengths)]


def _real_log_probs(bridge, ctx):
    with torch.no_grad():
        return torch.log_softmax(bridge(torch.tensor([ctx]))[0, -1].float(), -1).numpy()


@pytest.mark.parametrize("kind", ["neox", "gpt2"])
def test_logit_lens_last_layer_is_the_model_output(tiny_dirs, kind):
    m = load_model(str(tiny_dirs[kind]), device="cpu")
    ctx = _contexts(m.tokenizer)
    ids = CLASSES[np.arange(len(ctx)) % 3]
    ans = np.arange(len(ctx)) % 2
    r = class_logit_lens(m.bridge, ctx, ids, ans)
    assert r.log_probs.shape == (len(ctx), m.n_layers + 1, 2)
    for i, c in enumerate(ctx):
        real = _real_log_probs(m.bridge, c)[ids[i]]
        np.testing.assert_allclose(r.log_probs[i, -1], real, atol=1e-4)
        norm = real - np.logaddexp(*real)
        assert r.margin[i, -1] == pytest.approx(norm[ans[i]] - norm[1 - ans[i]], abs=1e-4)
    # two classes: the tempting class defaults to the other one; the choice is the argmax
    assert (r.tempting_index == 1 - ans).all()
    assert (r.choice[:, -1] == r.class_log_probs[:, -1].argmax(-1)).all()


def test_commitment_layer_of_hand_built_trajectories():
    # class 1 leads from entry 2 to the end (entry 1 prefers 0, entry 3 a brief wobble none)
    t = np.array([[0.0, 1.0], [2.0, 1.0], [0.0, 3.0], [0.0, 1.0], [-1.0, 2.0]])
    assert commitment_layer(t) == 2
    assert commitment_layer(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])) == 2  # flips late
    assert commitment_layer(np.array([[0.0, 1.0]] * 4)) == 0                    # always
    assert commitment_layer(np.array([[0.0, 1.0], [1.0, 1.0]])) is None         # final tie
    tie_mid = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    assert commitment_layer(tie_mid) == 2                                         # a tie breaks it
    assert commitment_layer(np.array([[0.0, 0.5], [0.0, 2.0]]), min_lead=1.0) == 1
    three = np.array([[3.0, 0, np.nan], [0, 3.0, np.nan], [0, 2.0, np.nan]])
    assert commitment_layer(three) == 1                                          # NaN = missing
    assert sign_change_layer([-1.0, -0.5, 0.3, 1.0]) == 2
    assert sign_change_layer([1.0, 2.0]) is None
    assert sign_change_layer([1.0, -1.0, 1.0, -2.0]) == 3


def test_attribution_sums_to_the_logit_difference(tiny_dirs):
    for kind in ("neox", "gpt2"):
        m = load_model(str(tiny_dirs[kind]), device="cpu")  # fresh: DLA folds the norms
        ctx = _contexts(m.tokenizer)
        real = [_real_log_probs(m.bridge, c) for c in ctx]
        good, bad = CLASSES[np.arange(len(ctx)) % 3].T
        at = logit_diff_attribution(m.bridge, ctx, good, bad)
        want = np.array([r[g] - r[b] for r, g, b in zip(real, good, bad)])
        np.testing.assert_allclose(at.total, want, rtol=1e-3, atol=1e-4)
        got = at.components().sum(1) + at.bias
        np.testing.assert_allclose(got, at.total, rtol=1e-3, atol=1e-5 * np.abs(want).max())
        assert at.heads.shape == (len(ctx), m.n_layers, int(m.bridge.cfg.n_heads))
        assert np.abs(at.heads).sum() > 0 and len(at.top_heads(3)) == 3


def test_patching_all_or_nothing(tiny_dirs):
    m = load_model(str(tiny_dirs["neox"]), device="cpu")
    b = m.bridge
    clean = _contexts(m.tokenizer)
    corrupt = [c[:-2] + [c[-1], c[-2]] for c in clean]  # same lengths, two tokens swapped
    n = len(clean)
    good, bad = CLASSES[np.arange(n) % 3].T
    last = np.array([len(c) - 1 for c in clean])
    clean_final = capture_at(b, clean, np.arange(n), last, hooks=["ln_final.hook_in"])
    clean_ld = logit_diff(b, clean_final["ln_final.hook_in"], good, bad)
    corrupted_ld = logit_diff(b, run_patched(b, corrupt, last), good, bad)
    assert np.abs(clean_ld - corrupted_ld).max() > 1e-3  # the swap matters
    seq = np.concatenate([np.full(len(c), i) for i, c in enumerate(clean)])
    pos = np.concatenate([np.arange(len(c)) for c in clean])
    every = capture_at(b, clean, seq, pos, hooks=resid_hooks(m.n_layers))
    for h in resid_hooks(m.n_layers):  # each layer's whole residual from the clean run
        got = logit_diff(b, run_patched(b, corrupt, last, [Patch(h, seq, pos, every[h])]), good, bad)
        np.testing.assert_allclose(got, clean_ld, atol=1e-4)
    po = activation_patching(b, clean, corrupt, good, bad, n_positions=3)
    np.testing.assert_allclose(po.clean, clean_ld, atol=1e-4)
    np.testing.assert_allclose(po.corrupted, corrupted_ld, atol=1e-4)
    norm = po.resid_normalized
    assert norm.shape == (m.n_layers + 1, 3)
    assert norm[-1, 0] == pytest.approx(1.0, abs=1e-3)   # the last residual at the answer
    assert norm[:, 2] == pytest.approx(0.0, abs=1e-4)    # a position both prompts share
    assert po.heads_normalized.shape == (m.n_layers, int(b.cfg.n_heads))


def test_linear_probe_finds_a_planted_signal_and_not_shuffled_labels():
    rng = np.random.default_rng(0)
    n, d = 120, 16
    y = rng.integers(0, 2, n)
    noise = rng.normal(size=(2, n, d))
    planted = noise.copy()
    planted[1, :, 3] = (2 * y - 1) * (1.0 + np.abs(rng.normal(size=n)))
    res = layer_probes(planted, y, n_splits=5, seed=0)
    assert res.accuracy[1] >= 0.95
    assert abs(res.accuracy[0] - 0.5) < 0.2          # pure noise layer
    assert abs(res.shuffled_accuracy[1] - 0.5) < 0.2  # the control on shuffled labels
    assert res.n_splits == 5 and 0.4 < res.chance < 0.6


def test_tuned_lens_beats_the_logit_lens_on_held_out_text(tiny_dirs, tmp_path):
    m = load_model(str(tiny_dirs["neox"]), device="cpu")
    tok = m.tokenizer
    texts = [tok(s, add_special_tokens=False)["input_ids"] for s in CORPUS[:5]]
    train, held = texts[:4], texts[4:]  # the held-out sentence is never trained on
    stack = residual_sample(m.bridge, train, per_seq=48, seed=0)
    lens = train_tuned_lens(m.bridge, stack, "tiny", steps=40, lr=3e-3)
    held_stack = residual_sample(m.bridge, held, per_seq=48, seed=1)
    kl_logit = lens_kl(m.bridge, LogitLens(), held_stack)
    kl_tuned = lens_kl(m.bridge, lens, held_stack)
    assert kl_logit[-1] == pytest.approx(0, abs=1e-6) and kl_tuned[-1] == pytest.approx(0, abs=1e-6)
    assert kl_tuned[:-1].mean() < 0.8 * kl_logit[:-1].mean()
    # identity at initialisation, and save/load keyed by model id
    fresh = TunedLens.for_model(m.bridge, "tiny")
    h = held_stack[0, :4]
    assert torch.equal(fresh(h, 0), h)
    lens.save(tmp_path / "lens")
    back = TunedLens.load(tmp_path / "lens", model_id="tiny")
    assert torch.allclose(back(h, 0), lens.cpu()(h, 0))
    with pytest.raises(ValueError, match="trained for"):
        TunedLens.load(tmp_path / "lens", model_id="another")
    # selectable in place of the logit lens
    ctx = _contexts(tok)
    ids = CLASSES[np.arange(len(ctx)) % 3]
    r = class_logit_lens(m.bridge, ctx, ids, np.zeros(len(ctx), int), lens=back)
    base = class_logit_lens(m.bridge, ctx, ids, np.zeros(len(ctx), int))
    assert r.lens == "tuned"
    np.testing.assert_allclose(r.log_probs[:, -1], base.log_probs[:, -1], atol=1e-5)
    assert not np.allclose(r.log_probs[:, 0], base.log_probs[:, 0])


ENDINGS = ["Absence makes the heart grow", "Actions speak louder than",
           "Accidents will happen in the best", "The quick brown fox jumps over the"]


@pytest.fixture
def view_task(tmp_path):
    rows = []
    for i in range(12):
        end = ENDINGS[i % 4]
        rows.append({"prompt": f"Write a quote that ends in the word heavy: {end}",
                     "classes": [" words.", " thoughts."], "answer_index": i % 2,
                     "views": {"prior": {"prompt": end, "answer_index": 1 - i % 2}}})
    p = tmp_path / "tiny-trap.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_probe_command_end_to_end(view_task, tiny_family_dirs, tmp_path, capsys,
                                  monkeypatch):
    out = tmp_path / "probe"
    small, big = (str(d) for d in tiny_family_dirs)
    rc = cli.main(["probe", "--task", str(view_task), "--model", big, "--model", small,
                   "--out", str(out), "--lens", "tuned", "--lens-steps", "5",
                   "--probe-folds", "3", "--patch-positions", "3", "--no-progress"])
    assert rc == 0
    s = json.loads((out / "probes.json").read_text())
    assert s["task"] == "tiny-trap" and [m["id"] for m in s["models"]] == [small, big]
    for m in s["models"]:
        L = m["n_layers"]
        assert {"id", "n_params", "n_layers", "lens_margin", "commit_layer_mean",
                "probe_accuracy", "output_accuracy", "top_heads"} <= set(m)
        assert len(m["lens_margin"]) == L + 1 and len(m["probe_accuracy"]) == L + 1
        assert 0 <= m["output_accuracy"] <= 1
        assert m["commit_layer_mean"] is None or 0 <= m["commit_layer_mean"] <= L
        assert all(len(t) == 3 and 0 <= t[0] < L for t in m["top_heads"])
        assert m["patching"]["corrupted"] == "prior"
        assert len(m["patching"]["resid"]) == L + 1
        assert len(m["kl_to_final"]["tuned"]) == L + 1
        assert (out / "tuned_lens").is_dir()
    for rel in s["plots"]:
        assert (out / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"lens_heatmap.png", "lens_trajectories.png", "commitment.png"} <= set(s["plots"])
    assert sum(r.startswith("attribution/") for r in s["plots"]) == 2
    assert sum(r.startswith("patching/") for r in s["plots"]) == 2
    assert "probes.json" in capsys.readouterr().out

    # a rerun resumes from the per-model records: no model is loaded, same JSON
    from diagnose import runner

    def boom(*a, **k):
        raise AssertionError("a finished model was probed again")

    first = (out / "probes.json").read_text()
    monkeypatch.setattr(runner, "load_model", boom)
    assert cli.main(["probe", "--task", str(view_task), "--model", big, "--model", small,
                     "--out", str(out), "--lens", "tuned", "--lens-steps", "5",
                     "--probe-folds", "3", "--patch-positions", "3", "--no-progress"]) == 0
    assert (out / "probes.json").read_text() == first


def test_probe_without_views_skips_patching_with_a_note(tiny_family_dirs, tmp_path):
    rows = [{"prompt": f"{ENDINGS[i % 4]}", "classes": [" words.", " thoughts."],
             "answer_index": i % 2} for i in range(6)]
    p = tmp_path / "noview.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o"
    assert cli.main(["probe", "--task", str(p), "--model", str(tiny_family_dirs[0]),
                     "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "probes.json").read_text())["models"][0]
    assert m["patching"] is None and "no view with a prompt of its own" in m["patching_note"]
    assert cli.main(["probe", "--task", str(p), "--model", str(tiny_family_dirs[0]),
                     "--out", str(out), "--patch-view", "prior", "--no-progress"]) == 2


def test_contrast_probe_finds_the_answer_whatever_the_class_order():
    """Residuals that carry the correct class's unembedding direction (in a few of their
    dimensions) at layer 1 only, classes in random order: the index probe cannot know the
    position, the contrast probe finds the class; its random-label control sits at chance."""
    from probes.linear_probe import contrast_layer_probes, layer_probes

    rng = np.random.default_rng(0)
    N, C, d = 200, 2, 16
    dirs = rng.normal(size=(N, C, d))
    answer = rng.integers(0, C, size=N)
    noise = rng.normal(size=(3, N, d))
    stack = noise.copy()
    mask = np.zeros(d)
    mask[:4] = 1.0
    stack[1] += 3.0 * dirs[np.arange(N), answer] * mask
    res = contrast_layer_probes(stack, dirs, answer)
    assert res.accuracy[1] > 0.85
    assert res.accuracy[0] < 0.65 and res.accuracy[2] < 0.65
    assert abs(res.shuffled_accuracy[1] - 0.5) < 0.15
    assert abs(res.chance - 0.5) < 1e-9
    assert layer_probes(stack, answer).accuracy[1] < 0.7
