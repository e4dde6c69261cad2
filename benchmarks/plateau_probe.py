"""Does a bootstrap recipe leave the loss plateau? Trains it from scratch on each seed's human data (1-8 digits) and
prints, per seed, the first logged step whose loss is under 1.0 (the escape; "–": never) and the accuracy by length.

    .venv/bin/python benchmarks/plateau_probe.py --seeds 2,5                       # the default bootstrap
    .venv/bin/python benchmarks/plateau_probe.py --seeds 3 --set curriculum_steps=0 offset_ramp_steps=0 \
        steps=2500 schedule_steps=3000                                                # the bootstrap before issue 25

The recipe is the default preset's bootstrap without its guardrail rows and plateau check (so the whole curve
shows), with `seed` set to each seed; the human data is the run's (`tier_rng(seed, "human")`), the test set 200
fresh problems a length from a fixed stream. One torch thread, so two probes run side by side on 2 cores. Appends
each result as a JSON line to benchmarks/results/plateau_probe.jsonl.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from overrides import overrides

from successor.config import load_config
from successor.workloads.tinylm.data import labelled, tier_rng
from successor.workloads.tinylm.tasks import get_task
from successor.workloads.tinylm.train import Mixture, accuracy_by_level, train

RESULTS = Path(__file__).resolve().parent / "results"
ESCAPED = 1.0  # a loss under this: the model has left the plateau (on it, the loss sits at 1.5-1.9)


def probe(seed: int, over: dict, tag: str) -> dict:
    cfg = load_config()
    task = get_task(cfg.task.name)
    lo, hi = cfg.task.human_levels
    human = labelled(task, list(range(lo, hi + 1)), cfg.task.human_per_level, tier_rng(seed, "human"))
    recipe = cfg.bootstrap.model_copy(update={"guardrail_share": 0.0, "plateau_step": 0, "seed": seed} | over)
    recipe = type(recipe).model_validate(recipe.model_dump())  # the overrides checked like a config's
    t0 = time.time()
    model, metrics = train(task, recipe, Mixture({"human": human}, {"human": 1.0}), log_every=100)
    test = labelled(task, list(range(lo, hi + 3)), 200, np.random.default_rng(12345))
    acc = accuracy_by_level(model, task, test)
    escape = next((s for s, loss in metrics["loss_curve"] if loss < ESCAPED), None)
    return {"tag": tag, "seed": seed, "set": over, "escape_step": escape, "wall_s": round(time.time() - t0),
            "curve": [c[1] for c in metrics["loss_curve"]], "accuracy": {str(k): v for k, v in acc.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="2,5")
    ap.add_argument("--set", nargs="*", default=[], help="recipe overrides, field=value")
    ap.add_argument("--tag", default="", help="a name for the row")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    over = overrides(a.set)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for seed in [int(s) for s in a.seeds.split(",") if s]:
        r = probe(seed, over, a.tag or " ".join(a.set) or "default")
        with open(RESULTS / "plateau_probe.jsonl", "a") as f:
            f.write(json.dumps(r) + "\n")
        cells = " ".join(f"{v:.3f}" for v in r["accuracy"].values())
        print(f"{r['tag']:<40} seed {seed}: escape {r['escape_step'] if r['escape_step'] is not None else '–'}, "
              f"accuracy by length {cells}, {r['wall_s']} s", flush=True)


if __name__ == "__main__":
    main()
