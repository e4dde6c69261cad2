"""The curator: votes, well-formedness, the four filters and the alarm that stops error accumulation."""
from __future__ import annotations

import numpy as np
import pytest

from successor.workloads.tinylm import curator
from successor.config import CuratorConfig
from successor.workloads.tinylm.curator import curate_ahead, curate_level, label, pruned_vote, thresholds, vote, well_formed
from successor.workloads.tinylm.tasks import Problem, get_task

TASK = get_task("addition")


# -- vote ----------------------------------------------------------------------------------------------------


def test_vote_unanimous():
    assert vote([["12", "30"], ["12", "30"], ["12", "30"]], 1.0) == ["12", "30"]
    assert vote([["12"]], 1.0) == ["12"]  # one voter always agrees with itself


def test_vote_two_of_three():
    answers = [["11", "22", "33"], ["11", "29", "33"], ["11", "22", "34"]]
    assert vote(answers, 2 / 3) == ["11", "22", "33"]
    assert vote(answers, 1.0) == ["11", None, None]
    assert vote(answers, 0.7) == ["11", None, None]  # 2/3 < 0.7


def test_three_way_split_never_passes():
    assert vote([["1"], ["2"], ["3"]], 0.51) == [None]


def test_ties_never_pass():
    assert vote([["10"], ["20"]], 0.6) == [None]  # 2 voters disagreeing
    assert vote([["10"], ["20"], ["10"], ["20"]], 0.6) == [None]  # 2-2 split
    assert vote([["10"], ["20"], ["10"], ["20"]], 0.51) == [None]
    assert vote([["10"], ["20"], ["20"], ["20"]], 0.75) == ["20"]  # 3 of 4 is not a tie


def test_vote_needs_a_voter():
    with pytest.raises(ValueError):
        vote([], 1.0)


def test_well_formed():
    p = Problem("12+34=", 2)
    assert well_formed(TASK, p, "640")
    assert not well_formed(TASK, p, "64")  # too short
    assert not well_formed(TASK, p, "6400")  # too long
    assert not well_formed(TASK, p, "6+0")  # not digits
    assert not well_formed(TASK, p, "")


# -- label, with fake models whose answers are chosen per (model, offset) -----------------------------------


class FakeModel:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


@pytest.fixture
def fake_greedy(monkeypatch):
    """table[(model name, offset)] -> answers; records every (model, offset) that decoded."""
    table: dict[tuple[str, int], list[str]] = {}
    calls: list[tuple[str, int]] = []

    def greedy(model, task, problems, offset=0, **kw):
        calls.append((model.name, offset))
        answers = table[(model.name, offset)]
        if isinstance(answers, dict):  # answers by problem: any subset may be decoded
            return [answers[p] for p in problems]
        assert len(answers) == len(problems)
        return list(answers)

    monkeypatch.setattr(curator, "greedy", greedy)
    return table, calls


PROBS = [Problem("12+34=", 2), Problem("55+55=", 2), Problem("90+19=", 2), Problem("11+11=", 2)]
TRUE = [TASK.answer(p) for p in PROBS]  # 460, 011, 001, 220 (the hidden checker)
CHAMP, A, B = FakeModel("champ"), FakeModel("a"), FakeModel("b")


def test_filter_none_keeps_everything(fake_greedy):
    table, calls = fake_greedy
    table[("champ", 0)] = ["640", "01", "x", "220"]  # two malformed labels
    kept, rate = label(TASK, CuratorConfig(filter="none"), PROBS, CHAMP, [A, B])
    assert kept == list(zip(PROBS, ["640", "01", "x", "220"]))
    assert rate == 1.0
    assert calls == [("champ", 0)]  # other models never vote under 'none'


def test_filter_length_drops_malformed(fake_greedy):
    table, calls = fake_greedy
    table[("champ", 0)] = ["640", "01", "x", "220"]
    kept, rate = label(TASK, CuratorConfig(filter="length"), PROBS, CHAMP, [A, B])
    assert kept == [(PROBS[0], "640"), (PROBS[3], "220")]
    assert rate == 0.5
    assert calls == [("champ", 0)]


