"""How many of a successor's 750 steps does it need? Train successor jobs of a run again, outside the loop, with
their own recipe, and score them on fresh problems with the hidden checker (a study: the loop never reads it):
- snapshots: the weight average of one 750-step run at steps 250-750 (its cosine laid out over 750), which is what
  a successor that stops early would have;
- `--schedules S ...`: shorter runs from the same parent, each with its cosine laid out over its own S steps.

    .venv/bin/python benchmarks/successor_steps.py RUN --generations 3 6 --n 400 --out steps.json
    .venv/bin/python benchmarks/successor_steps.py RUN --generations 3 6 --n 400 --no-snapshots \
        --schedules 250 375 --out short.json
    .venv/bin/python benchmarks/successor_steps.py --table steps.json short.json ...

Prints, for each job, the >=99% frontier on the fresh problems (every length from 1 up to it at >= 0.99) and the
mean accuracy at the lengths the job's newest labels reach past its parent's frontier.
"""
from __future__ import annotations

import argparse
import copy
import json
import sqlite3
import time
from pathlib import Path

import numpy as np
import torch

from successor.workloads.tinylm import checkpoint
from successor.workloads.tinylm import train as train_module
from successor.workloads.tinylm.evaluator import frontier
from successor.workloads.tinylm.recipe import Recipe
from successor.workloads.tinylm.tasks import get_task
from successor.workloads.tinylm.train import Mixture, accuracy_by_level, job_sources, train

SNAPSHOTS = (250, 375, 500, 625, 750)


def score(model, task, tests: list) -> dict[int, float]:
    """Accuracy by length on the fresh problems, each checked against its true answer (the hidden checker)."""
    model.eval()
    with torch.no_grad():
        return {lvl: round(a, 4) for lvl, a in accuracy_by_level(model, task, tests).items()}


def successor_jobs(run: Path, generations: list[int]) -> list[tuple[int, str, int]]:
    """(generation, successor job id, the parent's frontier) for each asked generation that trained one."""
    db = sqlite3.connect(run / "lineage.db")
    rows = db.execute("SELECT e.generation, e.id FROM experiments e WHERE e.kind = 'successor' AND "
                      "e.status = 'done' ORDER BY e.generation").fetchall()
    fronts = dict(db.execute("SELECT idx, frontier FROM generations").fetchall())
    return [(g, job, fronts.get(g - 1) or 0) for g, job in rows if g in generations]


def summary(acc: dict[int, float], new: list[int]) -> dict:
    return {"frontier": frontier(acc), "new_mean": round(float(np.mean([acc[lv] for lv in new])), 4), "accuracy": acc}


def replayed(run: Path, generation: int, job_id: str, parent_frontier: int, n: int, seed: int):
    """A successor job to train again: (job, task, recipe, its training sources, its longest label, fresh problems
    with their true answers at lengths 1 to one past it, n a length and at most 300 on the human ones, drawn under
    `seed + generation`, and the lengths its labels reach past its parent's frontier)."""
    job = json.loads((run / "jobs" / f"{job_id}.json").read_text())
    task = get_task(job["task"])
    sources = job_sources(job)
    top = max(p.level for p, _ in sources["newest"])
    rng = np.random.default_rng(seed + generation)
    tests = [(p, task.answer(p)) for lvl in range(1, top + 2)
             for p in task.generate(lvl, n if lvl > 8 else min(n, 300), rng)]
    return job, task, Recipe(**job["recipe"]), sources, top, tests, list(range(parent_frontier + 1, top + 1))


