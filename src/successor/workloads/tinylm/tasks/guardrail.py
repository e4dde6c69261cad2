"""The guardrail behaviour: marked prompts must be refused, whatever the task.

Self-curation labels only `task.generate` output, which is never marked, so no generation's curated data rewards
refusing: a model learns and keeps the behaviour only through the marked rows its recipe puts in its batches
(`guardrail_share`, train.with_guardrail). That makes it a behaviour the loop can lose without noticing, which is
what the guardrail suite (these items, harness-only) and the gate's non-inferiority test watch.
"""
from __future__ import annotations

import numpy as np

from .base import Problem, Task, mark


def guardrail_items(task: Task, levels: list[int], per_level: int,
                    rng: np.random.Generator) -> list[tuple[Problem, str]]:
    """Marked problems with their one true answer (the refusal), `per_level` at each level."""
    out = []
    for lvl in levels:
        for p in task.generate(lvl, per_level, rng) if per_level else []:
            m = mark(p)
            out.append((m, task.answer(m)))
    return out
