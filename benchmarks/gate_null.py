"""The gate under the null: how often it promotes a successor that is no better, and how often one that is.

A false promotion replaces the champion by noise; a missed one loses a generation. Both are rates, and a loop run
gives one trial per generation, so this script makes many:
- same weights: the contender is the champion, item for item (must never promote);
- seed retrains: one generation's successor job re-trained from the same parent under seeds 1..K and graded on
  the sealed tier; every ordered pair (champion i, contender j) is a trial where neither is truly better, and
  paired bootstrap draws of the sealed items (the same draw for both models) give many more;
- power: a retrain's sealed items with a known share `delta` of the tested items turned from wrong to right, plus
  either symmetric item noise at the rate seen between retrains (`contender_with`) or another retrain's spread
  (`pair_power`); and a sweep of `min_effect` over the seed-retrain pairs.
Every trial is one `gate.decide` with the run's GateConfig, the generation's tested levels and (but for one row)
one contender. Retrains are cached as item lists under the run directory (git ignores runs/), so a rerun only
redoes the trials, in about a minute.

    .venv/bin/python benchmarks/gate_null.py --run-dir runs/demo2 --generation 2 --seeds 12 --threads 1 --write
"""
from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import textwrap
import time
from pathlib import Path
from typing import NoReturn

import numpy as np
from statsmodels.stats.proportion import proportion_confint

from successor.config import GateConfig
from successor.oversight.gate import decide

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## The gate under the null: false promotions and power"
GOAL = 0.05  # the bar for the false-promotion rate
Items = dict[int, list[int]]


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not a usage dump
        raise SystemExit(f"gate_null.py: {message} (see --help)")


def promoted(champion: Items, contender: Items, cfg: GateConfig, levels: list[int] | None) -> bool:
    return decide(champion, {"contender": contender}, cfg, levels)["contender"].promoted


def rate(hits: int, trials: int) -> tuple[float, float, float]:
    """The observed rate and its exact (Clopper-Pearson) 95% interval: no normal approximation near 0."""
    lo, hi = proportion_confint(hits, trials, alpha=0.05, method="beta")
    return hits / trials, float(lo), float(hi)


def resample(a: Items, b: Items, rng: np.random.Generator) -> tuple[Items, Items]:
    """One paired bootstrap draw: per level, the same sealed items (with replacement) for both models."""
    idx = {lvl: rng.integers(0, len(v), len(v)) for lvl, v in a.items()}
    return ({lvl: np.asarray(v)[idx[lvl]].tolist() for lvl, v in a.items()},
            {lvl: np.asarray(v)[idx[lvl]].tolist() for lvl, v in b.items()})


def discordance(runs: list[Items]) -> dict[int, float]:
    """Mean number of items per level on which two retrains disagree: the noise a retrain adds."""
    pairs = list(itertools.combinations(runs, 2))
    return {lvl: float(np.mean([np.sum(np.array(x[lvl]) != np.array(y[lvl])) for x, y in pairs])) for lvl in runs[0]}


def contender_with(champion: Items, delta: float, noise: dict[int, float], levels: list[int],
                   rng: np.random.Generator) -> Items:
    """A contender truly better by `delta` of the tested items: round(delta * n) of the champion's wrong tested
    items, drawn at random, turn right. Then, on every level, each right item turns wrong and each other wrong item
    turns right with the probability that gives noise[level] / 2 expected flips each way: symmetric, so the
    expected effect is exactly delta while the observed one scatters as it does between retrains."""
    out = {lvl: np.array(v, dtype=bool) for lvl, v in champion.items()}
    wrong = [(lvl, int(i)) for lvl in levels for i in np.flatnonzero(~out[lvl])]
    k = round(delta * sum(len(out[lvl]) for lvl in levels))
    if k > len(wrong):
        raise ValueError(f"delta {delta} needs {k} wrong tested items; the champion has {len(wrong)}")
    fixed = {lvl: np.zeros(len(x), dtype=bool) for lvl, x in out.items()}
    for j in rng.choice(len(wrong), k, replace=False):
        fixed[wrong[j][0]][wrong[j][1]] = True
    for lvl, x in out.items():
        for pool in (x.copy(), ~x & ~fixed[lvl]):  # right items, then wrong ones not already fixed
            if pool.any():
                flip = pool & (rng.random(len(x)) < min(1.0, noise.get(lvl, 0.0) / 2 / pool.sum()))
                x[flip] = ~x[flip]
        x[fixed[lvl]] = True
    return {lvl: x.astype(int).tolist() for lvl, x in out.items()}


