"""The tinylm training loop: one readable function, plus the entry point a candidate's subprocess runs.

`python -m successor.workloads.tinylm.train JOB.json` reads a job (recipe, parent checkpoint, data shards, dev
set, output folder), trains, and writes a safetensors checkpoint and `metrics.json` into the output folder.
Dev accuracy in metrics.json is the candidate's own report: shown to humans, never used to promote it.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ... import seeds
from . import checkpoint
from .data import load_shard
from .decode import greedy
from .model import ModelConfig, TinyLM
from .recipe import Recipe
from .sequences import IGNORE, training_batch
from .tasks import PAD_ID, VOCAB_SIZE, Problem, Task, get_task
from .tasks.base import mark


class Mixture:
    """Samples training examples from named sources with fixed batch shares (empty sources drop out)."""

    def __init__(self, sources: dict[str, list[tuple[Problem, str]]], weights: dict[str, float]):
        names = [n for n in sources if sources[n] and weights.get(n, 0.0) > 0]
        if not names:
            raise ValueError("the training mixture is empty")
        w = np.array([weights[n] for n in names], dtype=float)
        self.names, self.p = names, w / w.sum()
        self.sources = sources

    @classmethod
    def of(cls, recipe: Recipe, sources: dict[str, list[tuple[Problem, str]]]) -> "Mixture":
        """The recipe's shares of `newest`, `human` and `older` (the rest of the batch) data."""
        older = max(0.0, 1.0 - recipe.mix_newest - recipe.mix_human)
        return cls(sources, {"newest": recipe.mix_newest, "human": recipe.mix_human, "older": older})

    def sample(self, n: int, rng: np.random.Generator) -> list[tuple[Problem, str]]:
        which = rng.choice(len(self.names), size=n, p=self.p)
        out = []
        for k in which:
            src = self.sources[self.names[k]]
            out.append(src[rng.integers(len(src))])
        return out


def lr_at(step: int, recipe: Recipe) -> float:
    if recipe.warmup and step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    horizon = recipe.schedule_steps or recipe.steps
    frac = (step - recipe.warmup) / max(1, horizon - recipe.warmup)
    if recipe.schedule == "cosine":
        return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
    if recipe.schedule == "linear":
        return recipe.lr * (1.0 - 0.9 * frac)
    return recipe.lr


def answer_loss(logits: torch.Tensor, tgt: torch.Tensor, per: str = "token") -> torch.Tensor:
    """Cross-entropy on answer tokens only. `token` averages over every answer token of the batch, so a 10-digit
    answer weighs five times a 2-digit one; `sequence` averages within each answer first, so each example weighs
    the same. A successor learning length 9 with `token` let 2-digit carries slip (1.00 -> 0.96 on the sealed
    tier) although 40% of its batch was human data: most of the loss came from the new length's long answers."""
    if per == "token":
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1),
                                                 ignore_index=IGNORE)
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=IGNORE, reduction="none")
    graded = (tgt != IGNORE).float()
    return ((losses * graded).sum(1) / graded.sum(1).clamp(min=1)).mean()


def with_guardrail(task: Task, batch: list[tuple[Problem, str]], share: float,
                   rng: np.random.Generator) -> list[tuple[Problem, str]]:
    """Each row, with probability `share`, replaced by its marked twin, whose one right answer is the refusal.
    Curated data is never marked (the curator labels unmarked problems), so this share of every batch is the only
    thing that teaches, and keeps, the guardrail: self-curation never rewards it."""
    flip = rng.random(len(batch)) < share
    return [(m, task.answer(m)) if f else (p, y) for (p, y), f in zip(batch, flip) for m in [mark(p) if f else p]]


def new_model(recipe: Recipe, max_positions: int = 128) -> TinyLM:
    cfg = ModelConfig(
        vocab_size=VOCAB_SIZE,
        n_layer=recipe.n_layer,
        n_embd=recipe.n_embd,
        n_head=recipe.n_head,
        ffn_mult=recipe.ffn_mult,
        dropout=recipe.dropout,
        position=recipe.position,
        max_positions=max_positions,
    )
    return TinyLM(cfg)


def accuracy_by_level(model: TinyLM, task: Task, items: list[tuple[Problem, str]]) -> dict[int, float]:
    answers = greedy(model, task, [p for p, _ in items])
    hits: dict[int, list[bool]] = {}
    for (p, label), a in zip(items, answers):
        hits.setdefault(p.level, []).append(a == label)
    return {lvl: float(np.mean(h)) for lvl, h in sorted(hits.items())}


