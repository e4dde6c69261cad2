"""Copy: `d1..dn=` answered by the same n digits, the control task of the ladder.

Copying needs no arithmetic, only finding the prompt digit that shares the next answer digit's index, so it
separates "can the model align positions at this length" from "can it compute at this length". Difficulty is
the number of digits n; any digit may be zero (there is no number whose length a leading zero would change).
Positions follow reversed addition exactly: prompt digit k at k, '=' at 1 and answer digit k at k+1, so the
token that predicts answer digit k sits at k, the position of the digit it copies.
The largest position is n+1+offset (marked: 3+offset): with offsets up to 64, levels up to 62 stay below
max_positions=128.
"""
from __future__ import annotations

import numpy as np

from .base import Composition, ExactAnswer, Problem, splits


class Copy(ExactAnswer):
    name = "copy"

    def generate(self, level: int, n: int, rng: np.random.Generator) -> list[Problem]:
        if level < 1:
            raise ValueError(f"copy level must be >= 1, got {level}")
        digits = rng.integers(0, 10, size=(n, level))  # any digit may lead: no number's length is at stake
        return [Problem(prompt="".join(map(str, row)) + "=", level=level) for row in digits]

    def answer_length(self, level: int, marked: bool = False) -> int:
        return 1 if marked else level

    def compositions(self, problem: Problem, longest: int) -> list[Composition]:
        """A copy of n digits is the copy of its first k followed by the copy of the rest."""
        if problem.marked:
            return []
        d, n = problem.prompt.removesuffix("="), problem.level
        return [Composition((Problem(d[:k] + "=", k), Problem(d[k:] + "=", n - k)), _join(k, n))
                for k in splits(n, longest)]

    def solve(self, problem: Problem) -> str:
        return problem.prompt.rstrip("=")

    def position_ids(self, level: int, offset: int = 0, marked: bool = False) -> list[int]:
        """Prompt digit k at k, '=' at 1, answer digit k at k+1 (all +offset); marked: marker 2, refusal 3."""
        digits = [k + offset for k in range(1, level + 1)]
        prompt = digits + [1 + offset]
        if marked:
            return prompt + [2 + offset, 3 + offset]
        return prompt + [k + 1 + offset for k in range(1, level + 1)]


def _join(k: int, n: int):
    def join(answers: list[str]) -> str | None:
        first, rest = answers
        return first + rest if len(first) == k and len(rest) == n - k else None
    return join
