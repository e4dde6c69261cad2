"""The vote against composition, on one champion: for each length, the labels the run's own curator keeps with
its configured vote (offsets, forms, voter floor, dev calibration), with `compose` on a length the champion
trained on (its direct answer, kept where it equals the one composed from parts within its certified frontier),
and with `compose` on a new length (the vote's label, kept where it equals the composed one), how many of those are
wrong (the hidden checker, for this study only) and the seconds each took, on the same problems.

    .venv/bin/python benchmarks/composed_labels.py RUN_DIR --generation 3 --levels 9-16 --problems 640

Writes benchmarks/results/composed_labels.json and its section of BENCHMARKS.md (--no-write: print only).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import yaml
from lineage_models import champion_of
from markdown import table, write_section

from successor.config import RunConfig
from successor.workloads.tinylm.curator import curate_level
from successor.workloads.tinylm.data import load_shard, tier_rng
from successor.workloads.tinylm.tasks import get_task

HERE = Path(__file__).resolve().parent


def certified(run: Path, generation: int) -> int:
    """The champion's sealed frontier, as the gate recorded it for that generation."""
    import sqlite3
    db = sqlite3.connect(f"file:{run / 'lineage.db'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT frontier FROM generations WHERE idx=?", (generation,)).fetchone()[0])
    finally:
        db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--generation", type=int, required=True)
    ap.add_argument("--levels", default="9-16", help="a range, e.g. 9-16")
    ap.add_argument("--problems", type=int, default=640)
    ap.add_argument("--seed", type=int, default=12345, help="the problems' stream (not the run's curate stream)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    run = args.run_dir.resolve()
    cfg = RunConfig(**yaml.safe_load((run / "config.yaml").read_text()))
    task = get_task(cfg.task.name)
    digest, model = champion_of(run, args.generation)
    cert = certified(run, args.generation)
    dev = load_shard(_dev_path(run))
    lo, hi = (int(x) for x in args.levels.split("-"))
    rows, out = [], []
    for level in range(lo, hi + 1):
        problems = task.generate(level, args.problems, tier_rng(args.seed, "curate", 0, level))
        held = [(p, y) for p, y in dev if p.level == level]
        res = {"level": level}
        for name, compose, trained in (("vote", False, None), ("compose", True, None),
                                       ("vote+compose", True, level - 1)):
            c = cfg.curator.model_copy(update={"compose": compose})
            t = time.process_time()
            cur = curate_level(task, c, level, problems, held, model, certified=cert, trained_to=trained)
            cpu = time.process_time() - t
            wrong = sum(not task.check(p, y) for p, y in cur.items)
            res[name] = {"method": cur.method, "kept": len(cur.items), "wrong": wrong, "cpu_s": round(cpu, 2),
                         "skipped": cur.skipped}
        out.append(res)
        rows.append([level] + [_cell(res[n]) for n in ("vote", "compose", "vote+compose")])
        print(rows[-1], flush=True)
    head = ["length"] + [f"{n}: kept / wrong (noise), CPU-s" for n in ("vote", "compose", "vote+compose")]
    text = (f"Champion of generation {args.generation} of `{run.name}` (model {digest[:12]}, certified frontier "
            f"{cert}); {args.problems} fresh problems a length; {platform.machine()}, {torch.get_num_threads()} "
            f"torch threads. Command: `.venv/bin/python benchmarks/composed_labels.py RUN_DIR --generation "
            f"{args.generation} --levels {args.levels} --problems {args.problems}`.\n\n" + table(head, rows))
    print(text)
    if not args.no_write:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "composed_labels.json").write_text(json.dumps(
            {"run": run.name, "generation": args.generation, "model": digest, "certified": cert, "levels": out},
            indent=1))
        write_section(HERE.parent / "BENCHMARKS.md", "composed_labels", "Composed labels against the vote", text)


def _dev_path(run: Path) -> Path:
    import sqlite3
    db = sqlite3.connect(f"file:{run / 'lineage.db'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM meta WHERE key='tier.dev'").fetchone()
    finally:
        db.close()
    return run / "artifacts" / "data" / f"{row[0]}.jsonl"


def _cell(r: dict) -> str:
    if r["skipped"] and not r["kept"]:
        return f"0 ({r['skipped'][:60]}), {r['cpu_s']}"
    noise = r["wrong"] / r["kept"] if r["kept"] else 0
    return f"{r['kept']} / {r['wrong']} ({noise:.2%}), {r['cpu_s']}"


if __name__ == "__main__":
    main()
