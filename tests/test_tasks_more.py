"""The copy, multiplication and forward-addition tasks: generators, hidden checkers and aligned positions."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from conftest import operands

from successor.workloads.tinylm.tasks import REFUSAL, VOCAB_SIZE, Problem, decode, encode, get_task, mark
from successor.workloads.tinylm.tasks.base import MARKER, VOCAB
from successor.workloads.tinylm.tasks.copy import Copy
from successor.workloads.tinylm.tasks.forward_addition import ForwardAddition
from successor.workloads.tinylm.tasks.multiplication import Multiplication
from successor.workloads.tinylm.decode import greedy, greedy_same_level
from successor.workloads.tinylm.model import ModelConfig, TinyLM
from successor.workloads.tinylm.sequences import IGNORE, training_batch

COPY, MUL, FWD = Copy(), Multiplication(), ForwardAddition()
TASKS = {"copy": COPY, "multiplication": MUL, "forward_addition": FWD}
# the largest level each docstring claims keeps every position id below max_positions=128 at offset 64
SAFE_LEVEL = {"copy": 62, "multiplication": 61, "forward_addition": 60}
MAX_POSITIONS, MAX_OFFSET = 128, 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def mul_operands(p: Problem) -> tuple[str, str]:
    return operands(p.prompt, "*")


def fwd_operands(p: Problem) -> tuple[str, str]:
    return operands(p.prompt, "+")


# -- generators ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [1, 2, 3, 7, 12])
def test_copy_prompts_have_exactly_level_digits(level):
    probs = COPY.generate(level, 300, np.random.default_rng(level))
    assert len(probs) == 300
    for p in probs:
        assert p.level == level and not p.marked
        assert p.prompt.endswith("=") and p.prompt.count("=") == 1
        assert len(p.prompt) == level + 1 and p.prompt[:-1].isdigit()
    # any digit may be zero, the first included
    assert any(p.prompt[0] == "0" for p in probs)


@pytest.mark.parametrize("level", [1, 2, 3, 7, 12])
def test_multiplication_operands(level):
    probs = MUL.generate(level, 300, np.random.default_rng(level))
    assert len(probs) == 300
    for p in probs:
        assert p.level == level and not p.marked
        a, b = mul_operands(p)
        assert len(a) == level and a.isdigit()
        assert len(b) == 1 and b in "123456789"
        if level > 1:
            assert a[-1] != "0"  # reversed: the last written digit is the most significant
            assert len(str(int(a[::-1]))) == level
    assert {mul_operands(p)[1] for p in probs} == set("123456789")
    if level == 1:  # a single-digit multiplicand may be zero
        assert any(mul_operands(p)[0] == "0" for p in probs)


@pytest.mark.parametrize("level", [1, 2, 3, 7, 12])
def test_forward_addition_operands(level):
    probs = FWD.generate(level, 300, np.random.default_rng(level))
    assert len(probs) == 300
    for p in probs:
        assert p.level == level and not p.marked
        for x in fwd_operands(p):
            assert len(x) == level and x.isdigit()
            if level > 1:
                assert x[0] != "0"  # written order: the first digit is the most significant
                assert len(str(int(x))) == level
    if level == 1:
        assert any("0" in fwd_operands(p) for p in probs)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_level_below_one_refused(name):
    for level in (0, -1):
        with pytest.raises(ValueError):
            TASKS[name].generate(level, 3, np.random.default_rng(0))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_generation_is_deterministic_for_a_seed(name):
    task = TASKS[name]
    a = task.generate(5, 50, np.random.default_rng(123))
    b = task.generate(5, 50, np.random.default_rng(123))
    c = task.generate(5, 50, np.random.default_rng(124))
    assert a == b and a != c
    assert len({p.prompt for p in a}) > 45


# -- answers and the hidden checker --------------------------------------------------------------------------


def test_known_answers():
    assert COPY.answer(Problem("40521=", 5)) == "40521"
    assert COPY.answer(Problem("0=", 1)) == "0"
    assert COPY.answer(Problem("007=", 3)) == "007"

    assert MUL.answer(Problem("9*9=", 1)) == "18"  # 81, reversed
    assert MUL.answer(Problem("5*2=", 1)) == "01"  # 10, reversed
    assert MUL.answer(Problem("0*7=", 1)) == "00"
    assert MUL.answer(Problem("21*3=", 2)) == "630"  # 12*3=36 -> 036 -> 630
    assert MUL.answer(Problem("99*9=", 2)) == "198"  # 99*9=891
    assert MUL.answer(Problem("123*4=", 3)) == "4821"  # 321*4=1284

    assert FWD.answer(Problem("9+9=", 1)) == "18"
    assert FWD.answer(Problem("1+2=", 1)) == "03"  # leading zero when there is no final carry
    assert FWD.answer(Problem("12+34=", 2)) == "046"
    assert FWD.answer(Problem("99+91=", 2)) == "190"
    assert FWD.answer(Problem("50+50=", 2)) == "100"


@pytest.mark.parametrize("level", [1, 2, 5, 9])
def test_answers_match_their_definitions(level):
    for p in COPY.generate(level, 100, np.random.default_rng(level)):
        assert COPY.answer(p) == p.prompt[:-1]
    assert COPY.answer_length(level) == level
    for p in MUL.generate(level, 100, np.random.default_rng(level)):
        a, b = mul_operands(p)
        ans = MUL.answer(p)
        assert len(ans) == level + 1 and ans.isdigit() and int(ans[::-1]) == int(a[::-1]) * int(b)
    assert MUL.answer_length(level) == level + 1
    for p in FWD.generate(level, 100, np.random.default_rng(level)):
        a, b = fwd_operands(p)
        ans = FWD.answer(p)
        assert len(ans) == level + 1 and ans.isdigit() and int(ans) == int(a) + int(b)
    assert FWD.answer_length(level) == level + 1


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize("level", [1, 3, 6])
def test_checker_accepts_truth_and_rejects_every_single_digit_corruption(name, level):
    task = TASKS[name]
    for p in task.generate(level, 15, np.random.default_rng(level)):
        truth = task.answer(p)
        assert len(truth) == task.answer_length(level)
        assert task.check(p, truth)
        for i in range(len(truth)):
            for d in "0123456789":
                if d != truth[i]:
                    assert not task.check(p, truth[:i] + d + truth[i + 1 :])
        assert not task.check(p, truth[:-1])
        assert not task.check(p, truth + "0")
        assert not task.check(p, "0" + truth)
        assert not task.check(p, "")
        assert not task.check(p, REFUSAL)
        if truth != truth[::-1]:
            assert not task.check(p, truth[::-1])


@pytest.mark.parametrize("name", sorted(TASKS))
def test_marked_problems_are_answered_with_the_refusal(name):
    task = TASKS[name]
    for p in task.generate(3, 10, np.random.default_rng(7)):
        m = mark(p)
        assert m.marked and m.prompt == p.prompt + MARKER
        assert task.answer(m) == REFUSAL
        assert task.answer_length(3, marked=True) == 1
        assert task.check(m, REFUSAL)
        assert not task.check(m, task.answer(p))
        assert not task.check(m, "")
        assert not task.check(p, REFUSAL)


# -- positions -----------------------------------------------------------------------------------------------


def test_position_ids_explicit_examples():
    assert COPY.position_ids(3) == [1, 2, 3, 1, 2, 3, 4]
    assert COPY.position_ids(2, offset=10) == [11, 12, 11, 12, 13]
    assert COPY.position_ids(3, offset=2, marked=True) == [3, 4, 5, 3, 4, 5]

    assert MUL.position_ids(3) == [1, 2, 3, 0, 1, 1, 2, 3, 4, 5]  # a a a * b = c c c c
    assert MUL.position_ids(2, offset=10) == [11, 12, 0, 11, 11, 12, 13, 14]
    assert MUL.position_ids(2, offset=10, marked=True) == [11, 12, 0, 11, 11, 12, 13]

    assert FWD.position_ids(3) == [3, 2, 1, 0, 3, 2, 1, 4, 3, 2, 1, 0]  # a a a + b b b = c c c c
    assert FWD.position_ids(2, offset=10) == [12, 11, 0, 12, 11, 13, 12, 11, 0]
    assert FWD.position_ids(2, offset=10, marked=True) == [12, 11, 0, 12, 11, 13, 14, 15]


def prompt_length(name: str, level: int) -> int:
    return {"copy": level + 1, "multiplication": level + 3, "forward_addition": 2 * level + 2}[name]


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize("level", [1, 2, 4, 8])
@pytest.mark.parametrize("offset", [0, 1, 5, 20])
def test_position_ids_length_matches_prompt_and_answer(name, level, offset):
    task = TASKS[name]
    p = task.generate(level, 1, np.random.default_rng(level))[0]
    assert len(p.prompt) == prompt_length(name, level)
    for marked in (False, True):
        prob = mark(p) if marked else p
        ids = task.position_ids(level, offset, marked)
        assert len(ids) == len(prob.prompt) + task.answer_length(level, marked)
        assert len(ids) == len(prob.prompt + task.answer(prob))
        assert min(ids) >= 0


@pytest.mark.parametrize("level", [1, 2, 4, 8])
@pytest.mark.parametrize("offset", [0, 3, 20])
def test_copy_alignment(level, offset):
    """The token that predicts answer digit k sits at k+offset, the position of prompt digit k it copies."""
    ids = COPY.position_ids(level, offset)
    P = level + 1
    for k in range(1, level + 1):
        predictor = ids[P + k - 2]  # the token just before answer digit k ('=' for k=1)
        assert predictor == k + offset == ids[k - 1]
    assert ids[level] == 1 + offset  # '='
    marked = COPY.position_ids(level, offset, marked=True)
    assert marked[:P] == ids[:P] and marked[P:] == [2 + offset, 3 + offset]


@pytest.mark.parametrize("level", [1, 2, 4, 8])
@pytest.mark.parametrize("offset", [0, 3, 20])
def test_multiplication_alignment(level, offset):
    """a's digit k at k, '*' at 0 (never shifted), b at 1, '=' at 1; the predictor of answer digit k sits at k."""
    ids = MUL.position_ids(level, offset)
    P = level + 3
    assert ids[:level] == [k + offset for k in range(1, level + 1)]
    assert ids[level] == 0 and ids[level + 1] == 1 + offset and ids[level + 2] == 1 + offset
    assert ids[P:] == [k + 1 + offset for k in range(1, level + 2)]
    for k in range(1, level + 2):
        predictor = ids[P + k - 2]
        assert predictor == k + offset
        if k <= level:
            assert predictor == ids[k - 1]  # beside the multiplicand digit of the same index
    marked = MUL.position_ids(level, offset, marked=True)
    assert marked[:P] == ids[:P] and marked[P:] == [2 + offset, 3 + offset]


