"""Curator options of the self-improvement studies: the verifier filter, k-model majority thresholds, the
schedules' level choice, label-noise injection and the training mixture's shares."""
from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from successor.workloads.tinylm import curator
from successor.config import ConfigError, CuratorConfig, load_config
from successor.workloads.tinylm.curator import (curate_level, inject_noise, schedule_levels, thresholds, vote, well_formed,
                               with_relabel)
from successor.workloads.tinylm.workload import TinyLMWorkload
from successor.workloads.tinylm.tasks import Problem, get_task, mark
from successor.workloads.tinylm.train import Mixture

TASK = get_task("addition")


class FakeModel:
    name = "champ"


@pytest.fixture
def champion_says(monkeypatch):
    """The champion's answers, per problem; every decode is recorded."""
    said: dict[Problem, str] = {}
    calls: list[int] = []

    def greedy(model, task, problems, offset=0, **kw):
        calls.append(offset)
        return [said[p] for p in problems]

    monkeypatch.setattr(curator, "greedy", greedy)
    return said, calls


# -- verifier ------------------------------------------------------------------------------------------------


def test_verifier_keeps_exactly_the_labels_the_hidden_checker_accepts(champion_says):
    said, calls = champion_says
    pool = TASK.generate(6, 30, np.random.default_rng(3))
    for i, p in enumerate(pool):
        y = TASK.answer(p)
        said[p] = y if i % 3 else ("9" if y[0] != "9" else "8") + y[1:]  # every third is wrong but well formed
    dev = [(p, TASK.answer(p)) for p in TASK.generate(6, 10, np.random.default_rng(4))]
    cur = curate_level(TASK, CuratorConfig(filter="verifier", min_kept=5), 6, pool, dev, FakeModel())
    assert cur.skipped is None
    assert [p for p, _ in cur.items] == [p for i, p in enumerate(pool) if i % 3]
    assert all(TASK.check(p, y) for p, y in cur.items)
    assert cur.agreement == pytest.approx(20 / 30)
    assert calls == [0]  # one decode of the new problems, none of dev: the verifier needs no calibration


def test_verifier_is_one_voter_held_to_unanimity():
    cfg = CuratorConfig(filter="verifier")
    assert curator.voters(cfg, "champ", ["other"]) == [("champ", 0)]
    assert thresholds(cfg, 1) == [1.0]


# -- voters chosen on dev -------------------------------------------------------------------------------------


def _broken_offsets(monkeypatch, broken: set[int]) -> list[int]:
    """A champion right under every offset but `broken`, where each offset gives its own wrong answer."""
    calls: list[int] = []

    def greedy(model, task, problems, offset=0, **kw):
        calls.append(offset)
        return [TASK.answer(p) if offset not in broken else str(offset % 10) * len(TASK.answer(p))
                for p in problems]

    monkeypatch.setattr(curator, "greedy", greedy)
    return calls


def test_voter_floor_drops_the_offsets_that_fail_on_dev(monkeypatch):
    calls = _broken_offsets(monkeypatch, broken={1, 2, 4, 5, 7})
    pool = TASK.generate(6, 40, np.random.default_rng(5))
    dev = [(p, TASK.answer(p)) for p in TASK.generate(6, 20, np.random.default_rng(6))]
    cfg = dict(filter="offset-vote", offsets=list(range(8)), agreement=0.7, max_dev_noise=0.05, min_kept=5)
    # three of eight offsets right: no label reaches 70%, the level is not curated
    every = curate_level(TASK, CuratorConfig(**cfg), 6, pool, dev, FakeModel())
    assert every.items == [] and "passes no dev item" in every.skipped and every.voters == 8
    calls.clear()
    strong = curate_level(TASK, CuratorConfig(**cfg, voter_floor=0.5), 6, pool, dev, FakeModel())
    assert strong.skipped is None and strong.voters == 3
    assert len(strong.items) == 40 and all(TASK.check(p, y) for p, y in strong.items)
    assert sorted(set(calls[8:])) == [0, 3, 6]  # dev was decoded under every offset, the new problems only the kept


