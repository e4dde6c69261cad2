"""The open-ended ladder: the tiers grow as the champion nears their last level, so a run is never stopped by its
own evaluation range.

At the opening of a generation, before its sealed digest is committed, the champion's reach is the furthest of
its sealed frontier (as the last generation's gate measured it), its dev frontier, and the levels the curator's
schedule would label next (`schedule_levels`, not capped by the tiers). Where that reach comes nearer than
`task.ladder_margin` to the tiers' last level (margin 0: once it passes it), every tier grows by
`task.ladder_step` levels (as many steps as it takes to clear the margin, never past `task.max_level`): `RunDir.grow` draws each new part from its tier's own
stream and records it (files, the `tier.grown` event, then the store's `tier_parts` rows) before anything reads it.
Every input is read back from what finished generations committed, so a re-run decides the same, and a
generation grows at most once, and only before it has opened.
"""
from __future__ import annotations

from . import evaluator
from .curator import schedule_levels


def open_generation(wl, g: int) -> str:
    """Grow the tiers if generation g must (once, before it opens); the sealed digest it will be gated on."""
    run, t = wl.run, wl.cfg.task
    if t.ladder_step > 0 and wl.store.generation(g) is None:
        levels = next_levels(wl)
        if levels is not None:
            run.grow(g, *levels)
    return run.tier_digest("sealed")


def reach(wl) -> int:
    """The furthest level the champion stands at or the schedule would label next (0: no champion yet)."""
    champion = wl.store.champion()
    if champion is None:
        return 0
    t, cur = wl.cfg.task, wl.cfg.curator
    row = wl.store.one("SELECT frontier FROM generations WHERE status='done' ORDER BY idx DESC LIMIT 1")
    acc = wl.grader.accuracy(champion, "dev")
    dev_front = evaluator.frontier(acc, cur.solve_threshold)
    wanted = schedule_levels(cur, acc, max(dev_front, t.human_levels[1]), wl.trained_to(), t.max_level)
    return max([row["frontier"] or 0, dev_front, *wanted])


def next_levels(wl) -> tuple[int, int] | None:
    """The levels the tiers grow by now, (lo, hi), or None: the reach is at least `ladder_margin` below the last
    level, or the ladder is at `max_level`."""
    t, last = wl.cfg.task, wl.run.last_level()
    if last >= t.max_level:
        return None
    far = reach(wl)
    hi = last
    while hi < t.max_level and hi - far < t.ladder_margin:
        hi = min(hi + t.ladder_step, t.max_level)
    return (last + 1, hi) if hi > last else None
