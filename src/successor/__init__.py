"""Successor: a research loop that trains successor models and promotes one only when a statistical gate and a
safety gate agree that it is better, with a lineage a human can audit, pause, approve and stop.

The public API (loaded on first use, so a sandboxed trainer that imports `successor.workloads...` pays nothing):

    run(config, run_dir, *, policy=None, progress=None, researcher=None) -> RunResult
    open_run(...) -> Driver          the driver of a run, to call run_all() yourself
    load_config(path=None, preset=None) -> RunConfig;  load_policy(path) -> Policy
    status(run_dir) -> dict;  verify(run_dir) -> (ok, lines)
    Progress, PlainProgress;  Workload (the protocol a workload implements); Driver, RunDir, Policy, RunConfig
"""
from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "run": "api", "open_run": "api", "RunResult": "api",
    "load_config": "config", "RunConfig": "config", "ConfigError": "config",
    "Policy": "oversight.policy", "load_policy": "oversight.policy",
    "Progress": "progress", "PlainProgress": "progress",
    "Driver": "driver", "Stopped": "driver", "Workload": "workloads.base", "RunDir": "rundir",
    "status": ("reporting.status", "status_dict"), "verify": ("oversight.verify", "verify_run"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module 'successor' has no attribute {name!r}")
    module, attr = where if isinstance(where, tuple) else (where, name)
    value = getattr(import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
