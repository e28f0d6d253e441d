"""The labels a diagnosis can end in: one home for the cause names.

The four causes are the Inverse Scaling Prize's (McKenzie et al. 2023, DESIGN.md
section 1). Beside them a verdict can be ``no_inverse_scaling`` (the family can do the
task and does not scale inversely) or ``undetermined`` (the family cannot show anything
on the task, or it scales inversely and none of the causes that could be tested is
supported by the evidence).
"""

from __future__ import annotations

CAUSES = ("strong_prior", "unwanted_imitation", "distractor_task", "spurious_few_shot")
NO_INVERSE = "no_inverse_scaling"
UNDETERMINED = "undetermined"
VERDICTS = CAUSES + (NO_INVERSE, UNDETERMINED)

# what each cause test reports (classification.json "tests")
SUPPORTED, NOT_SUPPORTED, UNTESTED = "supported", "not_supported", "untested"
