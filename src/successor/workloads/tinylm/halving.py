"""Successive halving inside a generation: the rungs' budgets and who goes on, as pure functions the stage and
the tests share, and the experiment stage that runs the rungs and records every one (store table `rungs`)."""
from __future__ import annotations

from .recipe import Recipe


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


def run_rungs(wl, g: int, ctx: dict) -> dict:
    """The experiment stage by successive halving: all candidates on the first rung's budget, the best 1/eta on
    the dev tier on to the next, the last rung at the full experiment budget. A candidate stopped on a rung
    leaves the generation as `halted`, with why; every rung of every candidate is a row of `rungs`."""
    h = wl.cfg.loop.halving
    newest, older = wl.training_data()
    top = {cid: wl.budgeted(cid) for cid in ctx["implement"]["experiments"]}
    ref = wl.budgeted_recipe(wl.cfg.successor)
    alive, out, history = list(top), {}, {cid: [] for cid in top}
    for r, frac in enumerate(fractions(h.rungs, h.eta)):
        recipes = {cid: rung_recipe(top[cid], frac, h.unit, ref.steps * ref.batch_size) for cid in alive}
        jobs = {cid: wl.make_job(g, cid, recipes[cid], ctx["champion"], newest, older, len(alive)) for cid in alive}
        rows = dict(zip(alive, wl.lab.execute_many(g, [(cid, jobs[cid], "candidate") for cid in alive])))
        done = {cid: rows[cid]["model"] for cid in alive if rows[cid]["status"] == "done"}
        ranking, keeps, scores = wl.rank(ctx["champion"], done, "dev")
        last = r == h.rungs - 1
        going = set(ranking if last else ranking[:kept(len(alive), h.eta)])
        for cid in alive:
            rank = ranking.index(cid) + 1 if cid in done else None
            entry = {"rung": r, "experiment": jobs[cid], "steps": recipes[cid].steps,
                     "budget": recipes[cid].steps * (recipes[cid].batch_size if h.unit == "tokens" else 1),
                     "status": rows[cid]["status"], "dev_score": scores.get(cid), "rank": rank, "kept": cid in going}
            history[cid].append(entry)
            wl.store.add_rung(g, cid, r, jobs[cid], h.unit, entry["budget"], entry["steps"], entry["dev_score"], rank,
                              cid in going and not last)
            if cid in going:
                continue
            row = rows[cid]
            status, error = (row["status"], row["error"]) if cid not in done else ("halted", (
                f"stopped on rung {r} of {h.rungs} ({recipes[cid].steps} steps): dev score "
                f"{scores[cid]:.3f}, {rank} of {len(done)}; the best {len(going)} went on"))
            out[cid] = {"experiment": jobs[cid], "status": status, "model": None, "error": error}
        if last:
            for cid in going:
                out[cid] = {"experiment": jobs[cid], "status": "done", "model": rows[cid]["model"], "error": None}
        alive = [cid for cid in ranking if cid in going]
        if not alive:
            break
    return {cid: out[cid] | {"rungs": history[cid]} for cid in top}