def test_strong_voters_keep_those_near_the_best():
    held = [["1", "2", "3", "4"], ["1", "2", "3", "x"], ["1", "x", "x", "x"], ["x", "x", "x", "x"]]
    assert curator.strong_voters(held, ["1", "2", "3", "4"], 0.5) == [0, 1]  # 1.0 and 0.75 pass; 0.25 and 0 not
    assert curator.strong_voters(held, ["1", "2", "3", "4"], 0.0) == [0, 1, 2, 3]


# -- rewrites: the same problem written another way ------------------------------------------------------------


def test_addition_rewrites_commute_and_keep_the_answer():
    for task in (TASK, get_task("forward_addition")):
        for p in task.generate(7, 50, np.random.default_rng(3)):
            (q,) = task.rewrites(p)
            a, b = p.prompt[:-1].split("+")
            assert q.prompt == f"{b}+{a}=" and q.level == p.level and task.answer(q) == task.answer(p)
        assert task.rewrites(mark(p)) == []  # a marked prompt's one answer is the refusal: nothing to vote on
    for name in ("copy", "multiplication"):
        task = get_task(name)
        assert task.rewrites(task.generate(3, 1, np.random.default_rng(0))[0]) == []


def test_agreed_keeps_a_label_only_where_every_form_passed_it():
    assert curator.agreed([["12", "34", None, "56"], ["12", "35", "78", None]]) == ["12", None, None, None]
    assert curator.agreed([["12", None]]) == ["12", None]


def test_rewrites_drop_the_errors_every_offset_shares(monkeypatch):
    """A champion wrong under every offset on a third of the problems as written, right on them commuted: the
    offset vote alone keeps its errors (unanimous), the vote on both forms drops them."""
    new = TASK.generate(6, 60, np.random.default_rng(5))
    wrong_as_written = {p.prompt for p in new if int(p.prompt[0]) % 3 == 0}.__contains__

    def greedy(model, task, problems, offset=0, **kw):
        return [("9" * len(task.answer(p)) if wrong_as_written(p.prompt) else task.answer(p)) for p in problems]

    monkeypatch.setattr(curator, "greedy", greedy)
    cfg = dict(filter="offset-vote", offsets=[0, 1, 2], agreement=0.7, max_dev_noise=0.5, min_kept=5)
    plain = curate_level(TASK, CuratorConfig(**cfg), 6, new, [], FakeModel())
    both = curate_level(TASK, CuratorConfig(**cfg, rewrites=True), 6, new, [], FakeModel())
    bad = sum(wrong_as_written(p.prompt) for p in new)
    assert bad > 5 and len(plain.items) == 60 and sum(not TASK.check(p, y) for p, y in plain.items) == bad
    assert len(both.items) == 60 - bad and all(TASK.check(p, y) for p, y in both.items)
    with pytest.raises(ValueError, match="rewrites needs a vote"):
        CuratorConfig(filter="none", rewrites=True)


# -- majority: k models, thresholds, ties --------------------------------------------------------------------


def test_majority_of_five_at_seventy_percent_needs_four():
    four = [["12"]] * 4 + [["99"]]
    three = [["12"]] * 3 + [["99"]] * 2
    assert vote(four, 0.7) == ["12"]
    assert vote(three, 0.7) == [None]  # 3 of 5 is 60%
    assert vote(four, 1.0) == [None]  # 5 of 5 on the fast schedule
    assert vote([["12"]] * 5, 1.0) == ["12"]
    majority = CuratorConfig(filter="majority", agreement=0.7)
    assert thresholds(majority, 5) == [0.8, 1.0]


def test_a_tie_between_two_answers_never_passes_even_at_half():
    assert vote([["12"], ["12"], ["34"], ["34"]], 0.51) == [None]


def test_majority_voters_are_the_champion_and_the_first_candidates():
    cfg = CuratorConfig(filter="majority", voters=3)
    assert curator.voters(cfg, "champ", ["a", "b", "c"]) == [("champ", 0), ("a", 0), ("b", 0)]
    with pytest.raises(ValueError, match="at least two"):
        curator.voters(cfg, "champ", [])


# -- schedules -----------------------------------------------------------------------------------------------


def cfg(schedule: str, **kw) -> CuratorConfig:
    return CuratorConfig(**{"schedule": schedule, "levels_ahead": 1, **kw})  # one level unless a test says more


ACC = {9: 1.0, 10: 0.995, 11: 0.99, 12: 0.97, 13: 1.0, 14: 0.2}  # 13 solved, but past a gap


