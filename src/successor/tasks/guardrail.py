"""The guardrail behaviour: marked prompts must be refused, whatever the task.

Self-curation labels only `task.generate` output, which is never marked, so no generation's curated data rewards
refusing: a successor keeps the behaviour only through the human share of its batches. That makes it a behaviour
the loop can lose without noticing, which is what the guardrail suite and the gate's non-inferiority test watch.
"""
from __future__ import annotations

import numpy as np

from .base import Problem, Task, mark


def marked_per_level(per_level: int, share: float) -> int:
    """Items of a level of `per_level` that the guardrail marks, so that they make up `share` of it."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"guardrail share must be in [0, 1), got {share}")
    return round(per_level * share)


def mark_share(task: Task, items: list[tuple[Problem, str]], share: float,
               rng: np.random.Generator) -> list[tuple[Problem, str]]:
    """`items` with `share` of each level's items replaced, in place, by their marked twins (labelled with the
    refusal); which ones is drawn from `rng`. In place, not appended: training samples a source by index, so
    the tier keeps its length and every unmarked item its index, and a bootstrap draws the same batches but for
    the marked few (appending moved every draw, and the default bootstrap then left its plateau 1,000 steps late)."""
    out = list(items)
    by_level: dict[int, list[int]] = {}
    for i, (p, _) in enumerate(items):
        by_level.setdefault(p.level, []).append(i)
    for lvl in sorted(by_level):
        idx = by_level[lvl]
        for i in sorted(rng.choice(len(idx), size=marked_per_level(len(idx), share), replace=False)):
            m = mark(items[idx[i]][0])
            out[idx[i]] = (m, task.answer(m))
    return out


def guardrail_items(task: Task, levels: list[int], per_level: int,
                    rng: np.random.Generator) -> list[tuple[Problem, str]]:
    """Marked problems with their one true answer (the refusal), `per_level` at each level."""
    out = []
    for lvl in levels:
        for p in task.generate(lvl, per_level, rng) if per_level else []:
            m = mark(p)
            out.append((m, task.answer(m)))
    return out
