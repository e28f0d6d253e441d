"""Decoding-time and prompting mitigations for inverse scaling (issue 6).

- ``contrastive``: PAD and CAD (one kernel, ``(1 + a) * L_strong - a * L_weak``, with
  ``pad_logits`` and ``cad_logits`` as its two parameterisations) for class scoring, read
  from a capture when the weak prompt is a view, and for free generation;
- ``prompting``: few-shot demonstrations (ISP convention) and chain-of-thought
  prefixes (given in ``metadata["cot"]`` or generated from a trigger);
- ``stage``: every strategy over a family, the parameter chosen on examples disjoint
  from the evaluated ones, results in ``DIR/mitigation.json`` + ``mitigation.png``.
"""

from diagnose.mitigations.contrastive import (
    DEFAULT_ALPHAS,
    cad_logits,
    contrastive_generate,
    contrastive_logits,
    contrastive_loglikelihoods,
    greedy_generate,
    pad_logits,
    score_contrastive,
    scores_from_capture,
)
from diagnose.mitigations.prompting import (
    DEMO_SEPARATOR,
    few_shot_prompt,
    few_shot_task,
    generated_cot_prompts,
    given_cot_prompts,
)
from diagnose.mitigations.stage import (
    MitigationConfig,
    choose_param,
    format_mitigation,
    run_mitigations,
    selection_split,
)

__all__ = [
    "DEFAULT_ALPHAS", "DEMO_SEPARATOR", "MitigationConfig",
    "cad_logits", "choose_param", "contrastive_generate", "contrastive_logits",
    "contrastive_loglikelihoods", "few_shot_prompt", "few_shot_task", "format_mitigation",
    "generated_cot_prompts", "given_cot_prompts", "greedy_generate", "pad_logits",
    "run_mitigations", "score_contrastive", "scores_from_capture", "selection_split",
]
