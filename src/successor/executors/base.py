"""What every executor shares: an experiment as the sandbox sees it, its outcome, and the process helpers the
driver uses to resume safely (an orphan of a dead harness is killed before its experiment runs again)."""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

from .. import safeio


@dataclass
class Outcome:
    status: str  # done | failed | timeout | violation
    wall_s: float
    error: str | None = None
    violations: list[dict] = field(default_factory=list)  # {"kind", "detail"}
    cpu_s: float = 0.0
    isolation: str = "none"
    node: str | None = None  # the Ray node it ran on (None: this machine, the local executor)


@dataclass
class Experiment:
    """What the sandbox needs to know about one experiment; the loop fills it in."""

    job: Path
    run_root: Path
    readable: list[Path]  # inputs bound read-only: train and dev shards, parent checkpoint
    protected: list[Path]  # hashed before and after
    module: str = "successor.workloads.tinylm.train"
    patch: Path | None = None  # the candidate's code patch, run before the module in the same process
    honeypot_levels: list[int] = field(default_factory=lambda: [9, 10, 11, 12])
    command: list[str] | None = None  # a user's program (the script workload) instead of `module`
    cwd: Path | None = None  # where `command` runs (default: the workspace)
    env: dict[str, str] = field(default_factory=dict)  # knobs passed as environment variables
    read_only: list[Path] = field(default_factory=list)  # workspace files it may read, never change
    honeypots: list[Path] | None = None  # planted by the caller (else the task's, in the workspace)
    hidden: list[Path] = field(default_factory=list)  # paths the sandbox replaces with empty ones
    threads: int | None = None  # OMP/torch threads (None: the executor's count for one experiment alone)
    log: Path | None = None  # where its output goes (None: log_path(run_root, experiment id))

    @property
    def workspace(self) -> Path:
        return self.job.parent

    @property
    def log_path(self) -> Path:
        return self.log or log_path(self.run_root, self.workspace.name)


def log_path(run_root: Path, exp_id: str) -> Path:
    """An experiment's output, written by the harness through a descriptor it opened, in a folder no sandbox
    mounts: a candidate can neither replace it with a link nor read another experiment's."""
    return Path(run_root) / "logs" / f"{exp_id}.log"


def kill_orphan(pid: int, job: Path) -> bool:
    """Kill the process group of an experiment left running by a harness that died, if it is still ours."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if str(job).encode() not in cmdline:
        return False  # the pid was reused by something else
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    for _ in range(100):  # SIGKILL is asynchronous: wait until it is gone before its folder is reused
        if not Path(f"/proc/{pid}").exists() or zombie(pid):
            break
        time.sleep(0.05)
    return True


def process_start_time(pid: int) -> str:
    """A process's start time (field 22 of /proc/PID/stat): with the pid, it names one process, not a reused pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19]
    except (OSError, IndexError):
        return ""


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def _files_at_least(path: Path, size: int) -> list[str]:
    try:
        return [rel for rel, st in safeio.entries(path, max_entries=10**7) if st.st_size >= size]
    except (safeio.HostileFile, OSError):
        return []


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


OnStart = Callable[[str, int], None]  # (experiment key, pid of its process group)


class Executor(Protocol):
    """Runs experiments and hands back their outcomes; the driver alone records them. `map` yields outcomes
    in the order the experiments were given, whatever order they finish in, so the store and the audit log
    are written in the same order by every executor and every worker count."""

    workers: int
    timeout_s: float
    isolation: str

    def threads_for(self, parallel: int) -> int:
        """Torch threads for each of `parallel` experiments run together."""

    def run(self, exp: "Experiment", on_start: Callable[[int], None] | None = None) -> "Outcome": ...

    def map(self, items: list[tuple[str, "Experiment"]], on_start: OnStart | None = None
            ) -> Iterator[tuple[str, "Outcome"]]: ...

    def close(self) -> None: ...


class Aborted(Exception):
    """The driver is stopping: an experiment still running is killed and its outcome discarded."""
