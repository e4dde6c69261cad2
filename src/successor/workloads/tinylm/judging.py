"""Label-free judges (`task.dev_levels: human`): what stands in for labelled dev items at a length past the human
range. Both ask the task's consistency check (`Task.compositions`) through the champion's answers to parts it is
certified on; neither reads a label or the hidden checker.

- `reference`: before the vote, up to n of the level's problems with a composed answer, on which the vote's
  agreement threshold is chosen and the first alarm raised, exactly as on dev.
- `check_kept`: after it, every label the level would keep against the answer two further compositions agree on.
  A hundred judged items cannot tell 0.2% noise from 1.2% (the poisoned schedule kept a length at 1.18% whose
  judge had said 1 of 94, as clean lengths said 1 of 96); several hundred can, and a judge of two agreeing routes
  is itself rarely wrong, so the bound can be 1%.
"""
from __future__ import annotations

from dataclasses import replace

from ...config import CuratorConfig
from .composing import agreeing_cuts, composable, composed, second_cut
from .curated import Curation
from .model import TinyLM
from .tasks import Problem, Task


def noisier_than(wrong: int, passed: int, bound: float) -> bool:
    """Are `wrong` bad labels of `passed` more than `bound` of them? The point estimate, not a test: a few dozen
    dev items can prove a vote neither clean nor dirty, and one wrong label in six (a vote at a length the
    champion barely knows) is 17% noise, which a one-sided test at 2% lets through (p=0.11; measured: the
    labels it kept were 9-12% wrong). Where dev cannot tell, the vote is held to a higher agreement."""
    return wrong > bound * passed


MIN_JUDGED = 5  # fewer judged labels prove nothing: 2 of 2 right let 3.6% noise through (BENCHMARKS, label-free)


def reference(task: Task, level: int, problems: list[Problem], champion: TinyLM, certified: int,
              through_parts: bool, n: int) -> tuple[list[tuple[Problem, str]], str]:
    """Label-free stand-ins for dev at a level with no labels: up to `n` of the level's problems with the answer
    the task's consistency check gives (the champion's answers to parts it is certified on, composed). Labels
    that came through a composition (`through_parts`: compose, parts, vote+compose) are judged by a second cut,
    so the judge never shares their route; a plain vote by the first. Returns the pairs and the judge's name."""
    if not composable(task, level, problems, certified):
        return [], "composition"
    judge, name = (second_cut, "second cut") if through_parts else (composed, "composition")
    pairs: list[tuple[Problem, str]] = []
    start = 0
    while len(pairs) < n and start < len(problems):  # 2n at a time: most compose, so rarely more than once
        chunk = problems[start:start + 2 * n]
        pairs += [(p, y) for p, y in zip(chunk, judge(task, chunk, champion, certified)) if y is not None]
        start += len(chunk)
    return pairs[:n], name


def check_kept(task: Task, cfg: CuratorConfig, cur: Curation, champion: TinyLM, certified: int) -> Curation:
    """The level's kept labels judged against the answers two compositions agree on (after the one the labels
    came through, if they came through one). More than `max_kept_noise` of the judged ones wrong is the alarm:
    nothing of the level is kept. Where fewer than MIN_JUDGED labels can be judged so, the level stands on the
    judge before the vote. `compose` levels (lengths the champion trained on, its direct answers kept where the
    first cut agrees) are left out: two routes already agree on each label, their kept labels were 0-0.16% wrong,
    and the check would triple their cost (4 CPU-s a level for the labels, 7-13 for the check; BENCHMARKS.md)."""
    if cur.skipped or not cur.items or cfg.max_kept_noise >= 1.0 or cur.method == "compose":
        return cur
    skip = 0 if cur.method == "vote" else 1
    ref = agreeing_cuts(task, [p for p, _ in cur.items], champion, certified, skip)
    pairs = [(y, r) for (_, y), r in zip(cur.items, ref) if r is not None]
    wrong = sum(y != r for y, r in pairs)
    cur = replace(cur, checked=len(pairs), checked_wrong=wrong)
    if len(pairs) >= MIN_JUDGED and noisier_than(wrong, len(pairs), cfg.max_kept_noise):
        why = (f"alarm: {wrong} of the {len(pairs)} kept labels two agreeing compositions can judge are wrong "
               f"(more than max_kept_noise={cfg.max_kept_noise:g})")
        return replace(cur, items=[], skipped=why)
    return cur
