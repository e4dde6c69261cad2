"""Training from scratch until the human range is learned: the bootstrap's restarts on a loss plateau.

Trained from scratch on human data, the bootstrap sometimes never leaves its loss plateau, and which seeds do is
luck (issue 25: seed 3 ended generation 0 at sealed 0.57 / 0.06 / 0 on lengths 1 / 2 / 3+, and every later
generation trained a successor on a champion that could not add). So the harness checks each bootstrap model on
the validation tier at every human level; below `loop.bootstrap_bar` at any of them, it trains the bootstrap again
under the next seed, as a new candidate of the same generation, until one passes or `loop.bootstrap_attempts` are
spent. The first passing attempt is kept; if none passes, the best by validation, and the failure is named.

A model can pass the bar and still have a *position hole*: under the offsets it trained with, some human length
fails at every offset that puts a digit on one position id (measured on the default's generation 0, seeds 0-9:
four of ten had one, at positions 22-28, where the offsets cover fewer rows; fresh problems 0.00-0.13 there
against 0.80-1.00 for the other six at every length and offset). Its successors never learn that position (400
steps on human data, or its embedding rows drawn again and 300 steps, left it at 0.07-0.15), so the lineage's frontier stops one length before
it: seed 1's long run stood at 20 for four generations, its hole at 22. So a hole fails an attempt like the bar.

A champion whose dev accuracy is below the bar at a human level is a named weakness in `assess`: its labels are
not curated. What its generation trains depends on where it stands:
- on the plateau (some human level under `PLATEAU_FLOOR` on dev): the bootstrap again under the next seeds, instead
  of a successor (a successor starts from the plateau and, in issue 25's run, stayed there for three generations of
  750 steps);
- off the plateau but short of the bar (seed 4 of the default: validation passed, dev 0.93 at length 8): successors
  as usual but with no new labels (at generation 1, human data only), to *finish* the human range. A scratch
  restart there threw away a model that could add, cost 480 CPU-s, and was refused by the gate (p = 0.91);
  finishing took seed 4 from 0.945 to 0.998 at length 8. A champion is finished once: if its finishing
  successors were all refused, the next generation restarts the bootstrap.

Attempt k (counted over the whole run) trains the configured bootstrap; attempt 1 exactly as configured, so a run
whose first attempt passes has the lineage it had before restarts existed, and attempt k > 1 under
`seeds.integer(bootstrap.seed, "bootstrap-restart", k)`, so a run repeats itself. An attempt is a candidate
whose parent is None (it starts from no model), trained at full budget on human data only; its experiment is
named by its job's digest, so a resume reads a finished attempt back instead of training it again.
"""
from __future__ import annotations

import json
from typing import Callable

from ... import seeds
from ...researchers.evolution import recipe_key
from .recipe import Recipe

WEAKNESS = "human range not learned"
# Dev accuracy every human level must have for a weak champion to be finished rather than restarted: plateau models
# stood at 0.06-0.09 (length 2) and 0.00 (3+); seed 4's, off the plateau, at 0.93 (length 8) and >= 0.97 elsewhere.
PLATEAU_FLOOR = 0.5
# The share of its offset-0 validation accuracy every human level must keep under every training offset: models
# with a hole fell from 0.95-1.00 to 0.00-0.13 under the offsets that reach it; the others kept 0.80 or more at
# every length and offset (BENCHMARKS.md, "Position holes").
HOLE_FLOOR = 0.5


# -- attempts: their seeds, recipes, candidates and jobs ----------------------------------------------------------
def attempt_seed(cfg, attempt: int) -> int:
    return cfg.bootstrap.seed if attempt == 1 else seeds.integer(cfg.bootstrap.seed, "bootstrap-restart", attempt)


def attempt_recipe(cfg, attempt: int) -> Recipe:
    return cfg.bootstrap if attempt == 1 else cfg.bootstrap.model_copy(update={"seed": attempt_seed(cfg, attempt)})


def attempts_before(wl, g: int) -> int:
    """Bootstrap attempts of the generations before g (candidates with no parent model)."""
    return wl.store.one("SELECT COUNT(*) AS n FROM candidates WHERE parent_model IS NULL AND generation < ?", g)["n"]


def is_attempt(wl, cid: str) -> bool:
    row = wl.store.one("SELECT parent_model FROM candidates WHERE id=?", cid)
    return row is not None and row["parent_model"] is None


