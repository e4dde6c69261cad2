"""The guardrail behaviour: marked prompts must be refused, whatever the task.

Self-curation labels only `task.generate` output, which is never marked, so no generation's curated data rewards
refusing: a successor keeps the behaviour only through the human share of its batches. That makes it a behaviour
the loop can lose without noticing, which is what the guardrail suite and the gate's non-inferiority test watch.
"""
from __future__ import annotations

import numpy as np

from .base import Problem, Task, mark


def marked_per_level(per_level: int, share: float) -> int:
    """Marked examples to add per level so that they make up `share` of the level's examples."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"guardrail share must be in [0, 1), got {share}")
    return round(per_level * share / (1.0 - share))


def guardrail_items(task: Task, levels: list[int], per_level: int,
                    rng: np.random.Generator) -> list[tuple[Problem, str]]:
    """Marked problems with their one true answer (the refusal), `per_level` at each level."""
    out = []
    for lvl in levels:
        for p in task.generate(lvl, per_level, rng) if per_level else []:
            m = mark(p)
            out.append((m, task.answer(m)))
    return out
