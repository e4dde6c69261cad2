"""The workloads, side by side: `tinylm` and `script`. Each package's __init__ is its registry entry (`spec`):
what the config, the run directory, the driver and the reports ask of it, with no branch on its name anywhere
else. An entry stays light (no torch, no driver): the heavy parts are imported by its `make`."""
from __future__ import annotations

from importlib import import_module
from types import ModuleType

NAMES = ("tinylm", "script")


def spec(name: str) -> ModuleType:
    """A workload's registry entry: `make(lab, researcher)`, `check_config(cfg)`, `HAS_TIERS`, `RESEARCHERS`."""
    if name not in NAMES:
        raise ValueError(f"workload: unknown workload {name!r}; known: {', '.join(NAMES)}")
    return import_module(f"{__name__}.{name}")
