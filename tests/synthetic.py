"""Synthetic per-example evidence with a known mechanism, for testing the features, the
cause model and the design validation without training models.

A unit is a task over 4 model sizes. Its planted mechanism decides what the views *do*:
the view testing the cause pulls the larger models to the tempting answer (prior, easy,
human) or removes their errors (the demonstration views); every other view the task
carries changes nothing. Which views a task carries is given separately, so tests can
cross view sets with causes.
"""

from __future__ import annotations

import numpy as np

from diagnose.evidence import FamilyEvidence, ModelEvidence

SIZES = (1e5, 4e5, 1.6e6, 6.4e6)
DEMO_VIEWS = ("zero_shot", "balanced", "shuffled_labels")
ACTIVE = {"strong_prior": ("prior",), "distractor_task": ("easy",),
          "unwanted_imitation": ("human",), "spurious_few_shot": DEMO_VIEWS}


def unit(cause: str | None, views: tuple[str, ...], seed: int = 0, n: int = 80,
         inverse: bool = True, name: str = "t") -> FamilyEvidence:
    """``cause`` None: a control (flat, no view does anything)."""
    rng = np.random.default_rng(seed)
    acc = np.linspace(0.95, 0.3, len(SIZES)) if cause and inverse else np.full(len(SIZES), 0.93)
    answer = np.zeros(n, dtype=int)
    tempting = np.ones(n, dtype=int)
    models = []
    for m, (size, a) in enumerate(zip(SIZES, acc)):
        correct = rng.random(n) < a
        choice = np.where(correct, 0, 1)
        ev = ModelEvidence(id=f"m{m}", n_params=int(size), n_layers=4, answer=answer,
                           choice=choice, correct=correct, scored=np.ones(n, bool),
                           tempting=tempting)
        strength = m / (len(SIZES) - 1)          # the mechanism grows with size
        for v in views:
            if cause and v in ACTIVE[cause]:
                if v in DEMO_VIEWS:              # removing/balancing demos fixes errors
                    vc = np.where(rng.random(n) < 0.9, 0, choice)
                else:                            # the intervention alone gives the tempting answer
                    vc = np.where(rng.random(n) < 0.25 + 0.7 * strength, 1, choice)
            elif v == "no_context":              # a context-free prior: a coin per example
                vc = rng.integers(0, 2, n)
            else:                                # an intervention that changes little
                vc = np.where(rng.random(n) < 0.9, choice, 1 - choice)
            ev.view_choice[v] = vc
            ev.view_own[v] = np.full(n, np.nan)
        margin = rng.normal(0.5, 1.0, (n, 5))
        margin[:, -1] = np.where(correct, 1.0, -1.0)
        ev.lens_margin = margin
        ev.commit_depth = rng.uniform(0.2, 1.0, n)
        ev.probe_correct = (rng.random((5, n)) < np.clip(a + 0.05, 0, 1)).astype(float)
        models.append(ev)
    return FamilyEvidence(task=name, example_ids=[str(i) for i in range(n)],
                          views=tuple(views), models=models)