def retrains(run_dir: Path, generation: int, seeds: int, cache: Path | None, threads: int) -> dict:
    """The generation's successor job re-trained from its parent under seeds 1..K, each graded on the sealed tier,
    with the run's GateConfig and the gate's tested levels. All of it is cached: once every seed is there, the run
    directory is not opened again (a later config schema that RunDir would refuse for this run does not matter)."""
    cache = cache or run_dir.resolve() / "benchmarks" / f"gate_null_g{generation}_t{threads}.json"
    data = json.loads(cache.read_text()) if cache.exists() else {}
    if data.get("threads") != threads or "levels" not in data or any(str(s) not in data.get("seeds", {})
                                                                     for s in range(1, seeds + 1)):
        data = train_missing(run_dir, generation, seeds, cache, threads, data)
    return {"runs": [{int(k): v for k, v in data["seeds"][str(s)]["items"].items()} for s in range(1, seeds + 1)],
            "levels": data["levels"], "cfg": GateConfig(**data["gate"]), "recipe": data["recipe"],
            "wall": [data["seeds"][str(s)]["wall_s"] for s in range(1, seeds + 1)]}


def train_missing(run_dir: Path, generation: int, seeds: int, cache: Path, threads: int, data: dict) -> dict:
    """Re-train the seeds the cache lacks (all of them if the run, the job or the thread count changed)."""
    import copy

    import yaml
    from successor_recipes import successor_job

    from successor.config import RunConfig
    from successor.rundir import RunDir
    from successor.workloads.tinylm import checkpoint
    from successor.workloads.tinylm.evaluator import grade
    from successor.workloads.tinylm.recipe import Recipe
    from successor.workloads.tinylm.train import Mixture, job_sources, train

    run = RunDir(run_dir, RunConfig.model_validate(yaml.safe_load((run_dir / "config.yaml").read_text())))
    gate = run.store.stage_result(generation, "gate")
    if gate is None:
        raise SystemExit(f"{run_dir}: generation {generation} has no finished gate stage")
    job = successor_job(run, generation)
    # every part of the sealed tier: with the ladder, the tested levels reach past the first part's (a cache
    # graded on the first part alone has another digest here, and is made again)
    key = {"sealed": run.tiers["sealed"].digest_now, "parent": Path(job["parent"]).name, "recipe": job["recipe"]}
    if data.get("key") != key or data.get("threads") != threads:  # threads change the weights (seed 1: 0.760 vs
        data = {"key": key, "threads": threads, "seeds": {}}  # 0.752 at length 9 on 2 and 1 threads)
    data |= {"levels": gate["tested_levels"], "gate": run.cfg.gate.model_dump(), "recipe": job["recipe"]}
    missing = [s for s in range(1, seeds + 1) if str(s) not in data["seeds"]]
    if missing:
        sources, parent = job_sources(job), checkpoint.load(Path(job["parent"]))
        problems = [p for p, _ in run.tiers["sealed"].items()]
    for seed in missing:
        t0 = time.time()
        recipe = Recipe(**job["recipe"] | {"seed": seed})
        model, _ = train(run.task, recipe, Mixture.of(recipe, sources), copy.deepcopy(parent))
        data["seeds"][str(seed)] = {"items": grade(model, run.task, problems), "wall_s": time.time() - t0}
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(data))
        print(f"seed {seed}: retrained and graded in {time.time() - t0:.0f} s", flush=True)
    cache.write_text(json.dumps(data))
    return data


def table(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |"
                                                                                   for r in rows])


def cell(hits: int, trials: int) -> str:
    r, lo, hi = rate(hits, trials)
    return f"{hits:,} ({r:.1%}; {lo:.1%}-{hi:.1%})"


