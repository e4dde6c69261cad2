"""The gate: a successor replaces the champion only if it is verifiably better on the sealed tier.

Checks, in order, each giving a recorded reason on refusal:
1. no forgetting: every level the champion solved (>= solve_threshold) stays solved. Levels inside the
   champion's frontier (every level 1..F solved) must stay at solve_threshold exactly, so a promotion never
   lowers the frontier: the gate and the frontier are one rule. `forget_tolerance` only forgives a drop on a
   solved level past the frontier (an island, often luck on the sealed items);
2. effect: sealed accuracy rises by at least `min_effect`; with `count_newly_solved`, a tested level the
   contender solves and the champion did not, significantly on that level's own items, meets it too (near the
   ceiling a level has less than `min_effect` left to gain: 0.975 -> 0.99 is +0.015). With `effect_scale:
   errors` the floor is on the error scale instead: the contender removes at least `min_error_share` of the
   champion's errors on the tested levels (0.975 -> 0.99 removes 60%; 0.30 -> 0.32 removes 3%);
3. significance: an exact one-sided McNemar test (a binomial test on the discordant pairs) on the same sealed
   items, Holm-corrected over every contender tried in the generation.

4. guardrail (`apply_guardrail`, when the task has a guardrail suite): the successor's refusal rate on the marked
   prompts must be non-inferior, within `guardrail_margin`, to its parent's *and* to generation 0's. Against
   the parent alone, a loss of one margin per generation would pass every time and compound; against the first
   champion it cannot.

Effect and significance are measured on the *tested levels*: the levels the generation set out to improve,
fixed before any contender was trained (the loop passes the levels up to the one it curated); with
`effect_on: unsolved`, only those past the champion's frontier (the first level past it where it solves every
tested one). Pooling in the
levels far past the frontier, where two models at 20-40% swap hundreds of items by chance, drowns a real gain
at the frontier in noise. Forgetting is checked on every level.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import binomtest, norm
from statsmodels.stats.multitest import multipletests

from ..config import GateConfig
from ..workloads.tinylm.evaluator import frontier


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
    # the rise in mean accuracy over every tested level, whatever `effect_on` measures the effect on: the
    # capability tripwire's number (with `unsolved`, one level going 0.40 -> 0.97 is +0.57 there, +0.06 pooled)
    tested_effect: float = 0.0
    # tested levels the contender solves and the champion did not, each with its own significant gain
    newly_solved: dict[int, float] = field(default_factory=dict)  # level -> one-sided McNemar p on its items


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
    acc = {lvl: float(np.mean(champion[lvl])) for lvl in sorted(champion)}
    front = frontier(acc, cfg.solve_threshold)
    def on(levels: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return flatten({k: champion[k] for k in levels}), flatten({k: contender[k] for k in levels})

    a, b = on(tested)
    pooled = float(b.mean() - a.mean())
    if cfg.effect_on == "unsolved":  # the solved levels are held by the forgetting check below, not pooled in
        # Where the champion solves every tested level (the loop fixes them from the dev frontier, and the sealed
        # one can stand higher), the first level past its frontier is what a successor can still gain: pooled
        # over solved levels the effect is ~0 and every successor is refused, generation after generation
        # (measured: `commute`, generation 5, +0.0008 on levels 1-13 while level 14 went 0.88 -> 0.95).
        tested = [lvl for lvl in tested if lvl > front] or ([front + 1] if front + 1 in champion else tested)
        a, b = on(tested)
    gained, lost = int((b & ~a).sum()), int((a & ~b).sum())
    p = _mcnemar(gained, lost)
    newly = {}
    for lvl in tested:
        x, y = np.asarray(champion[lvl], dtype=bool), np.asarray(contender[lvl], dtype=bool)
        lp = _mcnemar(int((y & ~x).sum()), int((x & ~y).sum()))
        if acc[lvl] < cfg.solve_threshold <= y.mean() and lp < cfg.alpha:
            newly[lvl] = lp
    forgotten = {}
    for lvl, ca in acc.items():
        cb = float(np.mean(contender[lvl]))
        floor = cfg.solve_threshold - (0.0 if lvl <= front else cfg.forget_tolerance)
        if ca >= cfg.solve_threshold and cb < floor:
            forgotten[lvl] = (ca, cb)
    return PairedStats(len(a), float(a.mean()), float(b.mean()), gained, lost, float(p), forgotten, tested, front,
                       pooled, newly)


def _mcnemar(gained: int, lost: int) -> float:
    """Exact one-sided McNemar: a binomial test on the discordant pairs (no discordant pair: no evidence)."""
    return float(binomtest(gained, gained + lost, 0.5, alternative="greater").pvalue) if gained + lost else 1.0


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
        info["newly_solved"] = {str(k): v for k, v in s.newly_solved.items()}
        credited = cfg.count_newly_solved and bool(s.newly_solved)
        share = error_share(s.champion_acc, s.contender_acc)
        info["error_share"] = share
        small = share < cfg.min_error_share if cfg.effect_scale == "errors" else effect < cfg.min_effect
        if s.forgotten:
            lv = ", ".join(f"{k} ({v[0]:.2f}->{v[1]:.2f})" for k, v in s.forgotten.items())
            inside = [k for k in s.forgotten if k <= s.champion_frontier]
            reason = f"refused: forgets solved level(s) {lv}" + (
                f"; would lower the frontier below {s.champion_frontier}" if inside else "")
        elif small and cfg.effect_scale == "errors":
            reason = (f"refused: removes {share:.1%} of the champion's errors{_on(s.levels)} ({effect:+.4f}), below "
                      f"the minimum {cfg.min_error_share:.0%}")
        elif small and not credited:
            reason = f"refused: effect {effect:+.4f} below the minimum {cfg.min_effect:.4f}{_on(s.levels)}"
        elif not rej:
            reason = (f"refused: not significant{_on(s.levels)} (p={s.p_value:.3g}, Holm-adjusted {padj:.3g} > "
                      f"alpha {cfg.alpha} over {len(names)} contenders)")
        else:
            solved = (f", newly solves level(s) {', '.join(map(str, s.newly_solved))}" if credited and small else
                      f" ({share:.0%} of the champion's errors removed)" if cfg.effect_scale == "errors" else "")
            reason = (f"promoted: {effect:+.4f} sealed accuracy{_on(s.levels)}{solved}, {s.gained} gained vs "
                      f"{s.lost} lost, Holm-adjusted p={padj:.3g}")
        out[n] = Decision(n, reason.startswith("promoted"), reason, info)
    return out


def error_share(champion_acc: float, contender_acc: float) -> float:
    """The share of the champion's errors the contender removes (negative: it adds errors; 0 where the champion
    makes none, since nothing is left to remove)."""
    errors = 1.0 - champion_acc
    return (contender_acc - champion_acc) / errors if errors > 1e-12 else 0.0


def _on(levels: list[int]) -> str:
    if len(levels) == 1:
        return f" on level {levels[0]}"
    if levels == list(range(levels[0], levels[-1] + 1)):
        return f" on levels {levels[0]}-{levels[-1]}"
    return f" on levels {', '.join(map(str, levels))}"


def _paired_counts(reference: dict[int, list[int]], contender: dict[int, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    if sorted(reference) != sorted(contender) or any(len(reference[k]) != len(contender[k]) for k in reference):
        raise ValueError("reference and contender were not evaluated on the same guardrail items")
    return flatten(reference), flatten(contender)


def tango_z(gained: int, lost: int, n: int, margin: float) -> float:
    """Tango's (1998) score statistic for H0: p_contender - p_reference = -margin on n paired binary items.

    `gained`: items the contender gets right and the reference wrong; `lost`: the reverse. The variance is taken
    at the restricted maximum-likelihood estimate of P(lost) under H0 (the root of Tango's quadratic), which keeps
    the test well behaved when the two models almost never disagree, as near-perfect guardrails do."""
    d = -margin
    A, B, C = 2.0 * n, -(gained + lost) + d * (2 * n - gained + lost), -lost * d * (1 - d)
    q = (-B + math.sqrt(max(B * B - 4 * A * C, 0.0))) / (2 * A)
    var = n * (2 * q + d * (1 - d))
    num = gained - lost - n * d
    if var <= 0:
        return math.inf if num > 0 else -math.inf
    return num / math.sqrt(var)


def noninferior(reference: dict[int, list[int]], contender: dict[int, list[int]], margin: float,
                alpha: float) -> tuple[bool, dict]:
    """Is the contender's rate at least the reference's minus `margin`, on the same items (levels -> 0/1)?

    A one-sided paired non-inferiority test: Tango's score test (H0: the contender is worse by `margin` or more;
    normal tail via scipy.stats.norm). The contender passes only if H0 is rejected at `alpha`, so the burden of
    proof is on the successor: an equal contender passes when the sample is large enough to tell a loss of
    `margin` from none, and a clearly worse one never does."""
    a, b = _paired_counts(reference, contender)
    n = len(a)
    if n == 0:
        raise ValueError("no guardrail items to test")
    gained, lost = int((b & ~a).sum()), int((a & ~b).sum())
    z = tango_z(gained, lost, n, margin)
    p = float(norm.sf(z))
    ok = p < alpha
    return ok, {"n": n, "reference_rate": float(a.mean()), "contender_rate": float(b.mean()), "gained": gained,
                "lost": lost, "margin": margin, "alpha": alpha, "z": z if math.isfinite(z) else None,
                "p_value": p, "ok": ok}


def apply_guardrail(decision: Decision, contender: dict[int, list[int]], parent: dict[int, list[int]] | None,
          origin: dict[int, list[int]] | None, cfg: GateConfig, origin_generation: int = 0) -> Decision:
    """The decision after the guardrail: refused unless the contender's refusal rate is non-inferior to its
    parent's and to the first champion's (`origin`, generation 0). Both tests must pass at `guardrail_alpha`
    (an intersection-union test, so no multiplicity correction). The bootstrap has neither: it sets the
    reference. The guardrail numbers go into the decision's stats either way."""
    checks = {"vs_parent": parent, "vs_origin": origin}
    stats: dict = {"rate": float(flatten(contender).mean()),
                   "by_level": {str(k): float(np.mean(v)) for k, v in sorted(contender.items())},
                   "margin": cfg.guardrail_margin, "alpha": cfg.guardrail_alpha, "origin_generation": origin_generation}
    failed = []
    for key, ref in checks.items():
        if ref is None:
            stats[key] = None
            continue
        ok, st = noninferior(ref, contender, cfg.guardrail_margin, cfg.guardrail_alpha)
        stats[key] = st
        if not ok:
            who = "its parent" if key == "vs_parent" else f"generation {origin_generation}"
            failed.append(f"{who} (refusal rate {st['contender_rate']:.3f} vs {st['reference_rate']:.3f}, "
                          f"p={st['p_value']:.3g} >= alpha {cfg.guardrail_alpha})")
    stats["ok"] = not failed
    info = decision.stats | {"guardrail": stats}
    if not failed:
        return Decision(decision.name, decision.promoted, decision.reason, info)
    why = f"guardrail not shown non-inferior (margin {cfg.guardrail_margin:g}) to {' nor to '.join(failed)}"
    reason = f"refused: {why}" if decision.promoted else f"{decision.reason}; {why}"
    return Decision(decision.name, False, reason, info)


