"""A human's rejection takes a generation's curated data back: no later job trains on it.

The gate here is made to pass every contender (a test double for "the gate found the successor better"): the
question is what happens after it, when a human refuses the promotion it asked for. The proof is read from the
job files the harness wrote for every later experiment, not from the `accepted` flag alone.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from conftest import tiny_config, wait_for

import successor.workloads.tinylm.gating as gating
from successor.oversight.actions import decide as human
from successor.config import load_config
from successor.oversight.gate import Decision, decide as real_decide
from successor.driver import Driver
from successor.oversight.policy import Policy
from successor.rundir import RunDir


def _always_promote(champion, contenders, cfg, levels=None):
    real = real_decide(champion, contenders, cfg, levels)
    return {n: Decision(n, True, "promoted: the test's gate promotes every contender", d.stats)
            for n, d in real.items()}


def _pending(root: Path) -> int | None:
    try:
        db = sqlite3.connect(f"file:{root / 'lineage.db'}?mode=ro", uri=True, timeout=30)
        row = db.execute("SELECT generation FROM approvals WHERE decision IS NULL").fetchone()
        db.close()
    except sqlite3.OperationalError:  # not made yet
        return None
    return None if row is None else row[0] + 1  # +1: generation 0 is falsy for wait_for


def _jobs(root: Path, db: sqlite3.Connection, generation: int) -> dict[str, dict]:
    ids = [r[0] for r in db.execute("SELECT id FROM experiments WHERE generation=?", (generation,))]
    return {i: json.loads(next(p for p in (root / "jobs" / f"{i}.json", root / "workspaces" / i / "job.json")
                               if p.exists()).read_text()) for i in ids}  # the second: where jobs were kept before


def _shards(job: dict) -> set[str]:
    return {Path(p).stem for k in ("newest", "older") for p in job["data"][k]}


def test_a_rejected_generations_curated_shards_are_never_read_by_a_later_job(tmp_path, monkeypatch):
    monkeypatch.setattr(gating, "decide", _always_promote)
    cfg = load_config(tiny_config(tmp_path / "c.yaml", generations=2), "smoke")
    cfg = cfg.model_copy(update={"curator": cfg.curator.model_copy(update={"min_kept": 1, "filter": "verifier"})})
    root, result = tmp_path / "run", {}
    run = RunDir(root, cfg)
    run.set_policy(Policy.model_validate({"approval": "manual", "tripwires": {"integrity_violation": False}}))
    run.store.close()

    def drive():
        rundir = RunDir(root, cfg)
        try:
            result["state"] = Driver(rundir).run_all()
        finally:
            rundir.store.close()

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    asked = []
    while True:  # generation 1 is rejected, every other promotion approved, until the run ends
        g = wait_for(lambda: _pending(root) or (not thread.is_alive() and -1), what="an approval or the end") - 1
        if g < 0:
            break
        asked.append(g)
        human(root, g, "rejected" if g == 1 else "approved", "tester", "the test refuses generation 1" if g == 1
              else None)
    thread.join(timeout=600)
    assert result.get("state") == "finished"
    assert asked[:2] == [0, 1], f"generations 0 and 1 must ask for approval: {asked}"

    db = sqlite3.connect(root / "lineage.db")
    promoted = dict(db.execute("SELECT idx, promoted FROM generations"))
    assert promoted[0] == 1 and promoted[1] == 0
    shard = {g: Path(p).stem for g, p in db.execute("SELECT generation, path FROM data_manifests "
                                                    "WHERE kind='curated'")}
    accepted = dict(db.execute("SELECT generation, accepted FROM data_manifests WHERE kind='curated'"))
    assert 1 in shard, f"generation 1 must curate data for the test to mean anything: {shard}"
    # generation 1's own successor trained on its shard (the check below sees shards when they are there) ...
    g1 = _jobs(root, db, 1)
    assert any(shard[1] in _shards(j) for j in g1.values())
    # ... and no job of the next generation reads it: not its candidates, not its successor
    later = _jobs(root, db, 2)
    assert later and all(shard[1] not in _shards(j) for j in later.values())
    assert accepted[1] == 0