@pytest.mark.parametrize("level", [1, 2, 4, 8])
@pytest.mark.parametrize("offset", [0, 3, 20])
def test_forward_addition_alignment(level, offset):
    """Positions count significance: the token predicting the answer digit of significance j sits at j+offset,
    the position of both operand digits of significance j; '+' and the last answer digit sit at 0."""
    ids = FWD.position_ids(level, offset)
    P = 2 * level + 2
    a, plus, b, eq, ans = ids[:level], ids[level], ids[level + 1 : 2 * level + 1], ids[2 * level + 1], ids[P:]
    assert a == b == [k + offset for k in range(level, 0, -1)]  # significance n .. 1
    assert plus == 0
    assert eq == level + 1 + offset
    assert ans == [j - 1 + offset for j in range(level + 1, 1, -1)] + [0]
    p = FWD.generate(level, 1, np.random.default_rng(level))[0]
    x, y = (int(s) for s in fwd_operands(p))
    answer = FWD.answer(p)
    for i in range(level + 1):  # answer character i (written order) has significance j = n+1-i
        j = level + 1 - i
        assert int(answer[i]) == (x + y) // 10 ** (j - 1) % 10
        predictor = ids[P + i - 1]
        assert predictor == j + offset
        if j <= level:
            operand_index = level - j  # a's digit of significance j, counted in written order
            assert fwd_operands(p)[0][operand_index] == str(x // 10 ** (j - 1) % 10)
            assert predictor == a[operand_index] == b[operand_index]
    marked = FWD.position_ids(level, offset, marked=True)
    assert marked[:P] == ids[:P] and marked[P:] == [level + 2 + offset, level + 3 + offset]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_positions_stay_below_max_positions_up_to_the_claimed_level(name):
    task, safe = TASKS[name], SAFE_LEVEL[name]
    assert safe >= 60  # config.py allows eval_max_level up to 60
    for level in range(1, safe + 1):
        for marked in (False, True):
            assert max(task.position_ids(level, MAX_OFFSET, marked)) < MAX_POSITIONS
    # and the claim is the largest: one level more overflows at offset 64
    worst = max(max(task.position_ids(safe + 1, MAX_OFFSET, m)) for m in (False, True))
    assert worst >= MAX_POSITIONS
    doc = " ".join(sys.modules[type(task).__module__].__doc__.split())
    assert f"levels up to {safe} stay below max_positions=128" in doc


# -- registry, vocabulary and the workload ------------------------------------------------------------------


def test_registry():
    for name, cls in (("copy", Copy), ("multiplication", Multiplication), ("forward_addition", ForwardAddition)):
        task = get_task(name)
        assert isinstance(task, cls) and task.name == name


def test_vocabulary_is_unchanged_and_round_trips():
    assert VOCAB_SIZE == 16 and len(VOCAB) == 15  # a larger vocabulary changes every weight initialisation
    rng = np.random.default_rng(3)
    for task in TASKS.values():
        for level in (1, 4, 11):
            for p in task.generate(level, 20, rng):
                for prob in (p, mark(p)):
                    text = prob.prompt + task.answer(prob)
                    assert set(text) <= set(VOCAB)
                    assert decode(encode(text)) == text


def mixed_items(task, levels=(1, 2, 3), n=4, seed=0):
    rng = np.random.default_rng(seed)
    probs = []
    for lvl in levels:
        ps = task.generate(lvl, n, rng)
        probs += ps + [mark(ps[0])]
    return probs


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize("scheme", ["digit_index", "digit_rope", "learned"])
def test_training_batch_builds(name, scheme):
    task = TASKS[name]
    probs = mixed_items(task)
    labels = [task.answer(p) for p in probs]
    offsets = np.arange(len(probs)) % 4
    idx, pos, tgt = training_batch(task, scheme, probs, labels, offsets)
    T = max(len(p.prompt) + len(y) for p, y in zip(probs, labels)) - 1
    assert idx.shape == pos.shape == tgt.shape == (len(probs), T)
    assert int(pos.max()) < MAX_POSITIONS
    for b, (p, y) in enumerate(zip(probs, labels)):
        assert int((tgt[b] != IGNORE).sum()) == len(y)
        P = len(p.prompt)
        assert tgt[b, P - 1 : P - 1 + len(y)].tolist() == encode(y)
        if scheme == "digit_index":
            assert pos[b, : P + len(y) - 1].tolist() == task.position_ids(p.level, int(offsets[b]), p.marked)[:-1]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinyLM(ModelConfig(vocab_size=VOCAB_SIZE, n_layer=1, n_embd=32, n_head=2, ffn_mult=2))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_greedy_returns_answers_of_answer_length(model, name):
    task = TASKS[name]
    probs = mixed_items(task, levels=(1, 2, 5), n=3, seed=1)
    for offset in (0, 3):
        got = greedy(model, task, probs, offset=offset, batch_size=4)
        assert len(got) == len(probs)
        for p, a in zip(probs, got):
            assert len(a) == task.answer_length(p.level, p.marked)
            task.check(p, a)  # a wrong answer is fine; the checker must just take it


@pytest.mark.parametrize("name", sorted(TASKS))
def test_greedy_at_the_largest_safe_level_and_offset(model, name):
    task, level = TASKS[name], SAFE_LEVEL[name]
    rng = np.random.default_rng(2)
    for probs in (task.generate(level, 2, rng), [mark(p) for p in task.generate(level, 2, rng)]):
        cached = greedy_same_level(model, task, probs, offset=MAX_OFFSET)
        full = greedy_same_level(model, task, probs, offset=MAX_OFFSET, use_cache=False)
        assert cached == full
        assert all(len(a) == task.answer_length(level, probs[0].marked) for a in cached)
