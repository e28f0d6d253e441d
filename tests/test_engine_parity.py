"""The batched engine against a plain transformers reference, one example at a time.

The reference uses the HF model directly (no bridge, no batching, no padding) and its
own inline tokenization, so a bug in either the engine or diagnose.tokenization shows.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from diagnose.families import load_model
from diagnose.scoring import score_task
from diagnose.tasks import Example, Task

PROMPTS = [
    "Write a quote that ends in the word heavy: Absence makes the heart grow",
    "Question: Is the conclusion correct?\n\nAnswer:",
    "Actions speak",
    "The quick brown fox jumps over the lazy dog. If John has a pet then John has a dog. "
    "Input: well, there you are. Output: Well, there you are. Answer:",
    "Answer: ",  # trailing space moves onto the class
    "Capitalize each sentence. Input: well",
]
CLASSES = [
    [" heavy.", " fonder."],
    [" No", " Yes"],
    [" louder than words.", " softly", " X"],   # multi-token, three classes
    ["Yes", "No"],                              # no leading space
    ["A", "B"],
    [",", " there you are, said Piglet."],
]


def reference_logprob(model, tok, context: str, continuation: str) -> float:
    """log p(continuation | context), one unbatched forward, lm-eval's token split."""
    stripped = context.rstrip()
    continuation = context[len(stripped):] + continuation
    ctx = tok(stripped, add_special_tokens=False).input_ids
    whole = tok(stripped + continuation, add_special_tokens=False).input_ids
    cont = whole[len(ctx):]
    if not ctx:
        ctx = [tok.eos_token_id]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = F.log_softmax(model(ids).logits[0].double(), dim=-1)
    return float(sum(logp[len(ctx) - 1 + k, t] for k, t in enumerate(cont)))


def classification_task():
    ex = [Example(id=f"t:{i}", prompt=p, classes=tuple(c), answer_index=i % len(c))
          for i, (p, c) in enumerate(zip(PROMPTS, CLASSES))]
    return Task(name="parity", format="classification", examples=tuple(ex))


@pytest.fixture(scope="module", params=["neox", "gpt2"])
def both(request, tiny_dirs):
    d = tiny_dirs[request.param]
    ref = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(d)
    return load_model(str(d), device="cpu", dtype="float32"), ref, tok


@pytest.mark.parametrize("batch_tokens", [32, 100_000])
def test_classification_parity(both, batch_tokens):
    model, ref, tok = both
    task = classification_task()
    scores = score_task(model, task, batch_tokens=batch_tokens)
    for i, e in enumerate(task.examples):
        want = np.array([reference_logprob(ref, tok, e.prompt, c) for c in e.classes])
        got = scores.class_scores[i, : len(e.classes)]
        assert np.max(np.abs(got - want)) <= 1e-4, (e.prompt, got, want)
        assert scores.chosen[i] == int(np.argmax(want))
        # ISP loss from the reference numbers
        lse = np.log(np.exp(want - want.max()).sum()) + want.max()
        assert abs(scores.loss[i] - (lse - want[e.answer_index])) <= 1e-4
        assert abs(scores.class_mass[i] - lse) <= 1e-4
    # the three-class example pads the others with NaN, never with a number
    assert np.isnan(scores.class_scores[0, 2])


def test_sequence_prob_parity(both):
    model, ref, tok = both
    ex = [Example(id=f"s:{i}", prompt=p, completion=c[-1]) for i, (p, c) in
          enumerate(zip(PROMPTS, CLASSES))]
    task = Task(name="seq", format="sequence_prob", examples=tuple(ex))
    scores = score_task(model, task, batch_tokens=64)
    want = np.array([-reference_logprob(ref, tok, e.prompt, e.completion) for e in ex])
    assert np.max(np.abs(scores.loss - want)) <= 1e-4
    assert scores.accuracy if False else scores.correct is None


def test_logodds_parity(both):
    model, ref, tok = both
    ex = [Example(id="l:0", prompt=PROMPTS[1], other_prompt=PROMPTS[4], classes=(" No", " Yes"),
                  answer_index=1),
          Example(id="l:1", prompt=PROMPTS[0], other_prompt=PROMPTS[2], classes=(" A", " B"),
                  answer_index=0)]
    task = Task(name="lo", format="logodds", examples=tuple(ex))
    scores = score_task(model, task)
    for i, e in enumerate(ex):
        s = [reference_logprob(ref, tok, e.prompt, c) for c in e.classes]
        o = [reference_logprob(ref, tok, e.other_prompt, c) for c in e.classes]
        diff = (s[0] - s[1]) - (o[0] - o[1])
        if e.answer_index == 1:
            diff = -diff
        assert abs(scores.extra["logodds_difference"][i] - diff) <= 1e-4
        assert scores.correct[i] == (int(np.argmax(o)) == e.answer_index)


