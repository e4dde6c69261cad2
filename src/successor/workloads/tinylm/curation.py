"""Stage 7 for tinylm: the champion labels problems past what it was trained on, and the filter keeps the labels
it trusts. The shard is recorded unaccepted; only a promotion accepts it (the driver's stage 11)."""
from __future__ import annotations

import json

import numpy as np

from . import evaluator
from .composing import composable, composed
from .curator import curate_levels, greedy_labels, inject_noise, schedule_levels, with_relabel
from .data import save_shard, tier_rng
from .decode import decoded_once
from .tasks import Problem


def curate(wl, g: int, ctx: dict) -> dict:
    cfg = wl.cfg.curator
    if ctx["champion"] is None:
        return {"levels": [], "skipped": "bootstrap generation trains on human data only"}
    if ctx["select"]["selected"] is None:
        return {"levels": [], "skipped": "no candidate finished"}
    with decoded_once():  # every answer the stage asks of a model is decoded once (decode.decoded_once)
        return _curate(wl, g, ctx)


def _curate(wl, g: int, ctx: dict) -> dict:
    # Inside the human range human labels are better than any vote (and the mixture keeps training on them), so
    # every schedule labels past it; which levels past it is the schedule's choice.
    cfg = wl.cfg.curator
    human_top = wl.cfg.task.human_levels[1]
    champion_acc = ctx["assess"]["dev_acc"]
    label_free = wl.cfg.task.dev_levels == "human"
    champion = wl.model(ctx["champion"])
    certified = certified_frontier(wl, ctx["champion"]) if cfg.compose or label_free else 0
    reach = {int(k): v for k, v in champion_acc.items()}
    free_reach = {}
    if label_free and cfg.schedule == "accelerated":
        free_reach = consistent_reach(wl, g, champion, certified, wl.trained_to())
        reach |= free_reach
    # label-free, dev ends at the human range: the frontier the schedule reads is the gate's certified one
    frontier = max(ctx["assess"]["frontier"], human_top, certified if label_free else 0)
    wanted = schedule_levels(cfg, reach, frontier, wl.trained_to(), wl.run.last_level())
    if not wanted:
        return {"levels": [], "skipped": f"the {cfg.schedule} schedule's next level is beyond the tiers' last "
                f"level ({wl.run.last_level()})"}
    wanted = with_relabel(cfg, wanted, human_top)
    others = [wl.model(ctx["experiment"][c]["model"]) for c in ctx["select"]["ranking"]]
    curations = curate_levels(wl.task, cfg, wanted, lambda lvl: problems(wl, g, lvl), wl.run.tiers["dev"].items(),
                              champion, others, certified, wl.trained_to(), label_free, wl.cfg.task.dev_per_level)
    corrupt = cfg.noise.rate > 0 and (not cfg.noise.generations or g in cfg.noise.generations)
    levels, items = [], []
    for cur in curations:
        kept, injected = cur.items, 0
        if corrupt and kept:  # a stream of its own: the level's problems are drawn from (g, level)
            kept, injected = inject_noise(kept, cfg.noise.rate, tier_rng(wl.cfg.seed, "curate", g, cur.level, 1))
        levels.append({"level": cur.level, "labelled": cur.labelled, "kept": len(kept), "agreement": cur.agreement,
                       "threshold": cur.threshold, "dev_passed": cur.dev_passed, "dev_wrong": cur.dev_wrong,
                       "voters": cur.voters, "method": cur.method, "judge": cur.judge, "skipped": cur.skipped,
                       "kept_checked": cur.checked, "kept_checked_wrong": cur.checked_wrong,
                       "injected": injected,
                       "champion_dev_acc": champion_acc.get(str(cur.level), 0.0),
                       "true_noise_hidden": true_noise(wl.task, kept)})
        items += kept
    curated = [s["level"] for s in levels if not s["skipped"]]
    stats = {"filter": cfg.filter, "upper_bound": cfg.filter == "verifier", "schedule": cfg.schedule,
             "certified": certified, "label_free": label_free,
             "consistent_reach": {str(k): v for k, v in free_reach.items()},
             "wanted": wanted, "levels": levels, "curated": curated, "kept": len(items),
             "injected": sum(s["injected"] for s in levels), "true_noise_hidden": true_noise(wl.task, items),
             "skipped": None if curated else levels[-1]["skipped"]}
    if not curated:
        return stats | {"shard": None}
    digest, path = save_shard(items, wl.run.data_dir)
    wl.store.x("INSERT OR REPLACE INTO data_manifests VALUES(?,?,?,?,?,?,?,0)", digest, g, "curated", str(path),
               len(items), json.dumps(curated), json.dumps(stats))
    return stats | {"shard": str(path)}


def problems(wl, g: int, level: int) -> list[Problem]:
    """Generation g's unlabelled problems of a level (the run seed's `curate` stream: the same on a re-run)."""
    return wl.task.generate(level, wl.cfg.curator.problems, tier_rng(wl.cfg.seed, "curate", g, level))


def consistent_reach(wl, g: int, champion, certified: int, trained_to: int, n: int = 200) -> dict[int, float]:
    """Label-free mode's stand-in for the champion's dev accuracy past its training length, which the accelerated
    schedule reads: per level from trained_to + 1 on, while it stays at the schedule's threshold, the share of
    (up to n of) the level's problems whose greedy answer, the same on every form, equals the answer composed
    from certified parts, of those that compose. Disagreement bounds the direct error from above on those
    problems; no label is read."""
    cfg, out = wl.cfg.curator, {}
    level = trained_to + 1
    while level <= wl.run.last_level():
        probs = problems(wl, g, level)[:n]
        if not composable(wl.task, level, probs, certified):
            break
        pairs = [(d, c) for d, c in zip(greedy_labels(wl.task, cfg, probs, champion),
                                         composed(wl.task, probs, champion, certified)) if c is not None]
        if not pairs:
            break
        out[level] = sum(d == c for d, c in pairs) / len(pairs)
        if out[level] < cfg.accelerate_threshold - 1e-12:
            break
        level += 1
    return out


def certified_frontier(wl, champion: str) -> int:
    """The longest run of levels from 1 the gate's own measure says the champion solves: its sealed frontier
    (the number the gate reports, not an item). Composed labels use only parts of these lengths. Under
    `gate.sealed: fresh` it is the frontier the last gate measured on its own sample."""
    if wl.cfg.gate.sealed == "fresh":
        row = wl.store.one("SELECT frontier FROM generations WHERE status='done' AND champion_model=? "
                           "ORDER BY idx DESC LIMIT 1", champion)
        if row is not None and row["frontier"] is not None:
            return int(row["frontier"])
    return evaluator.frontier(evaluator.accuracy(wl.grade(champion, "sealed")), wl.cfg.gate.solve_threshold)


def true_noise(task, items: list[tuple[Problem, str]]) -> float | None:
    """The true share of wrong labels, by the hidden checker: recorded for the studies, never used to decide."""
    return float(np.mean([not task.check(p, y) for p, y in items])) if items else None
