"""The audit chain under tampering and concurrent writers, `verify_run` on a hand-built run directory, provenance
statements, and `successor audit verify`'s exit codes. Fixtures are tiny (no training), so this runs in seconds."""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import shutil
import sqlite3
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from successor._cli import audit as cli_audit
from successor.oversight import provenance
from successor.oversight.audit import AuditLog, head_path, verify
from successor.store import sha256_text, stage_text
from successor.oversight.verify import verify_run

# -- the chain -----------------------------------------------------------------------------------------------


def filled(tmp_path: Path, n: int = 5) -> Path:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for i in range(n):
        log.append("event.test", i=i, note=f"n{i}", nested={"model": "a" * 64, "xs": [1, 2.5, None]})
    return path


def rewrite(path: Path, lines: list[bytes]) -> tuple[bool, str]:
    path.write_bytes(b"".join(ln + b"\n" for ln in lines))
    return verify(path)


def test_clean_log_verifies_and_writes_its_head(tmp_path):
    path = filled(tmp_path)
    assert verify(path) == (True, "5 events, chain intact")
    last = json.loads(path.read_bytes().splitlines()[-1])
    assert json.loads(head_path(path).read_text()) == {"seq": 4, "hash": last["hash"]}


def test_every_one_byte_edit_is_caught_at_its_line(tmp_path):
    path = filled(tmp_path, 2)
    raw = path.read_bytes()
    for pos in range(len(raw)):
        edited = bytearray(raw)
        edited[pos] = ord("\t") if raw[pos] == ord(" ") else raw[pos] ^ 0x01  # a tab still parses as JSON
        path.write_bytes(bytes(edited))
        ok, msg = verify(path)
        line = raw[:pos].count(b"\n") + 1
        assert not ok, f"byte {pos} ({chr(raw[pos])!r} -> {chr(edited[pos])!r}) went unnoticed"
        assert msg.startswith(f"line {line} "), (pos, msg)
    path.write_bytes(raw)
    assert verify(path)[0]


def test_deleted_middle_record_is_reported_at_the_gap(tmp_path):
    path = filled(tmp_path)
    lines = path.read_bytes().splitlines()
    del lines[2]
    ok, msg = rewrite(path, lines)
    assert not ok
    assert msg.startswith("line 3 (seq 3): chain broken, expected seq 2"), msg


def test_deleted_last_record_is_caught_by_the_head(tmp_path):
    path = filled(tmp_path)
    lines = path.read_bytes().splitlines()
    ok, msg = rewrite(path, lines[:-1])
    assert not ok and "removed from the end" in msg and "seq 4" in msg, msg
    head_path(path).unlink()  # removing the head as well does not hide it
    ok, msg = verify(path)
    assert not ok and "audit.head missing" in msg, msg


def test_rewritten_tail_does_not_match_the_head(tmp_path):
    path = filled(tmp_path)
    head = head_path(path).read_bytes()
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"".join(ln + b"\n" for ln in lines[:-1]))
    AuditLog(path).append("event.forged")  # a valid record with the same seq, but a different hash
    head_path(path).write_bytes(head)
    ok, msg = verify(path)
    assert not ok and "does not match" in msg, msg


def test_swapped_pair_is_reported_at_the_first_of_the_pair(tmp_path):
    path = filled(tmp_path)
    lines = path.read_bytes().splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    ok, msg = rewrite(path, lines)
    assert not ok and msg.startswith("line 2 (seq 2): chain broken"), msg


def test_head_one_behind_is_a_crash_window_not_tampering(tmp_path):
    path = filled(tmp_path)
    prev = json.loads(path.read_bytes().splitlines()[-2])
    head_path(path).write_text(json.dumps({"seq": prev["seq"], "hash": prev["hash"]}))
    assert verify(path)[0]
    rec = AuditLog(path).append("event.next")  # and the next append carries on without complaint
    assert rec["seq"] == 5 and verify(path) == (True, "6 events, chain intact")


