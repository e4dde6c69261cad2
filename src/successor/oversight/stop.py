"""`successor stop`: the kill switch. It works from any shell, on a run started anywhere.

It records the request (store and audit log), sends SIGTERM to the run's process, which unwinds at once (its
executor kills the experiment under way with the whole sandbox), and kills the process group of every
experiment still marked running, in case the run's process is gone or stuck. Nothing finished is lost: a stage
or experiment is either committed or redone on resume.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from ..executors.base import kill_orphan, zombie
from ..executors.base import process_start_time as _start_time
from ..store import Store
from .audit import AuditLog


def runner_alive(runner: dict) -> bool:
    """Is the process the run recorded as its runner (meta `runner`: pid and start time) still that process, and
    not a zombie (exited, its parent not yet told)?"""
    pid = runner.get("pid")
    return bool(pid) and _start_time(pid) == runner.get("start") and _start_time(pid) != "" and not zombie(pid)


def stop_run(run_dir: Path, wait_s: float = 30.0) -> str:
    run_dir = Path(run_dir).resolve()
    store = Store(run_dir / "lineage.db")
    audit = AuditLog(run_dir / "audit.jsonl")
    runner = json.loads(store.get_meta("runner") or "{}")
    pid = runner.get("pid")
    alive = runner_alive(runner)
    audit.append("run.stop_requested", runner_pid=pid if alive else None)
    if alive:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and runner_alive(runner):
            time.sleep(0.1)
    killed = []
    for row in store.q("SELECT id, pid FROM experiments WHERE status='running' AND pid IS NOT NULL"):
        if kill_orphan(row["pid"], run_dir / "workspaces" / row["id"] / "job.json"):
            killed.append(row["id"])
    store.close()
    if alive:
        return f"stopped the run (pid {pid}){'; killed ' + ', '.join(killed) if killed else ''}; re-run to resume"
    return "no run was running; " + (f"killed orphaned experiment(s) {', '.join(killed)}" if killed else
                                     "nothing to kill")
