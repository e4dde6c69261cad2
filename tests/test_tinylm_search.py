"""The tinylm baselines (random search and TPE over SEARCH_SPACE), their factory and their config."""
from __future__ import annotations

import numpy as np
import pytest

from successor.config import ConfigError, ResearcherConfig, RunConfig, load_config, validated
from conftest import recipe_proposals

from successor.researchers.evolution import recipe_key
from successor.researchers.tinylm_search import Evolution, RandomRecipes, TPERecipes, choices, tinylm_researcher
from successor.workloads.tinylm.recipe import SEARCH_SPACE, Recipe

# steps 250 is not a SEARCH_SPACE value: the configured successor recipe's own (smoke preset)
INCUMBENT = Recipe(steps=250, lr=2e-3, warmup=0, batch_size=64, n_layer=2, n_embd=64, n_head=4, max_offset=5)


def valid(r: Recipe) -> bool:
    return r.mix_newest + r.mix_human <= 1.0 + 1e-9 and r.n_embd % r.n_head == 0


def assert_challenger(r: Recipe, incumbent_values: bool = False) -> None:
    """Valid, in SEARCH_SPACE (or, for TPE, at the incumbent's own value of a field), the rest the incumbent's."""
    Recipe.model_validate(r.model_dump())
    assert valid(r)
    for k, v in SEARCH_SPACE.items():
        allowed = [*v, getattr(INCUMBENT, k)] if incumbent_values else v
        assert getattr(r, k) in allowed, f"{k}={getattr(r, k)!r} outside SEARCH_SPACE"
    base, got = INCUMBENT.model_dump(), r.model_dump()
    assert {k for k in base if base[k] != got[k]} <= set(SEARCH_SPACE)  # the rest stays the incumbent's


def test_random_covers_the_space_keeps_the_rest_and_is_valid():
    res = RandomRecipes(ResearcherConfig(name="random"))
    seen = {k: set() for k in SEARCH_SPACE}
    rng = np.random.default_rng(0)
    for _ in range(60):
        props = recipe_proposals(res, INCUMBENT, [], set(), 8, rng)
        assert len(props) == 8
        assert props[0].recipe == INCUMBENT and "incumbent" in props[0].rationale  # the control arm
        keys = [recipe_key(p.recipe) for p in props]
        assert len(set(keys)) == len(keys)
        for p in props[1:]:
            assert_challenger(p.recipe)
            assert p.rationale.startswith("random search")
            for k in SEARCH_SPACE:
                seen[k].add(getattr(p.recipe, k))
    for k, v in SEARCH_SPACE.items():  # 420 draws: every value of every field, except the invalid mixtures
        assert seen[k] == set(v), k


def test_random_is_uniform_over_a_field():
    res, rng = RandomRecipes(), np.random.default_rng(1)
    lrs = [res.sample(INCUMBENT, rng).lr for _ in range(1800)]
    counts = np.array([lrs.count(v) for v in SEARCH_SPACE["lr"]])
    assert counts.min() > 150 and counts.max() < 250  # expected 200 each (sd ~13)


def test_random_respects_tried_and_is_deterministic_by_rng():
    res = RandomRecipes()
    first = recipe_proposals(res, INCUMBENT, [], set(), 5, np.random.default_rng(3))
    again = recipe_proposals(res, INCUMBENT, [], set(), 5, np.random.default_rng(3))
    assert [p.recipe for p in first] == [p.recipe for p in again]
    tried = {recipe_key(p.recipe) for p in first}
    second = recipe_proposals(res, INCUMBENT, [], tried, 5, np.random.default_rng(3))  # the same draws come first
    assert second[0].recipe == INCUMBENT
    assert not {recipe_key(p.recipe) for p in second[1:]} & tried


def history(rng: np.random.Generator, n: int, best_lr: float) -> list[tuple[Recipe, float]]:
    """Random recipes whose score is high exactly when lr is `best_lr` (plus noise), and one failure."""
    res = RandomRecipes()
    out = []
    for _ in range(n):
        r = res.sample(INCUMBENT, rng)
        out.append((r, (0.8 if r.lr == best_lr else 0.3) + float(rng.normal(0, 0.05))))
    return out + [(res.sample(INCUMBENT, rng), float("-inf"))]