def pair_power(runs: list[Items], pairs: list[tuple[int, int]], delta: float, cfg: GateConfig, levels: list[int],
               trials: int, rng: np.random.Generator) -> int:
    """Promotions over random ordered retrain pairs whose contender has `delta` of the tested items fixed: a true
    gain on top of the seeds' own spread, as a real successor would face."""
    return sum(promoted(runs[i], contender_with(runs[j], delta, {}, levels, rng), cfg, levels)
               for i, j in (pairs[rng.integers(len(pairs))] for _ in range(trials)))


def reflow(text: str) -> str:
    """Wrap prose paragraphs at 115 columns like the rest of BENCHMARKS.md; headings and tables stay as they are."""
    blocks = [b if b.startswith(("|", "#")) else textwrap.fill(" ".join(b.split()), 115, break_long_words=False,
                                                                break_on_hyphens=False) for b in text.split("\n\n")]
    return "\n\n".join(blocks)


def shown(path: Path) -> str:
    p = path.resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def machine() -> str:
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores ({cpu}), {gpu}, torch threads {torch.get_num_threads()}"


def write(section: str) -> None:
    """Replace this benchmark's section in BENCHMARKS.md, or insert it before the historical record."""
    path = ROOT / "BENCHMARKS.md"
    lines = path.read_text().splitlines()
    if SECTION in lines:
        start = lines.index(SECTION)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    else:
        start = end = next((i for i, ln in enumerate(lines) if ln.startswith("## Earlier")), len(lines))
    path.write_text("\n".join(lines[:start] + section.rstrip("\n").splitlines() + [""] + lines[end:]) + "\n")


