"""Successive halving inside a generation: the rungs' budgets and who goes on, as pure functions the loop and the
tests share. The loop runs the experiments and records every rung (store table `rungs`)."""
from __future__ import annotations

from .workloads.tinylm.recipe import Recipe


def fractions(rungs: int, eta: int) -> list[float]:
    """Each rung's share of the full budget, smallest first: eta^-(rungs-1), ..., 1/eta, 1."""
    return [float(eta) ** -(rungs - 1 - r) for r in range(rungs)]


def kept(alive: int, eta: int) -> int:
    """How many of `alive` candidates go on to the next rung: the best 1/eta, at least one."""
    return max(1, alive // eta)


def rung_recipe(top: Recipe, fraction: float, unit: str, top_rows: float | None = None) -> Recipe:
    """The recipe a rung trains: the first `fraction` of the full budget `top`. The lr schedule stays laid out
    over the full budget, so a rung's run is the start of the next rung's run and not a compressed copy.

    unit `steps`: a share of the candidate's own steps. unit `tokens`: a share of `top_rows` training rows
    (steps x batch size of the reference recipe at full budget; every candidate of a generation trains on the
    same data, so rows are tokens up to the padded length they share), divided by this candidate's batch size."""
    if unit == "tokens":
        if top_rows is None:
            raise ValueError("a token budget needs the reference's rows at full budget")
        full = max(1, round(top_rows / top.batch_size))
        steps = max(1, round(top_rows * fraction / top.batch_size))
        horizon = max(full, steps) if top.schedule_steps is None else max(top.schedule_steps, steps)
        return top.model_copy(update={"steps": steps, "schedule_steps": horizon if horizon > steps else None})
    if fraction >= 1.0:
        return top
    steps = max(1, round(top.steps * fraction))
    return top.model_copy(update={"steps": steps, "schedule_steps": top.schedule_steps or top.steps})
