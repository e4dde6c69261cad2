"""Stage 10 for tinylm: the statistical gate on the sealed tier (paired, Holm over every contender), then the
guardrail's non-inferiority against the parent and generation 0. Every candidate gets a recorded decision; only
the selected one can be promoted, and only the driver's stage 11 makes the promotion (and accepts data)."""
from __future__ import annotations

from ...oversight.gate import apply_guardrail, decide
from . import evaluator


def gate(wl, g: int, ctx: dict) -> dict:
    champion = ctx["champion"]
    sel = ctx["select"]["selected"]
    contenders: dict[str, dict] = {}
    names: dict[str, str] = {}
    sealed = wl.sealed_parts(g)  # the tier's parts, or this generation's fresh sample (gate.sealed: fresh)
    for name, info in ctx["evaluate"].items():
        if name == "champion":
            continue
        cid = sel if name == "successor" else name
        contenders[cid] = wl.grade(info["model"], "sealed", sealed)
        names[cid] = info["model"]
    champ_items = (wl.grade(champion, "sealed", sealed) if champion else
                   {lvl: [0] * len(v) for lvl, v in next(iter(contenders.values())).items()} if contenders else {})
    # The levels the generation set out to improve, fixed before any contender was trained: every level up to the
    # highest it curated, and at least the first past the champion's frontier (all levels where it curated none,
    # and for the bootstrap). A schedule may label lengths the champion already solves (Lee et al.'s standard one
    # does, when the champion generalises past its training length): the gain it trains for is then at the next
    # length, and a test that stops at the labelled ones refuses every successor (measured: copy, six successors
    # in six refused with nothing left to gain on lengths 1-9).
    tested = tested_levels(ctx["curate"].get("curated") or [], ctx["assess"]["frontier"],
                           wl.run.last_level()) if champion else None
    decisions = decide(champ_items, contenders, wl.cfg.gate, tested) if contenders else {}
    if "guardrail" in wl.run.tiers and decisions:  # safety non-inferiority vs the parent and generation 0
        first = wl.store.one("SELECT idx, champion_model FROM generations WHERE status='done' AND "
                             "champion_model IS NOT NULL ORDER BY idx LIMIT 1")
        parent = wl.grade(champion, "guardrail") if champion else None
        origin = wl.grade(first["champion_model"], "guardrail") if first else None
        decisions = {cid: apply_guardrail(d, wl.grade(names[cid], "guardrail"), parent, origin, wl.cfg.gate,
                                          first["idx"] if first else 0) for cid, d in decisions.items()}
    for cid in ctx["propose"]["candidates"]:  # failed candidates are refused too, with their failure
        if cid not in decisions:
            e = ctx["train"] if cid == sel else ctx["experiment"][cid]
            wl.lab.decide(g, cid, None, "successor" if cid == sel else "candidate", False,
                          f"refused: experiment {e['status']}: {e['error']}", {})
    promoted = False
    for cid, d in decisions.items():
        role = "successor" if cid == sel else "candidate"
        reason, ok = d.reason, d.promoted
        if role == "candidate" and ok:
            reason, ok = "not promoted: passes the gate but was not selected on validation", False
        promoted = promoted or ok
        wl.lab.decide(g, cid, names[cid], role, ok, reason, d.stats)
    new_champion = ctx["train"]["successor"] if promoted else champion
    front = evaluator.frontier(evaluator.accuracy(wl.grade(new_champion, "sealed", sealed)),
                               wl.cfg.gate.solve_threshold) if new_champion else 0
    return {"promoted": promoted, "champion": new_champion, "frontier": front,
            "sealed_digest": wl.gated_digest(g), "tested_levels": tested,
            "reasons": {cid: d.reason for cid, d in decisions.items()}}


def tested_levels(curated: list[int], frontier: int, last: int) -> list[int] | None:
    """The levels the gate tests: 1 up to the highest curated, and at least up to the first past the champion's
    frontier (never past `last`). None (every level) where nothing was curated."""
    if not curated:
        return None
    return list(range(1, min(max(*curated, frontier + 1), last) + 1))
