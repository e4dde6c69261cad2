"""Issue 23, `audit verify`: the store is bound into the chain, the chain can be anchored by a signature, a torn
tail fails until a human acknowledges it, and model folders hold exactly what the harness wrote.

Every tamper runs on a copy of the session's one smoke run (`smoke_run`, read-only), so this module adds no loop
run of its own."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from successor._cli import audit as cli_audit
from successor.oversight.audit import GENESIS, AuditLog, _hash, _line, _write_head
from successor.oversight.audit_sign import Signer, keygen
from successor.store import Store
from successor.oversight.verify import _Run, verify_run


@pytest.fixture
def run(smoke_run, tmp_path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(smoke_run, dest, symlinks=True)
    return dest


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> tuple[Path, Path]:
    return keygen(tmp_path_factory.mktemp("key") / "audit.key")


def db(run: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(run / "lineage.db", isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "audit.jsonl").read_text().splitlines()]


def problems(run: Path, key: Path | None = None) -> list[str]:
    ok, lines = verify_run(run, key)
    assert not ok, lines
    return lines


def rehash(run: Path, edit) -> None:
    """Rewrite the whole chain as a forger would: edit records (edit returns the record, or None to drop it),
    then recompute every seq, prev and hash and the head, so the chain alone verifies."""
    prev, out = GENESIS, []
    for rec in records(run):
        rec = edit(rec)
        if rec is None:
            continue
        rec.update(seq=len(out), prev=prev)
        rec["hash"] = _hash(rec)
        out.append(_line(rec))
        prev = rec["hash"]
    (run / "audit.jsonl").write_text("\n".join(out) + "\n")
    last = json.loads(out[-1])
    _write_head(run / "audit.jsonl", last["seq"], last["hash"])


def test_the_untouched_copy_verifies_and_says_it_is_not_anchored(run):
    ok, lines = verify_run(run)
    assert ok, lines
    assert len(lines) == 1 and "store rows verified; head not anchored (no --key)" in lines[0], lines
    assert int(lines[0].split(" store rows")[0].rsplit(" ", 1)[1]) > 20  # the store was actually read


def test_an_edited_gate_decision_is_named(run):
    conn = db(run)
    row = conn.execute("SELECT * FROM gate_decisions WHERE promoted=1 ORDER BY generation LIMIT 1").fetchone()
    stats = json.loads(row["stats"])
    stats["p_value"] = 0.5
    conn.execute("UPDATE gate_decisions SET stats=?, promoted=0 WHERE generation=? AND candidate_id=?",
                 (json.dumps(stats), row["generation"], row["candidate_id"]))
    lines = problems(run)
    mine = [ln for ln in lines if ln.startswith(f"lineage.db: gate_decisions {row['generation']}/"
                                                f"{row['candidate_id']}: ")]
    assert len(mine) == 1, lines
    assert "promoted is False in gate_decisions, True in the audit log" in mine[0]
    assert "stats_sha256 is" in mine[0] and "(seq " in mine[0]


def test_a_changed_champion_is_named(run):
    conn = db(run)
    g, champ = conn.execute("SELECT idx, champion_model FROM generations ORDER BY idx DESC LIMIT 1").fetchone()
    other = conn.execute("SELECT digest FROM models WHERE digest != ?", (champ,)).fetchone()[0]
    conn.execute("UPDATE generations SET champion_model=? WHERE idx=?", (other, g))
    lines = problems(run)
    assert any(ln.startswith(f"lineage.db: generations {g}: champion is '{other[:40]}") and
               f"'{champ[:40]}" in ln and "in the audit log (seq " in ln for ln in lines), lines


def test_a_deleted_violation_row_is_named(run):
    conn = db(run)
    exp, g, cand = conn.execute("SELECT id, generation, candidate_id FROM experiments LIMIT 1").fetchone()
    store = Store(run / "lineage.db")  # recorded as the loop records one (Loop.finish)
    store.add_violation(exp, g, cand, "network", "connect to 1.2.3.4:80")
    store.close()
    AuditLog(run / "audit.jsonl").append("violation", generation=g, candidate=cand, experiment=exp,
                                         kind="network", detail="connect to 1.2.3.4:80")
    assert verify_run(run)[0], verify_run(run)[1]
    conn.execute("DELETE FROM violations WHERE experiment_id=?", (exp,))
    lines = problems(run)
    assert len(lines) == 1 and lines[0].startswith(f"lineage.db: violations {exp}: 1 in the audit log (seq "), lines
    assert "network: connect to 1.2.3.4:80" in lines[0] and lines[0].endswith("missing from lineage.db (deleted)")


def test_stage_evaluation_experiment_manifest_and_approval_edits_are_named(run):
    conn = db(run)
    conn.execute("UPDATE stages SET result=? WHERE generation=0 AND name='select'", ('{"selected": "g0c9"}',))
    ev = conn.execute("SELECT * FROM evaluations LIMIT 1").fetchone()
    conn.execute("UPDATE evaluations SET items=? WHERE model=? AND tier=? AND level=?",
                 (json.dumps([1] * ev["n"]), ev["model"], ev["tier"], ev["level"]))
    exp = conn.execute("SELECT id FROM experiments WHERE status='done' LIMIT 1").fetchone()[0]
    conn.execute("UPDATE experiments SET status='failed' WHERE id=?", (exp,))
    lines = problems(run)
    assert any(ln.startswith("lineage.db: stages 0/select: result_sha256 is") for ln in lines), lines
    assert any(ln.startswith(f"lineage.db: evaluations {ev['model'][:12]}/{ev['tier']}/") and
               "graded items differ" in ln for ln in lines), lines
    assert any(ln.startswith(f"lineage.db: experiments {exp}: status is 'failed' in experiments, 'done'")
               for ln in lines), lines


def test_an_accepted_flag_against_the_gate_is_named(run):
    """A curated shard accepted for a generation the gate refused would train the next one: forge one."""
    conn = db(run)
    g, promoted = conn.execute("SELECT idx, promoted FROM generations WHERE idx > 0 ORDER BY idx").fetchone()
    shard = next((run / "artifacts" / "data").glob("*.jsonl"))
    conn.execute("INSERT OR REPLACE INTO data_manifests VALUES(?,?,'curated',?,1,'[3]','{}',?)",
                 (shard.stem, g, str(shard), 1 - promoted))
    lines = problems(run)
    assert lines == [f"lineage.db: data_manifests {shard.stem[:12]}/{g}/curated: accepted is {1 - promoted}, but "
                     f"the audit log (seq {_end_seq(run, g)}, generation.end) says generation {g} was "
                     f"{'' if promoted else 'not '}promoted"], lines


def _end_seq(run: Path, g: int) -> int:
    return [r["seq"] for r in records(run) if r["event"] == "generation.end" and r["data"]["generation"] == g][-1]


def test_a_changed_human_decision_is_named(run):
    from successor.oversight.actions import decide

    store = Store(run / "lineage.db")
    store.request_approval(1, ["the policy asks a human to approve every promotion"])
    store.close()
    decide(run, 1, "approved", "alice", "looked at it")
    assert verify_run(run)[0], verify_run(run)[1]
    db(run).execute("UPDATE approvals SET who='mallory' WHERE generation=1")
    assert problems(run) == ["lineage.db: approvals 1: who is 'mallory' in approvals, 'alice' in the audit log "
                             f"(seq {len(records(run)) - 1}, approval.approved)"]


def test_a_rewritten_chain_is_caught_by_the_store_and_by_the_key(run, key):
    private, public = key
    AuditLog(run / "audit.jsonl", signer=Signer(private)).append("audit.signed")
    assert verify_run(run, public)[0]

    def flip(rec):
        if rec["event"] == "gate.decision" and rec["data"]["promoted"]:
            rec["data"]["reason"] = "promoted: by the forger"
        return rec

    rehash(run, flip)
    lines = problems(run)  # the chain alone verifies; the store row still says what the run decided
    assert all(ln.startswith("lineage.db: gate_decisions") for ln in lines) and "by the forger" in lines[0], lines
    # the forger rewrites the store to match: only the key can tell now
    db(run).execute("UPDATE gate_decisions SET reason='promoted: by the forger' WHERE promoted=1")
    ok, lines = verify_run(run)
    assert ok and "head not anchored" in lines[0], lines
    lines = problems(run, public)
    assert len(lines) == 1 and lines[0].startswith("audit.sig: "), lines
    assert "is not in the log" in lines[0] or "signed chain" in lines[0]


def test_signature_round_trip_wrong_key_and_unsigned_appends(run, key, tmp_path):
    private, public = key
    signer = Signer(private)
    AuditLog(run / "audit.jsonl", signer=signer).append("run.resume", run_dir=str(run))
    assert records(run)[-1]["data"]["audit_key"] == signer.fingerprint  # run.start/resume name the key
    ok, lines = verify_run(run, public)
    assert ok and lines[0].endswith(f"head signed at seq {len(records(run)) - 1} by key {signer.fingerprint[:16]}")
    _, other = keygen(tmp_path / "other.key")
    assert problems(run, other) == [f"audit.sig: signed by key {signer.fingerprint[:16]}, not by the key given "
                                    f"({Signer(tmp_path / 'other.key').fingerprint[:16]})"]
    AuditLog(run / "audit.jsonl").append("run.stop_requested", runner_pid=None)  # `successor stop`: no key
    n = len(records(run)) - 1
    lines = problems(run, public)
    assert lines == [f"audit.jsonl: 1 record after the signed head (seq {n - 1}) were appended without the key "
                     f"(seq {n}-{n}: run.stop_requested); nothing anchors them (the key holder signs them on its "
                     f"next append, or: successor audit sign)"], lines
    AuditLog(run / "audit.jsonl", signer=signer).append("audit.signed")  # the key holder's next append
    assert verify_run(run, public)[0]
    sig = json.loads((run / "audit.sig").read_text())
    sig["seq"] -= 1  # a signature moved to another head
    (run / "audit.sig").write_text(json.dumps(sig))
    assert problems(run, public)[0].startswith("audit.sig: the signature is not valid for key")


def test_a_torn_tail_fails_until_acknowledged(run):
    log = run / "audit.jsonl"
    head = (run / "audit.head").read_bytes()
    AuditLog(log).append("stage.extra", generation=0, note="x" * 100)
    raw = log.read_bytes()
    log.write_bytes(raw[:-40])  # mid-line: the record's event name survives, its hash does not
    (run / "audit.head").write_bytes(head)  # the crash came before the head was written
    lost = raw[raw.rstrip(b"\n").rfind(b"\n") + 1:-40]
    rec = AuditLog(log).append("run.resume", run_dir=str(run))  # a resume appends: the torn tail is cut
    seq = rec["seq"] - 1
    note = records(run)[seq]
    assert note["event"] == "audit.torn_tail_dropped" and note["data"]["bytes"] == len(lost)
    assert note["data"]["event"] == "stage.extra"
    assert (run / "audit.torn" / f"{seq}.bin").read_bytes() == lost
    lines = problems(run)
    assert lines == [f"audit.jsonl: seq {seq} (audit.torn_tail_dropped): {len(lost)} bytes of a torn last line were "
                     f"cut (event stage.extra; sha256 {note['data']['sha256'][:12]}, kept in audit.torn/{seq}.bin); "
                     f"not acknowledged (successor audit ack RUN_DIR --seq {seq} --who NAME)"], lines
    res = _cli("ack", str(run), "--seq", str(seq), "--who", "carol", "--note", "a crash mid-write")
    assert res.exit_code == 0, res.output
    assert verify_run(run)[0], verify_run(run)[1]
    assert _cli("ack", str(run), "--seq", str(seq), "--who", "carol").exit_code == 2  # once
    (run / "audit.torn" / "999.bin").write_bytes(b"stray")  # a copy no note names
    assert problems(run) == ["audit.jsonl: audit.torn/999.bin: bytes cut from the log that no "
                             "audit.torn_tail_dropped note names"]


def test_a_cut_log_fails_until_acknowledged(run):
    log = run / "audit.jsonl"
    AuditLog(log).append("test.one")
    AuditLog(log).append("test.two")
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-2]))  # two whole records cut off the end, the head left as it was
    rec = AuditLog(log).append("run.resume", run_dir=str(run))
    out = problems(run)
    assert len(out) == 1 and out[0].startswith(f"audit.jsonl: seq {rec['seq'] - 1} (audit.head_mismatch): the log "
                                               f"ended at seq {len(lines) - 3} but its head said seq "
                                               f"{len(lines) - 1}"), out
    assert _cli("ack", str(run), "--seq", str(rec["seq"]), "--who", "carol").exit_code == 2  # not a loss record
    assert _cli("ack", str(run), "--seq", str(rec["seq"] - 1), "--who", "carol").exit_code == 0
    assert verify_run(run)[0]


@pytest.mark.parametrize("how", ["extra file", "link", "folder", "fifo"])
def test_a_model_folder_holds_exactly_its_two_files(run, how):
    model = sorted(p for p in (run / "artifacts" / "models").iterdir() if not p.name.endswith(".tmp"))[0]
    target = model / "notes.txt"
    if how == "extra file":
        target.write_text("a candidate's file")
    elif how == "link":
        (model / "config.json").unlink()
        os.symlink("/etc/hostname", model / "config.json")
    elif how == "folder":
        target.mkdir()
    else:
        os.mkfifo(target)  # never opened: a read would hang verify
    lines = problems(run)
    mine = [ln for ln in lines if ln.startswith(f"artifacts/models/{model.name}: a model folder holds exactly")]
    assert len(mine) == 1, lines
    want = {"extra file": "'notes.txt' (an extra file)", "link": "'config.json' (a link)",
            "folder": "'notes.txt' (a folder)", "fifo": "'notes.txt' (a FIFO)"}[how]
    assert want in mine[0], mine


def test_a_script_artifact_with_a_link_or_fifo_is_named(tmp_path):
    d = tmp_path / "artifacts" / "script" / ("a" * 64)
    (d / "out" / "sub").mkdir(parents=True)
    (d / "out" / "weights.bin").write_bytes(b"w")
    run = _Run.__new__(_Run)
    run.root, run.problems = tmp_path, []
    assert run._artifact_folder(d) and run.problems == []
    os.symlink("/etc/passwd", d / "out" / "sub" / "p")
    os.mkfifo(d / "out" / "pipe")
    assert not run._artifact_folder(d)
    assert run.problems == [f"artifacts/script/{'a' * 64}: holds out/pipe (a FIFO), out/sub/p (a link): an "
                            f"artifact holds regular files and folders only"]


def test_experiment_logs_are_checked_against_their_events(run):
    ends = [r["data"] for r in records(run) if r["event"] == "experiment.end" and "log_sha256" in r["data"]]
    if not ends:
        pytest.skip("this loop does not record log_sha256 yet")
    exp = ends[0]["experiment"]
    (run / "logs" / f"{exp}.log").write_bytes(b"edited\n")
    assert f"logs/{exp}.log: changed (its sha256 differs from the experiment.end event's)" in problems(run)
    (run / "logs" / f"{exp}.log").unlink()
    assert f"logs/{exp}.log: missing" in problems(run)


def test_a_run_made_before_store_binding_says_so(run):
    new = {"result_sha256", "stats_sha256"}

    def strip(rec):
        if rec["event"] in ("evaluation.saved", "model.added"):
            return None
        rec["data"] = {k: v for k, v in rec["data"].items() if k not in new}
        return rec

    rehash(run, strip)
    assert problems(run) == ["lineage.db: not checked against the audit log: the run's events predate store "
                             "binding (its stage events carry no result_sha256), so no table row can be verified"]


# -- the CLI ---------------------------------------------------------------------------------------------------


def _cli(*args: str):
    root = typer.Typer()
    root.add_typer(cli_audit.app, name="audit")
    return CliRunner().invoke(root, ["audit", *args])


def test_cli_keygen_sign_verify_key(run, tmp_path):
    out = tmp_path / "k"
    res = _cli("keygen", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and (tmp_path / "k.pub").is_file()
    before = out.read_bytes()
    res = _cli("keygen", "--out", str(out))
    assert res.exit_code == 2 and "exists" in res.output and out.read_bytes() == before
    pub = str(tmp_path / "k.pub")
    res = _cli("verify", str(run), "--key", pub)
    assert res.exit_code == 1 and res.stdout.startswith("audit.sig: missing"), res.output
    res = _cli("sign", str(run), "--key", str(out))
    assert res.exit_code == 0, res.output
    res = _cli("verify", str(run), "--key", pub)
    assert res.exit_code == 0 and "head signed at seq" in res.stdout, res.output
    res = _cli("verify", str(run), "--key", str(tmp_path / "nope.pub"))
    assert res.exit_code == 2 and "nope.pub: cannot read the key" in res.output, res.output
    out.chmod(0o644)
    res = _cli("sign", str(run), "--key", str(out))
    assert res.exit_code == 2 and "readable by others" in res.output
