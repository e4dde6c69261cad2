"""Do separately trained models make the same mistakes? Lee et al. 2025 vote across five models trained with
different seeds; this probe asks how often such models, given the same problems at a length none was trained on,
are wrong together, and what a vote across them keeps. Label noise is measured with the hidden checker.

    .venv/bin/python benchmarks/model_vote.py --level 9 runs/demo:0 runs/demo2:0 runs/demo3:0 \
        benchmarks/results/self_improvement/base:0

Each RUN:GEN names the champion of generation GEN of a finished run. Prints a table; writes nothing.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from lineage_models import champion_of

from successor.workloads.tinylm.curator import vote
from successor.workloads.tinylm.data import labelled, tier_rng
from successor.workloads.tinylm.decode import greedy
from successor.workloads.tinylm.tasks import get_task


def champion(spec: str):
    run, _, gen = spec.rpartition(":")
    if not run or not gen.isdigit():
        raise SystemExit(f"{spec!r}: expected RUN_DIR:GENERATION")
    return champion_of(Path(run), int(gen))[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+", help="RUN_DIR:GENERATION, two or more")
    ap.add_argument("--level", type=int, default=9)
    ap.add_argument("--problems", type=int, default=1000)
    ap.add_argument("--task", default="addition")
    a = ap.parse_args()
    if len(a.models) < 2:
        raise SystemExit("a vote needs at least two models")
    torch.set_num_threads(2)
    task = get_task(a.task)
    items = labelled(task, [a.level], a.problems, tier_rng(777, "dev"))
    problems, truth = [p for p, _ in items], [y for _, y in items]
    answers = [greedy(champion(m), task, problems) for m in a.models]
    wrong = np.array([[x != y for x, y in zip(ans, truth)] for ans in answers])
    print(f"{a.problems} problems of length {a.level}\n\n| model | accuracy |\n|---|---|")
    for m, w in zip(a.models, wrong):
        print(f"| {m} | {1 - w.mean():.3f} |")
    shared = [np.mean([answers[i][k] == answers[j][k] for k in np.flatnonzero(wrong[i])])
              for i in range(len(answers)) for j in range(len(answers)) if i != j and wrong[i].any()]
    print(f"\nWhere one model is wrong, another gives the same wrong answer: {min(shared):.0%}-{max(shared):.0%} "
          f"of the time (by pair).\n\n| agreement | labels kept | label noise |\n|---|---|---|")
    for need in (0.6, 0.8, 1.0):
        kept = [y == t for y, t in zip(vote(answers, need), truth) if y is not None]
        print(f"| {need:.0%} | {len(kept)} | {1 - np.mean(kept):.3f} |" if kept else f"| {need:.0%} | 0 | - |")


if __name__ == "__main__":
    main()
