"""What packing a successor's batch (`Recipe.pack`) saves, and whether the model it trains is as good. Each asked
successor job of a run is trained again from its parent on its own data, once as recorded (rows padded to the
longest) and once packed, alternating, in this process at one thread; each model is scored on the same fresh
problems with the hidden checker (a study: the loop never reads it).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/packing.py RUN --generations 3 6 --n 400 --out packing.json
    .venv/bin/python benchmarks/packing.py --table packing.json ...

Prints, for each job, the training CPU-s of both layouts, the >=99% frontier on the fresh problems, the mean
accuracy at the lengths its newest labels reach past its parent's frontier, and the worst accuracy on the lengths
its parent had solved.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from markdown import table as markdown_table
from successor_steps import score, successor_jobs, summary

from successor.workloads.tinylm import checkpoint
from successor.workloads.tinylm.recipe import Recipe
from successor.workloads.tinylm.tasks import get_task
from successor.workloads.tinylm.train import Mixture, job_sources, train

LAYOUTS = {"padded": {"pack": False, "length_buckets": 1}, "packed": {"pack": True, "length_buckets": 1}}


def probe(run: Path, generation: int, job_id: str, parent_frontier: int, n: int) -> dict:
    job = json.loads((run / "jobs" / f"{job_id}.json").read_text())
    task = get_task(job["task"])
    recipe = Recipe(**job["recipe"])
    sources = job_sources(job)
    top = max(p.level for p, _ in sources["newest"])
    rng = np.random.default_rng(20261208 + generation)
    tests = [(p, task.answer(p)) for lvl in range(1, top + 2)
             for p in task.generate(lvl, n if lvl > 8 else min(n, 300), rng)]
    new = list(range(parent_frontier + 1, top + 1))
    out = {"run": str(run), "generation": generation, "job": job_id, "parent_frontier": parent_frontier,
           "top_label": top, "n": n, "threads": torch.get_num_threads(), "layouts": {}}
    for name, update in LAYOUTS.items():
        t = time.process_time()
        model, metrics = train(task, recipe.model_copy(update=update), Mixture.of(recipe, sources),
                               checkpoint.load(Path(job["parent"])))
        cpu = time.process_time() - t
        acc = score(model, task, tests)
        solved = [acc[lv] for lv in range(1, parent_frontier + 1)]
        out["layouts"][name] = summary(acc, new) | {"train_cpu_s": round(cpu, 1), "tokens": metrics["tokens"],
                                                    "solved_min": min(solved) if solved else None}
    return out


def table(paths: list[Path]) -> None:
    rows = [r for p in paths for r in json.loads(p.read_text())]
    body = []
    for r in rows:
        a, b = r["layouts"]["padded"], r["layouts"]["packed"]
        body.append([Path(r["run"]).name, r["generation"], r["parent_frontier"], a["train_cpu_s"], b["train_cpu_s"],
                     f"{b['train_cpu_s'] / a['train_cpu_s']:.2f}", f"{a['frontier']} / {b['frontier']}",
                     f"{a['new_mean']:.3f} / {b['new_mean']:.3f}", f"{a['solved_min']} / {b['solved_min']}"])
    ratios = [r["layouts"]["packed"]["train_cpu_s"] / r["layouts"]["padded"]["train_cpu_s"] for r in rows]
    print(markdown_table(["run", "gen", "parent frontier", "train CPU-s padded", "packed", "ratio",
                          "frontier padded / packed", "new lengths padded / packed", "worst solved padded / packed"],
                         body))
    print(f"\nratio of training CPU, packed/padded: median {np.median(ratios):.2f}, "
          f"range {min(ratios):.2f}-{max(ratios):.2f} over {len(ratios)} jobs")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path, nargs="?")
    ap.add_argument("--generations", type=int, nargs="+", default=[])
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--table", type=Path, nargs="+")
    a = ap.parse_args()
    if a.table:
        return table(a.table)
    results = json.loads(a.out.read_text()) if a.out and a.out.exists() else []
    done = {(r["run"], r["generation"]) for r in results}
    for g, job, pf in successor_jobs(a.run, a.generations):
        if (str(a.run), g) in done:
            continue
        results.append(probe(a.run, g, job, pf, a.n))
        print(json.dumps({k: v for k, v in results[-1].items()}), flush=True)
        if a.out:
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(json.dumps(results, indent=1))
    if a.out:
        table([a.out])


if __name__ == "__main__":
    main()