def test_filter_offset_vote_uses_offsets_of_one_model(fake_greedy):
    table, calls = fake_greedy
    table[("champ", 0)] = ["640", "011", "999", "22"]
    table[("champ", 3)] = ["640", "011", "998", "22"]
    table[("champ", 7)] = ["640", "111", "997", "22"]
    cfg = CuratorConfig(filter="offset-vote", offsets=[0, 3, 7], agreement=1.0)
    kept, rate = label(TASK, cfg, PROBS, CHAMP, [A, B])
    assert calls == [("champ", 0), ("champ", 3), ("champ", 7)]
    assert kept == [(PROBS[0], "640")]  # item 3 agrees but is malformed, so it is dropped
    assert rate == 0.25
    calls.clear()
    kept, rate = label(TASK, cfg.model_copy(update={"agreement": 2 / 3}), PROBS, CHAMP)
    assert kept == [(PROBS[0], "640"), (PROBS[1], "011")]
    assert rate == 0.5


def test_filter_majority_uses_several_models(fake_greedy):
    table, calls = fake_greedy
    table[("champ", 0)] = ["640", "011", "002", "220"]
    table[("a", 0)] = ["640", "011", "003", "221"]
    table[("b", 0)] = ["640", "111", "004", "220"]
    cfg = CuratorConfig(filter="majority", voters=3, agreement=2 / 3)
    kept, rate = label(TASK, cfg, PROBS, CHAMP, [A, B])
    assert calls == [("champ", 0), ("a", 0), ("b", 0)]
    assert kept == [(PROBS[0], "640"), (PROBS[1], "011"), (PROBS[3], "220")]
    assert rate == 0.75
    calls.clear()
    kept, _ = label(TASK, cfg.model_copy(update={"agreement": 1.0}), PROBS, CHAMP, [A, B])
    assert kept == [(PROBS[0], "640")]
    calls.clear()
    kept, _ = label(TASK, cfg.model_copy(update={"voters": 2}), PROBS, CHAMP, [A, B])
    assert calls == [("champ", 0), ("a", 0)]  # only the top `voters` models vote
    assert kept == [(PROBS[0], "640"), (PROBS[1], "011")]


def test_filter_majority_needs_two_models(fake_greedy):
    table, calls = fake_greedy
    table[("champ", 0)] = TRUE
    with pytest.raises(ValueError, match="two models"):
        label(TASK, CuratorConfig(filter="majority"), PROBS, CHAMP, [])
    with pytest.raises(ValueError, match="two models"):
        label(TASK, CuratorConfig(filter="majority", voters=1), PROBS, CHAMP, [A])
    assert calls == []  # refused before any decoding


# -- curate_level --------------------------------------------------------------------------------------------


OFFSETS = [0, 1, 2, 3, 4]


def wrong(p: Problem) -> str:
    """A well-formed label that is not the true answer."""
    y = TASK.answer(p)
    return ("1" if y[0] != "1" else "2") + y[1:]


def answers(table, pool: list[Problem], right: dict[int, int], wrong_votes: dict[int, int] | None = None):
    """Per pool item i, `right[i]` of the five offsets give the true answer and `wrong_votes[i]` give one shared
    wrong label; the rest give a junk label of their own (default: everyone is right)."""
    for k, off in enumerate(OFFSETS):
        col = []
        for i, p in enumerate(pool):
            r, w = right.get(i, 5), (wrong_votes or {}).get(i, 0)
            col.append(TASK.answer(p) if k < r else wrong(p) if k < r + w else str(k) * (p.level + 1))
        table[("champ", off)] = dict(zip(pool, col))


@pytest.fixture
def level5():
    return TASK.generate(5, 40, np.random.default_rng(0))


@pytest.fixture
def dev5():
    return [(p, TASK.answer(p)) for p in TASK.generate(5, 10, np.random.default_rng(1))]


def vote_cfg(**kw) -> CuratorConfig:
    return CuratorConfig(**{"filter": "offset-vote", "offsets": OFFSETS, "agreement": 0.6, "min_kept": 10, "levels_ahead": 1,
                            **kw})