def test_a_cut_log_is_recorded_in_the_chain_by_the_next_append(tmp_path):
    path = filled(tmp_path)
    lines = path.read_bytes().splitlines()
    rewrite(path, lines[:3])
    AuditLog(path).append("event.after")
    recs = [json.loads(ln) for ln in path.read_bytes().splitlines()]
    assert [r["event"] for r in recs[3:]] == ["audit.head_mismatch", "event.after"]
    assert recs[3]["data"]["head_seq"] == 4 and recs[3]["data"]["tail_seq"] == 2


def _writer(path: str, who: str, n: int, start) -> None:
    log = AuditLog(Path(path))  # opened before the other writer appends: its in-memory seq goes stale at once
    start.wait()
    for i in range(n):
        log.append("event.concurrent", who=who, i=i)


def test_two_processes_appending_keep_one_intact_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    AuditLog(path).append("run.start")
    ctx = mp.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(path), who, 200, start)) for who in ("run", "stop")]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ok, msg = verify(path)
    assert ok, msg
    recs = [json.loads(ln) for ln in path.read_bytes().splitlines()]
    assert [r["seq"] for r in recs] == list(range(401))
    for who in ("run", "stop"):
        assert [r["data"]["i"] for r in recs if r["data"].get("who") == who] == list(range(200))


# -- a run directory, built by hand ----------------------------------------------------------------------------


def _model(models: Path, seed: int) -> str:
    import torch

    from successor.workloads.tinylm import checkpoint
    from successor.workloads.tinylm.recipe import Recipe
    from successor.workloads.tinylm.train import new_model

    torch.manual_seed(seed)
    tmp = models / f"new-{seed}.tmp"
    checkpoint.save(new_model(Recipe(n_layer=1, n_embd=16, n_head=1, ffn_mult=1), max_positions=16), tmp)
    digest = checkpoint.digest(tmp)
    tmp.rename(models / digest)
    return digest


PATCH = "import torch  # the candidate's code change\n"


def _stmt(parent: str, child: str, human: str, sealed: str, g: int = 1, patch: str | None = None) -> dict:
    return provenance.statement(
        generation=g, model=child, parent=parent, data={"human": [human], "newest": []},
        recipe={"lr": 1e-3, "steps": 10}, code_patch=patch, gate={"p_value": 0.01, "delta": 0.2, "n": 64},
        approver_mode="manual", approver_who="alice", approved_at=1700000000.5,
        config_sha256="c" * 64, policy_sha256=None, sealed_tier_sha256=sealed)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    from successor.workloads.tinylm.data import save_shard
    from successor.store import Store
    from successor.workloads.tinylm.tasks.base import Problem

    root = tmp_path / "run"
    (root / "artifacts" / "models").mkdir(parents=True)
    Store(root / "lineage.db").close()
    patch = hashlib.sha256(PATCH.encode()).hexdigest()
    with sqlite3.connect(root / "lineage.db") as db:  # code patches live in the lineage (store.patches)
        db.execute("CREATE TABLE IF NOT EXISTS patches(candidate_id TEXT PRIMARY KEY, digest TEXT NOT NULL, "
                   "source TEXT NOT NULL)")
        db.execute("INSERT INTO patches VALUES(?,?,?)", ("c1", patch, PATCH))
    human, _ = save_shard([(Problem("12+34=", 1), "46"), (Problem("5+6=", 1), "11")], root / "artifacts" / "data")
    sealed, _ = save_shard([(Problem("70+80=", 2), "150")], root / "harness")
    parent = _model(root / "artifacts" / "models", 0)
    child = _model(root / "artifacts" / "models", 1)
    train = {"successor": child, "status": "done"}
    with sqlite3.connect(root / "lineage.db") as db:  # the store rows these events bind (verify_store)
        db.executemany("INSERT INTO generations VALUES(?,?,'done',?,0,1,1,?,?)",
                       [(0, None, sealed, parent, 1), (1, parent, sealed, child, 2)])
        db.execute("INSERT INTO stages(generation, name, status, started, finished, result) "
                   "VALUES(1,'train','done',0,1,?)", (stage_text(train),))
        db.execute("INSERT INTO experiments(id, candidate_id, generation, kind, status, model) "
                   "VALUES('x1','c1',1,'successor','done',?)", (child,))
    log = AuditLog(root / "audit.jsonl")
    log.append("run.start", run_dir=str(root), tiers={"human": human, "sealed": sealed})
    log.append("generation.start", generation=0, champion=None, sealed_digest=sealed)
    log.append("generation.end", generation=0, promoted=True, champion=parent, frontier=1)
    log.append("generation.start", generation=1, champion=parent, sealed_digest=sealed)
    log.append("experiment.end", generation=1, experiment="x1", status="done", model=child)
    log.append("stage.train", generation=1, result=train, result_sha256=sha256_text(stage_text(train)))
    log.append("generation.end", generation=1, promoted=True, champion=child, frontier=2)
    path, digest = provenance.record(root, log, 1, _stmt(parent, child, human, sealed, patch=patch))
    assert path == root / "provenance" / "gen-1.json"
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    return root


