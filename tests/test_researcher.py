"""The evolution researcher: valid, distinct, deterministic proposals inside the search space."""
from __future__ import annotations

import numpy as np
import pytest

from successor.config import ResearcherConfig
from conftest import recipe_proposals

from successor.researchers.evolution import crossover, mutate, recipe_key
from successor.researchers.tinylm_search import Evolution
from successor.workloads.tinylm.recipe import SEARCH_SPACE, Recipe

INCUMBENT = Recipe(steps=300, lr=5e-4, warmup=0, batch_size=64, n_layer=2, n_embd=64, n_head=2)


def changed_fields(a: Recipe, b: Recipe) -> dict:
    da, db = a.model_dump(), b.model_dump()
    return {k: db[k] for k in da if da[k] != db[k]}


def assert_in_space(proposal: Recipe, base: Recipe = INCUMBENT) -> None:
    for field, value in changed_fields(base, proposal).items():
        assert field in SEARCH_SPACE, f"{field} is not a searched field"
        assert value in SEARCH_SPACE[field], f"{field}={value!r} is outside SEARCH_SPACE"


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_proposals_valid_distinct_first_is_incumbent(seed):
    evo = Evolution(ResearcherConfig(candidates=6))
    props = recipe_proposals(evo, INCUMBENT, [], set(), 6, np.random.default_rng(seed))
    assert len(props) == 6
    assert props[0].recipe == INCUMBENT and "incumbent" in props[0].rationale
    keys = [recipe_key(p.recipe) for p in props]
    assert len(set(keys)) == len(keys)
    for p in props:
        assert isinstance(p.recipe, Recipe)
        Recipe.model_validate(p.recipe.model_dump())  # round-trips through validation
        assert p.recipe.mix_newest + p.recipe.mix_human <= 1.0 + 1e-9
        assert p.rationale
    for p in props[1:]:
        assert changed_fields(INCUMBENT, p.recipe), "a mutation must change something"
        assert_in_space(p.recipe)
        # the rationale names what changed
        for field in changed_fields(INCUMBENT, p.recipe):
            assert field in p.rationale


def test_tried_challengers_are_never_proposed_again_the_incumbent_always_is():
    evo = Evolution(ResearcherConfig())
    first = recipe_proposals(evo, INCUMBENT, [], set(), 5, np.random.default_rng(7))
    tried = {recipe_key(p.recipe) for p in first}
    assert recipe_key(INCUMBENT) in tried
    second = recipe_proposals(evo, INCUMBENT, [], tried, 5, np.random.default_rng(7))  # same rng: would repeat
    assert len(second) == 5
    assert second[0].recipe == INCUMBENT  # the control arm, every generation
    keys = [recipe_key(p.recipe) for p in second[1:]]
    assert not set(keys) & tried  # no challenger is run twice from the same parent
    assert len(set(keys)) == len(keys)
    for p in second:
        assert_in_space(p.recipe)


def test_seed_is_not_part_of_the_key():
    assert recipe_key(INCUMBENT) == recipe_key(INCUMBENT.model_copy(update={"seed": 9}))
    assert recipe_key(INCUMBENT) != recipe_key(INCUMBENT.model_copy(update={"lr": 1e-3}))
    evo = Evolution(ResearcherConfig())
    tried_lr = INCUMBENT.model_copy(update={"lr": 1e-3, "seed": 5})  # a challenger tried under another seed
    props = recipe_proposals(evo, INCUMBENT, [(tried_lr, 9.0)], {recipe_key(tried_lr)}, 3, np.random.default_rng(0))
    assert all(recipe_key(p.recipe) != recipe_key(tried_lr) for p in props)


def test_deterministic_for_a_seed():
    evo = Evolution(ResearcherConfig(mutation_rate=0.4))
    history = [(INCUMBENT, 3.0), (INCUMBENT.model_copy(update={"lr": 1e-3}), 3.5),
               (INCUMBENT.model_copy(update={"steps": 600, "schedule": "linear"}), 2.0),
               (INCUMBENT.model_copy(update={"weight_decay": 0.2}), float("nan"))]
    a = recipe_proposals(evo, INCUMBENT, history, set(), 6, np.random.default_rng(42))
    b = recipe_proposals(evo, INCUMBENT, history, set(), 6, np.random.default_rng(42))
    c = recipe_proposals(evo, INCUMBENT, history, set(), 6, np.random.default_rng(43))
    assert [(p.recipe, p.rationale) for p in a] == [(p.recipe, p.rationale) for p in b]
    assert [p.recipe for p in a] != [p.recipe for p in c]


def test_with_history_and_crossover_values_stay_in_space():
    evo = Evolution(ResearcherConfig(mutation_rate=0.5, crossover=True))
    history = [(INCUMBENT.model_copy(update={"lr": lr, "batch_size": bs}), s)
               for lr, bs, s in [(1e-3, 32, 4.0), (2e-3, 96, 3.9), (3e-4, 128, 3.0), (1e-4, 48, 1.0)]]
    props = recipe_proposals(evo, INCUMBENT, history, set(), 12, np.random.default_rng(1))
    assert len(props) == 12
    assert len({recipe_key(p.recipe) for p in props}) == 12
    assert any("crossover" in p.rationale for p in props)
    for p in props:
        assert_in_space(p.recipe)
        # fields outside the search space are never touched, whatever the parent
        for field in set(Recipe.model_fields) - set(SEARCH_SPACE):
            assert getattr(p.recipe, field) == getattr(INCUMBENT, field), field


@pytest.mark.parametrize("seed", range(20))
def test_mutate_steps_to_values_in_space(seed):
    rng = np.random.default_rng(seed)
    child, changed = mutate(INCUMBENT, 0.3, rng)
    diff = changed_fields(INCUMBENT, child)
    assert len(changed) == len(diff)
    assert_in_space(child)
    # an off-space value moves into the space
    odd = INCUMBENT.model_copy(update={"steps": 3000, "lr": 4e-4})
    child, changed = mutate(odd, 1.0, rng)
    if changed:  # (a mutation that breaks the mixture constraint keeps the parent, unchanged)
        assert child.steps in SEARCH_SPACE["steps"] and child.lr in SEARCH_SPACE["lr"]
    else:
        assert child == odd


def test_crossover_mixes_only_searched_fields():
    a = INCUMBENT
    b = Recipe(steps=800, lr=2e-3, n_layer=6, n_embd=128, n_head=4, weight_decay=0.0, schedule="linear")
    seen = set()
    for seed in range(30):
        child = crossover(a, b, np.random.default_rng(seed))
        assert (child.n_layer, child.n_embd, child.n_head) == (2, 64, 2)  # architecture from the first parent
        assert child.steps in (300, 800) and child.lr in (5e-4, 2e-3)
        seen.add((child.steps, child.lr))
    assert len(seen) == 4  # every combination occurs
