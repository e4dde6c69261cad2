"""Reversed addition: `a+b=c` with every number written least significant digit first.

Difficulty is the operand length n; both operands have exactly n digits and the answer is written with exactly
n+1 digits (a trailing zero when there is no final carry), so the answer length is known from the level.
A marked prompt (`a+b=!`, the guardrail) has one correct answer: the refusal token.
"""
from __future__ import annotations

import numpy as np

from .base import Composition, ExactAnswer, Problem, commuted, digit_rows, sum_compositions


class Addition(ExactAnswer):
    name = "addition"

    def generate(self, level: int, n: int, rng: np.random.Generator) -> list[Problem]:
        # reversed: the most significant digit is written last, and it is nonzero so length == level exactly
        return [Problem(prompt=f"{''.join(map(str, a))}+{''.join(map(str, b))}=", level=level)
                for a, b in digit_rows(rng, n, 2, level, leading=-1)]

    def answer_length(self, level: int, marked: bool = False) -> int:
        return 1 if marked else level + 1

    def rewrites(self, problem: Problem) -> list[Problem]:
        return commuted(problem)

    def compositions(self, problem: Problem, longest: int) -> list[Composition]:
        """a+b from its low k digits (written first) and its high n-k (`sum_compositions`)."""
        return sum_compositions(problem, longest, low_first=True)

    def solve(self, problem: Problem) -> str:
        a_rev, b_rev = problem.prompt.rstrip("=").split("+")
        total = int(a_rev[::-1]) + int(b_rev[::-1])
        return str(total).zfill(problem.level + 1)[::-1]

    def position_ids(self, level: int, offset: int = 0, marked: bool = False) -> list[int]:
        """Aligned digit-index positions: operand digit k sits at k, '=' at 1 and answer digit k at k+1.

        The token that predicts answer digit k therefore sits at position k, beside the operand digits it adds.
        '+' gets 0. A training offset shifts every nonzero position, so longer numbers reuse trained slots.
        A marked sequence continues the prompt with the marker where answer digit 1 would be (2+offset) and the
        refusal after it: the marker, not '=', predicts the answer, so refusing leaves the addition circuit alone.
        """
        operand = [k + offset for k in range(1, level + 1)]
        prompt = operand + [0] + operand + [1 + offset]
        if marked:
            return prompt + [2 + offset, 3 + offset]
        return prompt + [k + 1 + offset for k in range(1, level + 2)]

