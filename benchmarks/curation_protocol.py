"""Curation protocols without the rest of the loop: bootstrap a champion (or load one), then for each
generation label the next length with the offset vote, train a successor on the mixture, and print its dev
accuracy by length. No candidates and no gate (every successor is kept), so a protocol is measured in a few
minutes. Label noise is measured with the hidden checker, which the curator never sees.

    .venv/bin/python benchmarks/curation_protocol.py --save runs/boot8 --bset warmup=50   # bootstrap 1-8
    .venv/bin/python benchmarks/curation_protocol.py --boot runs/boot8 --offsets 0,3,7 --agreement 1.0
    .venv/bin/python benchmarks/curation_protocol.py --boot runs/boot8 --offsets 0-19 --agreement 0.7
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from overrides import overrides

from successor.config import CuratorConfig
from successor.workloads.tinylm import checkpoint
from successor.workloads.tinylm.curator import curate_ahead
from successor.workloads.tinylm.data import labelled, tier_rng
from successor.workloads.tinylm.evaluator import frontier
from successor.workloads.tinylm.recipe import Recipe
from successor.workloads.tinylm.tasks import get_task
from successor.workloads.tinylm.train import Mixture, accuracy_by_level, train


def offsets(spec: str) -> list[int]:
    if "-" in spec:
        lo, hi = spec.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(x) for x in spec.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-level", type=int, default=8, help="human data covers lengths 1..max-level")
    ap.add_argument("--boot-steps", type=int, default=3000)
    ap.add_argument("--boot", type=Path, help="load this champion instead of bootstrapping")
    ap.add_argument("--save", type=Path, help="save the bootstrapped champion here")
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--problems", type=int, default=1500)
    ap.add_argument("--offsets", default="0-19")
    ap.add_argument("--agreement", type=float, default=0.7)
    ap.add_argument("--max-dev-noise", type=float, default=None,
                    help="calibrate the vote on dev items as the loop does; without it the agreement is fixed")
    ap.add_argument("--levels-ahead", type=int, default=1, help="levels labelled per generation (curate_ahead)")
    ap.add_argument("--bset", nargs="*", default=[], help="bootstrap recipe overrides, field=value")
    ap.add_argument("--sset", nargs="*", default=[], help="successor recipe overrides, field=value")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    task = get_task("addition")
    human = labelled(task, list(range(1, a.max_level + 1)), 20000, tier_rng(0, "human"))
    dev = labelled(task, list(range(1, a.max_level + 9)), 100, tier_rng(0, "dev"))
    t0 = time.time()

    def show(tag: str, model) -> tuple[dict, int]:
        acc = accuracy_by_level(model, task, dev)
        front = frontier(acc)
        print(f"{tag:>3} {time.time() - t0:5.0f}s frontier {front:2d} | " +
              " ".join(f"{acc[k]:.2f}" for k in sorted(acc)), flush=True)
        return acc, front

    if a.boot:
        model = checkpoint.load(a.boot)
    else:
        recipe = Recipe(**{"steps": a.boot_steps, "init": "scratch", "warmup": 0, "mix_newest": 0.0,
                           "mix_human": 1.0} | overrides(a.bset))
        model, _ = train(task, recipe, Mixture({"human": human}, {"human": 1.0}))
        if a.save:
            checkpoint.save(model, a.save, meta={"recipe": recipe.model_dump()})
    acc, front = show("g0", model)
    cfg = CuratorConfig(filter="offset-vote", offsets=offsets(a.offsets), agreement=a.agreement,
                        problems=a.problems, max_dev_noise=a.max_dev_noise or 0.0, levels_ahead=a.levels_ahead)
    calibration = dev if a.max_dev_noise is not None else []
    curated: list[list] = []
    for g in range(1, a.generations + 1):
        first = max(front, a.max_level) + 1
        new = []
        for cur in curate_ahead(task, cfg, first, a.max_level + 8,
                                lambda lvl: task.generate(lvl, a.problems, tier_rng(0, "curate", g, lvl)),
                                calibration, model):
            noise = np.mean([not task.check(p, y) for p, y in cur.items]) if cur.items else float("nan")
            print(f"    curate length {cur.level}: kept {len(cur.items)} of {a.problems} at agreement "
                  f"{cur.threshold}, label noise {noise:.3f}{', skipped: ' + cur.skipped if cur.skipped else ''}",
                  flush=True)
            new += cur.items
        if new:
            curated.append(new)
        recipe = Recipe(**{"init": "parent", "steps": 400, "lr": 5e-4, "warmup": 0, "seed": g} | overrides(a.sset))
        older = [x for c in curated[:-1] for x in c]
        mix = Mixture.of(recipe, {"newest": curated[-1] if curated else [], "human": human, "older": older})
        model, _ = train(task, recipe, mix, copy.deepcopy(model))
        acc, front = show(f"g{g}", model)


if __name__ == "__main__":
    main()
