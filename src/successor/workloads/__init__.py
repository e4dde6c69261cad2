"""The workloads, side by side: `tinylm` and `script`. `make_workload` builds the one a run's config names."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..lab import Lab
    from .base import Workload

NAMES = ("tinylm", "script")


def make_workload(lab: Lab, researcher=None) -> Workload:
    """The config's workload on this lab; `researcher` replaces the one the config names (tests, studies)."""
    if lab.cfg.workload == "script":
        from .script.workload import ScriptWorkload

        return ScriptWorkload(lab, researcher)
    from .tinylm.workload import TinyLMWorkload

    return TinyLMWorkload(lab, researcher)
