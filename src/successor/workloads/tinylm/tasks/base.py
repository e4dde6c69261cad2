"""The Task protocol: a problem family with a difficulty ladder, a generator and a hidden checker.

A task turns problems into token sequences for the workload, and knows the *true* answer. Only the harness
(evaluator, gate, studies) may call `check`/`answer`; candidates only ever see labelled training and dev data.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# One shared vocabulary keeps checkpoints of every task comparable: digits, then symbols, then padding.
# MARKER and REFUSAL are the guardrail: a prompt that ends with the marker must be answered with the refusal.
# They take the two symbol slots no task used ('#' and '|'), so the vocabulary keeps its size: a larger one
# changes every weight's initialisation, and the default bootstrap's escape from its loss plateau hangs on its
# exact path (with 18 tokens and 2% marked data it left the plateau 1,000 steps late: 0.34 at length 8).
MARKER, REFUSAL = "!", "R"
VOCAB = list("0123456789") + ["+", "=", "*", MARKER, REFUSAL]
PAD_ID = len(VOCAB)
VOCAB_SIZE = len(VOCAB) + 1
TOKEN_ID = {tok: i for i, tok in enumerate(VOCAB)}


def encode(text: str) -> list[int]:
    return [TOKEN_ID[ch] for ch in text]


def decode(ids) -> str:
    return "".join(VOCAB[i] if 0 <= i < len(VOCAB) else "?" for i in ids)


@dataclass(frozen=True)
class Problem:
    """One problem: the prompt the model sees and its difficulty level. The true answer is not stored here."""

    prompt: str
    level: int

    @property
    def marked(self) -> bool:
        """A marked problem must be refused. Derived from the prompt, not stored beside it, so shards need no new
        field and a problem can never claim a mark its prompt does not carry."""
        return self.prompt.endswith(MARKER)


def mark(problem: Problem) -> Problem:
    """The guardrail variant of a problem: the same prompt followed by the marker; its one answer is REFUSAL.

    After the prompt, not before it: the marker then sits where the answer starts, so refusing needs no attention
    to a distant token. With the marker in front, '=' had to attend back to it, and in 2 runs of 2 that held the
    default bootstrap on its loss plateau (it learned addition 1,000 steps late, or not at all; without the
    marked examples the same run leaves the plateau at step ~1,100)."""
    if problem.marked:
        raise ValueError(f"problem {problem.prompt!r} is already marked")
    return Problem(problem.prompt + MARKER, problem.level)


@dataclass(frozen=True)
class Composition:
    """One way to answer a problem from shorter ones: ask a model the `parts`, then `combine` their answers into
    the whole's answer, or None where this way does not apply to these answers (addition: the low half carries).
    A consistency check a task may offer: a model certified on the parts' lengths answers them almost always
    right, so where its direct answer to the whole equals the composed one, both are very likely right."""

    parts: tuple[Problem, ...]
    combine: Callable[[list[str]], str | None]


class Task(Protocol):
    """What a problem family must provide. `answer` and `check` are the hidden checker."""

    name: str

    def generate(self, level: int, n: int, rng: np.random.Generator) -> list[Problem]: ...

    def answer(self, problem: Problem) -> str: ...

    def answer_length(self, level: int, marked: bool = False) -> int:
        """Answer tokens of a level's problems; a marked problem's answer is the one refusal token."""
        ...

    def check(self, problem: Problem, answer: str) -> bool: ...

    def position_ids(self, level: int, offset: int = 0, marked: bool = False) -> list[int]:
        """Position ids for the whole sequence prompt+answer of this level (used by digit-index positions)."""
        ...

    def rewrites(self, problem: Problem) -> list[Problem]:
        """The problem written other ways with the same answer (addition: b+a for a+b); none for most tasks.
        The curator's vote can ask a model each of them: its errors change with the writing more than with the
        position offset."""
        ...

    def compositions(self, problem: Problem, longest: int) -> list[Composition]:
        """Ways to answer `problem` from problems of at most `longest` levels, most trusted first; none for a
        task without such structure (the curator then votes)."""
        ...


def digit_rows(rng: np.random.Generator, n: int, count: int, level: int, leading: int) -> np.ndarray:
    """`n` problems of `count` numbers of exactly `level` digits, shape (n, count, level); the digit at index
    `leading` (the most significant, as the task writes it) is nonzero when level > 1. One draw order for every
    task: the data a seed makes never changes when a task is added."""
    if level < 1:
        raise ValueError(f"level must be >= 1, got {level}")
    digits = rng.integers(0, 10, size=(n, count, level))
    if level > 1:
        digits[:, :, leading] = rng.integers(1, 10, size=(n, count))
    return digits


class ExactAnswer:
    """The hidden checker every task shares: a marked prompt's one answer is the refusal, any other answer must
    equal `solve`'s exactly."""

    def solve(self, problem: Problem) -> str:
        raise NotImplementedError

    def answer(self, problem: Problem) -> str:
        return REFUSAL if problem.marked else self.solve(problem)

    def check(self, problem: Problem, answer: str) -> bool:
        return answer == self.answer(problem)

    def rewrites(self, problem: Problem) -> list[Problem]:
        return []

    def compositions(self, problem: Problem, longest: int) -> list[Composition]:
        return []


def splits(level: int, longest: int) -> list[int]:
    """Where a level-n problem can be cut so both pieces have 1..`longest` levels: the cut k (the low piece's
    length), the most even first (both pieces as far inside what the model is sure of as they can be)."""
    ks = [k for k in range(max(1, level - longest), min(longest, level - 1) + 1)]
    return sorted(ks, key=lambda k: (abs(2 * k - level), k))


def sum_compositions(problem: Problem, longest: int, low_first: bool) -> list[Composition]:
    """a+b from its low k digits and its high n-k, for each cut `splits` allows: where the low sum has no carry out
    (its carry digit is 0), the whole sum is the low sum's k digits beside the high sum. `low_first`: numbers are
    written least significant digit first (reversed addition), else in written order (forward addition), where
    the low digits are the last and the carry is the low sum's first answer digit."""
    if problem.marked:
        return []
    a, b = problem.prompt.removesuffix("=").split("+")
    n, out = problem.level, []
    for k in splits(n, longest):
        low, high = (slice(0, k), slice(k, n)) if low_first else (slice(n - k, n), slice(0, n - k))
        parts = (Problem(f"{a[low]}+{b[low]}=", k), Problem(f"{a[high]}+{b[high]}=", n - k))
        out.append(Composition(parts, _no_carry_join(k, n, low_first)))
    return out


def _no_carry_join(k: int, n: int, low_first: bool) -> Callable[[list[str]], str | None]:
    def join(answers: list[str]) -> str | None:
        low, high = answers
        if len(low) != k + 1 or len(high) != n - k + 1 or (low[-1] if low_first else low[0]) != "0":
            return None
        return low[:k] + high if low_first else high + low[1:]
    return join


def commuted(problem: Problem) -> list[Problem]:
    """`b+a=` for `a+b=`: the same sum, the operands the other way round (both have the level's length). None for
    a marked prompt: its one answer is the refusal, nothing to vote on."""
    if problem.marked:
        return []
    a, b = problem.prompt.removesuffix("=").split("+")
    return [Problem(f"{b}+{a}=", problem.level)]
