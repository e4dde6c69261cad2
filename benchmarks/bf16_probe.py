"""Training CPU in bf16 against fp32 (`Recipe.precision`, issue 25): the default successor recipe from scratch on
lengths 1-16 (300 problems a length), `--steps` steps, one torch thread, the two alternating over `--reps`
repetitions; prints each one's process CPU seconds and the ratio of medians. Accuracy is not measured here.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bf16_probe.py [--steps 60] [--reps 3]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from successor.config import RunConfig
from successor.workloads.tinylm.data import labelled
from successor.workloads.tinylm.tasks import get_task
from successor.workloads.tinylm.train import Mixture, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    task = get_task("addition")
    data = labelled(task, list(range(1, 17)), 300, np.random.default_rng(0))
    base = RunConfig().successor.model_copy(update={"init": "scratch", "steps": a.steps, "ema": 0.0})
    cpu: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for rep in range(a.reps):
        for prec in ("fp32", "bf16") if rep % 2 == 0 else ("bf16", "fp32"):
            r = base.model_copy(update={"precision": prec})
            t = time.process_time()
            train(task, r, Mixture.of(r, {"newest": data, "human": data, "older": []}))
            cpu[prec].append(time.process_time() - t)
    for k, v in cpu.items():
        print(f"{k}: {' '.join(f'{x:.2f}' for x in v)} CPU-s, median {np.median(v):.2f}")
    print(f"bf16 / fp32: {np.median(cpu['bf16']) / np.median(cpu['fp32']):.3f}")


if __name__ == "__main__":
    main()