def test_tpe_learns_from_history_more_than_random_search():
    best = 7e-4
    tpe = TPERecipes(ResearcherConfig(name="optuna"))
    rnd = RandomRecipes()
    hits = {"tpe": 0, "random": 0}
    total = 0
    for seed in range(8):
        hist = history(np.random.default_rng(100 + seed), 40, best)
        assert sum(r.lr == best for r, _ in hist) >= 1
        for name, res in (("tpe", tpe), ("random", rnd)):
            props = recipe_proposals(res, INCUMBENT, hist, set(), 6, np.random.default_rng(seed))
            assert len(props) == 6 and props[0].recipe == INCUMBENT
            for p in props[1:]:
                assert_challenger(p.recipe, incumbent_values=name == "tpe")
            hits[name] += sum(p.recipe.lr == best for p in props[1:])
        total += 5
    # random: 1/9 of 40 asks, ~4.4; TPE concentrates on the value that always scored best
    assert hits["random"] < 0.25 * total
    assert hits["tpe"] >= 0.35 * total and hits["tpe"] > 2 * hits["random"], hits  # measured: 22 and 2 of 40


def test_tpe_is_deterministic_by_rng_respects_tried_and_handles_off_space_values():
    tpe = TPERecipes(ResearcherConfig(name="optuna"))
    off = INCUMBENT.model_copy(update={"steps": 250, "lr": 2.5e-3})  # neither value is in SEARCH_SPACE
    hist = history(np.random.default_rng(5), 12, 1e-3) + [(off, 0.95), (INCUMBENT, 0.9)]
    assert 250 in choices(INCUMBENT, hist)["steps"] and 2.5e-3 in choices(INCUMBENT, hist)["lr"]
    a = recipe_proposals(tpe, INCUMBENT, hist, set(), 5, np.random.default_rng(9))
    b = recipe_proposals(tpe, INCUMBENT, hist, set(), 5, np.random.default_rng(9))
    assert [p.recipe for p in a] == [p.recipe for p in b]
    assert "modelled" in a[1].rationale
    tried = {recipe_key(p.recipe) for p in a}
    c = recipe_proposals(tpe, INCUMBENT, hist, tried, 5, np.random.default_rng(9))
    assert len(c) == 5 and not {recipe_key(p.recipe) for p in c[1:]} & tried
    for p in a[1:] + c[1:]:
        Recipe.model_validate(p.recipe.model_dump())
        assert valid(p.recipe)
    empty = recipe_proposals(tpe, INCUMBENT, [], set(), 4, np.random.default_rng(0))  # no history: its random start
    assert len(empty) == 4 and "random start" in empty[1].rationale


def test_the_factory_builds_each_and_refuses_cmaes():
    assert isinstance(tinylm_researcher(ResearcherConfig()), Evolution)
    assert isinstance(tinylm_researcher(ResearcherConfig(name="random")), RandomRecipes)
    assert isinstance(tinylm_researcher(ResearcherConfig(name="optuna")), TPERecipes)
    with pytest.raises(ValueError, match="not offered for tinylm"):
        tinylm_researcher(ResearcherConfig(name="optuna", optuna={"sampler": "cmaes"}))
    with pytest.raises(ValueError, match="script workload"):
        tinylm_researcher(ResearcherConfig(name="llm", llm={"model": "m"}))


@pytest.mark.parametrize("name", ["random", "optuna", "evolution"])
def test_config_accepts_the_tinylm_researchers(tmp_path, name):
    (tmp_path / "c.yaml").write_text(f"researcher: {{name: {name}, seed: 3}}\n")
    cfg = load_config(tmp_path / "c.yaml", preset="smoke")
    assert cfg.researcher.name == name and cfg.researcher.seed == 3
    assert load_config(preset="smoke").researcher.seed is None  # default: the stream as before the field


@pytest.mark.parametrize("section, message", [
    ("{name: llm, llm: {model: m}}", "researcher llm drives the script workload only; tinylm uses evolution, "
                                     "random or optuna"),
    ("{name: manager}", "researcher manager drives the script workload only"),
    ("{name: optuna, optuna: {sampler: cmaes}}", "optuna sampler cmaes is not offered for tinylm"),
    ("{seed: -1}", "researcher.seed"),
])
def test_config_refuses_script_researchers_for_tinylm_in_one_line(tmp_path, section, message):
    (tmp_path / "c.yaml").write_text(f"researcher: {section}\n")
    with pytest.raises(ConfigError, match=message) as e:
        load_config(tmp_path / "c.yaml", preset="smoke")
    assert "\n" not in str(e.value)


def test_script_refuses_random_and_a_researcher_seed():
    script = {"program": "/tmp", "command": ["python", "train.py"], "editable": ["train.py"],
              "metric": {"regex": "m=([0-9.]+)"}, "artifact": "model.bin"}
    for researcher, message in (({"name": "random"}, "researcher random is for tinylm"),
                                ({"seed": 1}, "researcher.seed is for tinylm")):
        with pytest.raises(ConfigError, match=message):
            validated(RunConfig, {"workload": "script", "script": script, "researcher": researcher})
