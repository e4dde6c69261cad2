"""Issue 6 on the local executor: parallel experiments give the same lineage as serial ones, successive halving
keeps its rung books, a killed worker fails one experiment cleanly, and compute budgets pause a resumable run."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import TINY
from successor.workloads.tinylm import halving
from successor.config import load_config
from successor.driver import Driver
from successor.oversight.policy import Policy
from successor.rundir import RunDir
from successor.workloads.tinylm.flops import job_flops
from successor.workloads.tinylm.recipe import Recipe

NO_WAIT = {"tripwires": {"integrity_violation": False}}  # a failure here must fail the test, not wait for a human
SHARED_KEY = bytes(range(32))  # runs compared for the same lineage must share their harness tiers (RunDir)


def _config(path: Path, loop: dict | None = None, researcher: dict | None = None) -> Path:
    cfg = {k: dict(v) for k, v in TINY.items()}
    cfg["researcher"] = {"candidates": 2, **(researcher or {})}
    cfg["loop"].update(loop or {})
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(root: Path, cfg_path: Path, policy: dict | None = None, tier_key: bytes | None = None) -> str:
    run = RunDir(root, load_config(cfg_path, "smoke"), tier_key=tier_key)
    run.set_policy(Policy.model_validate(policy or NO_WAIT))
    try:
        return Driver(run).run_all()
    finally:
        run.store.close()


def _lineage(root: Path) -> dict:
    db = sqlite3.connect(root / "lineage.db")
    out = {
        "generations": db.execute("SELECT idx, champion_model, promoted, frontier FROM generations ORDER BY idx")
        .fetchall(),
        "experiments": sorted(db.execute("SELECT id, candidate_id, kind, status, model, attempts FROM experiments")
                              .fetchall()),
        "decisions": db.execute("SELECT generation, candidate_id, model, promoted, reason FROM gate_decisions "
                                "ORDER BY generation, candidate_id").fetchall(),
        "candidates": db.execute("SELECT id, recipe FROM candidates ORDER BY id").fetchall(),
    }
    db.close()
    return out


def _events(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "audit.jsonl").read_text().splitlines()]


def test_two_workers_give_the_lineage_of_one_and_overlap(tmp_path: Path):
    _run(tmp_path / "one", _config(tmp_path / "one.yaml", {"executor": {"workers": 1}}), tier_key=SHARED_KEY)
    _run(tmp_path / "two", _config(tmp_path / "two.yaml", {"executor": {"workers": 2}}), tier_key=SHARED_KEY)
    one, two = _lineage(tmp_path / "one"), _lineage(tmp_path / "two")
    assert one == two
    assert [g[0] for g in one["generations"]] == [0, 1] and one["generations"][0][1] is not None
    # the driver records in the order the experiments were given, whatever order they finished in
    order = lambda root: [(e["event"], e["data"].get("experiment")) for e in _events(root)  # noqa: E731
                          if e["event"].startswith(("experiment.", "stage.", "gate."))]
    assert order(tmp_path / "one") == order(tmp_path / "two")
    # and with two workers the generation-1 candidates really ran at the same time
    rows = sqlite3.connect(tmp_path / "two" / "lineage.db").execute(
        "SELECT started, finished FROM experiments WHERE generation=1 AND kind='candidate'").fetchall()
    assert len(rows) == 2
    (s1, f1), (s2, f2) = sorted(rows)
    assert s2 < f1, "the second candidate started only after the first had finished"


def test_halving_fractions_survivors_and_rung_recipes():
    assert halving.fractions(3, 3) == [1 / 9, 1 / 3, 1.0]
    assert halving.fractions(1, 2) == [1.0]
    assert [halving.kept(n, 3) for n in (1, 2, 3, 8, 9)] == [1, 1, 1, 2, 3]
    top = Recipe(steps=300, batch_size=64)
    assert halving.rung_recipe(top, 1.0, "steps") is top  # the last rung is the plain experiment: same job id
    low = halving.rung_recipe(top, 1 / 3, "steps")
    assert (low.steps, low.schedule_steps) == (100, 300)  # the start of the full run, same lr schedule
    sched = Recipe(steps=300, schedule_steps=600)
    assert halving.rung_recipe(sched, 0.5, "steps").schedule_steps == 600
    big = Recipe(steps=300, batch_size=128)  # tokens: twice the batch, half the steps
    assert halving.rung_recipe(big, 1.0, "tokens", 300 * 64).steps == 150
    assert halving.rung_recipe(big, 1 / 3, "tokens", 300 * 64).model_dump(include={"steps", "schedule_steps"}) \
        == {"steps": 50, "schedule_steps": 150}
    with pytest.raises(ValueError, match="reference"):
        halving.rung_recipe(big, 0.5, "tokens")


def test_successive_halving_in_a_generation_records_every_rung(tmp_path: Path):
    root = tmp_path / "run"
    cfg = _config(tmp_path / "c.yaml", {"halving": {"rungs": 2, "eta": 2}, "executor": {"workers": 2}},
                  {"candidates": 4})
    assert _run(root, cfg) == "finished"
    db = sqlite3.connect(root / "lineage.db")
    db.row_factory = sqlite3.Row
    rungs = db.execute("SELECT * FROM rungs WHERE generation=1 ORDER BY rung, rank").fetchall()
    first = [r for r in rungs if r["rung"] == 0]
    second = [r for r in rungs if r["rung"] == 1]
    assert len(first) == 4 and len(second) == 2
    assert sum(r["promoted"] for r in first) == 2 and not any(r["promoted"] for r in second)
    # the two that went on are the two best on dev at rung 0
    ranked = sorted((r for r in first if r["dev_score"] is not None), key=lambda r: r["rank"])
    assert {r["candidate_id"] for r in ranked[:2]} == {r["candidate_id"] for r in second}
    assert [r["rank"] for r in ranked] == list(range(1, len(ranked) + 1))
    # rung 0 trained half the steps of rung 1, whose experiments are the implement stage's full-budget jobs
    impl = json.loads(db.execute("SELECT result FROM stages WHERE generation=1 AND name='implement'")
                      .fetchone()["result"])["experiments"]
    for r in second:
        assert r["experiment_id"] == impl[r["candidate_id"]]
        low = next(x for x in first if x["candidate_id"] == r["candidate_id"])
        assert low["steps"] * 2 == r["steps"] and low["experiment_id"] != r["experiment_id"]
    assert db.execute("SELECT COUNT(*) FROM experiments WHERE generation=1 AND kind='candidate'").fetchone()[0] == 6
    # a halted candidate is refused by the gate with the rung that stopped it
    halted = {r["candidate_id"] for r in first} - {r["candidate_id"] for r in second}
    for cid in halted:
        reason = db.execute("SELECT reason FROM gate_decisions WHERE candidate_id=?", (cid,)).fetchone()[0]
        assert reason.startswith("refused: experiment halted: stopped on rung 0 of 2")
    exp = json.loads(db.execute("SELECT result FROM stages WHERE generation=1 AND name='experiment'")
                     .fetchone()["result"])
    assert {c for c, e in exp.items() if e["status"] == "halted"} == halted
    assert all(len(exp[c]["rungs"]) == (1 if c in halted else 2) for c in exp)
    # status and the report show what each generation used and every rung
    from successor.reporting.report import write_report
    from successor.reporting.status import status_dict

    st = status_dict(root)
    n, cpu = db.execute("SELECT COUNT(*), SUM(cpu_s) FROM experiments").fetchone()
    assert st["compute"]["experiments"] == n and st["compute"]["cpu_s"] == pytest.approx(cpu, abs=0.01)
    assert sum(g["compute"]["experiments"] for g in st["generations"]) == n and st["compute"]["flops"] > 0
    md = (write_report(root) / "report.md").read_text()
    halving_rows = md.split("### Successive halving")[1].strip().splitlines()[2:]
    assert len(halving_rows) == 6 and all(r.startswith("| 1 | g1c") for r in halving_rows)
    assert "## Compute" in md and f"| run | {n} |" in md


def _paused_after_bootstrap(tmp_path: Path, budgets: dict, what: str):
    """A run whose budget is spent by generation 0's one experiment: (run dir, config file, store)."""
    root, cfg = tmp_path / "run", _config(tmp_path / "c.yaml")
    state = _run(root, cfg, {**NO_WAIT, "budgets": budgets})
    assert state.startswith("paused: budget spent") and what in state, state
    return root, cfg, sqlite3.connect(root / "lineage.db")


