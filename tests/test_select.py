"""The select stage: the incumbent recipe's candidate (the control arm) stays selected unless a challenger that
keeps every solved level beats its probe on the same validation items; ranking alone decides otherwise."""
from __future__ import annotations

from pathlib import Path

import pytest

from successor.config import load_config
from successor.driver import Driver
from successor.workloads.tinylm.workload import TinyLMWorkload
from successor.rundir import RunDir

SOLVED = [1] * 60  # the champion solves level 1 on validation
LEVEL2 = 60


def probe(level1: int, level2: int) -> dict[int, list[int]]:
    """Validation items of a probe: `level1` and `level2` correct of 60, the first ones."""
    return {1: [1] * level1 + [0] * (60 - level1), 2: [1] * level2 + [0] * (LEVEL2 - level2)}


@pytest.fixture
def loop(tmp_path: Path) -> TinyLMWorkload:
    loop = Driver(RunDir(tmp_path / "run", load_config(preset="smoke"))).workload
    incumbent = loop.cfg.successor
    challenger = incumbent.model_copy(update={"lr": incumbent.lr * 2})
    loop.incumbent = lambda champion: incumbent  # the recipe that produced the champion
    loop.recipe = lambda cid: incumbent if cid == "g1c0" else challenger
    return loop


def select(loop: TinyLMWorkload, probes: dict[str, dict[int, list[int]]]) -> dict:
    items = {"champion": {1: SOLVED, 2: [1] * 30 + [0] * 30}} | {f"model-{c}": v for c, v in probes.items()}
    loop.grade = loop.grader.grade = lambda digest, tier, parts=None: items[digest]
    interpret = {c: {"acc": {str(k): sum(v) / len(v) for k, v in p.items()}, "score": sum(sum(v) / len(v)
                     for v in p.values())} for c, p in probes.items()}
    ctx = {"champion": "champion", "interpret": interpret,
           "experiment": {c: {"model": f"model-{c}"} for c in probes}}
    return loop.select(1, ctx)


def test_a_lead_of_one_item_does_not_displace_the_incumbent(loop):
    out = select(loop, {"g1c0": probe(60, 40), "g1c1": probe(60, 41)})
    assert out["ranking"] == ["g1c1", "g1c0"]  # the challenger scores higher ...
    assert out["incumbent"] == "g1c0" and out["selected"] == "g1c0"  # ... but not significantly
    assert out["p_vs_incumbent"]["g1c1"] > loop.cfg.gate.alpha


def test_a_significantly_better_challenger_is_selected(loop):
    out = select(loop, {"g1c0": probe(60, 30), "g1c1": probe(60, 50)})
    assert out["selected"] == "g1c1" and out["p_vs_incumbent"]["g1c1"] < loop.cfg.gate.alpha


def test_a_challenger_that_forgets_a_solved_level_cannot_displace_the_incumbent(loop):
    out = select(loop, {"g1c0": probe(60, 30), "g1c1": probe(55, 60)})
    assert out["keeps_solved_levels"] == {"g1c0": True, "g1c1": False}
    assert out["selected"] == "g1c0" and out["p_vs_incumbent"] == {}


def test_an_incumbent_probe_that_forgets_leaves_the_choice_to_the_ranking(loop):
    out = select(loop, {"g1c0": probe(55, 50), "g1c1": probe(60, 31)})
    assert out["incumbent"] is None and out["selected"] == "g1c1"