def test_thresholds_run_from_the_configured_agreement_to_unanimity():
    assert thresholds(vote_cfg(), 5) == [0.6, 0.8, 1.0]
    assert thresholds(CuratorConfig(offsets=list(range(20)), agreement=0.7), 20) == [c / 20 for c in range(14, 21)]
    assert thresholds(CuratorConfig(filter="length"), 1) == [1.0]


def test_curate_level_holds_the_vote_to_the_lowest_agreement_clean_on_dev(fake_greedy, level5, dev5):
    table, calls = fake_greedy
    pool = level5 + [p for p, _ in dev5]
    # new problems: 20 unanimous, 10 with 4 of 5 right, 10 with 3 of 5; dev item 0 has 3 voters on a wrong label
    right = {i: 4 for i in range(20, 30)} | {i: 3 for i in range(30, 40)} | {40: 1}
    answers(table, pool, right, {40: 3})
    cur = curate_level(TASK, vote_cfg(), 5, level5, dev5, CHAMP)
    # dev is decoded first (one pass per voter), then the new problems, since the level passed calibration
    assert calls == [("champ", off) for off in OFFSETS] * 2
    assert cur.threshold == 0.8 and cur.skipped is None  # at 60% the wrong dev label passes
    assert cur.dev_passed == 9 and cur.dev_wrong == 0
    assert cur.items == [(p, TASK.answer(p)) for p in level5[:30]]
    assert cur.agreement == 0.75


def test_curate_level_raises_the_threshold_until_dev_is_clean(fake_greedy, level5, dev5):
    table, _ = fake_greedy
    pool = level5 + [p for p, _ in dev5]
    answers(table, pool, {i: 4 for i in range(20, 40)} | {40: 1}, {40: 4})  # 4 of 5 agree on a wrong dev label
    cur = curate_level(TASK, vote_cfg(), 5, level5, dev5, CHAMP)
    assert cur.threshold == 1.0 and cur.dev_passed == 9 and cur.dev_wrong == 0
    assert cur.items == [(p, TASK.answer(p)) for p in level5[:20]]
    # tolerating one wrong label in ten on dev lets the lowest agreement through
    loose = curate_level(TASK, vote_cfg(max_dev_noise=0.1), 5, level5, dev5, CHAMP)
    assert loose.threshold == 0.6 and loose.dev_passed == 10 and loose.dev_wrong == 1 and len(loose.items) == 40


def test_curate_level_alarm_when_every_voter_agrees_on_a_wrong_dev_label(fake_greedy, level5, dev5):
    table, calls = fake_greedy
    pool = level5 + [p for p, _ in dev5]
    answers(table, pool, {40: 0}, {40: 5})  # confident and wrong: the error accumulation DESIGN.md warns of
    cur = curate_level(TASK, vote_cfg(), 5, level5, dev5, CHAMP)
    assert cur.skipped is not None and cur.skipped.startswith("alarm")
    assert "1 of 10" in cur.skipped and cur.items == [] and cur.threshold is None
    # every new problem would pass the vote (confidence is not accuracy), but none is even decoded
    assert cur.agreement is None and len(calls) == len(OFFSETS)


def test_curate_level_no_alarm_for_filter_none(fake_greedy, level5, dev5):
    table, _ = fake_greedy
    pool = level5 + [p for p, _ in dev5]
    answers(table, pool, {i: 0 for i in range(len(pool))}, {i: 5 for i in range(len(pool))})
    cur = curate_level(TASK, CuratorConfig(filter="none", offsets=OFFSETS, min_kept=10), 5, level5, dev5, CHAMP)
    assert cur.skipped is None and len(cur.items) == 40  # 'none' trusts the champion by definition
    assert all(y == wrong(p) for p, y in cur.items)


