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
    return [c[1] if len(c) > 1 else None for c in cuts(task, problems, model, longest, 2)]


def agreeing_cuts(task: Task, problems: list[Problem], model: TinyLM, longest: int, skip: int) -> list[str | None]:
    """Per problem, the answer that the two compositions after the first `skip` that apply both give; None where
    they differ or fewer apply. Two routes that agree are wrong together far more rarely than one route alone
    (a single second cut disagreed with 2 of 83 right labels at length 19): a judge precise enough to measure a
    1% share of wrong labels (label-free mode's check of the kept labels, curator.py)."""
    return [c[skip] if len(c) > skip + 1 and c[skip] == c[skip + 1] else None
            for c in cuts(task, problems, model, longest, skip + 2)]


def cuts(task: Task, problems: list[Problem], model: TinyLM, longest: int, count: int) -> list[list[str]]:
    """Per problem, the answers of the first `count` compositions that apply, in the task's order."""
    out: list[list[str]] = [[] for _ in problems]
    start = [0] * len(problems)
    for _ in range(count):
        found = _composed_from(task, problems, model, longest, start)
        for i, (y, r) in enumerate(found):
            if y is not None:
                out[i].append(y)
        start = [r + 1 if r is not None else 1 << 30 for _, r in found]
    return out


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
