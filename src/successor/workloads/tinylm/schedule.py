"""Which levels a generation labels (the schedule, and relabelling), and the noise ablation's corruption of kept
labels: the curator's choices that decode nothing."""
from __future__ import annotations

from ...config import CuratorConfig
from .tasks import Problem


def schedule_levels(cfg: CuratorConfig, dev_acc: dict[int, float], frontier: int, trained_to: int,
                    last: int) -> list[int]:
    """The levels a generation labels, lowest first, never past `last`.

    `trained_to` is the longest length in the champion's training data (human or curated), `frontier` the longest
    run of levels it solves on dev from 1 (at least the human data's top: inside it human labels beat any vote).
    - `frontier`: `levels_ahead` levels past the frontier. Lengths the champion already solves are not labelled.
    - `standard`: `levels_ahead` levels past `trained_to`: the training length grows one level a generation
      whatever the champion generalises to (Lee et al. 2025's schedule).
    - `accelerated`: standard's levels, plus every level past `trained_to` where the champion already scores at
      least `accelerate_threshold` (while it does, level after level), so a champion that generalises past its
      training length gets those lengths labelled now, and the `levels_ahead` new ones after them.
    """
    if cfg.schedule == "frontier":
        return list(range(frontier + 1, min(frontier + cfg.levels_ahead, last) + 1))
    top = trained_to
    if cfg.schedule == "accelerated":
        while top + 1 <= last and dev_acc.get(top + 1, 0.0) >= cfg.accelerate_threshold - 1e-12:
            top += 1
    return list(range(trained_to + 1, min(top + cfg.levels_ahead, last) + 1))


def with_relabel(cfg: CuratorConfig, wanted: list[int], human_top: int) -> list[int]:
    """The scheduled levels, preceded (with `relabel`) by every level past the human data below them: those are
    labelled again by the current champion, which has trained on them since their last labels were made."""
    if not cfg.relabel or not wanted:
        return wanted
    return list(range(human_top + 1, wanted[0])) + wanted


def inject_noise(items: list[tuple[Problem, str]], rate: float, rng) -> tuple[list[tuple[Problem, str]], int]:
    """Corrupt `round(rate * len(items))` kept labels, chosen at random: one digit of each becomes another
    digit, so the label stays well formed and only the hidden checker can tell. Returns the items and how many
    were corrupted (an ablation: how the loop takes labels that are wrong)."""
    n = int(round(rate * len(items)))
    out = list(items)
    for i in rng.choice(len(items), size=n, replace=False) if n else []:
        p, y = out[i]
        k = int(rng.integers(len(y)))
        wrong = str((int(y[k]) + int(rng.integers(1, 10))) % 10)
        out[i] = (p, y[:k] + wrong + y[k + 1:])
    return out, n
