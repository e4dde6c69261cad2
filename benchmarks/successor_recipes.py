"""Replay one generation's successor training under other recipes and seeds, and score each on the sealed tier.

A loop run records the successor's job (parent checkpoint, data shards, recipe) in its workspace. This script
re-trains that job in process with recipe overrides, several seeds each, and prints sealed accuracy by length,
the >=99% frontier and the worst solved length: the measurement behind the default's `ema` and `loss`
(a successor that learns a new length must not forget the short ones). Benchmarks read the sealed tier; the
loop's candidates never do.

    .venv/bin/python benchmarks/successor_recipes.py runs/demo --generation 1 --seeds 3 \\
        --variant base:ema=0.0,loss=token ema:ema=0.99,loss=token both:ema=0.99,loss=sequence --write
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import yaml
from overrides import overrides

from successor.config import RunConfig
from successor.rundir import RunDir
from successor.workloads.tinylm import checkpoint
from successor.workloads.tinylm.data import load_shard
from successor.workloads.tinylm.evaluator import frontier
from successor.workloads.tinylm.recipe import Recipe
from successor.workloads.tinylm.train import Mixture, accuracy_by_level, job_sources, train


def successor_job(run: RunDir, generation: int) -> dict:
    """The job file of the generation's successor experiment (the full-budget training of the selected recipe)."""
    row = run.store.one("SELECT id FROM experiments WHERE generation=? AND kind='successor' AND status='done'",
                        generation)
    if row is None:
        raise SystemExit(f"{run.root}: generation {generation} has no finished successor experiment")
    return json.loads((run.workspace(row["id"]) / "job.json").read_text())


def worst_solved(acc: dict[int, float], solved: int) -> str:
    """The lowest accuracy over lengths 1..solved (the parent's frontier): what a successor must not lose."""
    return f"{min((acc[lvl] for lvl in acc if lvl <= solved), default=float('nan')):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--generation", type=int, required=True)
    ap.add_argument("--seeds", type=int, default=3, help="seeds 1..N per variant")
    ap.add_argument("--variant", nargs="+", default=["job:"], help="name:field=value,field=value (empty: the job's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="append the table to BENCHMARKS.md")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    run = RunDir(a.run_dir, RunConfig(**yaml.safe_load((a.run_dir / "config.yaml").read_text())))
    task = run.task
    job = successor_job(run, a.generation)
    sources = job_sources(job)
    sealed = load_shard(run.tiers["sealed"].path)  # checked against the digest the run recorded
    parent = checkpoint.load(Path(job["parent"]))
    before = accuracy_by_level(parent, task, sealed)
    solved = frontier(before)
    levels = sorted(before)
    head = "| variant | seed | " + " ".join(str(lvl) for lvl in levels) + " | frontier | worst of 1-" + \
        f"{solved} | wall |"
    rows = [head, "|---|---|---|---|---|---|",
            f"| parent | - | {' '.join(f'{before[lvl]:.3f}' for lvl in levels)} | {solved} | "
            f"{worst_solved(before, solved)} | - |"]
    print("\n".join(rows), flush=True)
    for spec in a.variant:
        name, _, sets = spec.partition(":")
        for seed in range(1, a.seeds + 1):
            recipe = Recipe(**job["recipe"] | overrides([s for s in sets.split(",") if s]) | {"seed": seed})
            t0 = time.time()
            model, _ = train(task, recipe, Mixture.of(recipe, sources), copy.deepcopy(parent))
            acc = accuracy_by_level(model, task, sealed)
            rows.append(f"| {name} | {seed} | {' '.join(f'{acc[lvl]:.3f}' for lvl in levels)} | {frontier(acc)} | "
                        f"{worst_solved(acc, solved)} | {time.time() - t0:.0f} s |")
            print(rows[-1], flush=True)
    if a.write:
        cmd = "`.venv/bin/python benchmarks/successor_recipes.py " + " ".join(
            [str(a.run_dir), "--generation", str(a.generation), "--seeds", str(a.seeds), "--variant", *a.variant]) + "`"
        with open(Path(__file__).resolve().parent.parent / "BENCHMARKS.md", "a") as f:
            f.write(f"\n### Successor recipes replayed on generation {a.generation} of {a.run_dir}\n\n{cmd}; "
                    f"sealed accuracy by length; the job's recipe: {job['recipe']}\n\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
