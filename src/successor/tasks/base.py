"""The Task protocol: a problem family with a difficulty ladder, a generator and a hidden checker.

A task turns problems into token sequences for the workload, and knows the *true* answer. Only the harness
(evaluator, gate, studies) may call `check`/`answer`; candidates only ever see labelled training and dev data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

# One shared vocabulary keeps checkpoints of every task comparable: digits, then symbols, then padding.
VOCAB = list("0123456789") + ["+", "=", "*", "#", "|"]
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


class Task(Protocol):
    """What a problem family must provide. `answer` and `check` are the hidden checker."""

    name: str

    def generate(self, level: int, n: int, rng: np.random.Generator) -> list[Problem]: ...

    def answer(self, problem: Problem) -> str: ...

    def answer_length(self, level: int) -> int: ...

    def check(self, problem: Problem, answer: str) -> bool: ...

    def position_ids(self, level: int, offset: int = 0) -> list[int]:
        """Position ids for the whole sequence prompt+answer of this level (used by digit-index positions)."""
        ...