def test_flops_are_the_harness_estimate_and_a_flops_budget_pauses(tmp_path: Path):
    # generation 0 alone is about 1e11 FLOPs of training on this config; stop after it
    root, _, db = _paused_after_bootstrap(tmp_path, {"flops": 1e9}, "FLOPs")
    rows = db.execute("SELECT id, flops, status FROM experiments").fetchall()
    assert len(rows) == 1 and rows[0][2] == "done"
    job = json.loads((root / "workspaces" / rows[0][0] / "job.json").read_text())
    assert rows[0][1] == pytest.approx(job_flops(job)) and rows[0][1] > 1e9
    # the estimate: 3 forward passes of (2 x matmul weights + attention over the padded length) per padded token
    from successor.workloads.tinylm.data import load_shard
    from successor.workloads.tinylm.flops import matmul_params, model_config

    r, c = Recipe(**job["recipe"]), model_config(Recipe(**job["recipe"]))
    T = max(len(p.prompt) + len(y) - 1 for p, y in load_shard(Path(job["data"]["human"][0])))
    assert rows[0][1] == pytest.approx(3 * (2 * matmul_params(c) + 4 * c.n_layer * c.n_embd * T)
                                       * r.steps * r.batch_size * T)
    db.close()


def test_cpu_budget_pauses_and_the_run_resumes_to_the_end(tmp_path: Path):
    root, cfg, db = _paused_after_bootstrap(tmp_path, {"cpu_s": 1.0}, "CPU-seconds")
    (n, cpu), = db.execute("SELECT COUNT(*), SUM(cpu_s) FROM experiments").fetchall()
    assert n == 1 and cpu >= 1.0  # the bootstrap ran, then nothing more was started
    db.close()
    assert _run(root, cfg) == "finished"  # the policy without the budget: it goes on from where it stopped
    lineage = _lineage(root)
    assert [g[0] for g in lineage["generations"]] == [0, 1]
    assert all(e[5] == 1 for e in lineage["experiments"])  # nothing ran twice
    events = _events(root)
    assert [e["event"] for e in events].count("run.paused") == 1
    ends = [e["data"]["experiment"] for e in events if e["event"] == "experiment.end"]
    assert len(ends) == len(set(ends)) == len(lineage["experiments"])


