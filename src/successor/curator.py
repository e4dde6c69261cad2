"""The curator: models label new, harder problems for their successor; filters keep labels worth trusting.

A *voter* is one model decoding under one position offset. Every filter is a vote over voters:
- `none`: the champion alone, every label kept;
- `length`: the champion alone, labels kept if well formed (right length, digits only);
- `offset-vote`: the champion under several offsets must agree (a majority vote that costs one model);
- `majority`: the champion and the generation's top candidates must agree.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .config import CuratorConfig
from .tasks import Problem, Task
from .workloads.tinylm.decode import greedy
from .workloads.tinylm.model import TinyLM


@dataclass
class Curation:
    level: int
    items: list[tuple[Problem, str]]
    labelled: int
    agreement: float  # fraction of problems whose vote passed
    skipped: str | None = None  # why the level was not curated, if it was not


def well_formed(task: Task, problem: Problem, label: str) -> bool:
    return len(label) == task.answer_length(problem.level) and label.isdigit()


def vote(answers: list[list[str]], agreement: float) -> list[str | None]:
    """Per problem, the most common answer if at least `agreement` of the voters gave it, else None.

    With agreement > 0.5 a tie can never pass, since two answers cannot both hold a strict majority.
    """
    if not answers:
        raise ValueError("a vote needs at least one voter")
    k = len(answers)
    if len({len(a) for a in answers}) != 1:
        raise ValueError("every voter must answer every problem")
    out: list[str | None] = []
    for column in zip(*answers):
        label, count = Counter(column).most_common(1)[0]
        out.append(label if count / k >= agreement - 1e-12 else None)
    return out


def voters(cfg: CuratorConfig, champion: TinyLM, others: list[TinyLM]) -> list[tuple[TinyLM, int]]:
    if cfg.filter in ("none", "length"):
        return [(champion, 0)]
    if cfg.filter == "offset-vote":
        return [(champion, off) for off in cfg.offsets]
    models = [champion, *others][: cfg.voters]
    if len(models) < 2:
        raise ValueError("a majority filter needs at least two models")
    return [(m, 0) for m in models]


def label(
    task: Task,
    cfg: CuratorConfig,
    problems: list[Problem],
    champion: TinyLM,
    others: list[TinyLM] = (),
) -> tuple[list[tuple[Problem, str]], float]:
    """Label problems with the configured filter; returns the kept (problem, label) pairs and the pass rate."""
    answers = [greedy(model, task, problems, offset=off) for model, off in voters(cfg, champion, list(others))]
    agree = 1.0 if cfg.filter in ("none", "length") else cfg.agreement
    labels = vote(answers, agree)
    kept = [(p, y) for p, y in zip(problems, labels) if y is not None]
    if cfg.filter != "none":
        kept = [(p, y) for p, y in kept if well_formed(task, p, y)]
    return kept, (len(kept) / len(problems) if problems else 0.0)


def curate_level(
    task: Task,
    cfg: CuratorConfig,
    level: int,
    problems: list[Problem],
    champion_dev_acc: float,
    champion: TinyLM,
    others: list[TinyLM] = (),
) -> Curation:
    """Label one level, and refuse to keep labels where the vote is far more confident than the champion is
    accurate (agreement far above dev accuracy is the alarm of error accumulation; see DESIGN.md)."""
    kept, rate = label(task, cfg, problems, champion, others)
    skipped = None
    if cfg.filter != "none" and rate - champion_dev_acc > cfg.alarm_gap:
        skipped = (f"alarm: {rate:.0%} of votes agree but the champion is {champion_dev_acc:.0%} accurate on dev "
                   f"at level {level}")
    elif len(kept) < cfg.min_kept:
        skipped = f"only {len(kept)} labels passed the filter (min_kept={cfg.min_kept})"
    return Curation(level, [] if skipped else kept, len(problems), rate, skipped)
