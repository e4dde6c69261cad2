"""Labels checked by composition: the champion's direct answer to a long problem is kept only where it equals the
answer composed from its answers to shorter problems, each of a length the gate has certified it on.

Why: a vote over offsets and forms passes the errors a model makes the same way under each of them (measured:
an hour-long run's kept labels were 2-3% wrong, learned back by every successor, and its >=99% frontier stuck
at 9 while it stood at 0.98 on lengths 10-13). A composed answer comes from another computation: the parts are
problems the model is certified on, so where both routes agree, both are very likely right. The probe in
DESIGN.md cut kept-label noise from 2-3% to 0-0.1% up to twice the certified length, with no label past the
human range. What a task can be composed from is the task's to say (`Task.compositions`); this module only asks.
"""
from __future__ import annotations

from .decode import greedy
from .model import TinyLM
from .tasks import Problem, Task


def composable(task: Task, level: int, problems: list[Problem], longest: int) -> bool:
    """Does the task offer a composition of this level's problems from parts of at most `longest` levels?"""
    return longest > 0 and bool(problems) and bool(task.compositions(problems[0], longest))


def composed(task: Task, problems: list[Problem], model: TinyLM, longest: int) -> list[str | None]:
    """Per problem, the answer composed from the model's answers to its parts, by the first composition that
    applies (addition: the first cut without a carry out of the low half); None where none does. Parts are
    decoded in one batch per composition rank, so a level costs a few decodes of short problems."""
    return [y for y, _ in _composed_from(task, problems, model, longest, [0] * len(problems))]


def second_cut(task: Task, problems: list[Problem], model: TinyLM, longest: int) -> list[str | None]:
    """Per problem, the answer composed by the next composition that applies after the one `composed` used (a
    second computation from other parts: addition's next cut without a carry); None where there is none. It
    judges labels that `composed` made or confirmed without sharing their route (label-free mode, curator.py)."""
    first = _composed_from(task, problems, model, longest, [0] * len(problems))
    start = [r + 1 if r is not None else 1 << 30 for _, r in first]
    return [y for y, _ in _composed_from(task, problems, model, longest, start)]


def _composed_from(task: Task, problems: list[Problem], model: TinyLM, longest: int,
                   start: list[int]) -> list[tuple[str | None, int | None]]:
    """Per problem, (the answer, the rank of the composition that gave it) trying ranks from `start[i]` on."""
    comps = [task.compositions(p, longest) for p in problems]
    out: list[tuple[str | None, int | None]] = [(None, None)] * len(problems)
    rank = list(start)
    todo = [i for i in range(len(problems)) if rank[i] < len(comps[i])]
    while todo:
        parts = [q for i in todo for q in comps[i][rank[i]].parts]
        answers, pos, still = greedy(model, task, parts), 0, []
        for i in todo:
            c = comps[i][rank[i]]
            y = c.combine(answers[pos:pos + len(c.parts)])
            pos += len(c.parts)
            if y is None:
                rank[i] += 1
                if rank[i] < len(comps[i]):
                    still.append(i)
            else:
                out[i] = (y, rank[i])
        todo = still
    return out


def checked(direct: list[str | None], by_parts: list[str | None]) -> list[str | None]:
    """The direct labels that equal the composed ones; None elsewhere."""
    return [d if d is not None and d == c else None for d, c in zip(direct, by_parts)]
