"""The `evolution` researcher (no LLM): mutation and crossover over the workload's typed recipe space.

It is informed by history: parents are drawn from the best-scoring recipes so far, and research memory (the
keys of recipes already tried from the same parent model) keeps it from proposing an identical challenger.
The incumbent recipe is the control arm and is proposed every generation: its successor trains on the data the
generation curates, so it is never the same run twice, and without it one refusal would leave the loop with
challengers only (measured: three generations of mutations that forgot, after the incumbent was blocked).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from ..config import ResearcherConfig
from ..workloads.tinylm.recipe import SEARCH_SPACE, Recipe


@dataclass
class Proposal:
    recipe: Recipe
    rationale: str
    patch: str | None = None  # Python source run before training in the candidate's sandbox (a code change)


def recipe_key(recipe: Recipe) -> str:
    """Identity of a recipe for research memory; the seed is not part of it."""
    body = recipe.model_dump(exclude={"seed"})
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _nearest(values: list, v) -> int:
    if v in values:
        return values.index(v)
    if isinstance(v, (int, float)):
        return int(np.argmin([abs(x - v) for x in values]))
    return 0


def mutate(recipe: Recipe, rate: float, rng: np.random.Generator) -> tuple[Recipe, list[str]]:
    data, changed = recipe.model_dump(), []
    fields = list(SEARCH_SPACE)
    picks = [f for f in fields if rng.random() < rate] or [fields[rng.integers(len(fields))]]
    for f in picks:
        values = SEARCH_SPACE[f]
        i = _nearest(values, data[f]) + int(rng.choice([-2, -1, 1, 2]))
        new = values[min(max(i, 0), len(values) - 1)]
        if new != data[f]:
            changed.append(f"{f} {data[f]} -> {new}")
            data[f] = new
    try:
        return Recipe(**data), changed
    except ValueError:  # e.g. mixture shares over 1: keep the parent's values for those fields
        return recipe, []


def crossover(a: Recipe, b: Recipe, rng: np.random.Generator) -> Recipe:
    da, db = a.model_dump(), b.model_dump()
    child = {k: (db[k] if k in SEARCH_SPACE and rng.random() < 0.5 else da[k]) for k in da}
    try:
        return Recipe(**child)
    except ValueError:
        return a


class Evolution:
    def __init__(self, cfg: ResearcherConfig):
        self.cfg = cfg

    def propose(
        self,
        incumbent: Recipe,
        history: list[tuple[Recipe, float]],
        tried: set[str],
        n: int,
        rng: np.random.Generator,
    ) -> list[Proposal]:
        """`history` is (recipe, validation score) of past candidates; `tried` are keys already run from the
        current parent. The first proposal is always the incumbent recipe (the control arm); the challengers
        are new for this parent."""
        ranked = [r for r, s in sorted(history, key=lambda t: -t[1]) if np.isfinite(s)] or [incumbent]
        out: list[Proposal] = []
        seen = set(tried) | {recipe_key(incumbent)}
        out.append(Proposal(incumbent, "incumbent recipe: the one that produced the current champion"))
        attempts = 0
        while len(out) < n and attempts < 200:
            attempts += 1
            top = ranked[: max(2, len(ranked) // 3)]
            parent = top[rng.integers(len(top))]
            note = f"mutation of a top-{len(top)} recipe"
            if self.cfg.crossover and len(top) > 1 and rng.random() < 0.3:
                other = top[rng.integers(len(top))]
                parent = crossover(parent, other, rng)
                note = "crossover of two top recipes, then mutation"
            child, changed = mutate(parent, self.cfg.mutation_rate, rng)
            if not changed or recipe_key(child) in seen:
                continue
            seen.add(recipe_key(child))
            out.append(Proposal(child, f"{note}: {', '.join(changed)}"))
        return out
