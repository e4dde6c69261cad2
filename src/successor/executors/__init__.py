"""Executors: where experiments run. `local` (sandboxed subprocesses on this machine) and `ray` (Ray tasks on a
cluster, the same sandbox on every node), behind one protocol (base.Executor)."""
from __future__ import annotations

from ..oversight.policy import Policy
from .base import Executor


def make_executor(cfg, policy: Policy, isolation: str) -> Executor:
    """The run's executor, as its config names it."""
    ex = cfg.loop.executor
    if ex.name == "ray":
        from .ray import RayExecutor  # raises ConfigError with the install line when Ray is absent

        return RayExecutor(cfg.loop.experiment_timeout_s, cfg.loop.threads, policy, isolation, ex.workers, ex.ray)
    from .local import LocalExecutor

    return LocalExecutor(cfg.loop.experiment_timeout_s, cfg.loop.threads, policy, isolation, ex.workers)
