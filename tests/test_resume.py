"""Kill -9 a real `successor run` mid-experiment, resume it from the CLI, and check nothing was lost or redone."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from successor.oversight.audit import AuditLog, verify
from successor.reporting.status import status_dict

CLI = [sys.executable, "-m", "successor"]


def _rows(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:  # the store is not created yet
        return []
    finally:
        con.close()


def test_kill9_mid_experiment_then_resume(tmp_path: Path):
    run_dir = tmp_path / "run"
    config = tmp_path / "one.yaml"  # the smoke preset with one successor generation: the kill lands in it
    config.write_text("loop:\n  generations: 1\n")
    cmd = [*CLI, "run", str(config), "--preset", "smoke", "--run-dir", str(run_dir), "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = run_dir / "lineage.db"
    deadline = time.time() + 240
    killed_exp = None
    try:
        while time.time() < deadline and proc.poll() is None:
            # wait until generation 0 is finished and a generation-1 experiment is running
            running = _rows(db, "SELECT id FROM experiments WHERE status='running' AND generation>=1")
            if running:
                killed_exp = running[0][0]
                time.sleep(1.0)  # let the candidate's subprocess get into its training loop
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert killed_exp is not None, "never saw a running experiment to kill"
    assert proc.returncode == -signal.SIGKILL

    before = {r[0]: r for r in _rows(db, "SELECT id, status, attempts, started, finished, model FROM experiments "
                                         "WHERE status='done'")}
    assert before, "generation 0 should have finished an experiment before the kill"
    assert _rows(db, f"SELECT status FROM experiments WHERE id='{killed_exp}'") == [("running",)]
    (orphan,), = _rows(db, f"SELECT pid FROM experiments WHERE id='{killed_exp}'")
    assert orphan and Path(f"/proc/{orphan}").exists(), "the candidate outlives its harness (own session)"

    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    after = {r[0]: r for r in _rows(db, "SELECT id, status, attempts, started, finished, model FROM experiments")}
    for exp_id, row in before.items():  # finished experiments were not redone
        assert after[exp_id] == row
    assert after[killed_exp][1] in ("done", "failed", "timeout")
    assert after[killed_exp][2] == 2  # the killed attempt, then one more
    assert not Path(f"/proc/{orphan}").exists() or "Z" in Path(f"/proc/{orphan}/stat").read_text().split(")")[-1][:3]
    assert not _rows(db, "SELECT * FROM stages WHERE status != 'done'")
    status = status_dict(run_dir)
    assert [g["generation"] for g in status["generations"]] == [0, 1]
    assert all(g["status"] == "done" and g["gate"] is not None for g in status["generations"])
    # each stage of each generation was committed exactly once
    assert _rows(db, "SELECT COUNT(*) FROM stages") == [(22,)]  # 11 stages x 2 generations
    ok, msg = verify(run_dir / "audit.jsonl")
    if not ok and "(audit.torn_tail_dropped)" in msg:  # the kill landed mid-write (rare): the log says so, truly
        seq = msg.split(" ", 2)[1]
        assert (run_dir / "audit.torn" / f"{seq}.bin").is_file(), msg
        AuditLog(run_dir / "audit.jsonl").append("audit.acknowledged", seq=int(seq), who="test_resume", note=None)
        ok, msg = verify(run_dir / "audit.jsonl")
    assert ok, msg
    events = (run_dir / "audit.jsonl").read_text()
    assert '"run.resume"' in events
