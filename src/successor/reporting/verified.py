"""One plain line for every tinylm run report: what "verified" means under that run's gate (issue 26, item 4).

Why: the gate answers "are these weights better than the champion's on items neither saw", and a reader takes
"verified" to mean "the recipe is better". The two nulls tell them apart, and both are measured
(`benchmarks/gate_null.py`, BENCHMARKS.md "The gate under the null"): the same weights against themselves are
never promoted; a retrain of the same recipe under another seed is promoted at the rate below, which depends on
where the effect is measured and its floor. The rates are those measured (12 seed retrains of one generation of
one run, 132 ordered pairs), not estimates; a setting not measured says so.
"""
from __future__ import annotations

from ..config import GateConfig

SAME_WEIGHTS = "0 of 2,012"  # same-weights trials promoted (BENCHMARKS.md)
# (effect_on, min_effect) -> seed-retrain pairs promoted, of 132 ordered pairs
SEED_RETRAIN = {("tested", 0.0): 40, ("tested", 0.005): 24, ("tested", 0.0075): 9, ("tested", 0.01): 1,
                ("tested", 0.0125): 0, ("unsolved", 0.0): 40, ("unsolved", 0.01): 40, ("unsolved", 0.02): 34,
                ("unsolved", 0.03): 19, ("unsolved", 0.04): 7, ("unsolved", 0.05): 1}
# the floor on the error scale, measured on another bed: a label-free run's generation 2 whose 12 retrains stood at
# 0.998-0.9995 on the tested lengths (near ceiling: few errors to remove, so a seed removes a share of them easily)
ERRORS_NEAR_CEILING = {("unsolved", 0.1): 29, ("unsolved", 0.2): 29, ("unsolved", 0.3): 29, ("unsolved", 0.4): 28,
                       ("unsolved", 0.5): 21}
PAIRS = 132


def retrain_rate(gate: GateConfig) -> float | None:
    """The measured share of same-recipe seed retrains this gate setting promotes (None: not measured)."""
    table, floor = ((ERRORS_NEAR_CEILING, gate.min_error_share) if gate.effect_scale == "errors" else
                    (SEED_RETRAIN, gate.min_effect))
    hit = next((n for (on, eff), n in table.items() if on == gate.effect_on and abs(eff - floor) < 1e-9), None)
    return None if hit is None else hit / PAIRS


def verified_short(gate: dict | None) -> str:
    """The summary's form of `verified_line`: one short line."""
    g = GateConfig.model_validate(gate or {})
    rate = retrain_rate(g)
    null = ("how often a seed retrain of the same recipe passes this gate was not measured" if rate is None else
            f"a seed retrain of the same recipe passes this gate in {rate:.1%}"
            + (" or more" if g.count_newly_solved else "") + " of pairs" + _bed(g))
    return (f"better weights than the champion's on unseen sealed items (p < {g.alpha:g}, {_floor(g, True)} "
            f"on {'every tested length' if g.effect_on == 'tested' else 'the unsolved lengths'}); {null}: not "
            "proof of a better recipe")


def verified_line(gate: dict | None) -> str:
    """What a promotion under this gate config (the run's `gate` section) shows, and what it does not."""
    g = GateConfig.model_validate(gate or {})
    where = "every tested length" if g.effect_on == "tested" else "the lengths past the champion's frontier"
    line = (f"a promoted successor beat its champion on sealed items neither saw: one-sided exact McNemar p < "
            f"{g.alpha:g} (Holm over the contenders), {_floor(g)} on {where}, no solved "
            f"length lost (beyond forget_tolerance {g.forget_tolerance:g}). The same weights against themselves "
            f"were never promoted ({SAME_WEIGHTS} trials); ")
    rate = retrain_rate(g)
    if rate is None:
        return line + ("how often a retrain of the same recipe under another seed passes this setting was not "
                       "measured, so a promotion says these weights are better, not that the recipe is")
    more = " or more (count_newly_solved only adds promotions)" if g.count_newly_solved else ""
    return line + (f"a retrain of the same recipe under another seed passes this setting in {rate:.1%} of "
                   f"pairs{more}{_bed(g)}, so a promotion says these weights are better, not that the recipe is")


def _bed(g: GateConfig) -> str:
    return " (measured only on a champion near ceiling)" if g.effect_scale == "errors" else ""


def _floor(g: GateConfig, short: bool = False) -> str:
    """The effect floor in words, on its own scale."""
    if g.effect_scale == "errors":
        return (f">= {g.min_error_share:.0%} of errors removed" if short else
                f"at least {g.min_error_share:.0%} of the champion's errors removed")
    return f"gain >= {g.min_effect:g}" if short else f"a gain of at least {g.min_effect:g}"