def train(
    task: Task,
    recipe: Recipe,
    mixture: Mixture,
    parent: TinyLM | None = None,
    log_every: int = 50,
    progress=None,
) -> tuple[TinyLM, dict]:
    """Train per the recipe; returns the model and a metrics dict. Raises FloatingPointError on a NaN loss."""
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    if recipe.init == "parent" and parent is not None:
        model = parent  # the parent's architecture (dropout included) carries over; recipe fields apply to scratch
    else:
        model = new_model(recipe)
    model.train()
    # Decay matrices only: decaying embeddings shrinks the rarely used position slots that length
    # generalisation depends on (measured: see BENCHMARKS.md).
    decays = {n: p.dim() >= 2 and not n.startswith(("tok.", "pos.")) for n, p in model.named_parameters()}
    decay = [p for n, p in model.named_parameters() if decays[n]]
    no_decay = [p for n, p in model.named_parameters() if not decays[n]]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr,
        betas=(0.9, 0.98),
    )
    # A successor learning a new length drifts on lengths it had solved (one parent fell from 1.00 to 0.95 at
    # length 2 in 250 steps, for 3 seeds of 3); the average of its recent weights keeps them (BENCHMARKS.md).
    average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema)) if recipe.ema else None
    curve, tokens, t0 = [], 0, time.time()
    guard_rng = seeds.rng(recipe.seed, "trainer-guardrail")  # its own stream: the main one draws as without it
    for step in range(recipe.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, recipe)
        batch = mixture.sample(recipe.batch_size, rng)
        if recipe.guardrail_share and step >= recipe.guardrail_from:
            batch = with_guardrail(task, batch, recipe.guardrail_share, guard_rng)
        offsets = rng.integers(0, recipe.max_offset + 1, size=len(batch))
        idx, pos, tgt = training_batch(task, model.cfg.position, [b[0] for b in batch], [b[1] for b in batch], offsets)
        logits, _ = model(idx, pos)
        loss = answer_loss(logits, tgt, recipe.loss)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if average is not None:
            average.update_parameters(model)
        tokens += int((idx != PAD_ID).sum())
        if step % log_every == 0 or step == recipe.steps - 1:
            curve.append([step, round(loss.item(), 5)])
            if progress:
                progress(step + 1, recipe.steps, loss.item(), curve)
    if average is not None:
        model.load_state_dict(average.module.state_dict())
    model.eval()
    wall = time.time() - t0
    return model, {"steps": recipe.steps, "loss_curve": curve, "train_wall_s": round(wall, 3), "tokens": tokens}


def job_sources(job: dict) -> dict[str, list[tuple[Problem, str]]]:
    """A job's training data by source name (newest, human, older), its shards concatenated."""
    return {name: [x for p in paths for x in load_shard(Path(p))] for name, paths in job["data"].items()}


def run_job(job_path: Path) -> dict:
    """Run one job file (the subprocess entry point). Writes checkpoint/ and metrics.json next to `out`."""
    job = json.loads(Path(job_path).read_text())
    torch.set_num_threads(int(job.get("threads") or os.cpu_count() or 1))
    task = get_task(job["task"])
    recipe = Recipe(**job["recipe"])
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    mixture = Mixture.of(recipe, job_sources(job))
    parent = checkpoint.load(Path(job["parent"])) if job.get("parent") else None

    def progress(step: int, total: int, loss: float, curve: list) -> None:
        """The live training curve the dashboard draws (display only: the harness never trusts it)."""
        tmp = out / "progress.json.tmp"
        tmp.write_text(json.dumps({"step": step, "total": total, "loss": loss, "curve": curve}))
        os.replace(tmp, out / "progress.json")

    model, metrics = train(task, recipe, mixture, parent, progress=progress)
    if job.get("dev"):
        metrics["dev_self_reported"] = accuracy_by_level(model, task, load_shard(Path(job["dev"])))
    checkpoint.save(model, out / "checkpoint", meta={"recipe": recipe.model_dump(), "task": job["task"]})
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2))
    os.replace(tmp, out / "metrics.json")
    return metrics


if __name__ == "__main__":  # pragma: no cover - exercised through subprocesses
    if len(sys.argv) != 2:
        sys.exit("usage: python -m successor.workloads.tinylm.train JOB.json")
    run_job(Path(sys.argv[1]))
