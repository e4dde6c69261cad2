"""Reversed n x 1 multiplication: `a*b=c`, a with n digits, b one digit 1-9, every number least significant first.

This is n x 1 rather than n x n: the paper's 5x5..9x9 multiplication needs chain of thought and is out of reach
of a 1M-parameter model trained on 2 CPU cores in minutes. Multiplying by one digit still needs a carry that can
be any digit 0-8 (addition's is 0 or 1), and the ladder is the multiplicand's length n. The product is written
with exactly n+1 digits (a trailing zero when it is shorter, reversed), so the answer length is known from the
level. Positions are Abacus-style: a's digit k at k, '*' at 0, b's one digit at 1 (its index in its own number),
'=' at 1 and answer digit k at k+1, so the token that predicts answer digit k sits beside a's digit k.
The largest position is n+2+offset: with offsets up to 64, levels up to 61 stay below max_positions=128.
"""
from __future__ import annotations

import numpy as np

from .base import ExactAnswer, Problem, digit_rows


class Multiplication(ExactAnswer):
    name = "multiplication"

    def generate(self, level: int, n: int, rng: np.random.Generator) -> list[Problem]:
        # reversed: the most significant digit (last) is nonzero so length == level exactly
        a = digit_rows(rng, n, 1, level, leading=-1)[:, 0]
        b = rng.integers(1, 10, size=n)
        return [Problem(prompt="".join(map(str, row)) + f"*{d}=", level=level) for row, d in zip(a, b)]

    def answer_length(self, level: int, marked: bool = False) -> int:
        return 1 if marked else level + 1

    def solve(self, problem: Problem) -> str:
        a_rev, b = problem.prompt.rstrip("=").split("*")
        return str(int(a_rev[::-1]) * int(b)).zfill(problem.level + 1)[::-1]

    def position_ids(self, level: int, offset: int = 0, marked: bool = False) -> list[int]:
        """a's digit k at k, '*' at 0, b at 1, '=' at 1, answer digit k at k+1 (nonzero ones +offset)."""
        prompt = [k + offset for k in range(1, level + 1)] + [0, 1 + offset, 1 + offset]
        if marked:
            return prompt + [2 + offset, 3 + offset]
        return prompt + [k + 1 + offset for k in range(1, level + 2)]
