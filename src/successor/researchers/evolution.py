"""The `evolution` researcher (no LLM): mutation and crossover over the workload's typed recipe space.

Two front ends share `mutate_values` / `crossover_values`, both speaking the one protocol of `base`
(`propose(Brief)`): `EvolutionSearch` (script: the knob space, whose grids are `Dim.grid()`) and
`tinylm_search.Evolution` (tinylm: a `Recipe` and SEARCH_SPACE).

It is informed by history: parents are drawn from the best-scoring recipes so far, and research memory (the
keys of recipes already tried from the same parent model) keeps it from proposing an identical challenger.
The incumbent recipe is the control arm and is proposed every generation: its successor trains on the data the
generation curates, so it is never the same run twice, and without it one refusal would leave the loop with
challengers only (measured: three generations of mutations that forgot, after the incumbent was blocked).
"""
from __future__ import annotations

import hashlib
import json

import numpy as np

from ..workloads.tinylm.recipe import SEARCH_SPACE, Recipe
from .base import Brief, Dim, Proposal, Space, proposal_key


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


def mutate_values(values: dict, grids: dict[str, list], rate: float,
                  rng: np.random.Generator) -> tuple[dict, list[str]]:
    """Each field of `grids` moves, with probability `rate` (at least one does), one or two steps along its
    ordered grid (an off-grid value first snaps to its nearest grid point). Works on any dict of values, so the
    tinylm recipe (SEARCH_SPACE) and a script's knobs (Dim.grid()) share it. Returns the child and what changed."""
    data, changed = dict(values), []
    fields = list(grids)
    picks = [f for f in fields if rng.random() < rate] or [fields[rng.integers(len(fields))]]
    for f in picks:
        grid = grids[f]
        i = _nearest(grid, data[f]) + int(rng.choice([-2, -1, 1, 2]))
        new = grid[min(max(i, 0), len(grid) - 1)]
        if new != data[f]:
            changed.append(f"{f} {data[f]} -> {new}")
            data[f] = new
    return data, changed


def crossover_values(a: dict, b: dict, fields, rng: np.random.Generator) -> dict:
    """Uniform crossover: each of `fields` comes from `b` with probability 1/2; every other key stays `a`'s."""
    return {k: (b[k] if k in fields and rng.random() < 0.5 else a[k]) for k in a}


def mutate(recipe: Recipe, rate: float, rng: np.random.Generator) -> tuple[Recipe, list[str]]:
    data, changed = mutate_values(recipe.model_dump(), SEARCH_SPACE, rate, rng)
    try:
        return Recipe(**data), changed
    except ValueError:  # e.g. mixture shares over 1: keep the parent's values for those fields
        return recipe, []


def crossover(a: Recipe, b: Recipe, rng: np.random.Generator) -> Recipe:
    try:
        return Recipe(**crossover_values(a.model_dump(), b.model_dump(), SEARCH_SPACE, rng))
    except ValueError:
        return a


def knob_grid(dim: Dim) -> list:
    """`dim.grid()` less any point its rounding pushed out of bounds (grid() rounds to 4 significant digits)."""
    out = []
    for v in dim.grid():
        try:
            out.append(dim.check(v))
        except ValueError:
            pass
    return out


def safe_key(space: Space, knobs: dict, diff: str | None = None) -> str:
    """proposal_key of the knobs as the space types them (so 1 and 1.0 agree), or of the raw knobs if the space
    refuses them (a trial from an older space)."""
    try:
        knobs = space.validate(knobs)
    except ValueError:
        pass
    return proposal_key(knobs, diff)


def ranked_parents(brief: Brief) -> list[tuple[dict, float, str]]:
    """(knobs, metric, label) of every done trial with a finite metric, best first for brief.direction (ties
    keep memory's order), plus the champion unless a trial already has its knobs; or the champion alone."""
    done = [(t.knobs, float(t.metric), t.id) for t in brief.memory
            if t.status == "done" and t.metric is not None and np.isfinite(t.metric)]
    champ = brief.champion_knobs
    if brief.champion_metric is not None and np.isfinite(brief.champion_metric) \
            and all(safe_key(brief.space, k) != safe_key(brief.space, champ) for k, _, _ in done):
        done.append((champ, float(brief.champion_metric), "champion"))
    sign = -1.0 if brief.direction == "maximize" else 1.0
    ranked = sorted(done, key=lambda e: sign * e[1])
    return ranked or [(champ, float("nan"), "champion")]


class EvolutionSearch:
    """Evolution over a script's knob space, for the `propose(brief)` protocol.

    Parents are the top third (at least two) of the done trials by metric, in brief.direction; knob-only and
    patched trials both count, for their knobs. Children carry no diff: the champion's files already hold every
    promoted patch, and a patch that was not promoted is not worth carrying blind (the llm researcher owns code
    changes). A child is new: its key (knobs, no diff) is not in memory, not the champion's, not in
    brief.extra["exclude"] (keys the manager already holds), and not earlier in the batch."""

    def __init__(self, cfg_mutation_rate: float, crossover: bool, name: str = "evolution",
                 role: str | None = None):
        self.rate, self.crossover, self.name, self.role = cfg_mutation_rate, crossover, name, role

    def propose(self, brief: Brief) -> list[Proposal]:
        space, rng = brief.space, brief.rng
        grids = {k: knob_grid(d) for k, d in space.dims.items()}
        grids = {k: g for k, g in grids.items() if len(g) > 1}
        if not grids:
            return []
        base = {**space.defaults(), **{k: v for k, v in brief.champion_knobs.items() if k in space.dims}}
        ranked = [({**base, **{k: v for k, v in kn.items() if k in space.dims}}, m, label)
                  for kn, m, label in ranked_parents(brief)]
        seen = {t.key for t in brief.memory} | {safe_key(space, t.knobs, t.diff) for t in brief.memory}
        seen |= {safe_key(space, brief.champion_knobs)} | set(brief.extra.get("exclude", ()))
        role = self.role or brief.extra.get("role")
        top = ranked[: max(2, len(ranked) // 3)]
        out: list[Proposal] = []
        attempts = 0
        while len(out) < brief.n and attempts < 50 * brief.n + 100:
            attempts += 1
            parent, metric, label = top[rng.integers(len(top))]
            note = (f"mutation of {label} (metric {metric:.4g}, one of the top {len(top)})" if np.isfinite(metric)
                    else f"mutation of the {label}'s knobs (no measured trial yet)")
            if self.crossover and len(top) > 1 and rng.random() < 0.3:
                other, _, olabel = top[rng.integers(len(top))]
                parent = crossover_values(parent, other, grids, rng)
                note = f"crossover of {label} and {olabel}, then mutation"
            child, changed = mutate_values(parent, grids, self.rate, rng)
            if not changed:
                continue
            try:
                child = space.validate(child)
            except ValueError:
                continue
            key = proposal_key(child, None)
            if key in seen:
                continue
            seen.add(key)
            out.append(Proposal(knobs=child, rationale=f"{note}: {', '.join(changed)}", role=role,
                                     researcher=self.name))
        return out
