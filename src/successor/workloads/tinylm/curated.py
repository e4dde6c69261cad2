"""What the curator decided at one level: the record the curate stage stores and the label-free check amends
(curator.py, judging.py)."""
from __future__ import annotations

from dataclasses import dataclass

from .tasks import Problem


@dataclass
class Curation:
    level: int
    items: list[tuple[Problem, str]]
    labelled: int
    agreement: float | None  # fraction of problems whose vote passed (None: not decoded, the level raised an alarm)
    skipped: str | None = None  # why the level was not curated, if it was not
    threshold: float | None = None  # the agreement the vote was held to, after calibration on dev
    dev_passed: int = 0  # dev items of the level the vote passed at that threshold
    dev_wrong: int = 0  # of those, how many carried a wrong label
    voters: int = 0  # how many voters the vote used (fewer than configured where `voter_floor` dropped weak ones)
    method: str = "vote"  # "compose": the champion's direct answers, kept where they equal the composed ones;
    # "vote+compose": the vote's or the greedy labels, kept where they equal the composed ones; "parts": the
    # composed answers themselves (a new length, `compose_new: parts`)
    judge: str = "dev"  # what the alarm judged the labels against: "dev" (labelled items), or in label-free mode
    # "composition" (answers composed from certified parts) or "second cut" (another composition than the one the
    # labels came through)
    checked: int = 0  # label-free: kept labels that two agreeing compositions could judge (`judging.check_kept`)
    checked_wrong: int = 0  # of those, how many the compositions say are wrong
