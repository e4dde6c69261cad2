"""The policy: what a human allows the loop to do, kept apart from the run config because a human may change it
while a run is paused (raise a budget, switch to manual approval) without changing what the run *is*.

A run reads `policy.yaml` in its run directory; `successor run --policy FILE` writes one there. Every change of
the policy is an audit event (its digest is recorded at each start), and the policy file is a protected file
during experiments: a candidate that edits it is disqualified.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, field_validator

from ..config import ConfigError, _read_yaml, read_text_file, validated
from ..safeio import write_text_atomic
from ..schema import Strict


class SandboxLimits(Strict):
    """Per experiment. The address space needs at least 1 GiB: importing torch maps several hundred MiB."""

    cpu_seconds: int = Field(3600, ge=1, description="RLIMIT_CPU of the candidate's processes")
    memory_mb: int = Field(4096, ge=1024, description="RLIMIT_AS per process, and the cgroup memory limit")
    open_files: int = Field(256, ge=16, description="RLIMIT_NOFILE")
    file_size_mb: int = Field(512, ge=1, description="RLIMIT_FSIZE: no single file may grow past this")
    workspace_mb: int = Field(1024, ge=1, description="the whole workspace; checked every half second")
    workspace_files: int = Field(20000, ge=10, description="files, folders and links in the workspace (its "
                                 "inode quota: empty files cost no blocks); checked every half second")
    processes: int = Field(64, ge=4, description="cgroup pids.max (RLIMIT_NPROC does nothing for root)")
    readable_paths: list[str] = Field([], description="host files or folders (absolute, existing) bound "
                                      "read-only into every sandbox, e.g. a program's data: the sandbox's root "
                                      "holds only the system trees and the Python environment")

    @field_validator("readable_paths")
    @classmethod
    def _existing(cls, paths: list[str]) -> list[str]:
        for p in paths:
            if not os.path.isabs(p) or not os.path.exists(p):
                raise ValueError(f"{p!r} is not an absolute path that exists")
        return [os.path.normpath(p) for p in paths]


class Budgets(Strict):
    """Limits of the whole run, across resumes. Reaching one pauses the run at the next experiment; raise it in
    the policy and re-run to go on. None means no limit."""

    wall_clock_s: float | None = Field(None, gt=0, description="seconds the loop has been running, summed")
    cpu_s: float | None = Field(None, gt=0, description="CPU-seconds used by experiments, summed")
    flops: float | None = Field(None, gt=0, description="estimated training FLOPs of experiments, summed "
                                "(tinylm: the harness's count from recipe and data, see workloads/tinylm/flops.py)")
    experiments: int | None = Field(None, ge=1, description="experiments started")
    generations: int | None = Field(None, ge=1, description="generations finished, the bootstrap included")
    llm_cost_usd: float | None = Field(None, ge=0, description="USD an llm researcher may spend, summed over "
                                       "its calls (at the prices its config names); reaching it pauses the "
                                       "researcher, and the run if no other researcher can propose")
    llm_tokens: int | None = Field(None, ge=0, description="prompt plus completion tokens an llm researcher may "
                                   "use, summed")


class Tripwires(Strict):
    """Conditions that pause the run before a promotion and wait for `successor approve` or `reject`."""

    capability_jump: float | None = Field(0.5, gt=0, description="a rise in mean sealed accuracy over the "
                                          "tested levels larger than this in one generation")
    guardrail_floor: float | None = Field(None, ge=0, le=1, description="the successor's guardrail rate under "
                                          "this (its budget)")
    integrity_violation: bool = Field(True, description="any candidate of the generation crossed a sandbox line")


class Policy(Strict):
    isolation: Literal["required", "preferred", "none"] = Field(
        "required", description="required: refuse to run an experiment without the bubblewrap sandbox; "
        "preferred: fall back to `unshare -rn` plus rlimits (no filesystem isolation) and say so in the audit "
        "log; none: rlimits only")
    sandbox: SandboxLimits = SandboxLimits()
    budgets: Budgets = Budgets()
    approval: Literal["auto", "manual"] = Field("auto", description="manual: every promotion waits for "
                                                "`successor approve DIR --generation N`")
    tripwires: Tripwires = Tripwires()


class PolicyError(ConfigError):
    """A policy problem, phrased as one line that names the field."""


def load_policy(path: Path | None) -> Policy:
    if path is None:
        return Policy()
    path = Path(path)
    data = _read_yaml(read_text_file(path, "policy", PolicyError), f"policy: {path}", PolicyError)
    return validated(Policy, data, "policy.", PolicyError)


def save_policy(policy: Policy, path: Path) -> str:
    """Write the policy atomically; returns its digest."""
    text = yaml.safe_dump(policy.model_dump(mode="json"), sort_keys=False)
    write_text_atomic(Path(path), text)
    return hashlib.sha256(text.encode()).hexdigest()
