"""The library API: `successor.rundir(config, run_dir)` runs (or resumes) a run to its end and says how it ended.

    import successor
    cfg = successor.load_config("successor.yaml")          # or load_config(preset="smoke")
    result = successor.rundir(cfg, "runs/mine", policy=successor.Policy(approval="manual"))
    print(result.state, result.champion, result.status()["generations"])

The CLI's `successor run` is a thin shell over `open_run` and `run`; tests and benchmarks call them in-process.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import RunConfig, load_config
from .driver import Driver, Stopped
from .oversight.policy import Policy, load_policy
from .progress import Progress
from .rundir import RunDir


@dataclass(frozen=True)
class RunResult:
    """How a call to `run` ended, and the lineage it left."""

    run_dir: Path
    state: str  # "finished", "paused" (a budget is spent: raise it and call again) or "stopped" (successor stop)
    reason: str | None  # why it paused or stopped
    champion: str | None  # the last finished generation's champion (a model or program digest)
    frontier: int | None
    metric: float | None
    generations: int  # finished generations
    promoted: int  # of which promoted a successor

    @property
    def finished(self) -> bool:
        return self.state == "finished"

    def status(self) -> dict:
        """The run's whole status, as `successor status --json` prints it."""
        from .reporting.status import status_dict

        return status_dict(self.run_dir)


def open_run(config: RunConfig | str | Path | None, run_dir: str | Path, *, policy: Policy | str | Path | None = None,
             progress: Progress | None = None, researcher=None, audit_key: str | Path | None = None) -> Driver:
    """The driver of a new or resumed run, ready to `run_all()`. `config`: a RunConfig, a YAML path (over the
    default preset) or None (the default preset). `policy`: a Policy or a YAML path, copied into the run (None
    keeps the run's own, or the default for a new run). `researcher` replaces the config's. Raises ConfigError,
    PolicyError, IsolationError or ValueError on bad input, before anything runs."""
    cfg = config if isinstance(config, RunConfig) else load_config(config)
    pol = load_policy(policy) if isinstance(policy, (str, Path)) else policy
    rd = RunDir(Path(run_dir), cfg)
    try:
        if audit_key is not None:
            from .oversight.audit_sign import Signer

            rd.audit.signer = Signer(Path(audit_key))
        if pol is not None:
            rd.set_policy(pol)
        return Driver(rd, progress, researcher=researcher)
    except BaseException:
        rd.store.close()
        raise


def run(config: RunConfig | str | Path | None, run_dir: str | Path, *, policy: Policy | str | Path | None = None,
        progress: Progress | None = None, researcher=None, audit_key: str | Path | None = None) -> RunResult:
    """Run or resume `run_dir` to its end (see `open_run` for the arguments). A spent budget or `successor stop`
    ends the call early with state "paused" or "stopped"; calling again resumes where it ended."""
    driver = open_run(config, run_dir, policy=policy, progress=progress, researcher=researcher, audit_key=audit_key)
    return drive(driver)


def drive(driver: Driver) -> RunResult:
    """Run an opened driver to its end and close its store; the result says how it ended."""
    try:
        try:
            state = driver.run_all()
        except Stopped:
            state = "stopped: successor stop"
    finally:
        driver.store.close()
    return result(driver.run.root, state)


def result(run_dir: Path, state: str) -> RunResult:
    from .reporting.status import status_dict

    st = status_dict(run_dir)
    kind, _, why = state.partition(": ")
    done = [g for g in st["generations"] if g["status"] == "done"]
    return RunResult(run_dir=Path(run_dir), state=kind, reason=why or None, champion=st["champion"],
                     frontier=st["frontier"], metric=st["metric"], generations=len(done), promoted=st["promoted"])