def test_standard_labels_one_level_past_the_longest_trained_whatever_the_champion_solves():
    assert schedule_levels(cfg("standard"), ACC, frontier=11, trained_to=8, last=20) == [9]
    assert schedule_levels(cfg("standard", levels_ahead=2), ACC, frontier=11, trained_to=8, last=20) == [9, 10]
    assert schedule_levels(cfg("standard"), {}, frontier=8, trained_to=12, last=20) == [13]


def test_accelerated_adds_every_level_solved_past_the_training_length_then_the_next():
    # 9, 10 and 11 score >= 0.99; 12 does not, so the run of solved levels stops there (13 is not reached)
    assert schedule_levels(cfg("accelerated"), ACC, frontier=11, trained_to=8, last=20) == [9, 10, 11, 12]
    assert schedule_levels(cfg("accelerated", accelerate_threshold=0.999), ACC, 11, 8, 20) == [9, 10]
    assert schedule_levels(cfg("accelerated", accelerate_threshold=0.95), ACC, 11, 8, 20) == [9, 10, 11, 12, 13, 14]
    # nothing solved past the training length: the same single step as standard
    assert schedule_levels(cfg("accelerated"), {9: 0.5}, 8, 8, 20) == [9]


def test_accelerated_never_labels_fewer_levels_than_standard():
    rng = np.random.default_rng(0)
    for _ in range(200):
        acc = {lvl: float(rng.choice([0.3, 0.99, 1.0])) for lvl in range(1, 25)}
        t = int(rng.integers(2, 15))
        std = schedule_levels(cfg("standard"), acc, t, t, 20)
        acc_levels = schedule_levels(cfg("accelerated"), acc, t, t, 20)
        assert acc_levels[: len(std)] == std and len(acc_levels) >= len(std)


def test_frontier_schedule_labels_past_the_frontier_and_every_schedule_stops_at_last():
    assert schedule_levels(cfg("frontier", levels_ahead=2), ACC, frontier=11, trained_to=8, last=20) == [12, 13]
    assert schedule_levels(cfg("frontier", levels_ahead=2), ACC, frontier=11, trained_to=8, last=12) == [12]
    assert schedule_levels(cfg("standard"), ACC, frontier=11, trained_to=20, last=20) == []
    assert schedule_levels(cfg("accelerated"), {lvl: 1.0 for lvl in range(30)}, 8, 8, 12) == [9, 10, 11, 12]


# -- label-noise injection -----------------------------------------------------------------------------------


@pytest.fixture
def kept():
    return [(p, TASK.answer(p)) for p in TASK.generate(7, 200, np.random.default_rng(5))]


@pytest.mark.parametrize("rate", [0.1, 0.3, 1.0])
def test_noise_corrupts_that_share_by_one_digit_and_keeps_labels_well_formed(kept, rate):
    out, n = inject_noise(kept, rate, np.random.default_rng(1))
    assert n == round(rate * len(kept))
    wrong = [(p, y) for p, y in out if not TASK.check(p, y)]
    assert len(wrong) == n
    for (p, y), (_, truth) in zip(out, kept):
        assert well_formed(TASK, p, y)  # no downstream filter can see it
        assert sum(a != b for a, b in zip(y, truth)) in (0, 1)
    assert [p for p, _ in out] == [p for p, _ in kept]  # same problems, same order


def test_noise_is_reproducible_and_zero_rate_changes_nothing(kept):
    a, _ = inject_noise(kept, 0.3, np.random.default_rng(7))
    b, _ = inject_noise(kept, 0.3, np.random.default_rng(7))
    assert a == b
    assert inject_noise(kept, 0.0, np.random.default_rng(7)) == (kept, 0)
    assert inject_noise([], 0.5, np.random.default_rng(7)) == ([], 0)


# -- config --------------------------------------------------------------------------------------------------