def test_curate_level_skips_when_too_few_labels(fake_greedy, level5, dev5):
    table, _ = fake_greedy
    pool = level5 + [p for p, _ in dev5]
    answers(table, pool, {i: 1 for i in range(8, 40)})  # only 8 new problems get any agreement
    cur = curate_level(TASK, vote_cfg(), 5, level5, dev5, CHAMP)
    assert cur.skipped is not None and "only 8 labels" in cur.skipped and "min_kept=10" in cur.skipped
    assert cur.items == [] and cur.agreement == 0.2
    cur = curate_level(TASK, vote_cfg(min_kept=8), 5, level5, dev5, CHAMP)
    assert cur.skipped is None and len(cur.items) == 8


def test_curate_level_alarm_when_the_vote_passes_no_dev_item(fake_greedy, level5, dev5):
    table, _ = fake_greedy
    pool = level5 + [p for p, _ in dev5]
    answers(table, pool, {i: 1 for i in range(40, 50)})
    cur = curate_level(TASK, vote_cfg(), 5, level5, dev5, CHAMP)
    assert cur.skipped == "alarm: the vote passes no dev item of level 5" and cur.items == []


# -- curate_ahead --------------------------------------------------------------------------------------------


def test_curate_ahead_labels_levels_until_the_first_it_cannot_label_cleanly(monkeypatch):
    """Voters are right on levels up to 6 and all agree on a wrong label from 7 on: levels 5 and 6 are curated,
    7 raises the alarm, and 8 is never labelled (past a level the vote fails, it would label worse)."""
    decoded: list[int] = []

    def greedy(model, task, problems, offset=0, **kw):
        decoded.append(problems[0].level)
        return [TASK.answer(p) if p.level <= 6 else wrong(p) for p in problems]

    monkeypatch.setattr(curator, "greedy", greedy)
    dev = [(p, TASK.answer(p)) for lvl in range(1, 11) for p in TASK.generate(lvl, 10, np.random.default_rng(lvl))]
    new = {lvl: TASK.generate(lvl, 30, np.random.default_rng(100 + lvl)) for lvl in range(1, 11)}
    out = curate_ahead(TASK, vote_cfg(levels_ahead=4), 5, 10, new.get, dev, CHAMP)
    assert [c.level for c in out] == [5, 6, 7]
    assert [c.skipped is None for c in out] == [True, True, False] and out[2].skipped.startswith("alarm")
    assert out[0].items == [(p, TASK.answer(p)) for p in new[5]] and out[2].items == []
    assert out[1].dev_passed == 10 and out[1].dev_wrong == 0  # calibrated on level 6's own dev items
    assert sorted(set(decoded)) == [5, 6, 7]
    assert [c.level for c in curate_ahead(TASK, vote_cfg(levels_ahead=4), 5, 5, new.get, dev, CHAMP)] == [5]
    assert [c.level for c in curate_ahead(TASK, vote_cfg(), 5, 10, new.get, dev, CHAMP)] == [5]  # default: one


def test_curate_level_skips_without_decoding_when_dev_predicts_too_few_labels(fake_greedy, level5, dev5):
    """One dev item in ten passes: about 4 of 40 problems would, under min_kept=10, so none is decoded."""
    table, calls = fake_greedy
    pool = level5 + [p for p, _ in dev5]
    answers(table, pool, {i: 1 for i in range(41, 50)})  # of dev, only item 40 gets a unanimous vote
    cur = curate_level(TASK, vote_cfg(), 5, level5, dev5, CHAMP)
    assert cur.items == [] and cur.dev_passed == 1 and cur.dev_wrong == 0 and cur.agreement is None
    assert cur.skipped == "only 1 of 10 dev items pass the vote: too few of 40 problems would (min_kept=10)"
    assert len(calls) == len(OFFSETS)  # dev only
    # a lower min_kept expects enough labels, but one judged label proves nothing about the vote (MIN_JUDGED)
    assert curate_level(TASK, vote_cfg(min_kept=4), 5, level5, dev5, CHAMP).skipped == \
        "only 1 dev items pass the vote: too few to judge its labels by (at least 5)"
    answers(table, pool, {i: 1 for i in range(46, 50)})  # five dev items pass: judged, and curated
    five = curate_level(TASK, vote_cfg(min_kept=4), 5, level5, dev5, CHAMP)
    assert five.skipped is None and five.dev_passed >= 5


