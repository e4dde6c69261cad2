"""What every researcher of the `script` workload is told, and what it answers.

A researcher is one small protocol: `propose(brief) -> list[Proposal]`. The brief carries the champion's knobs,
the knob space, the allow-listed sources, research memory (every past candidate: knobs, diff, metric, failure
with its log tail, the gate's reason) and the champion's weaknesses. Researchers sit side by side: `evolution`,
`optuna`, `llm`, and a `manager` that fans out to others by role.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np


@dataclass(frozen=True)
class Dim:
    """One knob the researcher may turn: a bounded number (optionally log-scaled) or a choice."""

    name: str
    kind: Literal["float", "int", "choice"]
    default: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()

    def grid(self, points: int = 9) -> list:
        """Ordered values evolution steps between (neighbours are one mutation apart); includes the default."""
        if self.kind == "choice":
            return list(self.choices)
        lo, hi = float(self.low), float(self.high)
        if self.log:
            vals = list(np.exp(np.linspace(math.log(lo), math.log(hi), points)))
        else:
            vals = list(np.linspace(lo, hi, points))
        vals = [int(round(v)) for v in vals] if self.kind == "int" else [float(f"{v:.4g}") for v in vals]
        return sorted(set(vals) | {self.default})

    def check(self, value: Any) -> Any:
        """`value` coerced to this knob's type, or ValueError naming the knob."""
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(f"knob {self.name}: {value!r} is not one of {list(self.choices)}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"knob {self.name}: {value!r} is not a number")
        if self.kind == "int":
            if float(value) != int(value):
                raise ValueError(f"knob {self.name}: {value!r} is not an integer")
            value = int(value)
        else:
            value = float(value)
        if not self.low <= value <= self.high:
            raise ValueError(f"knob {self.name}: {value!r} is outside [{self.low}, {self.high}]")
        return value


@dataclass(frozen=True)
class Space:
    dims: dict[str, Dim]

    def defaults(self) -> dict:
        return {k: d.default for k, d in self.dims.items()}

    def validate(self, knobs: dict) -> dict:
        """A full, typed knob assignment: unknown names refused, missing ones take their default."""
        unknown = sorted(set(knobs) - set(self.dims))
        if unknown:
            raise ValueError(f"unknown knob(s) {', '.join(unknown)}; known: {', '.join(self.dims)}")
        return {k: d.check(knobs.get(k, d.default)) for k, d in self.dims.items()}


@dataclass
class Proposal:
    """One candidate: a full knob assignment, an optional unified diff against the allow-listed files."""

    knobs: dict
    rationale: str
    diff: str | None = None
    expected: str | None = None  # the researcher's own forecast of the effect, kept for the report
    role: str | None = None  # the manager's role that proposed it (explorer, exploiter)
    researcher: str | None = None


def proposal_key(knobs: dict, diff: str | None) -> str:
    """Identity of a proposal for research memory: the knobs and the diff's changed lines (not its context or
    headers' timestamps), so the same change proposed twice is recognised."""
    changed = [ln for ln in (diff or "").splitlines()
               if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    body = json.dumps({"knobs": knobs, "diff": changed}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass
class Trial:
    """One past candidate, as research memory holds it."""

    id: str
    generation: int
    knobs: dict
    diff: str | None
    metric: float | None  # mean over its seeds, as the harness measured it (None: it failed)
    status: str  # done | failed | timeout | violation | refused
    error: str | None = None
    log_tail: str = ""
    gate_reason: str | None = None
    promoted: bool = False
    role: str | None = None
    researcher: str | None = None

    @property
    def key(self) -> str:
        return proposal_key(self.knobs, self.diff)


@dataclass
class Brief:
    generation: int
    champion_knobs: dict
    champion_metric: float | None
    metric: str  # the metric's name, for prompts
    direction: Literal["maximize", "minimize"]
    space: Space
    sources: dict[str, str]  # allow-listed path -> the champion's text of it
    editable: list[str]  # the allow-list's glob patterns (a diff may touch only these)
    memory: list[Trial]
    weaknesses: list[str]
    n: int  # how many proposals are wanted
    rng: np.random.Generator
    extra: dict = field(default_factory=dict)

    def better(self, a: float, b: float) -> bool:
        return a > b if self.direction == "maximize" else a < b


class ResearcherPaused(Exception):
    """The researcher cannot propose now (its cost cap is reached); the loop pauses if no researcher can."""


class Researcher(Protocol):
    name: str

    def propose(self, brief: Brief) -> list[Proposal]: ...