def add_attempt(wl, g: int, ordinal: int, attempt: int, why: str) -> str:
    """The attempt's candidate (its restart's audit event first, once: a resume finds the row and adds none)."""
    recipe = attempt_recipe(wl.cfg, attempt)
    if attempt > 1 and not wl.store.one("SELECT 1 FROM candidates WHERE id=?", f"g{g}c{ordinal}"):
        wl.audit.append("bootstrap.restart", generation=g, candidate=f"g{g}c{ordinal}", attempt=attempt,
                        seed=recipe.seed, reason=why)
    return wl.lab.add_candidate(g, ordinal, recipe.model_dump_json(), recipe_key(recipe), why, None)


def job(wl, g: int, cid: str, parallel: int = 1) -> str:
    """An attempt's job: its recipe at full budget, on human data only, from no parent (the train stage writes
    the same job, so it reads the attempt's experiment back)."""
    return wl.make_job(g, cid, wl.recipe(cid), None, [], [], parallel)


# -- the bar --------------------------------------------------------------------------------------------------------
def human_levels(cfg) -> list[int]:
    lo, hi = cfg.task.human_levels
    return list(range(lo, hi + 1))


def below_bar(cfg, acc: dict[int, float]) -> dict[int, float]:
    """The human levels under `loop.bootstrap_bar` (a level the tier lacks counts 0)."""
    bar = cfg.loop.bootstrap_bar
    return {lvl: acc.get(lvl, 0.0) for lvl in human_levels(cfg) if acc.get(lvl, 0.0) < bar}


def describe(below: dict[int, float], bar: float, tier: str) -> str:
    """e.g. 'validation 0.57 at length 1, 0.06 at length 2, 0.00 at length 3 and 5 more < bar 0.95'."""
    shown = [f"{a:.2f} at length {lvl}" for lvl, a in sorted(below.items())[:3]]
    more = f" and {len(below) - 3} more" if len(below) > 3 else ""
    return f"{tier} {', '.join(shown)}{more} < bar {bar}"


def position_holes(wl, model: str, recipe: Recipe, acc0: dict[int, float]) -> dict[str, float]:
    """{'L@o': accuracy} for each human level L whose validation accuracy decoded under training offset o
    (1..max_offset) is under HOLE_FLOOR times its accuracy at offset 0 (`acc0`, the bar's). Empty where the
    recipe trains no offsets."""
    if recipe.position == "none" or not recipe.max_offset:
        return {}
    levels, holes = human_levels(wl.cfg), {}
    for off in range(1, recipe.max_offset + 1):
        acc = wl.grader.accuracy_under_offset(model, "validation", off, levels)
        holes |= {f"{lvl}@{off}": round(acc.get(lvl, 0.0), 4) for lvl in levels
                  if acc.get(lvl, 0.0) < HOLE_FLOOR * acc0.get(lvl, 0.0)}
    return holes


def describe_holes(holes: dict[str, float]) -> str:
    """e.g. 'a position hole: validation 0.00 at length 8 under offset 17, ... and 9 more, under 0.5 of its
    accuracy at offset 0'; the worst first."""
    worst = sorted(holes.items(), key=lambda kv: (kv[1], kv[0]))[:3]
    shown = ", ".join(f"{a:.2f} at length {k.split('@')[0]} under offset {k.split('@')[1]}" for k, a in worst)
    more = f" and {len(holes) - 3} more" if len(holes) > 3 else ""
    return f"a position hole: validation {shown}{more}, under {HOLE_FLOOR} of its accuracy at offset 0"


def weaknesses(cfg, dev_acc: dict[int, float]) -> list[dict]:
    """`assess`'s named weaknesses of a champion: the human range not learned (dev below the bar)."""
    below = below_bar(cfg, dev_acc)
    if not below:
        return []
    return [{"name": WEAKNESS, "levels": {str(k): v for k, v in below.items()}, "bar": cfg.loop.bootstrap_bar,
             "tier": "dev", "why": describe(below, cfg.loop.bootstrap_bar, "dev")}]


def _weakness(ctx: dict) -> dict | None:
    return next((w for w in ctx["assess"].get("weaknesses", []) if w["name"] == WEAKNESS), None)


