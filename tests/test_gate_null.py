"""benchmarks/gate_null.py: its synthetic contenders and rates, on synthetic sealed items (no training)."""
from __future__ import annotations

import gc
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from successor.config import GateConfig

_spec = importlib.util.spec_from_file_location("gate_null", Path(__file__).parents[1] / "benchmarks" / "gate_null.py")
gate_null = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gate_null)

CFG = GateConfig(alpha=0.05, min_effect=0.005, forget_tolerance=0.015)  # the default preset's gate
LEVELS = [1, 2, 3]
NOISE = {3: 40.0}  # disagreement between two retrains, all on the unsolved level (as in runs/demo2)


@pytest.fixture(autouse=True, scope="module")
def frozen_heap():
    """statsmodels' Holm calls gc.collect() on every decision: 0.5-0.9 s over torch's heap unless it is frozen."""
    gc.freeze()
    yield
    gc.unfreeze()


def champion(seed: int) -> dict[int, list[int]]:
    """Solves levels 1-2, 30% on level 3; 400 items per level."""
    rng = np.random.default_rng(seed)
    return {1: [1] * 400, 2: [1] * 400, 3: (rng.random(400) < 0.3).astype(int).tolist()}


def effect(a: dict[int, list[int]], b: dict[int, list[int]]) -> float:
    return float(np.mean([x for lvl in LEVELS for x in b[lvl]]) - np.mean([x for lvl in LEVELS for x in a[lvl]]))


def test_same_weights_never_promotes():
    rng = np.random.default_rng(0)
    for seed in range(20):
        c = champion(seed)
        assert not gate_null.promoted(c, c, CFG, LEVELS)
        assert not gate_null.promoted(c, c, CFG.model_copy(update={"min_effect": 0.0}), LEVELS)
        x, y = gate_null.resample(c, c, rng)
        assert x == y and not gate_null.promoted(x, y, CFG, LEVELS)


def test_true_gain_is_exact_without_noise_and_only_fixes_wrong_tested_items():
    c = champion(1)
    assert gate_null.contender_with(c, 0.0, {}, LEVELS, np.random.default_rng(0)) == c
    d = gate_null.contender_with(c, 0.02, {}, LEVELS, np.random.default_rng(0))
    assert effect(c, d) == pytest.approx(0.02)  # 24 of 1,200 items
    assert all(d[lvl][i] >= c[lvl][i] for lvl in c for i in range(400))


def test_noise_is_symmetric_so_the_expected_effect_is_delta():
    rng = np.random.default_rng(1)
    c = champion(2)
    effects = [effect(c, gate_null.contender_with(c, 0.01, NOISE, LEVELS, rng)) for _ in range(400)]
    assert np.mean(effects) == pytest.approx(0.01, abs=0.0015)
    assert np.std(effects) > 0.002  # the noise moves the observed effect


def test_a_large_gain_promotes_nearly_always_and_none_rarely():
    rng = np.random.default_rng(2)
    big = sum(gate_null.promoted(c, gate_null.contender_with(c, 0.05, NOISE, LEVELS, rng), CFG, LEVELS)
              for c in (champion(s) for s in range(100)))
    none = sum(gate_null.promoted(c, gate_null.contender_with(c, 0.0, NOISE, LEVELS, rng), CFG, LEVELS)
               for c in (champion(s) for s in range(100)))
    assert big >= 95
    assert none <= 10


def test_a_gain_larger_than_the_champion_can_make_is_refused():
    with pytest.raises(ValueError, match="wrong tested items"):
        gate_null.contender_with({1: [1] * 100}, 0.5, {}, [1], np.random.default_rng(0))


@pytest.mark.parametrize("hits,trials", [(0, 100), (5, 100), (37, 200), (200, 200)])
def test_rate_interval_contains_the_rate(hits: int, trials: int):
    r, lo, hi = gate_null.rate(hits, trials)
    assert r == hits / trials and lo <= r <= hi and 0 <= lo < hi <= 1


def test_rate_interval_is_exact_clopper_pearson():
    _, lo, hi = gate_null.rate(0, 100)
    assert lo == 0 and hi == pytest.approx(1 - 0.025 ** (1 / 100))  # closed form when nothing happened
    _, lo, hi = gate_null.rate(5, 100)
    assert (lo, hi) == pytest.approx((0.0164, 0.1128), abs=1e-4)
