"""The evaluator: runs in the harness, loads checkpoints as data, and grades with the task's hidden checker."""
from __future__ import annotations

import numpy as np

from .decode import greedy
from .model import TinyLM
from .tasks import Problem, Task


def grade(model: TinyLM, task: Task, problems: list[Problem], offset: int = 0) -> dict[int, list[int]]:
    """Per level, a 0/1 correctness list in item order (the paired gate needs items, not just rates), decoded
    under a position `offset` (0: as every tier is graded)."""
    answers = greedy(model, task, problems, offset=offset)
    out: dict[int, list[int]] = {}
    for p, a in zip(problems, answers):
        out.setdefault(p.level, []).append(int(task.check(p, a)))
    return out


def accuracy(items: dict[int, list[int]]) -> dict[int, float]:
    return {lvl: float(np.mean(h)) for lvl, h in sorted(items.items())}


def frontier(acc: dict[int, float], threshold: float = 0.99) -> int:
    """The largest L such that every level 1..L scores at least `threshold` (0 if level 1 fails)."""
    L = 0
    for lvl in sorted(acc):
        if lvl != L + 1 or acc[lvl] < threshold:
            break
        L = lvl
    return L


def score(acc: dict[int, float]) -> float:
    """One number for ranking candidates: the area under accuracy-by-level (levels solved count fully)."""
    return float(sum(acc.values()))
