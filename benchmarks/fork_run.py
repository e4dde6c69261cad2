"""Fork a finished run after generation 0 (or N: `--after N`) under a changed config, to measure a loop setting
without paying for the bootstrap again (about 8 minutes of a 15-minute demo, and deterministic on one machine anyway).

The fork copies the run directory, deletes every generation after N (default 0) from the lineage, cuts the audit
log after generation N's last record (the hash chain stays valid: it is a prefix), drops the gradings and
provenance statements the source made after that cut, and writes the changed config both as the run's config and
as `fork.yaml`. Then resume it as any run:

    .venv/bin/python benchmarks/fork_run.py runs/demo runs/fork curator.max_dev_noise=0.05 successor.steps=200
    .venv/bin/successor run runs/fork/fork.yaml --run-dir runs/fork

Settings that shape generation 0 (task, seed, bootstrap) are refused: the copied generation 0 would not be
the one they make. The fork's audit log says it is one (`run.forked`, with the changes).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
from pathlib import Path

import yaml
from overrides import overrides

import successor
from successor.config import RunConfig
from successor.oversight.audit import AuditLog, _write_head

LATER = {"generations": "idx", "stages": "generation", "candidates": "generation", "experiments": "generation",
         "models": "generation", "data_manifests": "generation", "gate_decisions": "generation",
         # the ladder's growth after generation 0: the fork grows its own tiers (the same bytes, drawn again from
         # their streams) when its own frontier comes near their end
         "tier_parts": "generation"}


def fork(source: Path, dest: Path, changes: dict, after: int = 0) -> Path:
    """Copy `source` after its generation `after` (0: the bootstrap) to `dest` with `changes` ({"section.field":
    value}) made to its config; returns the fork's config file (`dest/fork.yaml`). Refuses a change that generation 0
    depends on."""
    if dest.exists():
        raise SystemExit(f"{dest} exists")
    cfg = yaml.safe_load((source / "config.yaml").read_text())
    for key, value in changes.items():
        section, field = key.split(".", 1)
        if section in ("task", "seed", "bootstrap"):
            raise SystemExit(f"{key}: generation 0 depends on it; run the loop from scratch instead")
        cfg[section][field] = value
    try:
        RunConfig(**cfg)  # a bad value fails here, before anything is copied
    except ValueError as e:
        raise SystemExit(f"bad setting: {e}") from None
    # Only generation 0's workspaces are copied: a later one may belong to an experiment running in the source right
    # now, and copying it opens the honeypots it is watched through (measured: that disqualified a candidate).
    ro = sqlite3.connect(f"file:{source / 'lineage.db'}?mode=ro", uri=True)
    try:
        done = {r[0] for r in ro.execute("SELECT idx FROM generations WHERE status = 'done'")}
        if not set(range(after + 1)) <= done:
            raise SystemExit(f"{source}: generation {after} is not done (done: {sorted(done)})")
        first = {r[0] for r in ro.execute("SELECT id FROM experiments WHERE generation <= ?", (after,))}
    finally:
        ro.close()
    workspaces = (source / "workspaces").resolve()

    def skipped(folder: str, names: list[str]) -> list[str]:
        if Path(folder).resolve() == workspaces:
            return [n for n in names if n not in first]
        return [n for n in names if n == "report"]

    shutil.copytree(source, dest, ignore=skipped)
    kept, saved = [], set()  # the audit log up to the cut, and the gradings it records
    for line in (dest / "audit.jsonl").read_text().splitlines():
        kept.append(line)
        rec = json.loads(line)
        if rec["event"] == "evaluation.saved":
            saved.add((rec["data"]["model"], rec["data"]["tier"], rec["data"]["tier_digest"]))
        if rec["event"] == "generation.end" and rec["data"]["generation"] == after:
            break
    (dest / "audit.jsonl").write_text("\n".join(kept) + "\n")
    db = sqlite3.connect(dest / "lineage.db")
    for (exp_id,) in db.execute("SELECT id FROM experiments WHERE generation > ?", (after,)):
        shutil.rmtree(dest / "workspaces" / exp_id, ignore_errors=True)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    for table, column in LATER.items():
        if table in tables:  # a lineage made before the ladder has no tier_parts
            db.execute(f"DELETE FROM {table} WHERE {column} > ?", (after,))
    src, dst = source.resolve(), dest.resolve()
    for table, key in (("models", "digest"), ("data_manifests", "digest")):
        for k, path in db.execute(f"SELECT {key}, path FROM {table}").fetchall():
            p = Path(path).resolve()
            if p.is_relative_to(src):  # the fork reads its own copy, not the source's files
                db.execute(f"UPDATE {table} SET path=? WHERE {key}=? AND path=?", (str(dst / p.relative_to(src)), k,
                                                                                  path))
    # gradings the source made later (of an early model on a tier part grown after the cut) are the source's, not
    # the fork's: without their evaluation.saved records, `audit verify` rightly calls them added outside the run
    rows = db.execute("SELECT DISTINCT model, tier, tier_digest FROM evaluations").fetchall()
    db.executemany("DELETE FROM evaluations WHERE model=? AND tier=? AND tier_digest=?",
                   [r for r in rows if tuple(r) not in saved])
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    for statement in (dest / "provenance").glob("gen-*.json"):  # the later generations' promotions
        if not statement.stem[4:].isdigit() or int(statement.stem[4:]) > after:
            statement.unlink()
    last = json.loads(kept[-1])
    _write_head(dest / "audit.jsonl", last["seq"], last["hash"])  # the cut is a fork, not a loss: say so in the chain
    AuditLog(dest / "audit.jsonl").append("run.forked", source=str(source), after_generation=after,
                                          changes=dict(changes))
    text = yaml.safe_dump(cfg, sort_keys=False)
    (dest / "config.yaml").write_text(text)
    (dest / "fork.yaml").write_text(text)
    return dest / "fork.yaml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("source", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("set", nargs="*", help="section.field=value")
    ap.add_argument("--after", type=int, default=0, help="keep generations 0..AFTER (default 0: the bootstrap)")
    a = ap.parse_intermixed_args()
    conf = fork(a.source, a.dest, overrides(a.set), a.after)
    print(f"{a.dest}: generations 0-{a.after} of {a.source}; resume with: successor run {conf} --run-dir {a.dest}")


def run_to_end(config: Path, run: Path, preset: str = "default", policy: Path | None = None) -> int:
    """One run, or its resume, through the library API in-process; returns the exit code `successor run` would
    give (0: finished; 3: paused on a budget or stopped)."""
    result = successor.run(successor.load_config(config, preset), run, policy=policy)
    return 0 if result.finished else 3


if __name__ == "__main__":
    main()
