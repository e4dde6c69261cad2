"""Does a successor learn a length its champion can barely answer, given exact labels? Train one successor job of
a run again, outside the loop, under a changed mixture or step count, and score lengths around it on fresh
problems with the hidden checker (a study: the loop never reads it).

    .venv/bin/python benchmarks/new_length_probe.py /tmp/parts/s1 xd3768a6d31cc86d 22 as_is
    .venv/bin/python benchmarks/new_length_probe.py /tmp/parts/s1 xd3768a6d31cc86d 22 frontier   # 20% of rows
    .venv/bin/python benchmarks/new_length_probe.py /tmp/parts/s1 xd3768a6d31cc86d 22 steps1500

COND: `as_is` (the job's own mixture and steps), `frontier` (20% of every batch from the job's labels of LENGTH),
`steps1500` (twice the steps). Prints the parent's and the trained model's accuracy by length.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from successor.workloads.tinylm import checkpoint
from successor.workloads.tinylm.data import load_shard
from successor.workloads.tinylm.decode import greedy
from successor.workloads.tinylm.recipe import Recipe
from successor.workloads.tinylm.tasks import get_task
from successor.workloads.tinylm.train import Mixture, train


def accuracy(model, task, tests: dict) -> dict[int, float]:
    return {lvl: round(float(np.mean([task.check(p, y) for p, y in zip(probs, greedy(model, task, probs))])), 3)
            for lvl, probs in tests.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("job")
    ap.add_argument("length", type=int)
    ap.add_argument("cond", choices=["as_is", "frontier", "steps1500"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=400)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    job = json.loads((a.run_dir / "jobs" / f"{a.job}.json").read_text())
    task = get_task(job["task"])
    human = [x for p in job["data"]["human"] for x in load_shard(Path(p))]
    newest = [x for p in job["data"]["newest"] for x in load_shard(Path(p))]
    top = [x for x in newest if x[0].level == a.length]
    rng = np.random.default_rng(12345)
    tests = {lvl: task.generate(lvl, a.n, rng) for lvl in (8, a.length - 4, a.length - 2, a.length - 1, a.length,
                                                              a.length + 1)}
    recipe = Recipe(**job["recipe"])
    parent = checkpoint.load(Path(job["parent"]))
    print("parent", accuracy(parent, task, tests), flush=True)
    weights = {"newest": recipe.mix_newest, "human": recipe.mix_human}
    sources = {"newest": newest, "human": human}
    if a.cond == "frontier":
        sources["top"], weights = top, {"newest": recipe.mix_newest - 0.1, "human": recipe.mix_human, "top": 0.2}
    if a.cond == "steps1500":
        recipe = recipe.model_copy(update={"steps": 1500})
    t = time.time()
    model, _ = train(task, recipe, Mixture(sources, weights), parent=parent)
    print(a.cond, accuracy(model, task, tests), "train_s", round(time.time() - t), flush=True)


if __name__ == "__main__":
    main()
