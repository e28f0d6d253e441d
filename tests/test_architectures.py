"""Every decoder family the toolkit claims to read, through the project's own loading path.

For each tiny random model of ``tests.archzoo`` (loaded with ``load_model``, i.e.
``TransformerBridge.boot_transformers``), against a plain ``transformers`` loop that
uses the family's tokenizer as a user would (``tok(text)``, so BOS where the family
adds one):

- engine parity: every class log-prob within 1e-4 and the same choices, through the
  shared-prefix rows where the model honours them, else the fallback (asserted to be
  the path taken for models with local attention);
- the logit lens' last entry equals the model's own output distribution;
- direct logit attribution sums to the model's logit difference (before Gemma 2's
  soft-cap, with a note); heads add up to their layer, except where a norm follows the
  attention (Gemma 2/3, OLMo 2): those heads are left out with a note;
- activation patching runs, and patching the last residual at the answer position
  recovers the whole clean logit difference;
- PAD/CAD at ``a = 0`` equal plain scoring bit for bit.

The README's "Architectures" table is this test's outcome.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.archzoo import ARCHS, adds_bos, build

from diagnose.tasks import Example, Task, View

PROMPTS = [
    "Write a quote that ends in the word heavy: Absence makes the heart grow",
    "Question: Is the conclusion correct? If John has a pet then John has a dog.\n\nAnswer:",
    "Actions speak",
    "The quick brown fox jumps over the lazy dog. Input: well, there you are. Output: Well, "
    "there you are. Answer:",
    "Answer: ",
]
CLASSES = [
    [" heavy.", " fonder."],
    [" No", " Yes"],
    [" louder than words.", " softly and quietly", " X"],
    [" Yes", " No"],
    ["A", "B"],
]
# a norm between the attention output and the residual: heads do not add up there
POST_NORM = {"gemma2", "gemma3", "olmo2"}
WEAK = ["Absence makes the heart grow", "Answer:", "speak", "Output: Well, Answer:", "Say: "]


def _task() -> Task:
    ex = [Example(id=f"a:{i}", prompt=p, classes=tuple(c), answer_index=i % 2, tempting_index=1 - i % 2,
                  views={"prior": View(w, None)})
          for i, (p, c, w) in enumerate(zip(PROMPTS, CLASSES, WEAK))]
    return Task(name="arch", format="classification", examples=tuple(ex))


def _reference(ref, tok, context: str, continuation: str, bos: bool) -> tuple[float, torch.Tensor]:
    """log p(continuation | context) with one unbatched HF forward (lm-eval's split), and
    the full-vocabulary logits at the answer position."""
    stripped = context.rstrip()
    continuation = context[len(stripped):] + continuation
    ctx = tok(stripped, add_special_tokens=False).input_ids
    whole = tok(stripped + continuation, add_special_tokens=False).input_ids
    cont = whole[len(ctx):]
    if bos or not ctx:
        ctx = [tok.bos_token_id] + ctx
        assert bos is False or tok(stripped).input_ids == ctx  # the family's own convention
    with torch.no_grad():
        logits = ref(torch.tensor([ctx + cont])).logits[0].double()
    logp = F.log_softmax(logits, dim=-1)
    return float(sum(logp[len(ctx) - 1 + k, t] for k, t in enumerate(cont))), logits[len(ctx) - 1]


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("archzoo")


@pytest.mark.parametrize("arch", list(ARCHS))
def test_architecture(arch, zoo_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from diagnose.capture import capture
    from diagnose.engine import can_share_prefix, plan_for, shared_row_limit
    from diagnose.families import free_model, load_model
    from diagnose.mitigations.contrastive import score_contrastive, scores_from_capture
    from diagnose.scoring import build_requests, score_task
    from diagnose.views import build_views
    from probes.patching import activation_patching

    d = build(arch, zoo_dir / arch)
    tok = AutoTokenizer.from_pretrained(d)
    bos = adds_bos(tok)
    ref = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    model = load_model(str(d), device="cpu", dtype="float32")
    try:
        task = _task()
        # 1. parity, through shared-prefix rows or the documented fallback
        assert can_share_prefix(model)
        window = shared_row_limit(model)
        assert (window is not None) == ("sliding window" in ARCHS[arch].note), arch
        reqs, _, _ = build_requests(task, model, prepend_bos=bos)
        rows = plan_for(model, reqs)
        if window is None:  # the multi-token classes really take the shared rows
            assert any(lay is not None for lay in rows.layouts)
        else:  # local attention: no shared row longer than the window (the fallback)
            assert all(len(x) <= window for x, lay in zip(rows.inputs, rows.layouts)
                       if lay is not None)
            assert any(len(x) > window for x in rows.inputs)
        scores = score_task(model, task, prepend_bos=bos)
        cap_ = getattr(ref.config, "final_logit_softcapping", None)
        ref_logits = []
        for i, e in enumerate(task.examples):
            got = [_reference(ref, tok, e.prompt, c, bos) for c in e.classes]
            want = np.array([g[0] for g in got])
            ref_logits.append(got[0][1])
            have = scores.class_scores[i, : len(e.classes)]
            assert np.max(np.abs(have - want)) <= 1e-4, (arch, e.prompt, have, want)
            assert scores.chosen[i] == int(np.argmax(want))
        # 2. logit lens: the last entry is the output distribution at the answer position
        task_v, _ = build_views(task)
        cap = capture(model, task_v, prepend_bos=bos)
        assert np.array_equal(cap.scores.chosen, scores.chosen)
        np.testing.assert_allclose(cap.scores.class_scores, scores.class_scores, atol=1e-5)
        for i, e in enumerate(task.examples):
            lp = F.log_softmax(ref_logits[i], -1).numpy()
            first = cap.class_first[i, : len(e.classes)]
            np.testing.assert_allclose(cap.lens_log_probs[i, -1, : len(e.classes)], lp[first],
                                       atol=1e-4, err_msg=arch)
        # 3. direct logit attribution sums to the model's own logit difference
        dla = cap.dla
        total = dla["embed"] + dla["attn"].sum(1) + dla["mlp"].sum(1) + dla["bias"]
        np.testing.assert_allclose(total, dla["total"], atol=1e-4, err_msg=arch)
        for i, e in enumerate(task.examples):
            good, bad = cap.class_first[i, e.answer_index], cap.class_first[i, dla["tempting"][i]]
            lg = ref_logits[i]
            if cap_:  # the attribution decomposes the logits before Gemma 2's soft-cap
                lg = cap_ * torch.atanh(lg / cap_)
            assert abs(dla["total"][i] - float(lg[good] - lg[bad])) < 1e-4, arch
        split = np.isfinite(dla["heads"]).all(axis=(0, 2))        # per layer
        noted = any("per-head attribution left out" in n for n in cap.notes)
        assert noted == (not split.all()), arch
        assert split.all() == (arch not in POST_NORM), arch
        # heads + the attention output bias's share = the layer (zoo biases start at 0;
        # tests/test_dispatch.py covers trained biases on the organisms)
        np.testing.assert_allclose(dla["heads"][:, split].sum(-1), dla["attn"][:, split],
                                   atol=1e-4, err_msg=arch)
        if cap_:
            assert any("soft-cap" in n for n in cap.notes)
        # 4. patching runs; the last residual at the answer carries all of the difference
        from diagnose.probe_stage import encode_for_probes

        clean = encode_for_probes(task_v, model, prepend_bos=bos).contexts
        other = encode_for_probes(task_v, model, prompts=WEAK, prepend_bos=bos).contexts
        good = cap.class_first[np.arange(len(task)), cap.answer]
        bad = cap.class_first[np.arange(len(task)), dla["tempting"]]
        po = activation_patching(model.bridge, clean, other, good, bad, n_positions=2)
        last = po.resid.values.numpy()[-1, 0]
        np.testing.assert_allclose(last, po.clean, atol=1e-3, err_msg=arch)
        assert po.heads is not None and np.isfinite(po.heads.values.numpy()).all()
        # 5. PAD/CAD: a = 0 is plain scoring, bit for bit, both run and read from a capture
        con = score_contrastive(model, task, WEAK, [0.0, 1.0], prepend_bos=bos)
        assert np.array_equal(con[0].class_scores, scores.class_scores, equal_nan=True)
        assert not np.array_equal(con[1].class_scores, scores.class_scores, equal_nan=True)
        fromcap = scores_from_capture(model, task_v, cap, "prior", [0.0, 2.0])
        assert fromcap is not None, arch
        assert np.array_equal(fromcap[0].class_scores, cap.scores.class_scores, equal_nan=True)
        assert not np.array_equal(fromcap[1].class_scores, cap.scores.class_scores,
                                  equal_nan=True)
    finally:
        free_model(model)


def test_unsupported_architecture_is_one_clear_error(zoo_dir):
    """An architecture TransformerBridge cannot read stops with a message naming it."""
    from transformers import BioGptConfig, BioGptForCausalLM

    from diagnose.families import ModelUnavailableError, load_model
    from tests.archzoo import make_tokenizer

    tok = make_tokenizer("bytelevel")
    d = zoo_dir / "biogpt"
    BioGptForCausalLM(BioGptConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                   num_attention_heads=4, intermediate_size=64)).save_pretrained(d)
    tok.save_pretrained(d)
    with pytest.raises(ModelUnavailableError, match="does not support its architecture "
                                                    "BioGptForCausalLM"):
        load_model(str(d), device="cpu", dtype="float32")


def test_a_dtype_the_bridge_cannot_run_is_one_clear_error(zoo_dir):
    """OLMo 2 in bf16 fails inside TransformerLens 4.3's attention (float weights against
    bf16 values); the first forward of every stage says so and names the way out."""
    from diagnose.families import ModelUnavailableError, free_model, load_model
    from diagnose.scoring import score_task

    d = build("olmo2", zoo_dir / "olmo2-bf16")
    model = load_model(str(d), device="cpu", dtype="bfloat16")
    try:
        with pytest.raises(ModelUnavailableError, match="--dtype float32"):
            score_task(model, _task())
    finally:
        free_model(model)
