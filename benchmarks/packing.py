"""What packing a successor's batch (`Recipe.pack`) saves, and whether the model it trains is as good. Each asked
successor job of a run is trained again from its parent on its own data, once as recorded (rows padded to the
longest) and once packed, alternating, in this process at one thread; each model is scored on the same fresh
problems with the hidden checker (a study: the loop never reads it).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/packing.py RUN --generations 3 6 --n 400 --out packing.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/packing.py RUN ... --layouts buckets2 --out null.json
    .venv/bin/python benchmarks/packing.py --table packing.json null.json ...

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
from successor_steps import each_job, replayed, score, summary

from successor.workloads.tinylm import checkpoint
from successor.workloads.tinylm.train import Mixture, train

# buckets2: the padded batch in two length buckets, which changes nothing but rounding either: how far rounding
# alone moves a 750-step successor (the null against which packed is read)
LAYOUTS = {"padded": {"pack": False, "length_buckets": 1}, "packed": {"pack": True, "length_buckets": 1},
           "buckets2": {"pack": False, "length_buckets": 2}}


def probe(run: Path, generation: int, job_id: str, parent_frontier: int, n: int, layouts: list[str]) -> dict:
    job, task, recipe, sources, top, tests, new = replayed(run, generation, job_id, parent_frontier, n, 20261208)
    out = {"run": str(run), "generation": generation, "job": job_id, "parent_frontier": parent_frontier,
           "top_label": top, "n": n, "threads": torch.get_num_threads(), "layouts": {}}
    for name in layouts:
        update = LAYOUTS[name]
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
    merged: dict[tuple, dict] = {}
    for r in (r for p in paths for r in json.loads(p.read_text())):  # a job's layouts may come from two passes
        merged.setdefault((Path(r["run"]).name, r["generation"]), r | {"layouts": {}})["layouts"] |= r["layouts"]
    names = [n for n in LAYOUTS if any(n in r["layouts"] for r in merged.values())]
    body = []
    for (run, g), r in merged.items():
        got = [r["layouts"].get(n) for n in names]
        cell = lambda key, fmt: " / ".join(fmt(x[key]) if x else "-" for x in got)  # noqa: E731
        body.append([run, g, r["parent_frontier"], cell("train_cpu_s", str), cell("frontier", str),
                     cell("new_mean", lambda v: f"{v:.3f}"), cell("solved_min", str)])
    print(markdown_table(["run", "gen", "parent frontier", f"train CPU-s ({' / '.join(names)})", "frontier",
                          "new lengths", "worst solved"], body))
    for n in names[1:]:
        pairs = [(r["layouts"]["padded"], r["layouts"][n]) for r in merged.values()
                 if "padded" in r["layouts"] and n in r["layouts"]]
        ratios = [b["train_cpu_s"] / a["train_cpu_s"] for a, b in pairs]
        lower = sum(b["new_mean"] < a["new_mean"] for a, b in pairs)
        print(f"\n{n}/padded: training CPU median {np.median(ratios):.2f} (range {min(ratios):.2f}-"
              f"{max(ratios):.2f}); new lengths lower in {lower} of {len(pairs)} jobs, frontier lower in "
              f"{sum(b['frontier'] < a['frontier'] for a, b in pairs)}, higher in "
              f"{sum(b['frontier'] > a['frontier'] for a, b in pairs)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path, nargs="?")
    ap.add_argument("--generations", type=int, nargs="+", default=[])
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--table", type=Path, nargs="+")
    ap.add_argument("--layouts", nargs="+", default=["padded", "packed"], choices=list(LAYOUTS))
    a = ap.parse_args()
    if a.table:
        return table(a.table)
    each_job(a.run, a.generations, a.out, lambda g, job, pf: probe(a.run, g, job, pf, a.n, a.layouts))
    if a.out:
        table([a.out])


if __name__ == "__main__":
    main()
