"""A run's config.yaml as the reports read it, and the workload it names.

This is the one place in reporting/ that reads the workload's name: what differs between workloads (their own
report, the number a champion is measured by, the plots that do not apply) the reports ask of the workload's
registry entry (`successor.workloads.spec`), so no report branches on the name.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

import yaml

from ..workloads import NAMES, spec

DEFAULT_WORKLOAD = "tinylm"  # RunConfig.workload's default: a config.yaml that names none is tinylm's
KEY = "workload"


def run_config(run_dir: Path) -> dict:
    """The run's resolved config.yaml, or {} where it is not written yet."""
    path = Path(run_dir) / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def workload_name(cfg: dict) -> str:
    """The workload's name as the config gives it (the default where it gives none), for display."""
    return cfg.get(KEY, DEFAULT_WORKLOAD)


def workload_key(cfg: dict) -> str:
    """The run's workload among those registered. A name this version does not know reads as the default, as
    the reports always have: a report shows what it can rather than failing."""
    name = workload_name(cfg)
    return name if name in NAMES else DEFAULT_WORKLOAD


def workload_of(cfg: dict) -> ModuleType:
    """The registry entry of the run's workload: what its reports differ in (see workloads/*/__init__.py)."""
    return spec(workload_key(cfg))