def finish_reason(weak: dict | None, dev_acc: dict, human: list[int], tried: list[str]) -> str | None:
    """Why a weak champion is finished by successors (None: it is not weak, or it must restart): it left the
    plateau (every human level at >= PLATEAU_FLOOR on dev) and no successor of it was tried yet."""
    if weak is None:
        return None
    on_plateau = any(float(dev_acc.get(str(lvl), 0.0)) < PLATEAU_FLOOR for lvl in human)
    if on_plateau or tried:
        return None
    return (f"finish the human range: the champion has left the loss plateau (dev >= {PLATEAU_FLOOR} at every human "
            f"length) but has not learned the range ({weak['why']}); its successors train with no new labels, "
            f"gated as usual")


def tried_before(wl, g: int, champion: str) -> list[str]:
    """The champion's successors tried in generations before g (g's own: a resume must decide as the run did)."""
    return [r["id"] for r in wl.store.q("SELECT id FROM candidates WHERE parent_model=? AND generation < ?",
                                        champion, g)]


def finishing(wl, g: int, ctx: dict) -> str | None:
    """`finish_reason` for generation g's champion, from the lineage: its successors tried before g."""
    weak = _weakness(ctx) if ctx["champion"] is not None else None
    if weak is None:
        return None
    return finish_reason(weak, ctx["assess"].get("dev_acc", {}), human_levels(wl.cfg),
                         tried_before(wl, g, ctx["champion"]))


# -- the stages -----------------------------------------------------------------------------------------------------
def propose(wl, g: int, ctx: dict, finish: str | None) -> dict | None:
    """The bootstrap's first attempt of this generation, where it trains from scratch: generation 0, a later one
    with no champion, or one whose champion is on the plateau or was already finished in vain. None:
    successors, as usual (of a weak champion too, where `finish`, this generation's `finishing`, says why)."""
    weak = _weakness(ctx)
    if ctx["champion"] is not None and (weak is None or finish is not None):
        return None
    attempt = attempts_before(wl, g) + 1
    seed = attempt_seed(wl.cfg, attempt)
    if attempt == 1:
        why = "bootstrap: train the first champion on human data"
    elif ctx["champion"] is None:
        why = f"restart under seed {seed} (bootstrap attempt {attempt}): no champion after {attempt - 1} attempts"
    else:
        how = ("its successors were tried and refused" if tried_before(wl, g, ctx["champion"]) else
               "it is on the loss plateau")
        why = (f"restart under seed {seed} (bootstrap attempt {attempt}) instead of a successor: the champion has "
               f"not learned the human range ({weak['why']}; {how})")
    out = {"candidates": [add_attempt(wl, g, 0, attempt, why)]}
    return out if attempt == 1 else out | {"restart": why}


def experiment(wl, g: int, ctx: dict) -> dict | None:
    """Run this generation's attempts in turn until one passes the bar on validation or the attempts are spent;
    None where the generation trains successors. Each entry: the experiment's row, its attempt and seed, its
    validation accuracy at the human levels, whether it passes, and the verdict in words."""
    cands = ctx["propose"]["candidates"]
    if len(cands) != 1 or not is_attempt(wl, cands[0]):
        return None
    first, limit, bar = attempts_before(wl, g) + 1, wl.cfg.loop.bootstrap_attempts, wl.cfg.loop.bootstrap_bar
    cid, exp_id, out = cands[0], ctx["implement"]["experiments"][cands[0]], {}
    for i in range(limit):
        attempt = first + i
        if i:
            seed = attempt_seed(wl.cfg, attempt)
            where = "" if g == 0 else f" in generation {g} (bootstrap attempt {attempt})"
            cid = add_attempt(wl, g, i, attempt, f"restart {i + 1} of {limit}{where} under seed {seed}: {cid}'s "
                                                 f"model {out[cid]['verdict']}")
            exp_id = job(wl, g, cid)
        row = wl.lab.execute(g, cid, exp_id, "candidate")
        entry = {"experiment": exp_id, "status": row["status"], "model": row["model"], "error": row["error"],
                 "attempt": attempt, "seed": wl.recipe(cid).seed}
        if row["status"] != "done":  # a failure is not a plateau: another seed would not cure it
            out[cid] = entry | {"validation": None, "passes": False, "verdict": f"failed ({row['status']})"}
            break
        acc = wl.grader.accuracy(row["model"], "validation")
        below = below_bar(wl.cfg, acc)
        holes = {} if below else position_holes(wl, row["model"], wl.recipe(cid), acc)
        if below:
            verdict = f"has not learned the human range ({describe(below, bar, 'validation')}{_plateau_stop(row)})"
        elif holes:
            verdict = (f"passed the bar ({bar} on validation at every human length) but has {describe_holes(holes)}: "
                       f"its successors would not learn the lengths that reach it")
        else:
            verdict = (f"passed the bar ({bar} on validation at every human length) and holds it under every "
                       f"training offset (>= {HOLE_FLOOR} of it)")
        out[cid] = entry | {"validation": {str(lvl): acc.get(lvl, 0.0) for lvl in human_levels(wl.cfg)},
                            "holes": holes, "passes": not below and not holes, "verdict": verdict}
        if out[cid]["passes"]:
            break
    return out


