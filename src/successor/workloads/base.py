"""The Workload protocol: what a kind of work supplies to the one driver (successor/driver.py).

A workload owns the first ten stages' bodies and the meaning of an experiment; the driver owns their order, the
commits, the budgets, stage 11 (`promote`) and the one place data is accepted. Each stage body takes the
generation and the context (the champion it started from and every earlier stage's result) and returns a
JSON-able dict that the driver commits; a body must give the same result when it is run again on a resume.
Two implementations sit side by side: `tinylm` (a small transformer on a generated task, its data curated by
the current model) and `script` (the user's own training program).
"""
from __future__ import annotations

from typing import Protocol

from ..executors.base import Experiment


class Workload(Protocol):
    def sealed_digest(self, g: int) -> str:
        """What the gate will test generation g on, committed when the generation opens."""

    # the ten stage bodies, in the driver's order
    def assess(self, g: int, ctx: dict) -> dict: ...
    def propose(self, g: int, ctx: dict) -> dict: ...  # {"candidates": [ids]}
    def implement(self, g: int, ctx: dict) -> dict: ...
    def experiment(self, g: int, ctx: dict) -> dict: ...
    def interpret(self, g: int, ctx: dict) -> dict: ...
    def select(self, g: int, ctx: dict) -> dict: ...  # {"selected": id or None, ...}
    def curate(self, g: int, ctx: dict) -> dict: ...  # {"shard": path or None, ...}
    def train(self, g: int, ctx: dict) -> dict: ...  # {"successor": model or None, "experiment": id or None, ...}
    def evaluate(self, g: int, ctx: dict) -> dict: ...
    def gate(self, g: int, ctx: dict) -> dict: ...  # {"promoted": bool, "champion": model, "frontier": int, ...}

    # an experiment, as the lab runs it
    def prepare_experiment(self, g: int, cand: str, exp_id: str) -> tuple[Experiment, dict]:
        """Make the attempt's workspace (Lab.fresh_workspace) and return the sandbox's spec, plus any fields for
        its experiment.start event."""

    def collect(self, g: int, cand: str, exp_id: str, outcome) -> tuple[str | None, dict | None, dict]:
        """Read what a finished experiment left, as hostile data: (model digest, metrics, extra fields for its
        experiment.end event). Whatever it left must never raise: mark the outcome failed or a violation."""

    def flops(self, job: dict) -> float | None:
        """The harness's estimate of a finished job's training FLOPs (None: not estimated)."""

    # promotion, after the driver's tripwires and approval
    def provenance(self, g: int, ctx: dict, model: str) -> dict:
        """The workload's part of the promoted model's provenance statement: data, recipe, code_patch and
        sealed_tier_sha256."""

    def promoted(self, g: int, champion: str) -> None:
        """The champion changed: whatever the workload keeps beside the store follows (a git branch)."""