def _flip(path: Path, at: float = 0.5) -> None:
    raw = bytearray(path.read_bytes())
    raw[int(len(raw) * at)] ^= 0x01
    path.write_bytes(bytes(raw))


def test_clean_run_verifies(run_dir):
    ok, lines = verify_run(run_dir)
    assert ok, lines
    assert lines == ["ok: 8 events, 4 artifacts, 1 provenance statements, 6 store rows verified; head not anchored (no --key)"]


def test_corrupted_checkpoint_byte_is_named(run_dir):
    models = sorted((run_dir / "artifacts" / "models").iterdir())
    _flip(models[0] / "model.safetensors", 0.9)  # inside the weights, not the header
    ok, lines = verify_run(run_dir)
    assert not ok
    assert any(ln.startswith(f"artifacts/models/{models[0].name}: content digest") for ln in lines), lines


def test_corrupted_data_shard_is_named(run_dir):
    shard = next((run_dir / "artifacts" / "data").glob("*.jsonl"))
    _flip(shard)
    ok, lines = verify_run(run_dir)
    assert not ok
    assert f"artifacts/data/{shard.name}: content digest" in lines[0], lines
    # the statement and run.start name this shard: both say it no longer matches
    assert any(ln.startswith("audit.jsonl: seq 0 (run.start)") for ln in lines), lines
    assert any(ln.startswith("provenance/gen-1.json: input names shard") for ln in lines), lines


def test_tampered_provenance_is_caught_by_its_audit_digest(run_dir):
    path = run_dir / "provenance" / "gen-1.json"
    stmt = json.loads(path.read_text())
    stmt["predicate"]["approver"]["who"] = "mallory"  # still a well-formed statement
    path.write_bytes(provenance.to_bytes(stmt))
    assert provenance.check(path) == []
    ok, lines = verify_run(run_dir)
    assert not ok
    assert lines == ["provenance/gen-1.json: sha256 differs from audit seq 7 (the file was changed after it was "
                     "written)"]


def test_missing_model_named_in_the_audit_log_is_reported(run_dir):
    child = json.loads((run_dir / "provenance" / "gen-1.json").read_text())["subject"][0]["digest"]["sha256"]
    shutil.rmtree(run_dir / "artifacts" / "models" / child)
    ok, lines = verify_run(run_dir)
    assert not ok
    assert lines[0].startswith(f"audit.jsonl: seq 4 (experiment.end) names model {child[:12]}"), lines
    assert any(ln.startswith("provenance/gen-1.json: subject names model") for ln in lines), lines


def test_code_patch_must_match_its_source_in_the_lineage(run_dir):
    with sqlite3.connect(run_dir / "lineage.db") as db:
        db.execute("UPDATE patches SET source=? WHERE candidate_id='c1'", (PATCH + "import os\n",))
    ok, lines = verify_run(run_dir)
    assert not ok
    assert len(lines) == 1 and lines[0].startswith("provenance/gen-1.json: code_patch names code patch"), lines
    assert lines[0].endswith("whose source in lineage.db does not match it")


