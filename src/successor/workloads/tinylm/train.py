"""The tinylm training loop: one readable function, plus the entry point a candidate's subprocess runs.

`python -m successor.workloads.tinylm.train JOB.json` reads a job (recipe, parent checkpoint, data shards, dev
set, output folder), trains, and writes a safetensors checkpoint and `metrics.json` into the output folder.
Dev accuracy in metrics.json is the candidate's own report: shown to humans, never used to promote it.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ... import seeds
from . import checkpoint
from .data import load_shard
from .decode import greedy
from .model import ModelConfig, TinyLM
from .optim import AdamW
from .recipe import Recipe
from .sequences import IGNORE, packed_batch, training_batch
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
        self._by_level: dict[str, dict[int, list[int]]] | None = None  # built on a curriculum's first use

    @classmethod
    def of(cls, recipe: Recipe, sources: dict[str, list[tuple[Problem, str]]]) -> "Mixture":
        """The recipe's shares of `newest`, `human` and `older` (the rest of the batch) data."""
        older = max(0.0, 1.0 - recipe.mix_newest - recipe.mix_human)
        return cls(sources, {"newest": recipe.mix_newest, "human": recipe.mix_human, "older": older})

    def by_level(self) -> dict[str, dict[int, list[int]]]:
        """Each source's row indices by level."""
        if self._by_level is None:
            self._by_level = {}
            for n in self.names:
                rows: dict[int, list[int]] = {}
                for i, (p, _) in enumerate(self.sources[n]):
                    rows.setdefault(p.level, []).append(i)
                self._by_level[n] = rows
        return self._by_level

    def levels(self) -> list[int]:
        return sorted({lvl for rows in self.by_level().values() for lvl in rows})

    def sample(self, n: int, rng: np.random.Generator, max_level: int | None = None) -> list[tuple[Problem, str]]:
        """n rows: a source by its share, then a row of it. With `max_level` (a curriculum's), only rows of levels up
        to it: a source by its share among those that have one, a level uniformly among its allowed ones, a row."""
        if max_level is None:
            which = rng.choice(len(self.names), size=n, p=self.p)
            out = []
            for k in which:
                src = self.sources[self.names[k]]
                out.append(src[rng.integers(len(src))])
            return out
        allowed = {name: [lvl for lvl in sorted(rows) if lvl <= max_level] for name, rows in self.by_level().items()}
        names = [name for name in self.names if allowed[name]]
        if not names:
            raise ValueError(f"the training mixture has no level up to {max_level}")
        w = np.array([self.p[self.names.index(name)] for name in names])
        out = []
        for k in rng.choice(len(names), size=n, p=w / w.sum()):
            name = names[k]
            rows = self.by_level()[name][allowed[name][rng.integers(len(allowed[name]))]]
            out.append(self.sources[name][rows[rng.integers(len(rows))]])
        return out


def curriculum_level(step: int, recipe: Recipe, levels: list[int]) -> int | None:
    """The longest level a batch draws at `step` under the recipe's curriculum; None once it is over (or without
    one): every level, drawn as without a curriculum. The two shortest levels come first and the others enter one
    by one in equal shares of `curriculum_steps`. Trained from scratch on every human length at once, the bootstrap
    can stay on its loss plateau for the whole run (issue 25: 2,500 steps at loss 1.9 on seed 3); with the lengths
    brought in over 500 steps, seeds 1 and 3 left it and ended at >= 0.98 on every human length (BENCHMARKS.md)."""
    if not recipe.curriculum_steps or step >= recipe.curriculum_steps or len(levels) <= 2:
        return None
    k = 2 + (len(levels) - 1) * step // recipe.curriculum_steps
    return levels[min(k, len(levels)) - 1]