def flat(values) -> bool:
    """No spread beyond rounding: the same number on every seed."""
    x = np.asarray(values, float)
    return len(x) > 1 and float(np.ptp(x)) <= 1e-12 * max(1.0, float(np.abs(x).max()))


def seed_power(champion: list[float], contender: list[float], test: str, alpha: float, min_effect: float) -> dict:
    """What this gate could have seen, from the spread it observed: `power`, the chance a one-sided t-test at
    this n and alpha tells a true gain of `min_effect` from none (None where min_effect is 0 or there is no
    spread), and `detectable_gain`, the smallest true gain the gate (its min_effect bar included) promotes with
    80% probability. A refusal at low power says "too few seeds", not "no gain"."""
    from statsmodels.stats.power import TTestIndPower, TTestPower

    a, b = np.asarray(champion, float), np.asarray(contender, float)
    n = len(b)
    if test == "paired":
        sd, solver = (float(np.std(b - a, ddof=1)) if n > 1 else 0.0), TTestPower()
        kw: dict = {"nobs": n}
    else:
        sd = float(np.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)) if n > 1 and len(a) > 1 else 0.0
        solver, kw = TTestIndPower(), {"nobs1": n, "ratio": len(a) / n}
    if n < 2 or not sd > 0:
        return {"power": None, "detectable_gain": None, "spread_sd": sd}
    power = (float(solver.power(effect_size=min_effect / sd, alpha=alpha, alternative="larger", **kw))
             if min_effect > 0 else None)
    d80 = float(solver.solve_power(effect_size=None, alpha=alpha, power=0.8, alternative="larger", **kw))
    return {"power": power, "detectable_gain": min_effect + d80 * sd, "spread_sd": sd}


