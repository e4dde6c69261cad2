"""The open-ended ladder through the real loop: a tiny run (lengths 1-2 human, tiers to 4) whose ladder must grow
at generation 1, its parts recorded in the store and the audit log, graded on, checked by `audit verify`, the
same after a kill -9 and a resume, absent with ladder_step 0, and never touching the tiers the run was made with."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY

import successor
from successor.oversight.audit import read_records
from successor.oversight.verify import verify_run
from successor.safeio import file_digest

POLICY = {"tripwires": {"integrity_violation": False}}
LADDER = {"ladder_step": 2, "ladder_margin": 2}  # at generation 1 the schedule's level 3 is 1 below 4: grow


def _config(path: Path, **task) -> Path:
    cfg = {k: dict(v) for k, v in TINY.items()}
    cfg["task"].update(task)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _rows(run_dir: Path, sql: str, *args) -> list[tuple]:
    if not (run_dir / "lineage.db").exists():
        return []
    db = sqlite3.connect(f"file:{run_dir / 'lineage.db'}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        db.close()


def _parts(run_dir: Path) -> list[tuple]:
    return _rows(run_dir, "SELECT tier, part, generation, lo, hi, digest, path, tier_digest FROM tier_parts "
                          "ORDER BY tier, part")


def _grown(run_dir: Path) -> list[dict]:
    return [r for r in read_records(run_dir / "audit.jsonl") if r.get("event") == "tier.grown"]


@pytest.fixture(scope="module")
def grown(tmp_path_factory) -> Path:
    """Generations 0 and 1 of a tiny run whose ladder steps 2 levels with a margin of 2."""
    tmp = tmp_path_factory.mktemp("ladder")
    result = successor.run(successor.load_config(_config(tmp / "c.yaml", **LADDER), "smoke"), tmp / "run",
                           policy=successor.Policy.model_validate(POLICY))
    assert result.state == "finished"
    return tmp / "run"


@pytest.fixture(scope="module")
def flat(tmp_path_factory) -> Path:
    """The same run with ladder_step 0: the tiers end at eval_max_level, as before the ladder."""
    tmp = tmp_path_factory.mktemp("flat")
    result = successor.run(successor.load_config(_config(tmp / "c.yaml", ladder_step=0), "smoke"), tmp / "run",
                           policy=successor.Policy.model_validate(POLICY))
    assert result.state == "finished"
    return tmp / "run"


def test_ladder_grows_recorded_and_graded(grown: Path):
    assert _rows(grown, "SELECT champion_model IS NOT NULL FROM generations WHERE idx=0") == [(1,)]
    parts = _parts(grown)
    # every graded tier (the smoke preset has a guardrail) grew once, at generation 1's opening, by levels 5-6
    assert sorted(p[0] for p in parts) == ["dev", "guardrail", "sealed", "validation"]
    assert all(p[1:5] == (1, 1, 5, 6) for p in parts)
    (event,) = _grown(grown)
    start = next(r for r in read_records(grown / "audit.jsonl")
                 if r["event"] == "generation.start" and r["data"]["generation"] == 1)
    assert event["seq"] < start["seq"]  # recorded before the generation that uses it opened
    assert event["data"]["levels"] == [5, 6]
    for tier, part, _, lo, hi, digest, path, tier_digest in parts:
        said = event["data"]["parts"][tier]
        assert (said["part"], said["digest"], said["levels"], said["path"], said["tier_digest"]) == \
            (part, digest, [lo, hi], path, tier_digest)
        assert file_digest(grown / path) == digest  # the file is what its row and event name
        assert path.startswith("artifacts/data/" if tier == "dev" else "harness/")
        manifest = (grown / path).parent / f"{tier_digest}.jsonl"
        assert [json.loads(x)["levels"] for x in manifest.read_text().splitlines()] == [[1, 4], [5, 6]]
        levels = {json.loads(x)["level"] for x in (grown / path).read_text().splitlines()}
        assert levels == {5, 6}
    sealed = {p[0]: p for p in parts}["sealed"]
    # generation 1 was committed to, and gated on, every sealed part: the manifest's digest
    assert _rows(grown, "SELECT sealed_digest FROM generations WHERE idx=1") == [(sealed[7],)]
    assert _rows(grown, "SELECT sealed_digest FROM generations WHERE idx=0") == \
        _rows(grown, "SELECT value FROM meta WHERE key='tier.sealed'")
    gate = json.loads(_rows(grown, "SELECT result FROM stages WHERE generation=1 AND name='gate'")[0][0])
    assert gate["sealed_digest"] == sealed[7]
    # models of generation 1 were graded on the new levels, under the new part's own digest
    evaluate = json.loads(_rows(grown, "SELECT result FROM stages WHERE generation=1 AND name='evaluate'")[0][0])
    assert set(evaluate["champion"]["sealed"]) == {"1", "2", "3", "4", "5", "6"}
    graded = _rows(grown, "SELECT DISTINCT level FROM evaluations WHERE tier='sealed' AND tier_digest=? "
                          "ORDER BY level", sealed[5])
    assert graded == [(5,), (6,)]
    # the champion's levels 1-4 were graded once, under the first part's digest: the new part did not re-grade them
    champion = _rows(grown, "SELECT champion_model FROM generations WHERE idx=0")[0][0]
    saved = [r["data"] for r in read_records(grown / "audit.jsonl") if r["event"] == "evaluation.saved"
             and r["data"]["model"] == champion and r["data"]["tier"] == "sealed"]
    assert len(saved) == 2 and len({d["tier_digest"] for d in saved}) == 2
    ok, lines = verify_run(grown)
    assert ok, lines


def test_verify_names_an_altered_or_removed_part(grown: Path, tmp_path: Path):
    copy = tmp_path / "run"
    shutil.copytree(grown, copy, symlinks=True)
    ok, lines = verify_run(copy)
    assert ok, lines
    sealed = next(p for p in _parts(copy) if p[0] == "sealed")
    part = copy / sealed[6]
    part.chmod(0o644)
    text = part.read_text().splitlines()
    row = json.loads(text[0])
    row["label"] = "9" * len(row["label"]) if row["label"] != "9" * len(row["label"]) else "8" * len(row["label"])
    part.write_text("\n".join([json.dumps(row, sort_keys=True)] + text[1:]) + "\n")
    ok, lines = verify_run(copy)
    assert not ok
    assert any(line.startswith(f"{sealed[6]}: altered (tier sealed part 1, levels 5-6") for line in lines), lines
    part.unlink()
    ok, lines = verify_run(copy)
    assert any(line.startswith(f"{sealed[6]}: missing (tier sealed part 1, levels 5-6") for line in lines), lines


def test_verify_names_a_row_that_is_not_the_events(grown: Path, tmp_path: Path):
    copy = tmp_path / "run"
    shutil.copytree(grown, copy, symlinks=True)
    db = sqlite3.connect(copy / "lineage.db")
    db.execute("UPDATE tier_parts SET hi=7 WHERE tier='validation'")
    db.commit()
    db.close()
    ok, lines = verify_run(copy)
    assert not ok
    assert any(line.startswith("lineage.db: tier_parts validation/1: levels is [5, 7] in tier_parts, [5, 6] in "
                               "the audit log") for line in lines), lines
    db = sqlite3.connect(copy / "lineage.db")
    db.execute("DELETE FROM tier_parts WHERE tier='dev'")
    db.commit()
    db.close()
    ok, lines = verify_run(copy)
    assert any(line.startswith("lineage.db: tier_parts dev/1: the audit log") and "no row" in line
               for line in lines), lines


def test_kill9_then_resume_keeps_the_same_parts(grown: Path, tmp_path: Path):
    """Killed once generation 1's parts are recorded (mid generation 1), the resumed run grows nothing again, and
    its parts are the clean run's, byte for byte."""
    run_dir = tmp_path / "run"
    config = _config(tmp_path / "c.yaml", **LADDER)
    cmd = [sys.executable, "-m", "successor", "run", str(config), "--preset", "smoke", "--run-dir", str(run_dir),
           "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None and not _parts(run_dir):
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _parts(run_dir)
    assert before, "the ladder never grew before the run ended"
    assert not _rows(run_dir, "SELECT idx FROM generations WHERE idx=1 AND status='done'")  # killed mid-run
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _parts(run_dir) == before == _parts(grown)  # the same parts, digests and paths as the clean run
    assert len(_grown(run_dir)) == 1  # grown once: the resume drew nothing again
    ok, lines = verify_run(run_dir)
    assert ok, lines


def test_a_crash_between_the_event_and_the_rows_grows_the_same_parts(grown: Path, tmp_path: Path, monkeypatch):
    """A crash after the part files and the tier.grown event but before the rows: the re-run draws the same
    bytes, says so again, and records them; verify accepts the repeated event."""
    from successor.store import Store

    cfg = successor.load_config(_config(tmp_path / "c.yaml", **LADDER), "smoke")
    real = Store.add_tier_parts

    def crash(self, rows):
        raise KeyboardInterrupt("killed between the event and the rows")

    monkeypatch.setattr(Store, "add_tier_parts", crash)
    with pytest.raises(KeyboardInterrupt):
        successor.run(cfg, tmp_path / "run", policy=successor.Policy.model_validate(POLICY))
    assert not _parts(tmp_path / "run") and len(_grown(tmp_path / "run")) == 1
    monkeypatch.setattr(Store, "add_tier_parts", real)
    assert successor.run(cfg, tmp_path / "run").state == "finished"
    assert _parts(tmp_path / "run") == _parts(grown)
    events = _grown(tmp_path / "run")
    assert len(events) == 2 and events[0]["data"] == events[1]["data"]
    ok, lines = verify_run(tmp_path / "run")
    assert ok, lines


def test_ladder_step_0_keeps_the_tiers(flat: Path, grown: Path):
    assert not _parts(flat) and not _grown(flat)
    sealed = _rows(flat, "SELECT value FROM meta WHERE key='tier.sealed'")[0][0]
    assert {r[0] for r in _rows(flat, "SELECT sealed_digest FROM generations")} == {sealed}
    assert _rows(flat, "SELECT MAX(level) FROM evaluations") == [(4,)]
    for g in (0, 1):
        gate = json.loads(_rows(flat, "SELECT result FROM stages WHERE generation=? AND name='gate'", g)[0][0])
        assert gate["sealed_digest"] == sealed and max(gate["tested_levels"] or [4]) <= 4
    ok, lines = verify_run(flat)
    assert ok, lines


def test_growth_leaves_the_first_tiers_as_they_were(flat: Path, grown: Path):
    """Same seed, same tier key: the ladder run's first tiers are the flat run's, file for file, after growing."""
    meta = "SELECT key, value FROM meta WHERE key LIKE 'tier.%' ORDER BY key"
    assert _rows(grown, meta) == _rows(flat, meta)
    for key, digest in _rows(grown, meta):
        if key != "tier.keyed":
            where = "artifacts/data" if key in ("tier.human", "tier.dev") else "harness"
            assert file_digest(grown / where / f"{digest}.jsonl") == digest
    start = next(r for r in read_records(grown / "audit.jsonl") if r["event"] == "run.start")
    assert start["data"]["tiers"] == {k.removeprefix("tier."): v for k, v in _rows(grown, meta) if k != "tier.keyed"}
