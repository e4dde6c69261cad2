"""Position holes: does a run's generation-0 model hold the human lengths under every training offset?

A model trained with random position offsets 0..max_offset can answer every human length at offset 0 and still
fail all of them under the offsets that put a digit on one position id (a *hole*). Its successors never learn that
position, so its lineage's frontier stops one length short of it. This scans each generation-0 attempt of the
given runs on fresh problems (the task's hidden checker; a study, the loop never reads it): per human length, the
worst accuracy under offsets 1..max_offset and where it falls, and the position ids the hole sits on (where the
token that predicts an answer digit is right under half the time, teacher-forced).

    .venv/bin/python benchmarks/position_holes.py RUN [RUN ...]
    .venv/bin/python benchmarks/position_holes.py RUN --finetune 400    # train the kept model on, then scan again

`--finetune STEPS`: the kept model trained STEPS more steps on fresh human-range problems under every offset
(AdamW, lr 5e-4, batch 64, outside the loop), to see whether training heals a hole.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from successor.workloads.tinylm import checkpoint
from successor.workloads.tinylm.bootstrap import HOLE_FLOOR
from successor.workloads.tinylm.decode import greedy
from successor.workloads.tinylm.sequences import IGNORE, training_batch
from successor.workloads.tinylm.tasks import get_task


def attempts(run: Path) -> list[tuple[str, str, dict, bool]]:
    """(candidate, model digest, recipe, kept) for every finished generation-0 attempt."""
    db = sqlite3.connect(f"file:{run / 'lineage.db'}?mode=ro", uri=True)
    try:
        kept = db.execute("SELECT champion_model FROM generations WHERE idx=0").fetchone()[0]
        rows = db.execute("SELECT e.candidate_id, e.model, c.recipe FROM experiments e JOIN candidates c ON "
                          "c.id=e.candidate_id WHERE e.generation=0 AND e.status='done' ORDER BY c.ordinal").fetchall()
    finally:
        db.close()
    return [(cid, model, json.loads(recipe), model == kept) for cid, model, recipe in rows]


def scan(model, task, levels: list[int], max_offset: int, n: int) -> tuple[dict[int, float], dict, list[int]]:
    """Offset-0 accuracy by length, the worst (accuracy, offset) by length under offsets 1..max_offset, and the
    position ids whose next-digit prediction is right under half the time at some length and offset."""
    rng = np.random.default_rng(12345)
    tests = {lvl: task.generate(lvl, n, rng) for lvl in levels}
    acc = {o: {lvl: float(np.mean([task.check(p, y) for p, y in zip(ps, greedy(model, task, ps, offset=o))]))
               for lvl, ps in tests.items()} for o in range(max_offset + 1)}
    worst = {lvl: min((acc[o][lvl], o) for o in range(1, max_offset + 1)) for lvl in levels} if max_offset else {}
    by_pos: dict[int, list[float]] = defaultdict(list)
    model.eval()
    for lvl, ps in tests.items():
        labels = [task.solve(p) for p in ps]
        for o in range(max_offset + 1):
            idx, pos, tgt = training_batch(task, model.cfg.position, ps, labels, np.full(len(ps), o))
            with torch.no_grad():
                right = (model(idx, pos)[0].argmax(-1) == tgt).float().mean(0)
            for j in range(tgt.shape[1]):
                if tgt[0, j] != IGNORE:
                    by_pos[int(pos[0, j])].append(float(right[j]))
    return acc[0], worst, sorted(p for p, v in by_pos.items() if min(v) < 0.5)


def finetune(model, task, levels: list[int], max_offset: int, steps: int) -> None:
    rng = np.random.default_rng(0)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.1, betas=(0.9, 0.98))
    model.train()
    for _ in range(steps):
        ps = [task.generate(int(lvl), 1, rng)[0] for lvl in rng.choice(levels, 64)]
        idx, pos, tgt = training_batch(task, model.cfg.position, ps, [task.solve(p) for p in ps],
                                       rng.integers(0, max_offset + 1, 64))
        logits = model(idx, pos)[0]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=IGNORE)
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--n", type=int, default=60, help="fresh problems a length")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--finetune", type=int, default=0, help="steps to train the kept model on, then scan again")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print("| run | seed | attempt | kept | offset 0, by length | worst under offsets 1..max, by length (at offset) "
          "| hole positions | hole |")
    print("|---|---|---|---|---|---|---|---|")
    for run in a.runs:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        task = get_task(cfg["task"]["name"])
        lo, hi = cfg["task"]["human_levels"]
        levels = list(range(lo, hi + 1))
        for cid, digest, recipe, kept in attempts(run):
            model = checkpoint.load(run / "artifacts" / "models" / digest)
            rows = [("", model)]
            for label, m in rows:
                acc0, worst, holes = scan(m, task, levels, recipe["max_offset"], a.n)
                hole = any(w < HOLE_FLOOR * acc0[lvl] for lvl, (w, _) in worst.items())
                print(f"| {run.name} | {recipe['seed']} | {cid}{label} | {'yes' if kept else 'no'} | "
                      f"{' '.join(f'{acc0[lvl]:.2f}' for lvl in levels)} | "
                      f"{' '.join(f'{w:.2f}@{o}' for w, o in worst.values())} | "
                      f"{', '.join(map(str, holes)) or '-'} | {'yes' if hole else 'no'} |", flush=True)
                if kept and a.finetune and not label:
                    finetune(m, task, levels, recipe["max_offset"], a.finetune)
                    rows.append((f" + {a.finetune} steps", m))


if __name__ == "__main__":
    main()