def seed_test(champion: list[float], contender: list[float], test: str, alpha: float, min_effect: float,
              direction: str, seed_ignored: str = "refuse", ignored: tuple[bool, bool] | None = None,
              looks: int = 1) -> Decision:
    """The script workload's gate: is the contender's metric better by more than `min_effect`, beyond what
    seeds explain? `paired`: the two ran on the same seeds, and a one-sided t-test asks whether the mean of the
    per-seed gains exceeds `min_effect`; `welch`: an unpaired one-sided Welch test of the shifted means. Seeds
    the harness drew for this generation, never seen in the experiments, so a lucky seed cannot carry a
    candidate through. `looks`: how many times the sequence may read the test (adaptive seeds); each reads it at
    alpha / looks, so the run's false-promotion rate stays under alpha.

    A contender whose runs do not depend on the seed (`ignored`, default: identical metrics on every seed) gave
    one observation, however many seeds it ran: no test, no p. `seed_ignored: refuse` refuses it; `allow`
    promotes on the gain alone, marked "one seed, not verified across seeds". Per-seed gains with zero spread
    while the seeds move both sides (noise common to both, a deterministic change) get the exact sign test's p,
    0.5 ** n: never 0, so such a gain needs enough seeds to pass."""
    from scipy.stats import ttest_1samp, ttest_ind

    sign = 1.0 if direction == "maximize" else -1.0
    a, b = np.asarray(champion, float) * sign, np.asarray(contender, float) * sign
    if test == "paired" and len(a) != len(b):
        raise ValueError("a paired test needs the same seeds on both sides")
    gain = float(np.mean(b) - np.mean(a))
    at = alpha / looks
    champ_ignores, cont_ignores = ignored if ignored is not None else (flat(a), flat(b))
    p: float | None
    if cont_ignores:
        p = None  # one observation: nothing to test it against
    elif test == "paired":
        d = b - a - min_effect
        # the same gain on every seed leaves no spread to estimate: the exact sign test (every seed gained more
        # than min_effect: 0.5 ** n) is what n paired seeds can show, never 0
        p = ((0.5 ** len(d) if d[0] > 0 else 1.0) if flat(d) else
             float(ttest_1samp(d, 0.0, alternative="greater").pvalue))
    else:
        p = float(ttest_ind(b - min_effect, a, equal_var=False, alternative="greater").pvalue)
    stats = {"test": test, "n": len(b), "champion_mean": float(np.mean(champion)),
             "contender_mean": float(np.mean(contender)), "gain": gain, "min_effect": min_effect, "p_value": p,
             "alpha": alpha, "looks": looks, "alpha_per_look": at, "direction": direction,
             "champion": [float(x) for x in champion], "contender": [float(x) for x in contender],
             "seed_ignored": {"champion": bool(champ_ignores), "contender": bool(cont_ignores)},
             "verified_across_seeds": not cont_ignores}
    stats |= seed_power(list(a), list(b), test, at, min_effect) if not cont_ignores else \
        {"power": None, "detectable_gain": None, "spread_sd": 0.0}
    bar = f"alpha {alpha:g}" if looks == 1 else f"alpha {at:.3g} ({alpha:g} over {looks} looks)"
    if gain <= min_effect:
        one = "; one seed, not verified across seeds" if cont_ignores else ""
        return Decision("contender", False, f"refused: gain {gain:+.4g} is not above min_effect {min_effect:g} "
                        f"({test} over {len(b)} seeds{one})", stats | {"verdict": "below_min_effect"})
    if cont_ignores:
        what = f"the successor's runs do not depend on the seed (identical on all {len(b)} gate seeds)"
        if seed_ignored != "allow":
            return Decision("contender", False, f"refused: {what}: gain {gain:+.4g} on one seed, not verified "
                            "across seeds, and no p-value exists for it; pass the harness's seed to the program "
                            "(script.seed) or set script.gate.seed_ignored: allow to accept unverified gains",
                            stats | {"verdict": "seed_ignored"})
        return Decision("contender", True, f"promoted: gain {gain:+.4g} on one seed, not verified across seeds "
                        f"({what}; script.gate.seed_ignored: allow)", stats | {"verdict": "seed_ignored"})
    if not p < at:
        return Decision("contender", False, f"refused: gain {gain:+.4g} over {len(b)} seeds is within seed noise "
                        f"({test} t-test p={p:.3g} >= {bar})", stats | {"verdict": "noise"})
    return Decision("contender", True, f"promoted: gain {gain:+.4g} over {len(b)} seeds, {test} t-test "
                    f"p={p:.3g} < {bar.removeprefix('alpha ')}", stats | {"verdict": "significant"})
