"""How one model's labels at a new length depend on the position offset it decodes under, and what a vote
over offsets keeps. Prints per-offset accuracy, then kept labels and their true noise per agreement threshold.

    .venv/bin/python benchmarks/offset_vote.py runs/demo --level 9

RUN_DIR is a finished run; the probe uses its generation-0 champion. Label noise is measured with the hidden
checker, which the curator never sees. Nothing is written unless --write is given (then a table goes to
BENCHMARKS.md).
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--generation", type=int, default=0, help="whose champion labels")
    ap.add_argument("--level", type=int, default=9)
    ap.add_argument("--problems", type=int, default=1000)
    ap.add_argument("--offsets", type=int, default=20, help="decode under offsets 0..N-1")
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    digest, model = champion_of(a.run_dir, a.generation)
    task = get_task("addition")
    items = labelled(task, [a.level], a.problems, tier_rng(12345, "dev"))
    problems = [p for p, _ in items]
    offsets = list(range(a.offsets))
    answers = [greedy(model, task, problems, offset=o) for o in offsets]
    per_offset = [float(np.mean([x == y for x, (_, y) in zip(ans, items)])) for ans in answers]
    lines = [f"Champion of generation {a.generation} ({digest[:12]}…), {a.problems} problems of length {a.level}.",
             "", "Accuracy by decode offset: " + ", ".join(f"{o}: {acc:.2f}" for o, acc in zip(offsets, per_offset)),
             "", "| votes needed (of %d) | labels kept | label noise |" % len(offsets), "|---|---|---|"]
    for need in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        kept = [label == y for label, (_, y) in zip(vote(answers, need), items) if label is not None]
        noise = f"{1 - np.mean(kept):.3f}" if kept else "-"
        lines.append(f"| {need:.0%} | {len(kept)} | {noise} |")
    text = "\n".join(lines)
    print(text)
    if a.write:
        with open(Path(__file__).resolve().parent.parent / "BENCHMARKS.md", "a") as f:
            f.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