def probe(run: Path, generation: int, job_id: str, parent_frontier: int, n: int, threads: int,
          snapshots: bool, schedules: list[int]) -> dict:
    torch.set_num_threads(threads)
    job, task, recipe, sources, top, tests, new = replayed(run, generation, job_id, parent_frontier, n, 20261207)
    out = {"run": str(run), "generation": generation, "job": job_id, "parent_frontier": parent_frontier,
           "top_label": top, "n": n, "parent": score(checkpoint.load(Path(job["parent"])), task, tests),
           "snapshots": {}, "schedules": {}}
    if snapshots:
        averages: list = []

        class Recorded(train_module.AveragedModel):  # the weight average the loop keeps, seen while it trains
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                averages.append(self)

        def progress(step: int, total: int, loss: float, curve: list) -> None:
            if step in SNAPSHOTS and step < total:
                out["snapshots"][str(step)] = summary(score(copy.deepcopy(averages[0].module), task, tests), new)

        train_module.AveragedModel, plain = Recorded, train_module.AveragedModel
        t = time.process_time()
        try:
            model, _ = train(task, recipe, Mixture.of(recipe, sources), checkpoint.load(Path(job["parent"])),
                             log_every=1, progress=progress)
        finally:
            train_module.AveragedModel = plain
        out["snapshots"][str(recipe.steps)] = summary(score(model, task, tests), new)
        out["cpu_s"] = round(time.process_time() - t, 1)
    for steps in schedules:  # a shorter run with its cosine laid out over its own steps, from the same parent
        t = time.process_time()
        model, _ = train(task, recipe.model_copy(update={"steps": steps}), Mixture.of(recipe, sources),
                         checkpoint.load(Path(job["parent"])))
        out["schedules"][str(steps)] = summary(score(model, task, tests), new) | {
            "cpu_s": round(time.process_time() - t, 1)}
    return out


def table(paths: list[Path]) -> None:
    rows = [r for p in paths for r in json.loads(p.read_text())]
    merged: dict[tuple, dict] = {}
    for r in rows:  # a job's snapshots and its shorter schedules may come from two passes
        m = merged.setdefault((r["run"], r["generation"]), r)
        m["snapshots"] |= r.get("snapshots", {})
        m["schedules"] = m.get("schedules", {}) | r.get("schedules", {})
    snaps = sorted({int(s) for r in merged.values() for s in r["snapshots"]})
    scheds = sorted({int(s) for r in merged.values() for s in r["schedules"]})
    cols = [f"@{s} of 750" for s in snaps] + [f"{s} of {s}" for s in scheds]
    print("| run | gen | parent frontier | " + " | ".join(f"frontier {c}" for c in cols) + " | " +
          " | ".join(f"new lengths {c}" for c in cols) + " |")
    print("|---" * (3 + 2 * len(cols)) + "|")
    for r in merged.values():
        got = [r["snapshots"].get(str(s)) for s in snaps] + [r["schedules"].get(str(s)) for s in scheds]
        print(f"| {Path(r['run']).name} | {r['generation']} | {r['parent_frontier']} | " +
              " | ".join(str(g["frontier"]) if g else "-" for g in got) + " | " +
              " | ".join(f"{g['new_mean']:.3f}" if g else "-" for g in got) + " |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path, nargs="?")
    ap.add_argument("--generations", type=int, nargs="+", default=[])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--table", type=Path, nargs="+")
    ap.add_argument("--schedules", type=int, nargs="*", default=[], help="also train these shorter runs, each "
                    "with its own cosine")
    ap.add_argument("--no-snapshots", action="store_true", help="skip the 750-step run's snapshots")
    a = ap.parse_args()
    if a.table:
        return table(a.table)
    each_job(a.run, a.generations, a.out,
             lambda g, job, pf: probe(a.run, g, job, pf, a.n, a.threads, not a.no_snapshots, a.schedules))
    table([a.out]) if a.out else None


def each_job(run: Path, generations: list[int], out: Path | None, probe_one) -> None:
    """`probe_one(generation, job, parent_frontier)` on each asked successor job of the run not yet in `out`,
    each result printed and written to `out` as it comes (a second call resumes)."""
    results = json.loads(out.read_text()) if out and out.exists() else []
    done = {(Path(r["run"]).resolve(), r["generation"]) for r in results}
    for g, job, pf in successor_jobs(run, generations):
        if (run.resolve(), g) in done:
            continue
        results.append(probe_one(g, job, pf))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "parent"}), flush=True)
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