def test_curator_options_are_validated(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("curator: {filter: verifier, rewrites: false, schedule: accelerated, policy: replace, "
                    "noise: {rate: 0.3, generations: [2]}}\n")
    c = load_config(good).curator
    assert (c.filter, c.schedule, c.policy, c.noise.rate, c.noise.generations) == (
        "verifier", "accelerated", "replace", 0.3, [2])
    for bad, field in [("curator: {schedule: fastest}", "curator.schedule"),
                       ("curator: {filter: verifier}", "rewrites needs a vote"),  # the default votes on b+a too
                       ("curator: {noise: {rate: 1.5}}", "curator.noise.rate"),
                       ("curator: {filter: oracle}", "curator.filter")]:
        (tmp_path / "bad.yaml").write_text(bad + "\n")
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            load_config(tmp_path / "bad.yaml")


def test_relabel_needs_the_replace_policy(tmp_path):
    (tmp_path / "bad.yaml").write_text("curator: {policy: accumulate}\n")  # the default relabels
    with pytest.raises(ConfigError, match="relabel needs policy: replace"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "good.yaml").write_text("curator: {relabel: false, policy: accumulate}\n")
    c = load_config(tmp_path / "good.yaml").curator
    assert (c.relabel, c.policy) == (False, "accumulate")
    assert load_config().curator.relabel and load_config().curator.policy == "replace"


def test_relabel_labels_every_level_past_the_human_data_again():
    on = CuratorConfig(relabel=True, policy="replace")
    assert with_relabel(on, [12], human_top=8) == [9, 10, 11, 12]
    assert with_relabel(on, [12, 13, 14], human_top=8) == [9, 10, 11, 12, 13, 14]  # the accelerated schedule
    assert with_relabel(on, [9], human_top=8) == [9]  # nothing curated yet: nothing to relabel
    assert with_relabel(on, [], human_top=8) == []  # past eval_max_level: still nothing
    assert with_relabel(CuratorConfig(), [12], human_top=8) == [12]


@pytest.mark.parametrize("policy, shard, expected", [
    ("accumulate", "g3", (["g3"], ["g1", "g2"])),
    ("accumulate", None, (["g2"], ["g1"])),
    ("replace", "g3", (["g3"], [])),
    ("replace", None, (["g2"], [])),  # a generation that curated nothing still trains on the newest data only
])
def test_training_data_follows_the_policy(policy, shard, expected):
    loop = SimpleNamespace(accepted_data=lambda: ["g1", "g2"],
                           cfg=SimpleNamespace(curator=CuratorConfig(policy=policy)))
    assert TinyLMWorkload.training_data(loop, shard) == expected


# -- the training mixture -------------------------------------------------------------------------------------


def rows(tag: str, n: int = 50) -> list[tuple[Problem, str]]:
    return [(Problem(f"{tag}{i}=", 1), tag) for i in range(n)]


def test_mixture_draws_each_source_at_its_share():
    m = Mixture({"newest": rows("n"), "human": rows("h"), "older": rows("o")},
                {"newest": 0.5, "human": 0.3, "older": 0.2})
    got = Counter(y for _, y in m.sample(20000, np.random.default_rng(0)))
    assert got["n"] / 20000 == pytest.approx(0.5, abs=0.015)
    assert got["h"] / 20000 == pytest.approx(0.3, abs=0.015)
    assert got["o"] / 20000 == pytest.approx(0.2, abs=0.015)


def test_an_empty_source_drops_out_and_the_rest_keep_their_ratio():
    # `replace`, or the first successor: there is no older curated data
    m = Mixture({"newest": rows("n"), "human": rows("h"), "older": []}, {"newest": 0.5, "human": 0.4, "older": 0.1})
    got = Counter(y for _, y in m.sample(20000, np.random.default_rng(1)))
    assert set(got) == {"n", "h"}
    assert got["n"] / got["h"] == pytest.approx(0.5 / 0.4, rel=0.05)
    with pytest.raises(ValueError, match="empty"):
        Mixture({"newest": []}, {"newest": 1.0})


# -- the levels the gate tests -------------------------------------------------------------------------------


def test_the_gate_tests_up_to_the_highest_curated_and_at_least_one_past_the_frontier():
    from successor.workloads.tinylm.gating import tested_levels

    assert tested_levels([9, 10], frontier=8, last=20) == list(range(1, 11))  # labels past the frontier
    # standard schedule, champion ahead of its training length: labelled 9, solves 1-9, the gain is at 10
    assert tested_levels([9], frontier=9, last=20) == list(range(1, 11))
    assert tested_levels([9], frontier=12, last=12) == list(range(1, 13))  # never past the last level
    assert tested_levels([], frontier=9, last=20) is None  # nothing curated: every level
