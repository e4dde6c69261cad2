"""Forward addition: `a+b=c` in ordinary written order, most significant digit first.

The hard direction (Lee et al. 2025): the first answer digit written depends on the carry out of every lower
digit, so the model must resolve the whole carry chain before it writes anything, where reversed addition meets
each carry just after the digits that produce it. Both operands have exactly n digits and the sum is written with
exactly n+1 digits (a leading zero when there is no final carry), so the answer length is known from the level.
Positions count significance, not writing order: an operand digit of significance k (k=1 is the units digit,
written last) sits at k, '+' at 0, and the token that predicts the answer digit of significance j sits at j:
'=' at n+1, answer digit of significance j at j-1 (j = n+1..2), and the last answer digit (units) at 0, since it
predicts nothing. A marked prompt continues with the marker at n+2 and the refusal at n+3 ('=' keeps n+1).
The largest position is n+3+offset (marked) or n+1+offset: with offsets up to 64, levels up to 60 stay below
max_positions=128.
"""
from __future__ import annotations

import numpy as np

from .base import Composition, ExactAnswer, Problem, commuted, digit_rows, sum_compositions


class ForwardAddition(ExactAnswer):
    name = "forward_addition"

    def generate(self, level: int, n: int, rng: np.random.Generator) -> list[Problem]:
        # the most significant digit (first, in written order) is nonzero so length == level
        return [Problem(prompt=f"{''.join(map(str, a))}+{''.join(map(str, b))}=", level=level)
                for a, b in digit_rows(rng, n, 2, level, leading=0)]

    def answer_length(self, level: int, marked: bool = False) -> int:
        return 1 if marked else level + 1

    def rewrites(self, problem: Problem) -> list[Problem]:
        return commuted(problem)

    def compositions(self, problem: Problem, longest: int) -> list[Composition]:
        """a+b from its low k digits (written last) and its high n-k (`sum_compositions`)."""
        return sum_compositions(problem, longest, low_first=False)

    def solve(self, problem: Problem) -> str:
        a, b = problem.prompt.rstrip("=").split("+")
        return str(int(a) + int(b)).zfill(problem.level + 1)

    def position_ids(self, level: int, offset: int = 0, marked: bool = False) -> list[int]:
        """Operand digits at their significance n..1, '+' at 0, '=' at n+1, answer digits at n..1 then 0."""
        operand = [k + offset for k in range(level, 0, -1)]
        prompt = operand + [0] + operand + [level + 1 + offset]
        if marked:
            return prompt + [level + 2 + offset, level + 3 + offset]
        return prompt + [j - 1 + offset for j in range(level + 1, 1, -1)] + [0]

