"""Bootstrap probe: how well does a recipe learn reversed addition on human data, and how far does it
generalise one length past it? Prints a table row and appends it to BENCHMARKS.md.

    .venv/bin/python benchmarks/bootstrap_probe.py --max-level 5 --steps 1200 \
        --set max_offset=20 batch_size=128 warmup=0 weight_decay=0.0

Accuracy is exact match on 100 dev problems per length, decoded at position offset 0.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from overrides import overrides

from successor.workloads.tinylm.data import labelled, tier_rng
from successor.workloads.tinylm.recipe import Recipe
from successor.workloads.tinylm.tasks import get_task
from successor.workloads.tinylm.train import Mixture, accuracy_by_level, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-level", type=int, default=5)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--per-level", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--set", nargs="*", default=[], help="recipe overrides, field=value")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--task", default="addition", help="task name (successor.workloads.tinylm.tasks.TASKS)")
    ap.add_argument("--beyond", type=int, default=3, help="levels past the human data to evaluate")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    over = overrides(a.set)
    task = get_task(a.task)
    human = labelled(task, list(range(1, a.max_level + 1)), a.per_level, tier_rng(0, "human"))
    recipe = Recipe(**{"steps": a.steps, "init": "scratch", "mix_newest": 0.0, "mix_human": 1.0} | over)
    t0 = time.time()
    model, _ = train(task, recipe, Mixture({"human": human}, {"human": 1.0}))
    wall = time.time() - t0
    dev = labelled(task, list(range(1, a.max_level + a.beyond + 1)), 100, tier_rng(0, "dev"))
    acc = accuracy_by_level(model, task, dev)
    cells = " | ".join(f"{acc[k]:.2f}" for k in sorted(acc))
    row = (f"| {a.task if a.task != 'addition' else ''} 1-{a.max_level} | {a.steps} | {' '.join(a.set) or 'defaults'} | {cells} | {wall:.0f} s "
           f"({a.threads} thr) |")
    print(row)
    if not a.no_write:
        with open(Path(__file__).resolve().parent.parent / "BENCHMARKS.md", "a") as f:
            f.write(row + "\n")


if __name__ == "__main__":
    main()