# -- pruned_vote ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("agreement", [0.6, 0.75, 1.0])
def test_pruned_vote_gives_the_full_vote_and_decodes_less(monkeypatch, agreement):
    """Random answers from 8 voters (each problem has a 'popular' answer of random strength): the pruned vote
    equals the plain vote on every problem, and settled problems stop being decoded."""
    rng = np.random.default_rng(7)
    probs = TASK.generate(4, 300, rng)
    strength = rng.uniform(0.2, 1.0, len(probs))
    offsets = list(range(8))
    table = {off: {p: ("5555" if rng.random() < s else str(rng.integers(4)) * 4) for p, s in zip(probs, strength)}
             for off in offsets}
    decoded: list[int] = []

    def greedy(model, task, problems, offset=0, **kw):
        decoded.append(len(problems))
        return [table[offset][p] for p in problems]

    monkeypatch.setattr(curator, "greedy", greedy)
    cfg = CuratorConfig(filter="offset-vote", offsets=offsets, agreement=0.6)
    full = vote([[table[off][p] for p in probs] for off in offsets], agreement)
    assert pruned_vote(TASK, cfg, probs, agreement, CHAMP) == full
    assert 0 < sum(y is not None for y in full) < len(probs)  # the case is not trivial
    assert decoded[0] == len(probs) and sum(decoded) < len(probs) * len(offsets)
    assert decoded == sorted(decoded, reverse=True)  # the pool only shrinks


def test_pruned_vote_settles_a_problem_once_its_label_has_the_votes(monkeypatch):
    """Every voter agrees (a solved length, relabelled): at 75% of 8 voters each problem is settled after 6."""
    probs = TASK.generate(4, 50, np.random.default_rng(3))
    decoded: list[int] = []

    def greedy(model, task, problems, offset=0, **kw):
        decoded.append(len(problems))
        return [TASK.answer(p) for p in problems]

    monkeypatch.setattr(curator, "greedy", greedy)
    cfg = CuratorConfig(filter="offset-vote", offsets=list(range(8)), agreement=0.75)
    assert pruned_vote(TASK, cfg, probs, 0.75, CHAMP) == [TASK.answer(p) for p in probs]
    assert decoded == [50] * 6
    decoded.clear()
    assert pruned_vote(TASK, cfg, probs, 1.0, CHAMP) == [TASK.answer(p) for p in probs]
    assert decoded == [50] * 8  # unanimity needs every voter


def test_curate_level_stops_decoding_problems_that_cannot_pass(fake_greedy, level5, dev5):
    """At 100% agreement, a problem whose first two voters disagree is not decoded by the other three."""
    table, calls = fake_greedy
    pool = level5 + [p for p, _ in dev5]
    answers(table, pool, {i: 1 for i in range(20, 40)})  # 20 unanimous; 20 where the second voter dissents
    sizes = []
    greedy = curator.greedy

    def counting(model, task, problems, offset=0, **kw):
        sizes.append(len(problems))
        return greedy(model, task, problems, offset, **kw)

    curator.greedy = counting
    try:
        cur = curate_level(TASK, vote_cfg(agreement=1.0), 5, level5, dev5, CHAMP)
    finally:
        curator.greedy = greedy
    assert cur.items == [(p, TASK.answer(p)) for p in level5[:20]] and cur.agreement == 0.5
    assert sizes[len(OFFSETS):] == [40, 40, 20, 20, 20]  # after dev: all 40 twice, then the 20 still unanimous


def test_noisier_than_is_the_observed_share_of_wrong_dev_labels():
    assert curator.noisier_than(1, 6, 0.02)  # 17%: too few items to prove it, but far too many to keep
    assert not curator.noisier_than(1, 64, 0.02) and curator.noisier_than(2, 64, 0.02)
    assert not curator.noisier_than(0, 3, 0.0) and curator.noisier_than(1, 100, 0.0)
    assert not curator.noisier_than(1, 10, 0.1)  # exactly at the bound is allowed
