"""The gate: a successor replaces the champion only if it is verifiably better on the sealed tier.

Checks, in order, each giving a recorded reason on refusal:
1. no forgetting: every level the champion solved (>= solve_threshold) stays solved. Levels inside the
   champion's frontier (every level 1..F solved) must stay at solve_threshold exactly, so a promotion never
   lowers the frontier: the gate and the frontier are one rule. `forget_tolerance` only forgives a drop on a
   solved level past the frontier (an island, often luck on the sealed items);
2. effect: sealed accuracy rises by at least `min_effect`;
3. significance: an exact one-sided McNemar test (a binomial test on the discordant pairs) on the same sealed
   items, Holm-corrected over every contender tried in the generation.

Effect and significance are measured on the *tested levels*: the levels the generation set out to improve,
fixed before any contender was trained (the loop passes the levels up to the one it curated). Pooling in the
levels far past the frontier, where two models at 20-40% swap hundreds of items by chance, drowns a real gain
at the frontier in noise. Forgetting is checked on every level.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import binomtest
from statsmodels.stats.multitest import multipletests

from .config import GateConfig
from .evaluator import frontier


@dataclass
class PairedStats:
    n: int
    champion_acc: float
    contender_acc: float
    gained: int  # items the contender gets right and the champion wrong
    lost: int  # items the champion gets right and the contender wrong
    p_value: float
    forgotten: dict[int, tuple[float, float]] = field(default_factory=dict)  # level -> (champion, contender)
    levels: list[int] = field(default_factory=list)  # the levels effect and significance were measured on
    champion_frontier: int = 0  # levels 1..this are held at solve_threshold with no tolerance


@dataclass
class Decision:
    name: str
    promoted: bool
    reason: str
    stats: dict


def flatten(items: dict[int, list[int]]) -> np.ndarray:
    return np.array([x for lvl in sorted(items) for x in items[lvl]], dtype=bool)


def paired(champion: dict[int, list[int]], contender: dict[int, list[int]], cfg: GateConfig,
           levels: list[int] | None = None) -> PairedStats:
    """Paired statistics on identical sealed items (levels must match), tested on `levels` (default: all)."""
    if sorted(champion) != sorted(contender) or any(len(champion[k]) != len(contender[k]) for k in champion):
        raise ValueError("champion and contender were not evaluated on the same sealed items")
    tested = sorted(champion) if levels is None else sorted(levels)
    if not tested or any(lvl not in champion for lvl in tested):
        raise ValueError(f"tested levels {tested} are not all among the sealed levels {sorted(champion)}")
    a, b = flatten({k: champion[k] for k in tested}), flatten({k: contender[k] for k in tested})
    gained, lost = int((b & ~a).sum()), int((a & ~b).sum())
    p = binomtest(gained, gained + lost, 0.5, alternative="greater").pvalue if gained + lost else 1.0
    acc = {lvl: float(np.mean(champion[lvl])) for lvl in sorted(champion)}
    front = frontier(acc, cfg.solve_threshold)
    forgotten = {}
    for lvl, ca in acc.items():
        cb = float(np.mean(contender[lvl]))
        floor = cfg.solve_threshold - (0.0 if lvl <= front else cfg.forget_tolerance)
        if ca >= cfg.solve_threshold and cb < floor:
            forgotten[lvl] = (ca, cb)
    return PairedStats(len(a), float(a.mean()), float(b.mean()), gained, lost, float(p), forgotten, tested, front)


def first_to_beat(incumbent: dict[int, list[int]], challengers: dict[str, dict[int, list[int]]],
                  cfg: GateConfig) -> tuple[str | None, dict[str, float]]:
    """The first challenger, in the order given, that beats the incumbent on the same items (the paired one-sided
    test at cfg.alpha), or None; and every challenger's p-value. Used to keep a proven recipe unless a probe
    shows more than noise."""
    p = {name: paired(incumbent, items, cfg).p_value for name, items in challengers.items()}
    return next((name for name in p if p[name] < cfg.alpha), None), p


def decide(
    champion: dict[int, list[int]], contenders: dict[str, dict[int, list[int]]], cfg: GateConfig,
    levels: list[int] | None = None,
) -> dict[str, Decision]:
    """One decision per contender. Holm runs over all of them: trying more candidates raises the bar."""
    names = list(contenders)
    stats = {n: paired(champion, contenders[n], cfg, levels) for n in names}
    pvals = [stats[n].p_value for n in names]
    reject, p_adj, _, _ = multipletests(pvals, alpha=cfg.alpha, method="holm")
    out = {}
    for n, rej, padj in zip(names, reject, p_adj):
        s = stats[n]
        effect = s.contender_acc - s.champion_acc
        info = asdict(s) | {"p_holm": float(padj), "m": len(names), "alpha": cfg.alpha, "effect": effect,
                            "min_effect": cfg.min_effect}
        info["forgotten"] = {str(k): list(v) for k, v in s.forgotten.items()}
        if s.forgotten:
            lv = ", ".join(f"{k} ({v[0]:.2f}->{v[1]:.2f})" for k, v in s.forgotten.items())
            inside = [k for k in s.forgotten if k <= s.champion_frontier]
            reason = f"refused: forgets solved level(s) {lv}" + (
                f"; would lower the frontier below {s.champion_frontier}" if inside else "")
        elif effect < cfg.min_effect:
            reason = f"refused: effect {effect:+.4f} below the minimum {cfg.min_effect:.4f}{_on(s.levels)}"
        elif not rej:
            reason = (f"refused: not significant{_on(s.levels)} (p={s.p_value:.3g}, Holm-adjusted {padj:.3g} > "
                      f"alpha {cfg.alpha} over {len(names)} contenders)")
        else:
            reason = (f"promoted: +{effect:.4f} sealed accuracy{_on(s.levels)}, {s.gained} gained vs {s.lost} "
                      f"lost, Holm-adjusted p={padj:.3g}")
        out[n] = Decision(n, reason.startswith("promoted"), reason, info)
    return out


def _on(levels: list[int]) -> str:
    if len(levels) == 1:
        return f" on level {levels[0]}"
    if levels == list(range(levels[0], levels[-1] + 1)):
        return f" on levels {levels[0]}-{levels[-1]}"
    return f" on levels {', '.join(map(str, levels))}"