def offset_range(step: int, recipe: Recipe) -> int:
    """The largest random position offset drawn at `step`: 0 at first, growing to max_offset over
    `offset_ramp_steps`. The offsets make each digit's position id vary, which generalises to longer numbers but
    makes the attention that lines digits up slow to find; starting without them, it forms early (BENCHMARKS.md)."""
    if not recipe.offset_ramp_steps or step >= recipe.offset_ramp_steps:
        return recipe.max_offset
    return recipe.max_offset * step // recipe.offset_ramp_steps


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


def answer_loss(logits: torch.Tensor, tgt: torch.Tensor, per: str = "token",
                segments: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy on answer tokens only. `token` averages over every answer token of the batch, so a 10-digit
    answer weighs five times a 2-digit one; `sequence` averages within each answer first, so each example weighs
    the same. A successor learning length 9 with `token` let 2-digit carries slip (1.00 -> 0.96 on the sealed
    tier) although 40% of its batch was human data: most of the loss came from the new length's long answers.
    With `segments` (packed rows), an example is a segment, not a row."""
    return _reduced_loss(logits, tgt, per, "mean", segments)


def answer_loss_sum(logits: torch.Tensor, tgt: torch.Tensor, per: str = "token") -> tuple[torch.Tensor, int]:
    """`answer_loss` as (sum, count): summed over the rows of several length buckets and divided by the whole
    batch's count, it is the batch's loss (`token`: count = answer tokens; `sequence`: count = rows)."""
    count = int((tgt != IGNORE).sum()) if per == "token" else tgt.size(0)
    return _reduced_loss(logits, tgt, per, "sum"), count


def _reduced_loss(logits: torch.Tensor, tgt: torch.Tensor, per: str, how: str,
                  segments: torch.Tensor | None = None) -> torch.Tensor:
    """The answer tokens' cross-entropy, reduced by `how` (mean or sum) over tokens (`token`) or over the
    examples' own means (`sequence`; an example is a row, or with `segments` a segment)."""
    if per == "token":
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1),
                                                 ignore_index=IGNORE, reduction=how)
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=IGNORE, reduction="none")
    graded = (tgt != IGNORE).float()
    if segments is None:
        rows = (losses * graded).sum(1) / graded.sum(1).clamp(min=1)
    else:
        real = segments.reshape(-1) >= 0
        sid, n = segments.reshape(-1)[real], int(segments.max()) + 1
        sums = torch.zeros(n, dtype=losses.dtype).index_add(0, sid, (losses * graded).reshape(-1)[real])
        counts = torch.zeros(n, dtype=losses.dtype).index_add(0, sid, graded.reshape(-1)[real])
        rows = sums / counts.clamp(min=1)
    return rows.mean() if how == "mean" else rows.sum()


def length_buckets(lengths: list[int], k: int) -> list[list[int]]:
    """The batch's rows in at most k groups of similar length, chosen to pad the fewest tokens (each group pads
    to its own longest row). A successor's batch mixes human sums (lengths 1-8, ~17 tokens) with curated ones
    (~54 tokens at generation 5): padded to the longest, 55% of its tokens were padding. Causal attention over
    right padding leaves every real position's output as it was, so the loss is the same up to rounding."""
    if k <= 1:
        return [list(range(len(lengths)))]  # the batch as drawn: bit for bit the loss it had before buckets
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sl = [lengths[i] for i in order]
    n, k = len(sl), max(1, min(k, len(sl)))
    # cost[j][i]: least padded area of the first i rows (sorted) in j groups; a group (a, i] pads to sl[i - 1]
    inf = float("inf")
    cost = [[inf] * (n + 1) for _ in range(k + 1)]
    cut = [[0] * (n + 1) for _ in range(k + 1)]
    cost[0][0] = 0
    for j in range(1, k + 1):
        for i in range(1, n + 1):
            for a in range(j - 1, i):
                c = cost[j - 1][a] + (i - a) * sl[i - 1]
                if c < cost[j][i]:
                    cost[j][i], cut[j][i] = c, a
    j = min(range(1, k + 1), key=lambda m: (cost[m][n], m))
    groups, i = [], n
    while i > 0:
        a = cut[j][i]
        groups.append(order[a:i])
        i, j = a, j - 1
    return groups[::-1]