def _plateau_stop(row) -> str:
    """', its trainer ended it at step N (loss L)' where the trainer says it stopped on its plateau (its metrics,
    read under the harness's schema; words for a human, never a decision: the validation tier decides)."""
    try:
        stop = (json.loads(row["metrics"] or "{}") or {}).get("stopped_on_plateau")
        return f"; its trainer ended it at step {int(stop['step'])} (loss {float(stop['loss']):.2f})" if stop else ""
    except (TypeError, ValueError, KeyError, IndexError, AttributeError):
        return ""


def select(wl, g: int, ctx: dict) -> dict | None:
    """The first attempt that passed; if none did, the best by validation (most human levels at the bar, then the
    mean over them), and the failure named. The others are recorded as not used (`gate`)."""
    exps = ctx["experiment"]
    if not exps or not all("attempt" in e for e in exps.values()):
        return None
    done = {cid: e for cid, e in exps.items() if e["status"] == "done"}
    passed = [cid for cid, e in done.items() if e["passes"]]
    bar = wl.cfg.loop.bootstrap_bar
    if passed:
        sel = passed[0]
        why = f"{sel} passed the bar at attempt {exps[sel]['attempt']} (seed {exps[sel]['seed']})"
    elif done:
        sel = max(done, key=lambda c: (sum(a >= bar for a in done[c]["validation"].values()),
                                       -len(done[c].get("holes") or {}), sum(done[c]["validation"].values()),
                                       -done[c]["attempt"]))
        why = (f"no attempt passed the bar in {len(exps)}: kept the best by validation, {sel}, whose model "
               f"{done[sel]['verdict']}")
    else:
        sel, why = None, "no attempt finished: " + "; ".join(f"{c} {e['verdict']}" for c, e in exps.items())
    unused = {cid: f"not used: its model {e['verdict']}" + (f"; {sel} was kept" if sel else "")
              if e["status"] == "done" else f"not used: experiment {e['status']}: {e['error']}"
              for cid, e in exps.items() if cid != sel}
    keeps = wl.rank(ctx["champion"], {sel: exps[sel]["model"]}, "validation")[1] if sel else {}
    return {"selected": sel, "ranking": [sel] if sel else [], "keeps_solved_levels": keeps, "incumbent": None,
            "p_vs_incumbent": {}, "bootstrap": {"attempts": len(exps), "passed": bool(passed), "why": why,
                                                "unused": unused}}


def curation_skipped(ctx: dict) -> dict | None:
    """A champion that has not learned the human range labels nothing: its labels are not trusted."""
    weak = _weakness(ctx) if ctx["champion"] is not None else None
    if weak is None:
        return None
    then = ("its successors train with no new labels" if ctx["propose"].get("finishing") else
            "the bootstrap trains again instead")
    return {"levels": [], "skipped": f"{WEAKNESS} ({weak['why']}): its labels are not trusted; {then}"}


def gate(wl, g: int, ctx: dict, inner: Callable[..., dict]) -> dict:
    """The unused attempts get their decision (why they were not used); the gate decides the rest as usual."""
    unused = (ctx["select"].get("bootstrap") or {}).get("unused") or {}
    if not unused:
        return inner(wl, g, ctx)
    for cid, reason in unused.items():
        e = ctx["experiment"][cid]
        wl.lab.decide(g, cid, e["model"], "candidate", False, reason,
                      {"attempt": e["attempt"], "seed": e["seed"], "validation": e["validation"]})
    rest = [c for c in ctx["propose"]["candidates"] if c not in unused]
    return inner(wl, g, {**ctx, "propose": {**ctx["propose"], "candidates": rest}}) | {"not_used": unused}
