"""The `script` workload: the user's own training program (workload.py), improved a generation at a time. This
file is its entry in the workload registry (successor.workloads.spec)."""
from __future__ import annotations

HAS_TIERS = False  # a program reads its own data; the gate's seeds are the harness's secret instead
RESEARCHERS = ("evolution", "optuna", "llm", "manager")


def make(lab, researcher=None):
    """The workload on a lab; `researcher` replaces the one the config names (tests, studies)."""
    from .workload import ScriptWorkload

    return ScriptWorkload(lab, researcher)


def check_config(cfg) -> None:
    """Raise ValueError where a run config does not fit this workload."""
    if cfg.script is None:
        raise ValueError("workload script needs a script section (program, command, editable, metric)")
    if cfg.researcher.name not in RESEARCHERS:
        raise ValueError(f"researcher {cfg.researcher.name} is for tinylm; the script workload uses evolution, "
                         "optuna, llm or manager")
    if cfg.researcher.seed is not None:
        raise ValueError("researcher.seed is for tinylm; the script workload's researcher draws from the run seed")