def _train_process(root: Path) -> int | None:
    """The pid of a generation-1 candidate's training process: the guard's `run`, which trains in-process (bwrap
    and the guard's `reap` above it hold the same words on their command lines)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"successor.workloads.tinylm.train" in cmd and b"run" in cmd and b"reap" not in cmd \
                and not cmd[0].endswith(b"bwrap") and any(str(root).encode() in c for c in cmd):
            job = next(c for c in cmd if c.endswith(b"job.json"))
            if json.loads(Path(job.decode()).read_text())["recipe"]["init"] == "parent":
                return int(d.name)
    return None


def test_a_killed_worker_fails_its_experiment_once_and_the_run_completes(tmp_path: Path):
    root = tmp_path / "run"
    cfg = _config(tmp_path / "c.yaml", {"executor": {"workers": 2}}, {"candidates": 2})
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(state=_run(root, cfg)), daemon=True)
    thread.start()
    deadline, killed = time.monotonic() + 300, None
    while time.monotonic() < deadline and thread.is_alive() and killed is None:
        pid = _train_process(root)
        if pid is not None:
            time.sleep(0.3)
            try:
                os.kill(pid, signal.SIGKILL)
                killed = pid
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    thread.join(300)
    assert killed is not None, "never saw a generation-1 training process"
    assert result.get("state") == "finished"
    lineage = _lineage(root)
    failed = [e for e in lineage["experiments"] if e[3] != "done"]
    assert len(failed) == 1 and failed[0][3] == "failed", failed
    reason = next(d[4] for d in lineage["decisions"] if d[1] == failed[0][1])
    assert reason.startswith("refused: experiment failed: exit code"), reason
    assert all(e[5] == 1 for e in lineage["experiments"])
    ends = [e["data"]["experiment"] for e in _events(root) if e["event"] == "experiment.end"]
    assert len(ends) == len(set(ends)) == len(lineage["experiments"])
    assert [g[0] for g in lineage["generations"]] == [0, 1]
