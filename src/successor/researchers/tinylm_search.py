"""The tinylm workload's researchers: search over its `Recipe`, speaking the one protocol every researcher speaks
(`propose(Brief) -> list[Proposal]`, researchers/base.py). `recipe_brief` is the brief the tinylm workload gives:
its `extra` carries the incumbent recipe, the history of (recipe, validation score) and the keys already tried from
this parent; a proposal's knobs are a whole recipe, and its `diff` is Python source run before training (a code
change), where a researcher has one.

- `Evolution` (`researcher.name: evolution`, the default): mutation and crossover of the best recipes so far.

- `RandomRecipes` (`researcher.name: random`): every challenger draws every SEARCH_SPACE field uniformly from its
  values, on top of the incumbent recipe (fields outside the space, e.g. the architecture, stay the incumbent's).
  An invalid draw (mix_newest + mix_human > 1) is drawn again, so challengers are uniform over the valid recipes.
- `TPERecipes` (`researcher.name: optuna`, `optuna.sampler: tpe`): optuna's TPE over SEARCH_SPACE as categorical
  dimensions. The study is rebuilt every generation from the loop's `history` (recipe, validation score; a failed
  experiment's -inf is a FAIL trial) and asked for the challengers, so the run's store stays the only state. A
  value of a field that is not in SEARCH_SPACE (the configured successor recipe's steps 250, say) becomes one more
  choice of that field for that generation, so the incumbent's own trials are modelled as what they were.

Like `Evolution`, both propose the incumbent recipe first, as the control arm (the loop's selection keeps it unless
a challenger beats it on validation): the comparison is of how the challengers are chosen, nothing else.
CMA-ES is not offered: the recipe space is a grid of categorical choices, not a continuous box.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..config import ResearcherConfig
from ..workloads.tinylm.recipe import SEARCH_SPACE, Recipe
from .base import Brief, Proposal, Space
from .evolution import crossover, mutate, recipe_key

CONTROL = "incumbent recipe: the one that produced the current champion"


def recipe_brief(generation: int, incumbent: Recipe, history: list[tuple[Recipe, float]], tried: set[str], n: int,
                 rng: np.random.Generator) -> Brief:
    """The brief of a tinylm generation: ranked on validation score (higher is better)."""
    return Brief(generation=generation, champion_knobs=incumbent.model_dump(), champion_metric=None,
                 metric="validation score", direction="maximize", space=Space({}), sources={}, editable=[],
                 memory=[], weaknesses=[], n=n, rng=rng,
                 extra={"incumbent": incumbent, "history": history, "tried": tried})


class RecipeSearch:
    """What every tinylm researcher shares: the protocol's `propose(Brief)`, over its own `recipes(...)`, which
    returns (recipe, rationale) pairs, the incumbent first (the control arm)."""

    name = "recipes"

    def propose(self, brief: Brief) -> list[Proposal]:
        x = brief.extra
        return [Proposal(knobs=recipe.model_dump(), rationale=why, researcher=self.name)
                for recipe, why in self.recipes(x["incumbent"], x["history"], x["tried"], brief.n, brief.rng)]

    def recipes(self, incumbent: Recipe, history: list[tuple[Recipe, float]], tried: set[str], n: int,
                rng: np.random.Generator) -> list[tuple[Recipe, str]]:
        raise NotImplementedError


class Evolution(RecipeSearch):
    """Mutation and crossover of the best recipes so far (evolution.mutate / crossover)."""

    name = "evolution"

    def __init__(self, cfg: ResearcherConfig):
        self.cfg = cfg

    def recipes(self, incumbent: Recipe, history: list[tuple[Recipe, float]], tried: set[str], n: int,
                rng: np.random.Generator) -> list[tuple[Recipe, str]]:
        """`history` is (recipe, validation score) of past candidates; `tried` are keys already run from the
        current parent. The first proposal is always the incumbent recipe (the control arm); the challengers
        are new for this parent."""
        ranked = [r for r, s in sorted(history, key=lambda t: -t[1]) if np.isfinite(s)] or [incumbent]
        out: list[tuple[Recipe, str]] = []
        seen = set(tried) | {recipe_key(incumbent)}
        out.append((incumbent, CONTROL))
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
            out.append((child, f"{note}: {', '.join(changed)}"))
        return out


def _valid(base: Recipe, values: dict) -> Recipe | None:
    try:
        return Recipe(**(base.model_dump() | values))
    except ValueError:
        return None


def _changes(base: Recipe, recipe: Recipe) -> str:
    a, b = base.model_dump(), recipe.model_dump()
    return ", ".join(f"{k} {a[k]} -> {b[k]}" for k in SEARCH_SPACE if a[k] != b[k]) or "no change"


class RandomRecipes(RecipeSearch):
    """Random search over SEARCH_SPACE: the control arm, then uniform draws new to this parent."""

    name = "random"

    def __init__(self, cfg: ResearcherConfig | None = None, attempts: int = 200):
        self.cfg, self.attempts = cfg, attempts

    def sample(self, base: Recipe, rng: np.random.Generator) -> Recipe:
        """One valid recipe: every SEARCH_SPACE field uniform over its values (rejection keeps it uniform)."""
        for _ in range(self.attempts):
            recipe = _valid(base, {k: v[int(rng.integers(len(v)))] for k, v in SEARCH_SPACE.items()})
            if recipe is not None:
                return recipe
        raise RuntimeError("no valid recipe in SEARCH_SPACE after many draws")  # pragma: no cover

    def recipes(self, incumbent: Recipe, history: list[tuple[Recipe, float]], tried: set[str], n: int,
                rng: np.random.Generator) -> list[tuple[Recipe, str]]:
        out = [(incumbent, CONTROL)]
        seen = set(tried) | {recipe_key(incumbent)}
        for _ in range(self.attempts):
            if len(out) >= n:
                break
            recipe = self.sample(incumbent, rng)
            if recipe_key(recipe) in seen:
                continue
            seen.add(recipe_key(recipe))
            out.append((recipe, f"random search: {_changes(incumbent, recipe)}"))
        return out


def choices(incumbent: Recipe, history: list[tuple[Recipe, float]]) -> dict[str, list]:
    """Each field's SEARCH_SPACE values plus any other value the incumbent or a past recipe had (sorted)."""
    out = {}
    for field, grid in SEARCH_SPACE.items():
        extra = {getattr(r, field) for r in [incumbent, *(r for r, _ in history)]} - set(grid)
        vals = list(grid) + sorted(extra, key=lambda v: (str(type(v)), v))
        out[field] = sorted(vals) if all(isinstance(v, (int, float)) for v in vals) else vals
    return out