def test_unrecorded_and_off_lineage_statements_are_reported(run_dir):
    stmt = json.loads((run_dir / "provenance" / "gen-1.json").read_text())
    parent = stmt["predicate"]["parent"]["sha256"]
    stmt["subject"][0]["digest"]["sha256"] = parent  # claims generation 1 promoted the parent
    provenance.write(run_dir, 1, stmt)
    ok, lines = verify_run(run_dir)
    assert not ok
    assert any("is not generation 1's champion" in ln for ln in lines), lines
    (run_dir / "provenance" / "gen-2.json").write_bytes(provenance.to_bytes(stmt))
    _, lines = verify_run(run_dir)
    assert any(ln.startswith("provenance/gen-2.json: not recorded in the audit log") for ln in lines), lines
    assert any("gen-2.json: predicate.generation is 1, but the statement is for generation 2" in ln
               for ln in lines), lines


def test_verify_run_reports_the_audit_chain(run_dir):
    log = run_dir / "audit.jsonl"
    lines = log.read_bytes().splitlines()
    log.write_bytes(b"".join(ln + b"\n" for ln in lines[:-1]))  # the provenance.written event is gone
    ok, out = verify_run(run_dir)
    assert not ok
    assert out[0].startswith("audit.jsonl: audit.head says seq 7 but the log ends at seq 6"), out
    assert any("gen-1.json: not recorded in the audit log" in ln for ln in out), out


# -- provenance statements -------------------------------------------------------------------------------------


def test_statement_shape_and_refusals(tmp_path):
    d = "d" * 64
    stmt = _stmt("a" * 64, "b" * 64, d, "e" * 64)
    assert stmt["_type"] == "https://in-toto.io/Statement/v1"
    assert stmt["predicateType"] == "https://successor.dev/promotion/v1"
    assert stmt["subject"] == [{"name": "model", "digest": {"sha256": "b" * 64}}]
    assert stmt["predicate"]["inputs"]["data"] == [{"name": "human", "digest": {"sha256": d}}]
    assert stmt["predicate"]["approver"] == {"mode": "manual", "who": "alice", "time": 1700000000.5}
    with pytest.raises(ValueError, match="subject"):
        _stmt("a" * 64, "not-a-digest", d, "e" * 64)
    with pytest.raises(ValueError, match="approver"):
        provenance.statement(**{**_kwargs(), "approver_mode": "someone"})
    with pytest.raises(ValueError, match="generation 2"):
        provenance.write(tmp_path, 2, stmt)
    path, digest = provenance.write(tmp_path, 1, stmt)
    assert provenance.check(path) == [] and provenance.load(path) == stmt
    path.write_text("{not json")
    assert provenance.check(path)[0].startswith("gen-1.json: unreadable")


def _kwargs() -> dict:
    return dict(generation=1, model="b" * 64, parent=None, data={}, recipe={}, code_patch=None, gate={},
                approver_mode="auto", approver_who="gate", approved_at=0.0, config_sha256=None,
                policy_sha256=None, sealed_tier_sha256=None)


def test_statement_accepts_numpy_statistics():
    import numpy as np

    stmt = provenance.statement(**{**_kwargs(), "gate": {"p": np.float64(0.25), "n": np.int64(3)}})
    assert stmt["predicate"]["gate"] == {"p": 0.25, "n": 3}


# -- the CLI ---------------------------------------------------------------------------------------------------


def _cli(*args: str):
    root = typer.Typer()
    root.add_typer(cli_audit.app, name="audit")
    return CliRunner().invoke(root, ["audit", "verify", *args])


def test_cli_exit_codes(run_dir, tmp_path):
    res = _cli(str(run_dir))
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == "ok: 8 events, 4 artifacts, 1 provenance statements, 6 store rows verified; head not anchored (no --key)"
    _flip(next((run_dir / "harness").glob("*.jsonl")))
    res = _cli(str(run_dir))
    assert res.exit_code == 1
    assert res.stdout.splitlines()[0].startswith("harness/"), res.stdout
    res = _cli(str(tmp_path / "nowhere"))
    assert res.exit_code == 2 and "not a run directory" in res.output