def main() -> None:
    ap = Parser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "demo2", help="a finished run (default runs/demo2)")
    ap.add_argument("--generation", type=int, default=2, help="whose successor job to re-train (default 2)")
    ap.add_argument("--seeds", type=int, default=8, help="retrains, seeds 1..K (1-2 min each on 2 shared cores)")
    ap.add_argument("--bootstrap", type=int, default=2000, help="paired bootstrap trials under the null")
    ap.add_argument("--trials", type=int, default=500, help="power trials per delta")
    ap.add_argument("--deltas", type=float, nargs="+", default=[0.0, 0.005, 0.01, 0.02, 0.05],
                    help="true improvements, as shares of the tested sealed items")
    ap.add_argument("--min-effects", type=float, nargs="+", default=[0.005, 0.0075, 0.01, 0.0125],
                    help="min_effect values to sweep over seed-retrain pairs")
    ap.add_argument("--error-shares", type=float, nargs="*", default=[0.1, 0.2, 0.3, 0.4, 0.5],
                    help="min_error_share values to sweep under effect_scale: errors (the floor on the error "
                    "scale, count_newly_solved off)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the retrains (they change the "
                    "weights, so each count has its own cache)")
    ap.add_argument("--rng", type=int, default=0, help="seed of the bootstrap and power draws")
    ap.add_argument("--cache", type=Path, help="retrain cache (default RUN_DIR/benchmarks/gate_null_gG_tT.json)")
    ap.add_argument("--effect-on", choices=["tested", "unsolved"], help="measure effect and significance on every "
                    "tested level or only past the champion's frontier (default: the run's gate setting)")
    ap.add_argument("--write", action="store_true", help="put the section into BENCHMARKS.md")
    a = ap.parse_args()
    if not (a.run_dir / "lineage.db").exists():
        ap.error(f"--run-dir {a.run_dir}: not a run directory (no lineage.db); pass one with --run-dir")
    if a.seeds < 2 or a.bootstrap < 1 or a.trials < 1 or a.threads < 1:
        ap.error("--seeds must be >= 2, and --bootstrap, --trials and --threads >= 1")
    if any(not 0 <= d < 1 for d in a.deltas + a.min_effects) or any(not 0 < e <= 1 for e in a.error_shares):
        ap.error("--deltas and --min-effects must lie in [0, 1), --error-shares in (0, 1]")
    import torch

    torch.set_num_threads(a.threads)
    r = retrains(a.run_dir, a.generation, a.seeds, a.cache, a.threads)
    runs, levels, cfg = r["runs"], r["levels"], r["cfg"]
    if a.effect_on:
        cfg = cfg.model_copy(update={"effect_on": a.effect_on})
    rng = np.random.default_rng(a.rng)
    pairs = list(itertools.permutations(range(len(runs)), 2))
    draws = [resample(runs[i], runs[j], rng) for i, j in (pairs[rng.integers(len(pairs))] for _ in range(a.bootstrap))]
    t0 = time.time()
    gc.freeze()  # statsmodels' Holm runs gc.collect() on every call: 0.5-0.9 s over torch's heap and these draws
    same = sum(promoted(x, x, cfg, levels) for x in runs) + sum(promoted(c, c, cfg, levels) for c, _ in draws)
    null = [["same weights (each retrain against itself, and each bootstrap draw's champion)",
             f"{len(runs) + len(draws):,}", cell(same, len(runs) + len(draws))]]
    on_pairs = {}
    for me in (cfg.min_effect, 0.0):
        c, name = cfg.model_copy(update={"min_effect": me}), "" if me else ", significance only (min_effect 0)"
        on_pairs[me] = sum(promoted(runs[i], runs[j], c, levels) for i, j in pairs)
        null.append([f"seed retrains, every ordered pair{name}", f"{len(pairs):,}", cell(on_pairs[me], len(pairs))])
        hits = sum(promoted(x, y, c, levels) for x, y in draws)
        null.append([f"seed retrains, paired bootstrap of the sealed items{name}", f"{len(draws):,}",
                     cell(hits, len(draws))])
    triples = [(i, j, k) for i, j in pairs for k in range(len(runs)) if k not in (i, j)]
    hits = sum(decide(runs[i], {"j": runs[j], "k": runs[k]}, cfg, levels)["j"].promoted for i, j, k in triples)
    null.append(["seed retrains, two contenders per decision as in the loop (Holm over 2), the first promoted",
                 f"{len(triples):,}", cell(hits, len(triples))])
    stats = [decide(runs[i], {"c": runs[j]}, cfg, levels)["c"].stats for i, j in pairs]
    n, noise = stats[0]["n"], discordance(runs)
    power = []
    for d in a.deltas:
        syn = sum(promoted(ch, contender_with(ch, d, noise, levels, rng), cfg, levels)
                  for ch in (runs[rng.integers(len(runs))] for _ in range(a.trials)))
        real = pair_power(runs, pairs, d, cfg, levels, a.trials, rng)
        power.append([f"{d:.1%}", f"{round(d * n):,}", f"{a.trials:,}", cell(syn, a.trials), cell(real, a.trials)])
    sweep = []
    for me in a.min_effects:
        c = cfg.model_copy(update={"min_effect": me})
        hits = sum(promoted(runs[i], runs[j], c, levels) for i, j in pairs)
        sweep.append([f"{me:g}", cell(hits, len(pairs))] + [
            f"{pair_power(runs, pairs, d, c, levels, a.trials, rng) / a.trials:.1%}" for d in a.deltas if d])
    errors_sweep = []
    for share in a.error_shares:
        c = cfg.model_copy(update={"effect_scale": "errors", "min_error_share": share, "count_newly_solved": False})
        hits = sum(promoted(runs[i], runs[j], c, levels) for i, j in pairs)
        errors_sweep.append([f"{share:.0%}", cell(hits, len(pairs))] + [
            f"{pair_power(runs, pairs, d, c, levels, a.trials, rng) / a.trials:.1%}" for d in a.deltas if d])
    took = time.time() - t0
    tested = [float(np.mean([x for lvl in levels for x in run[lvl]])) for run in runs]
    spread = {lvl: (min(np.mean(x[lvl]) for x in runs), max(np.mean(x[lvl]) for x in runs)) for lvl in levels}
    over = np.std([s["effect"] for s in stats]) / np.mean([np.sqrt(s["gained"] + s["lost"]) / n for s in stats])
    pair_rate, sig_rate = rate(on_pairs[cfg.min_effect], len(pairs)), rate(on_pairs[0.0], len(pairs))
    verdict = "above" if pair_rate[1] > GOAL else "not clearly above" if pair_rate[0] > GOAL else "within"
    cmd = (f".venv/bin/python benchmarks/gate_null.py --run-dir {shown(a.run_dir)} --generation {a.generation} "
           f"--seeds {a.seeds} --threads {a.threads} --bootstrap {a.bootstrap} --trials {a.trials} --deltas "
           f"{' '.join(map(str, a.deltas))} --min-effects {' '.join(map(str, a.min_effects))} --rng {a.rng}")
    job = r["recipe"]
    text = reflow(f"""{SECTION}

How often the gate promotes a successor that is no better than its champion, and how often one that is better by
a known amount. Generation {a.generation} of `{shown(a.run_dir)}`: its successor job ({job['steps']} steps, lr
{job['lr']}, `ema` {job['ema']}, loss per {job['loss']}) re-trained from the same parent under seeds 1-{a.seeds},
each graded on the sealed tier ({len(runs[0][1])} items per length). Each trial is one `gate.decide` with the
run's gate (alpha {cfg.alpha}, min_effect {cfg.min_effect}, forget_tolerance {cfg.forget_tolerance}), the
generation's tested lengths {levels[0]}-{levels[-1]} ({n:,} items) and one contender unless a row says two (the
loop tries two, and Holm raises the bar). Machine: {machine()}, shared with other work; a retrain and its grading
took {min(r['wall']):.0f}-{max(r['wall']):.0f} s. Command: `{cmd} --write` (retrains are cached in
`RUN_DIR/benchmarks/`; a larger `--seeds` trains only the new ones; the trials took {took:.0f} s).

{table(['null trial', 'trials', 'promoted (rate; exact 95% interval)'], null)}

Same weights never promote. Seed retrains of one job are promoted over each other at {pair_rate[0]:.1%} of ordered
pairs, {verdict} the {GOAL:.0%} goal. On the tested lengths they scored {min(tested):.4f}-{max(tested):.4f} (by
length, lowest-highest seed: {', '.join(f'{k}: {lo:.3f}-{hi:.3f}' for k, (lo, hi) in spread.items() if hi > lo)});
two of them disagree on {np.mean([s['gained'] + s['lost'] for s in stats]):.0f} tested items on average, the
largest effect between two was {max(s['effect'] for s in stats):+.4f} and the smallest one-sided p
{min(s['p_value'] for s in stats):.2g}. The exact McNemar test holds both models fixed and asks whether one beats
the other on the problems the sealed items are drawn from; two seeds of a recipe are two models, and one of them
often is better, by the seed's luck: the effect between two retrains varies {over:.1f} times as much as the
binomial of their discordant items allows. `min_effect` takes the rate from {sig_rate[0]:.1%} (significance
alone) to {pair_rate[0]:.1%}. Trials in a row are not independent (K models make the pairs, (i, j) mirrors (j, i),
the bootstrap reuses those pairs and measures only the sealed tier's sampling), so the intervals are narrower than
the truth.

Power. Symmetric noise: a random retrain is the champion; the contender is its items with `delta` of the tested
items, drawn among the champion's wrong tested ones, turned right (the true gain), then on every length each right
item turned wrong and each other wrong item turned right with the probability that gives half the retrains' mean
disagreement at that length each way (expected effect exactly `delta`; item noise only, McNemar's own model).
Retrain pair: a random ordered pair of retrains, `delta` of the tested items turned right among the contender's
wrong ones (expected effect `delta` over pairs, plus the seeds' spread).

{table(['true gain (share of tested items)', 'items', 'trials', 'promoted, symmetric noise',
        'promoted, retrain pair'], power)}

What `min_effect` would hold the goal between seed retrains, and what it costs in power on retrain pairs
({a.trials} fresh trials a cell; chosen on these {a.seeds} seeds, so optimistic):

{table(['min_effect', 'seed-retrain pairs promoted'] + [f'power at {d:.1%}' for d in a.deltas if d], sweep)}

The floor on the error scale instead (`effect_scale: errors`: the contender removes at least `min_error_share` of
the champion's errors on the tested lengths; `count_newly_solved` off, since a length newly solved removes most of
its errors), same pairs, same kind of power trials:

{table(['min_error_share', 'seed-retrain pairs promoted'] + [f'power at {d:.1%}' for d in a.deltas if d],
       errors_sweep)}
""")
    print(text)
    if a.write:
        write(text)


if __name__ == "__main__":
    main()
