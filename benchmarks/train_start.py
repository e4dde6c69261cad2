"""The fixed start of a training process: the CPU a subprocess spends to import torch and train three steps of a
tiny model, with the trainer's AdamW (successor/workloads/tinylm/optim.py) and with torch.optim.AdamW, which
imports torch._dynamo on first use. Interleaved pairs, the median of each.

    .venv/bin/python benchmarks/train_start.py --pairs 7
"""
from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys

CODE = ("import sys, numpy as np, torch; from successor.workloads.tinylm import train as T; "
        "from successor.workloads.tinylm.data import labelled; from successor.workloads.tinylm.recipe import Recipe; "
        "from successor.workloads.tinylm.tasks import get_task; t = get_task('addition'); "
        "{patch}"
        "m = T.Mixture({{'human': labelled(t, [1, 2], 50, np.random.default_rng(0))}}, {{'human': 1.0}}); "
        "T.train(t, Recipe(init='scratch', n_layer=1, n_embd=16, n_head=2, steps=3, batch_size=8), m); "
        "assert ('torch._dynamo' in sys.modules) == {dynamo}")
VARIANTS = {"trainer's AdamW": CODE.format(patch="", dynamo=False),
            "torch.optim.AdamW": CODE.format(patch="T.AdamW = torch.optim.AdamW; ", dynamo=True),
            "import torch only": "import torch"}


def cpu_of(code: str) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=7)
    a = ap.parse_args()
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(a.pairs):
        for name, code in VARIANTS.items():
            cpu[name].append(cpu_of(code))
    print("| process | CPU-s median | min | max |\n|---|---|---|---|")
    for name, xs in cpu.items():
        print(f"| {name} | {statistics.median(xs):.2f} | {min(xs):.2f} | {max(xs):.2f} |")


if __name__ == "__main__":
    main()
