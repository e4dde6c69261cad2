"""The bootstrap's curriculum: the human lengths enter the batch from the shortest, so training from scratch does
not sit on the loss plateau that every length at once can hold it on (issue 25)."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from successor.config import load_config
from successor.workloads.tinylm import train as train_module
from successor.workloads.tinylm.data import labelled
from successor.workloads.tinylm.grading import TrainMetrics
from successor.workloads.tinylm.recipe import Recipe
from successor.workloads.tinylm.tasks import get_task
from successor.workloads.tinylm.train import Mixture, curriculum_level, offset_range, train

TASK = get_task("addition")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def recipe(**kw) -> Recipe:
    base = dict(init="scratch", n_layer=1, n_embd=32, n_head=2, ffn_mult=2, steps=40, lr=3e-3, warmup=0,
                batch_size=16, max_offset=2, seed=0)
    return Recipe(**(base | kw))


def test_the_two_shortest_levels_come_first_and_one_more_enters_per_share():
    r, levels = recipe(curriculum_steps=700, steps=1000), list(range(1, 9))
    got = [curriculum_level(s, r, levels) for s in range(1000)]
    assert got[0] == 2 and got[99] == 2 and got[100] == 3  # seven levels to add over 700 steps: one per 100
    assert got[699] == 8 and all(g is None for g in got[700:])  # over: every level, drawn as without it
    assert got == sorted(got[:700]) + got[700:]  # never shrinks
    assert all(curriculum_level(s, recipe(), levels) is None for s in range(50))  # 0: no curriculum
    # levels need not start at 1 or be contiguous: the shortest two of the data first
    assert curriculum_level(0, r, [3, 5, 9]) == 5 and curriculum_level(699, r, [3, 5, 9]) == 9


def test_a_capped_batch_holds_only_levels_up_to_the_cap_drawn_evenly_across_levels():
    data = labelled(TASK, [1, 2, 3, 4], 50, np.random.default_rng(0)) + labelled(TASK, [5], 500,
                                                                                   np.random.default_rng(1))
    m = Mixture({"human": data}, {"human": 1.0})
    assert m.levels() == [1, 2, 3, 4, 5]
    capped = Counter(p.level for p, _ in m.sample(6000, np.random.default_rng(2), max_level=3))
    assert set(capped) == {1, 2, 3}
    assert all(c / 6000 == pytest.approx(1 / 3, abs=0.03) for c in capped.values())
    free = Counter(p.level for p, _ in m.sample(6000, np.random.default_rng(2)))
    assert free[5] / 6000 == pytest.approx(500 / 700, abs=0.03)  # uncapped: every row alike, as before
    with pytest.raises(ValueError, match="no level up to 0"):
        m.sample(4, np.random.default_rng(0), max_level=0)


def test_a_source_with_no_level_under_the_cap_drops_out_of_that_batch():
    human = labelled(TASK, [1, 2], 40, np.random.default_rng(0))
    newest = labelled(TASK, [6], 40, np.random.default_rng(1))
    m = Mixture({"human": human, "newest": newest}, {"human": 0.5, "newest": 0.5})
    assert {p.level for p, _ in m.sample(200, np.random.default_rng(3), max_level=2)} == {1, 2}
    assert 6 in {p.level for p, _ in m.sample(200, np.random.default_rng(3), max_level=6)}


def test_training_follows_the_curriculum_and_repeats_itself():
    data = labelled(TASK, [1, 2, 3, 4], 60, np.random.default_rng(0))
    seen: list[int] = []

    class Watch(Mixture):
        def sample(self, n, rng, max_level=None):
            batch = super().sample(n, rng, max_level)
            seen.append(max(p.level for p, _ in batch))
            return batch

    r = recipe(curriculum_steps=30)
    _, a = train(TASK, r, Watch({"human": data}, {"human": 1.0}), log_every=1)
    # four levels, 30 steps: the shortest two for steps 0-9, up to 3 for 10-19, all of them from step 20
    assert max(seen[:10]) == 2 and max(seen[10:20]) == 3 and max(seen[20:]) == 4
    _, b = train(TASK, r, Mixture({"human": data}, {"human": 1.0}), log_every=1)
    assert a["loss_curve"] == b["loss_curve"]
    _, c = train(TASK, recipe(), Mixture({"human": data}, {"human": 1.0}), log_every=1)
    assert c["loss_curve"] != a["loss_curve"]


def test_the_offset_range_grows_from_zero_to_max_offset():
    r = recipe(max_offset=20, offset_ramp_steps=500, steps=800)
    got = [offset_range(s, r) for s in range(800)]
    assert got[0] == 0 and got[24] == 0 and got[25] == 1 and got[499] == 19 and set(got[500:]) == {20}
    assert got == sorted(got)
    assert {offset_range(s, recipe(max_offset=20)) for s in range(100)} == {20}  # 0: the whole range at once
    with pytest.raises(ValueError, match="offset_ramp_steps"):
        recipe(offset_ramp_steps=40, steps=40)
    with pytest.raises(ValueError, match="curriculum_steps"):
        recipe(curriculum_steps=50, steps=40)


def test_training_draws_offsets_within_the_ramp(monkeypatch):
    data = labelled(TASK, [1, 2, 3], 60, np.random.default_rng(0))
    widest: list[int] = []
    real = train_module.training_batch

    def watch(task, scheme, problems, labels, offsets):
        widest.append(int(offsets.max()))
        return real(task, scheme, problems, labels, offsets)

    monkeypatch.setattr(train_module, "training_batch", watch)
    train(TASK, recipe(max_offset=8, offset_ramp_steps=32, steps=64, batch_size=32), Mixture({"human": data},
                                                                                           {"human": 1.0}))
    assert widest[:4] == [0, 0, 0, 0]  # 8 * step // 32 is 0 for steps 0-3
    assert all(w <= 8 * s // 32 for s, w in enumerate(widest[:32]))
    assert max(widest[32:]) == 8 and max(widest[:16]) <= 3


def test_a_run_still_on_its_plateau_at_the_check_ends_there_and_says_so():
    data = labelled(TASK, [1, 2, 3], 60, np.random.default_rng(0))
    mix = Mixture({"human": data}, {"human": 1.0})
    model, stopped = train(TASK, recipe(steps=40, plateau_step=12, plateau_loss=0.01), mix, log_every=100)
    assert stopped["steps"] == 13 and stopped["stopped_on_plateau"]["step"] == 12
    assert stopped["stopped_on_plateau"]["loss"] > 0.01 and stopped["loss_curve"][-1][0] == 12
    assert not model.training  # a model, ready to be graded like any other
    TrainMetrics.model_validate(stopped)  # the harness reads it back under its schema
    _, full = train(TASK, recipe(steps=40, plateau_step=12, plateau_loss=100.0), mix, log_every=100)
    assert full["steps"] == 40 and "stopped_on_plateau" not in full and full["loss_curve"][-1][0] == 39
    with pytest.raises(ValueError, match="plateau_step"):
        recipe(steps=40, plateau_step=40)


def test_the_default_bootstrap_has_a_curriculum_and_successors_do_not():
    cfg = load_config()
    assert 0 < cfg.bootstrap.curriculum_steps < cfg.bootstrap.steps
    assert 0 < cfg.bootstrap.offset_ramp_steps < cfg.bootstrap.steps
    assert cfg.bootstrap.curriculum_steps < cfg.bootstrap.plateau_step < cfg.bootstrap.steps
    assert cfg.successor.curriculum_steps == cfg.successor.offset_ramp_steps == cfg.successor.plateau_step == 0


def test_the_restart_reason_names_the_trainers_plateau_stop_and_ignores_a_malformed_one():
    from successor.workloads.tinylm.bootstrap import _plateau_stop

    said = {"stopped_on_plateau": {"step": 1200, "loss": 1.8612}, "steps": 1201}
    assert _plateau_stop({"metrics": json.dumps(said)}) == "; its trainer ended it at step 1200 (loss 1.86)"
    assert _plateau_stop({"metrics": json.dumps({"steps": 3500})}) == ""
    for hostile in ["{", "[]", "5", json.dumps({"stopped_on_plateau": {"step": "x"}}), None,
                    json.dumps({"stopped_on_plateau": [1]})]:
        assert _plateau_stop({"metrics": hostile}) == ""
