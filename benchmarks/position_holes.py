"""Position holes: does a run's generation-0 model hold the human lengths under every training offset?

A model trained with random position offsets 0..max_offset can answer every human length at offset 0 and still
fail all of them under the offsets that put a digit on one position id (a *hole*). Its successors never learn that
position, so its lineage's frontier stops one length short of it. This scans each generation-0 attempt of the
given runs on fresh problems (the task's hidden checker; a study, the loop never reads it): per human length, the
worst accuracy under offsets 1..max_offset and where it falls, and the position ids the hole sits on (where the
token that predicts an answer digit is right under half the time, teacher-forced).

    .venv/bin/python benchmarks/position_holes.py RUN [RUN ...]
    .venv/bin/python benchmarks/position_holes.py RUN --finetune 400    # train the kept model on, then scan again
    .venv/bin/python benchmarks/position_holes.py RUN --finetune 300 --redraw   # its hole rows drawn afresh first
    .venv/bin/python benchmarks/position_holes.py RUN --champion 5 --levels 8,16,20,21,22   # a later champion

`--finetune STEPS`: the kept model trained STEPS more steps on fresh human-range problems under every offset
(AdamW, lr 5e-4, batch 64, outside the loop), to see whether training heals a hole; `--redraw`: first its position
embedding rows at the hole positions drawn again from the model's initial distribution (normal, std 0.02).
`--champion G`: scan generation G's champion instead, at `--levels`.
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


def attempts(run: Path, champion: int | None = None) -> list[tuple[str, str, dict, bool]]:
    """(candidate, model digest, recipe, kept) for every finished generation-0 attempt, or for the champion of
    generation `champion` (its recipe: generation 0's kept attempt's, whose offsets it was first trained under)."""
    db = sqlite3.connect(f"file:{run / 'lineage.db'}?mode=ro", uri=True)
    try:
        if champion is not None:
            model = db.execute("SELECT champion_model FROM generations WHERE idx=?", (champion,)).fetchone()[0]
            recipe = db.execute("SELECT c.recipe FROM experiments e JOIN candidates c ON c.id=e.candidate_id "
                                "WHERE e.model=?", (model,)).fetchone()[0]
            return [(f"champion of generation {champion}", model, json.loads(recipe), True)]
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
    ap.add_argument("--redraw", action="store_true", help="with --finetune: redraw the hole rows first")
    ap.add_argument("--champion", type=int, default=None, help="scan this generation's champion instead")
    ap.add_argument("--levels", default=None, help="with --champion: the lengths to scan, e.g. 8,16,20,22")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print("| run | seed | attempt | kept | offset 0, by length | worst under offsets 1..max, by length (at offset) "
          "| hole positions | hole |")
    print("|---|---|---|---|---|---|---|---|")
    for run in a.runs:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        task = get_task(cfg["task"]["name"])
        lo, hi = cfg["task"]["human_levels"]
        levels = [int(x) for x in a.levels.split(",")] if a.levels else list(range(lo, hi + 1))
        for cid, digest, recipe, kept in attempts(run, a.champion):
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
                    if a.redraw and holes:
                        with torch.no_grad():
                            for p in holes:
                                m.pos.weight[p].normal_(0.0, 0.02)
                    finetune(m, task, levels, recipe["max_offset"], a.finetune)
                    rows.append((f" + {a.finetune} steps" + (" (hole rows redrawn)" if a.redraw else ""), m))


if __name__ == "__main__":
    main()