class TPERecipes(RecipeSearch):
    """Optuna's TPE over SEARCH_SPACE, rebuilt from `history` each generation; its seed is drawn from the rng the
    loop passes (the run seed, the generation and researcher.seed), so a generation's asks are reproducible."""

    name = "optuna"

    def __init__(self, cfg: ResearcherConfig, attempts_per_candidate: int = 10):
        if cfg.optuna.sampler != "tpe":
            raise ValueError(f"optuna sampler {cfg.optuna.sampler} is not offered for tinylm: its recipe space is "
                             "categorical; use sampler tpe")
        self.cfg, self.attempts = cfg, attempts_per_candidate

    def study(self, incumbent: Recipe, history: list[tuple[Recipe, float]], seed: int):
        """The study of `history` (fresh, in memory) and the distributions to ask it with."""
        import optuna  # here: a run that does not use it does not import it
        from optuna.distributions import CategoricalDistribution
        from optuna.samplers import TPESampler
        from optuna.trial import TrialState

        dists = {k: CategoricalDistribution(v) for k, v in choices(incumbent, history).items()}
        trials = []
        for recipe, score in history:
            done = score is not None and np.isfinite(score)
            trials.append(optuna.trial.create_trial(
                state=TrialState.COMPLETE if done else TrialState.FAIL, value=float(score) if done else None,
                params={k: getattr(recipe, k) for k in dists}, distributions=dists))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = TPESampler(seed=seed, n_startup_trials=self.cfg.optuna.startup_trials, constant_liar=True)
            study = optuna.create_study(direction="maximize", sampler=sampler)
        study.add_trials(trials)
        return study, dists

    def recipes(self, incumbent: Recipe, history: list[tuple[Recipe, float]], tried: set[str], n: int,
                rng: np.random.Generator) -> list[tuple[Recipe, str]]:
        import optuna
        from optuna.trial import TrialState

        seed = int(rng.integers(2**31 - 1))
        study, dists = self.study(incumbent, history, seed)
        measured = sum(s is not None and np.isfinite(s) for _, s in history)
        phase = "random start" if measured < self.cfg.optuna.startup_trials else "modelled"
        out = [(incumbent, CONTROL)]
        seen = set(tried) | {recipe_key(incumbent)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            for _ in range(self.attempts * n + 10):
                if len(out) >= n:
                    break
                trial = study.ask(dists)
                recipe = _valid(incumbent, trial.params)
                if recipe is None or recipe_key(recipe) in seen:  # invalid or already run: asked again
                    study.tell(trial, state=TrialState.FAIL)
                    continue
                seen.add(recipe_key(recipe))
                out.append((recipe, f"TPE sample ({phase}: {measured} measured recipe(s)): "
                                            f"{_changes(incumbent, recipe)}"))
        return out


def tinylm_researcher(cfg: ResearcherConfig):
    """The tinylm researcher `cfg.name` names: evolution (default), random or optuna (TPE)."""
    if cfg.name == "evolution":
        return Evolution(cfg)
    if cfg.name == "random":
        return RandomRecipes(cfg)
    if cfg.name == "optuna":
        return TPERecipes(cfg)
    raise ValueError(f"researcher {cfg.name} drives the script workload only; tinylm uses evolution, random or "
                     "optuna")
