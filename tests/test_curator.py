"""The curator: votes, well-formedness, the four filters and the alarm that stops error accumulation."""
from __future__ import annotations

import numpy as np
import pytest

from successor import curator
from successor.config import CuratorConfig
from successor.curator import curate_level, label, vote, well_formed
from successor.tasks import Problem, get_task

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


def agreeing(table, n_agree: int, probs):
    """Three offsets that agree on the first n_agree problems (on the true answer) and disagree after."""
    for off, junk in ((0, "0"), (3, "1"), (7, "2")):
        table[("champ", off)] = [TASK.answer(p) if i < n_agree else junk * (p.level + 1)
                                 for i, p in enumerate(probs)]


@pytest.fixture
def level5():
    return TASK.generate(5, 40, np.random.default_rng(0))


def test_curate_level_keeps_labels_when_agreement_matches_accuracy(fake_greedy, level5):
    table, _ = fake_greedy
    agreeing(table, 30, level5)  # 75% agreement
    cfg = CuratorConfig(filter="offset-vote", alarm_gap=0.25, min_kept=10)
    cur = curate_level(TASK, cfg, 5, level5, champion_dev_acc=0.7, champion=CHAMP)
    assert cur.skipped is None
    assert cur.level == 5 and cur.labelled == 40 and cur.agreement == 0.75
    assert cur.items == [(p, TASK.answer(p)) for p in level5[:30]]


def test_curate_level_alarm_skips_overconfident_level(fake_greedy, level5):
    table, _ = fake_greedy
    agreeing(table, 40, level5)  # 100% agreement
    cfg = CuratorConfig(filter="offset-vote", alarm_gap=0.25, min_kept=10)
    cur = curate_level(TASK, cfg, 5, level5, champion_dev_acc=0.70, champion=CHAMP)
    assert cur.skipped is not None and cur.skipped.startswith("alarm")
    assert "level 5" in cur.skipped
    assert cur.items == []
    assert cur.agreement == 1.0
    # exactly at the gap is not an alarm; just past it is
    ok = curate_level(TASK, cfg, 5, level5, champion_dev_acc=0.75, champion=CHAMP)
    assert ok.skipped is None and len(ok.items) == 40
    bad = curate_level(TASK, cfg, 5, level5, champion_dev_acc=0.74, champion=CHAMP)
    assert bad.skipped and bad.skipped.startswith("alarm") and bad.items == []


def test_curate_level_no_alarm_for_filter_none(fake_greedy, level5):
    table, _ = fake_greedy
    agreeing(table, 0, level5)
    cfg = CuratorConfig(filter="none", alarm_gap=0.0, min_kept=10)
    cur = curate_level(TASK, cfg, 5, level5, champion_dev_acc=0.0, champion=CHAMP)
    assert cur.skipped is None and len(cur.items) == 40  # 'none' trusts the champion by definition


def test_curate_level_skips_when_too_few_labels(fake_greedy, level5):
    table, _ = fake_greedy
    agreeing(table, 8, level5)  # 20% agreement, champion 20% accurate: no alarm, but only 8 labels
    cfg = CuratorConfig(filter="offset-vote", alarm_gap=0.25, min_kept=10)
    cur = curate_level(TASK, cfg, 5, level5, champion_dev_acc=0.2, champion=CHAMP)
    assert cur.skipped is not None and "only 8 labels" in cur.skipped and "min_kept=10" in cur.skipped
    assert cur.items == [] and cur.agreement == 0.2
    cur = curate_level(TASK, cfg.model_copy(update={"min_kept": 8}), 5, level5, 0.2, CHAMP)
    assert cur.skipped is None and len(cur.items) == 8