def batch_loss(task: Task, model: TinyLM, recipe: Recipe, batch: list[tuple[Problem, str]], offsets: np.ndarray,
               autocast) -> tuple[torch.Tensor, int]:
    """The batch's answer loss and its real (non-pad) token count, laid out as the recipe says: padded to the
    longest row (the default), in length buckets, or packed end to end (`pack`)."""
    problems, labels = [p for p, _ in batch], [y for _, y in batch]
    if recipe.pack:
        idx, pos, tgt, seg = packed_batch(task, model.cfg.position, problems, labels, offsets)
        with autocast:
            logits, _ = model(idx, pos, segments=seg)
        return answer_loss(logits.float(), tgt, recipe.loss, seg), int((idx != PAD_ID).sum())
    groups = length_buckets([len(p.prompt) + len(y) for p, y in batch], recipe.length_buckets)
    parts, tokens = [], 0
    for rows in groups:
        idx, pos, tgt = training_batch(task, model.cfg.position, [problems[i] for i in rows],
                                       [labels[i] for i in rows], offsets[rows])
        with autocast:
            logits, _ = model(idx, pos)
        logits = logits.float()
        parts.append(answer_loss_sum(logits, tgt, recipe.loss) if len(groups) > 1 else
                     (answer_loss(logits, tgt, recipe.loss), 1))
        tokens += int((idx != PAD_ID).sum())
    return sum(t for t, _ in parts) / sum(c for _, c in parts), tokens


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
    opt = AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr,
        betas=(0.9, 0.98),
    )
    # A successor learning a new length drifts on lengths it had solved (one parent fell from 1.00 to 0.95 at
    # length 2 in 250 steps, for 3 seeds of 3); the average of its recent weights keeps them (BENCHMARKS.md).
    average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema)) if recipe.ema else None
    curve, tokens, t0 = [], 0, time.time()
    recent: deque[float] = deque(maxlen=50)  # the plateau check's window
    plateau: int | None = None
    guard_rng = seeds.rng(recipe.seed, "trainer-guardrail")  # its own stream: the main one draws as without it
    levels = mixture.levels() if recipe.curriculum_steps else []
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if recipe.precision == "bf16" else
                contextlib.nullcontext())
    for step in range(recipe.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, recipe)
        batch = mixture.sample(recipe.batch_size, rng, curriculum_level(step, recipe, levels))
        if recipe.guardrail_share and step >= recipe.guardrail_from:
            batch = with_guardrail(task, batch, recipe.guardrail_share, guard_rng)
        offsets = rng.integers(0, offset_range(step, recipe) + 1, size=len(batch))
        opt.zero_grad()
        loss, n = batch_loss(task, model, recipe, batch, offsets, autocast)
        tokens += n
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if average is not None:
            average.update_parameters(model)
        recent.append(loss.item())
        last = step == recipe.steps - 1
        if recipe.plateau_step and step == recipe.plateau_step and np.mean(recent) > recipe.plateau_loss:
            plateau, last = step, True
        if step % log_every == 0 or last:
            curve.append([step, round(loss.item(), 5)])
            if progress:
                progress(step + 1, recipe.steps, loss.item(), curve)
        if plateau is not None:
            break
    if average is not None:
        model.load_state_dict(average.module.state_dict())
    model.eval()
    wall = time.time() - t0
    metrics = {"steps": recipe.steps if plateau is None else plateau + 1, "loss_curve": curve,
               "train_wall_s": round(wall, 3), "tokens": tokens}
    return model, metrics | ({"stopped_on_plateau": {"step": plateau, "loss": round(float(np.mean(recent)), 5)}}
                             if plateau is not None else {})


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
