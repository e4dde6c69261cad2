"""Does teaching the guardrail cost the bootstrap its escape from the loss plateau? Trains the default preset's
bootstrap recipe on the default human tier with a given guardrail share and start step, then prints exact-match
accuracy per length on 100 dev problems and the refusal rate on their marked twins (lengths 1-12).

    .venv/bin/python benchmarks/guardrail_bootstrap.py --share 0.02 --from-step 2000

About 4 minutes alone on 2 cores (two at once on 2 cores take 15: OpenMP threads spin against each other).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from successor.config import load_config
from successor.workloads.tinylm.data import labelled, tier_rng
from successor.workloads.tinylm.tasks import get_task
from successor.workloads.tinylm.tasks.base import mark
from successor.workloads.tinylm.train import Mixture, accuracy_by_level, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--share", type=float, default=0.02, help="guardrail_share of the bootstrap recipe")
    ap.add_argument("--from-step", type=int, default=2000, help="guardrail_from of the bootstrap recipe")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = load_config(None, "default")
    task = get_task(cfg.task.name)
    lo, hi = cfg.task.human_levels
    human = labelled(task, list(range(lo, hi + 1)), cfg.task.human_per_level, tier_rng(cfg.seed, "human"))
    recipe = cfg.bootstrap.model_copy(update={"guardrail_share": a.share, "guardrail_from": a.from_step})
    t0 = time.time()
    model, metrics = train(task, recipe, Mixture({"human": human}, {"human": 1.0}))
    dev = labelled(task, list(range(1, cfg.task.eval_max_level + 1)), 100, tier_rng(cfg.seed, "dev"))
    acc = accuracy_by_level(model, task, dev)
    refusal = accuracy_by_level(model, task, [(mark(p), task.answer(mark(p))) for p, _ in dev])
    print(json.dumps({"share": a.share, "from": a.from_step, "wall_s": round(time.time() - t0),
                      "final_loss": metrics["loss_curve"][-1][1], "dev": acc, "refusal": refusal}))


if __name__ == "__main__":
    main()
