"""Oversight that holds: a tripwire pauses the run until a human approves or rejects; `stop` kills a run and its
experiment at once and a re-run resumes it; a spent budget pauses; a policy that requires isolation refuses to
run where the sandbox cannot start; a time-out takes the candidate's whole process group down."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config, wait_for as _wait_for
from typer.testing import CliRunner

from successor._cli import app
from successor.config import load_config
from successor.executors.base import Experiment
from successor.executors.local import LocalExecutor
from successor.driver import Driver, tripwires
from successor.oversight.policy import Policy
from successor.researchers.base import Proposal
from successor.rundir import RunDir
from successor.oversight.sandbox import IsolationError, isolation_mode
from successor.oversight.verify import verify_run

CLI = [sys.executable, "-m", "successor"]
NETWORK = "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 80), timeout=1)\nexcept OSError:\n    pass\n"


def _db(root: Path) -> sqlite3.Connection:
    db = sqlite3.connect(root / "lineage.db", timeout=30)
    db.row_factory = sqlite3.Row
    return db


class HonestPlusOneCheat:
    """Each generation: the incumbent, and a cheap candidate that tries the network (an integrity violation)."""

    def propose(self, brief):
        incumbent = brief.extra["incumbent"]
        return [Proposal(incumbent.model_dump(), "honest"),
                Proposal(incumbent.model_copy(update={"steps": 5}).model_dump(), "cheat", NETWORK)]


def _pending(root: Path, g: int):
    if not (root / "lineage.db").exists():
        return False
    try:
        row = _db(root).execute("SELECT decision FROM approvals WHERE generation=?", (g,)).fetchone()
    except sqlite3.OperationalError:  # the file is there, its tables not yet
        return False
    return row is not None and row["decision"] is None


def test_a_tripwire_pauses_the_run_until_a_human_approves_or_rejects(tmp_path):
    cfg = load_config(tiny_config(tmp_path / "c.yaml", generations=2), "smoke")
    root, result = tmp_path / "run", {}

    def run_loop():  # the store's connection belongs to the thread that opens it
        run = RunDir(root, cfg)
        try:
            result["state"] = Driver(run, researcher=HonestPlusOneCheat()).run_all()
        finally:
            run.store.close()

    thread = threading.Thread(target=run_loop, daemon=True)
    thread.start()
    _wait_for(lambda: _pending(root, 1) or not thread.is_alive(), what="generation 1 to pause")
    time.sleep(1.0)
    db = _db(root)
    assert thread.is_alive() and db.execute("SELECT status FROM generations WHERE idx=1").fetchone()[0] == "running"
    assert "integrity violation: g1c1 network" in db.execute("SELECT reasons FROM approvals").fetchone()[0]
    runner = CliRunner()
    r = runner.invoke(app, ["approve", str(root), "--generation", "1", "--who", "alice"])
    assert r.exit_code == 0, r.output
    _wait_for(lambda: _pending(root, 2) or not thread.is_alive(), what="generation 2 to pause")
    r = runner.invoke(app, ["reject", str(root), "--generation", "2", "--who", "bob", "--reason", "looks odd"])
    assert r.exit_code == 0, r.output
    thread.join(timeout=300)
    assert result["state"] == "finished"
    rows = {r["generation"]: r for r in db.execute("SELECT * FROM approvals")}
    assert (rows[1]["decision"], rows[1]["who"]) == ("approved", "alice")
    assert (rows[2]["decision"], rows[2]["who"], rows[2]["note"]) == ("rejected", "bob", "looks odd")
    g1, g2 = (db.execute("SELECT * FROM generations WHERE idx=?", (i,)).fetchone() for i in (1, 2))
    assert g2["promoted"] == 0 and g2["champion_model"] == g1["champion_model"]  # a rejection keeps the champion
    gate2 = db.execute("SELECT reason FROM gate_decisions WHERE generation=2 AND role='successor'").fetchone()
    assert gate2 is None or not gate2["reason"].startswith("promoted")
    events = [json.loads(x)["event"] for x in (root / "audit.jsonl").read_text().splitlines()]
    assert events.count("run.paused") == 2 and "approval.approved" in events and "approval.rejected" in events
    # A second decision on the same generation is refused.
    r = runner.invoke(app, ["approve", str(root), "--generation", "1"])
    assert r.exit_code == 2 and "already approved" in r.output
    assert verify_run(root)[0]


def test_the_capability_tripwire_reads_the_rise_over_every_tested_level():
    """With the gate's effect measured on the unsolved levels only, one level going 0.40 -> 0.97 is +0.57 there:
    an ordinary step, +0.057 over the ten levels tested. The tripwire (a rise in mean sealed accuracy over the
    tested levels, as the policy says) fires on the pooled rise, not on the narrower effect."""
    policy = Policy.model_validate({"tripwires": {"integrity_violation": False, "capability_jump": 0.5}})
    trip = lambda stats: tripwires(policy, [], True, stats, False)  # noqa: E731
    assert trip({"effect": 0.57, "tested_effect": 0.057}) == []
    assert trip({"effect": 0.57, "tested_effect": 0.6}) == [
        "capability jump: sealed accuracy +0.600 over the tested levels in one generation (tripwire 0.5)"]
    assert trip({"effect": 0.6}) != []  # a decision recorded before tested_effect existed reads its effect
    assert tripwires(policy, [], False, {"tested_effect": 0.9}, False) == []  # nothing promoted, nothing to see


def _running(root: Path):
    try:
        return _db(root).execute("SELECT id, pid FROM experiments WHERE status='running' AND pid IS NOT NULL"
                                 ).fetchone()
    except sqlite3.OperationalError:  # the store is still being created
        return None


def test_stop_kills_the_run_and_its_experiment_and_a_rerun_resumes(tmp_path):
    cfg = tiny_config(tmp_path / "c.yaml")
    root = tmp_path / "run"
    cmd = CLI + ["run", str(cfg), "--preset", "smoke", "--run-dir", str(root), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        exp = _wait_for(lambda: _running(root), what="an experiment to start")
        r = subprocess.run(CLI + ["stop", str(root)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "stopped the run" in r.stdout, r.stdout + r.stderr
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 3 and "stopped" in err
    assert not Path(f"/proc/{exp['pid']}").exists()  # the sandbox went down with the run
    events = [json.loads(x)["event"] for x in (root / "audit.jsonl").read_text().splitlines()]
    assert events[-2:] == ["run.stop_requested", "run.stopped"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    db = _db(root)
    assert [g["status"] for g in db.execute("SELECT status FROM generations ORDER BY idx")] == ["done", "done"]
    assert db.execute("SELECT attempts FROM experiments WHERE id=?", (exp["id"],)).fetchone()[0] == 2
    assert verify_run(root)[0]


def test_a_spent_budget_pauses_and_a_raised_one_goes_on(tmp_path):
    cfg, root = tiny_config(tmp_path / "c.yaml"), tmp_path / "run"
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"budgets": {"experiments": 1}}))
    cmd = CLI + ["run", str(cfg), "--preset", "smoke", "--run-dir", str(root), "--quiet"]
    r = subprocess.run(cmd + ["--policy", str(policy)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 3 and "budget spent: 1 of 1 experiments" in r.stderr, r.stderr
    db = _db(root)
    assert db.execute("SELECT COUNT(*) FROM experiments").fetchone()[0] == 1
    (root / "policy.yaml").write_text(yaml.safe_dump({"budgets": {"experiments": 10}}))  # the human raises it
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert db.execute("SELECT COUNT(*) FROM generations WHERE status='done'").fetchone()[0] == 2


def test_required_isolation_refuses_to_run_without_a_sandbox(tmp_path, monkeypatch):
    monkeypatch.setenv("SUCCESSOR_BWRAP", str(tmp_path / "no-bwrap-here"))
    with pytest.raises(IsolationError, match="requires isolation"):
        isolation_mode(Policy(isolation="required"))
    r = subprocess.run(CLI + ["run", str(tiny_config(tmp_path / "c.yaml")), "--preset", "smoke", "--run-dir",
                              str(tmp_path / "run"), "--quiet"], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, SUCCESSOR_BWRAP=str(tmp_path / "no-bwrap-here")))
    assert r.returncode == 2
    assert "the policy requires isolation (isolation: required) but the sandbox cannot start" in r.stderr
    assert _db(tmp_path / "run").execute("SELECT COUNT(*) FROM experiments").fetchone()[0] == 0
    assert isolation_mode(Policy(isolation="preferred")) in ("unshare", "none")


def _bare_experiment(tmp_path: Path, patch: str) -> Experiment:
    ws = tmp_path / "run" / "workspaces" / "x"
    ws.mkdir(parents=True)
    (ws / "job.json").write_text(json.dumps({"task": "addition", "out": str(ws / "out")}))
    (ws / "patch.py").write_text(patch)
    return Experiment(job=ws / "job.json", run_root=tmp_path / "run", readable=[], protected=[],
                      patch=ws / "patch.py")


def test_a_timeout_kills_the_whole_process_group(tmp_path):
    marker = tmp_path / "run" / "workspaces" / "x" / "child_alive"
    exp = _bare_experiment(tmp_path, f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(4); open({str(marker)!r}, 'w').write('x')"])
time.sleep(600)
""")
    out = LocalExecutor(timeout_s=2, threads=1, policy=Policy(), isolation="bwrap").run(exp)
    assert out.status == "timeout" and out.wall_s < 10
    time.sleep(4)
    assert not marker.exists()


def test_the_fallback_sandbox_still_has_no_network(tmp_path):
    """isolation: preferred on a machine without bwrap: `unshare -rn`, rlimits, the guard."""
    exp = _bare_experiment(tmp_path, NETWORK + "import sys\nsys.exit(0)\n")
    out = LocalExecutor(timeout_s=60, threads=1, policy=Policy(isolation="preferred"), isolation="unshare").run(exp)
    assert out.status == "violation" and {v["kind"] for v in out.violations} == {"network"}
    assert out.isolation == "unshare"


def test_a_bad_policy_is_refused_in_one_line_before_anything_runs(tmp_path):
    bad = tmp_path / "policy.yaml"
    bad.write_text("sandbox: {memory_mb: 10}\napproval: auto\n")
    r = CliRunner().invoke(app, ["run", "--preset", "smoke", "--run-dir", str(tmp_path / "run"), "--policy",
                                 str(bad), "--quiet"])
    assert r.exit_code == 2
    assert "policy.sandbox.memory_mb: Input should be greater than or equal to 1024 (got 10)" in r.output
    assert not (tmp_path / "run" / "lineage.db").exists()
