"""Problem families. `get_task(name)` is the registry; add a task by adding a module and a line here."""
from __future__ import annotations

from .addition import Addition
from .base import MARKER, PAD_ID, REFUSAL, VOCAB_SIZE, Problem, Task, decode, encode, mark
from .copy import Copy
from .forward_addition import ForwardAddition
from .multiplication import Multiplication

TASKS: dict[str, type] = {"addition": Addition, "copy": Copy, "multiplication": Multiplication,
                          "forward_addition": ForwardAddition}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name]()


__all__ = ["MARKER", "PAD_ID", "REFUSAL", "VOCAB_SIZE", "Problem", "Task", "decode", "encode", "get_task", "mark",
           "TASKS", "Addition", "Copy", "ForwardAddition", "Multiplication"]
