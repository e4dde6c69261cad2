"""The addition task: generator, hidden checker and aligned digit-index positions."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import operands as split_operands

from successor.workloads.tinylm.tasks import Problem, decode, encode, get_task
from successor.workloads.tinylm.tasks.addition import Addition

TASK = Addition()


def operands(p: Problem) -> tuple[str, str]:
    return split_operands(p.prompt, "+")


@pytest.mark.parametrize("level", [1, 2, 3, 7, 12])
def test_operands_have_exactly_level_digits(level):
    probs = TASK.generate(level, 300, np.random.default_rng(level))
    assert len(probs) == 300
    for p in probs:
        assert p.level == level
        for x in operands(p):
            assert len(x) == level and x.isdigit()
            if level > 1:
                assert x[-1] != "0"  # reversed: the last written digit is the most significant
                assert len(str(int(x[::-1]))) == level
    if level == 1:  # single digits may be zero: the generator must not exclude 0 at level 1
        assert any("0" in operands(p) for p in probs)


def test_level_below_one_refused():
    with pytest.raises(ValueError):
        TASK.generate(0, 3, np.random.default_rng(0))


@pytest.mark.parametrize("level", [1, 2, 5, 9])
def test_answer_is_reversed_sum_with_level_plus_one_digits(level):
    assert TASK.answer_length(level) == level + 1
    for p in TASK.generate(level, 200, np.random.default_rng(10 + level)):
        a, b = operands(p)
        ans = TASK.answer(p)
        assert len(ans) == level + 1 and ans.isdigit()
        assert int(ans[::-1]) == int(a[::-1]) + int(b[::-1])


def test_known_answers():
    assert TASK.answer(Problem("9+9=", 1)) == "81"  # 9+9=18, reversed
    assert TASK.answer(Problem("1+2=", 1)) == "30"  # 3, padded to 03, reversed
    assert TASK.answer(Problem("21+43=", 2)) == "640"  # 12+34=46 -> 046 -> 640
    assert TASK.answer(Problem("99+19=", 2)) == "091"  # 99+91=190 -> 091


@pytest.mark.parametrize("level", [1, 3, 6])
def test_checker_accepts_truth_and_rejects_every_single_digit_corruption(level):
    for p in TASK.generate(level, 20, np.random.default_rng(level)):
        truth = TASK.answer(p)
        assert TASK.check(p, truth)
        for i in range(len(truth)):
            for d in "0123456789":
                if d != truth[i]:
                    assert not TASK.check(p, truth[:i] + d + truth[i + 1 :])
        # wrong length (dropped padding digit, extra digit, empty) and non-reversed answers are refused too
        assert not TASK.check(p, truth[:-1])
        assert not TASK.check(p, truth + "0")
        assert not TASK.check(p, "")
        if truth != truth[::-1]:
            assert not TASK.check(p, truth[::-1])


@pytest.mark.parametrize("level", [1, 2, 4, 8])
@pytest.mark.parametrize("offset", [0, 1, 5, 20])
def test_position_ids_follow_the_documented_rule(level, offset):
    ids = TASK.position_ids(level, offset)
    prompt_len = 2 * level + 2
    assert len(ids) == prompt_len + TASK.answer_length(level)
    a = ids[:level]
    plus = ids[level]
    b = ids[level + 1 : 2 * level + 1]
    eq = ids[2 * level + 1]
    ans = ids[2 * level + 2 :]
    assert a == [k + offset for k in range(1, level + 1)]  # operand digit k at k (+offset)
    assert b == a
    assert plus == 0  # '+' at 0, never shifted
    assert eq == 1 + offset  # '=' at 1 (+offset)
    assert ans == [k + 1 + offset for k in range(1, level + 2)]  # answer digit k at k+1 (+offset)
    # the token that predicts answer digit k (the one before it) sits at k+offset: beside operand digit k
    predictors = ids[2 * level + 1 : -1]
    assert predictors[:level] == a


def test_position_ids_explicit_example():
    assert TASK.position_ids(3) == [1, 2, 3, 0, 1, 2, 3, 1, 2, 3, 4, 5]
    assert TASK.position_ids(2, offset=10) == [11, 12, 0, 11, 12, 11, 12, 13, 14]


def test_generation_is_deterministic_for_a_seed():
    a = TASK.generate(5, 50, np.random.default_rng(123))
    b = TASK.generate(5, 50, np.random.default_rng(123))
    c = TASK.generate(5, 50, np.random.default_rng(124))
    assert a == b
    assert a != c
    assert len({p.prompt for p in a}) > 45  # not one repeated problem


def test_registry_and_vocabulary():
    assert isinstance(get_task("addition"), Addition)
    with pytest.raises(ValueError):
        get_task("multiplication-by-hand")
    text = "0123456789+="
    assert decode(encode(text)) == text
