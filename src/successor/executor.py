"""The local executor: each experiment is a subprocess in its own process group, under a wall-clock limit.

A crash, a NaN loss or a time-out is an *outcome*, recorded as a failed experiment; the loop goes on.
On time-out the whole process group is killed, so a candidate cannot leave children behind.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Outcome:
    status: str  # done | failed | timeout
    wall_s: float
    error: str | None = None


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except FileNotFoundError:
        return ""


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
        if not Path(f"/proc/{pid}").exists() or _zombie(pid):
            break
        time.sleep(0.05)
    return True


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


class LocalExecutor:
    def __init__(self, timeout_s: float, threads: int | None = None):
        self.timeout_s = timeout_s
        self.threads = threads or os.cpu_count() or 1

    def command(self, job: Path) -> list[str]:
        return [sys.executable, "-m", "successor.workloads.tinylm.train", str(job)]

    def run(self, job: Path, on_start=None) -> Outcome:
        """Run one job file; its stdout/stderr go to `log.txt` beside it."""
        log = job.parent / "log.txt"
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), PYTHONUNBUFFERED="1")
        t0 = time.time()
        with open(log, "wb") as out:
            proc = subprocess.Popen(self.command(job), stdout=out, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True, cwd=job.parent)
            if on_start:
                on_start(proc.pid)
            try:
                rc = proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return Outcome("timeout", time.time() - t0, f"killed after {self.timeout_s:.0f}s wall-clock limit")
            except BaseException:  # the harness itself is stopping: take the candidate down with it
                os.killpg(proc.pid, signal.SIGKILL)
                raise
        wall = time.time() - t0
        if rc != 0:
            tail = _tail(log).strip().splitlines()
            why = tail[-1] if tail else f"exit code {rc}"
            return Outcome("failed", wall, f"exit code {rc}: {why}")
        return Outcome("done", wall)