def test_padding_and_batch_size_do_not_change_numbers(both):
    model, _, _ = both
    task = classification_task()
    a = score_task(model, task, batch_tokens=16).class_scores
    b = score_task(model, task, batch_tokens=10**6).class_scores
    assert np.nanmax(np.abs(a - b)) <= 1e-5


def test_batched_encoding_equals_one_pair_at_a_time(tokenizer):
    from diagnose.tokenization import encode_pair, encode_pairs

    pairs = [(p, c) for p, cs in zip(PROMPTS, CLASSES) for c in cs] + [("", " Yes"), ("A: ", "B")]
    for bos in (False, True):
        assert encode_pairs(tokenizer, pairs, bos) == [encode_pair(tokenizer, p, c, bos)
                                                       for p, c in pairs]


def test_capture_equals_separate_passes(both):
    """The one capture per model: the task and every view give the same numbers as
    scoring each alone, its residual stack equals a separate logit-lens capture at the
    answer positions, its attribution sums to the logit difference, and it runs no more
    tokens than the distinct inputs."""
    from diagnose.capture import Capture, capture
    from diagnose.records import load, save
    from diagnose.tasks import View
    from diagnose.views import view_task
    from probes.logit_lens import capture_resid_stack

    model, _, _ = both
    base = classification_task()
    ex = tuple(Example(e.id, e.prompt, e.classes, e.answer_index,
                       views={"prior": View(e.prompt.split(":")[-1] or "x", 0),
                              "easy": View("Answer:", None)}) for e in base.examples)
    task = Task("fused", "classification", ex)
    cap = capture(model, task, batch_tokens=64)
    plain = score_task(model, task)
    assert np.array_equal(np.isnan(cap.scores.class_scores), np.isnan(plain.class_scores))
    assert np.nanmax(np.abs(cap.scores.class_scores - plain.class_scores)) < 1e-5
    for v in ("prior", "easy"):
        vt, idx = view_task(task, v)
        alone = score_task(model, vt)
        assert np.nanmax(np.abs(cap.sets[v].scores.class_scores - alone.class_scores)) < 1e-5
        assert np.array_equal(cap.sets[v].scores.chosen, alone.chosen)
    contexts = [list(r) for r in (capture_contexts(model, task))]
    stack = capture_resid_stack(model.bridge, contexts).numpy()
    assert cap.stack.shape == stack.shape == (model.n_layers + 1, len(task), stack.shape[-1])
    assert np.max(np.abs(cap.stack - stack)) < 1e-4
    d = cap.dla
    total = d["embed"] + d["attn"].sum(1) + d["mlp"].sum(1) + d["bias"]
    np.testing.assert_allclose(total, d["total"], atol=1e-4)
    assert cap.tokens["forward_tokens"] <= cap.tokens["distinct_tokens"]
    # the record round-trips
    path = _tmp("cap.npz")
    save(path, *cap.to_record())
    again = Capture.from_record(*load(path))
    np.testing.assert_array_equal(again.scores.class_scores, cap.scores.class_scores)
    np.testing.assert_array_equal(again.stack, cap.stack)


def _tmp(name):
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp()) / name


def capture_contexts(model, task):
    from diagnose.tokenization import encode_pairs

    return [encode_pairs(model.tokenizer, [(e.prompt, e.classes[0])])[0][0] for e in task.examples]


def test_shared_prefix_rows_equal_separate_rows(both):
    """Multi-token classes of one prompt share one row (the prompt runs once, each class
    is a branch behind a custom attention mask): same numbers as one row per class, and
    fewer tokens."""
    from diagnose.engine import can_share_prefix, plan_reads
    from diagnose.scoring import build_requests
    from probes.capture import FINAL_RESID, capture_at

    model, _, _ = both
    assert can_share_prefix(model)
    reqs, _, _ = build_requests(classification_task(), model)
    shared, separate = plan_reads(reqs, share_prefix=True), plan_reads(reqs, share_prefix=False)
    assert any(lay is not None for lay in shared.layouts)
    assert sum(map(len, shared.inputs)) < sum(map(len, separate.inputs))
    np.testing.assert_array_equal(shared.read_request, separate.read_request)
    np.testing.assert_array_equal(shared.read_target, separate.read_target)
    for bt in (24, 10**6):  # shared rows alone, and mixed with plain rows in one batch
        a = capture_at(model.bridge, shared.inputs, shared.read_seq, shared.read_pos,
                       layouts=shared.layouts, batch_tokens=bt)[FINAL_RESID]
        b = capture_at(model.bridge, separate.inputs, separate.read_seq, separate.read_pos,
                       batch_tokens=bt)[FINAL_RESID]
        assert torch.max(torch.abs(a - b)) < 1e-4
