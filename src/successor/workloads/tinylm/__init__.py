"""The `tinylm` workload: a small transformer on a generated task (workload.py), its successors trained on data
the champion curated. This file is its entry in the workload registry (successor.workloads.spec): light, so the
config, the run directory and the reports can ask it what they need without importing torch."""
from __future__ import annotations

HAS_TIERS = True  # the run directory draws human, dev, validation, sealed and guardrail tiers for it
RESEARCHERS = ("evolution", "random", "optuna")


def make(lab, researcher=None):
    """The workload on a lab; `researcher` replaces the one the config names (tests, studies)."""
    from .workload import TinyLMWorkload

    return TinyLMWorkload(lab, researcher)


def check_config(cfg) -> None:
    """Raise ValueError where a run config does not fit this workload."""
    if cfg.script is not None:
        raise ValueError("a script section needs workload: script")
    if cfg.researcher.name not in RESEARCHERS:
        raise ValueError(f"researcher {cfg.researcher.name} drives the script workload only; tinylm uses "
                         "evolution, random or optuna")
    if cfg.researcher.name == "optuna" and cfg.researcher.optuna.sampler != "tpe":
        raise ValueError(f"optuna sampler {cfg.researcher.optuna.sampler} is not offered for tinylm: its recipe "
                         "space is categorical; use sampler tpe")


# What the reports, `compare` and `verify` ask of a workload (successor.reporting, oversight/verify.py):
SCORE = "frontier"  # a champion's number: the levels it solves on the sealed tier (status_dict's "frontier")
PLOT_PANELS: dict[str, str] = {}  # the report's plots it has no data for, each with the panel drawn instead


def write_report(run_dir, out, css):
    """Its own report in `out`, or None: tinylm's is the shared one (successor.reporting.report)."""


def compare_label(cfg: dict) -> str:
    """The run in compare's "workload / task" column."""
    return f"tinylm / {(cfg.get('task') or {}).get('name', 'addition')}"


def verify_records(root, records: list[dict]) -> list[str]:
    """verify_run's lines about the audit records only this workload writes: each fresh sealed sample
    (`sealed.drawn`) graded before it was drawn, or not what the run's tier key draws (sealed_fresh.problems)."""
    from .sealed_fresh import problems

    return problems(root, records)


def verify_artifacts(run) -> None:
    """Beyond verify_run's shared checks (its models and the tiers' shards, each against the digest in its name):
    the ladder's grown parts and manifests against the rows that record them (ladder_files.check_parts)."""
    from .ladder_files import check_parts

    check_parts(run)
