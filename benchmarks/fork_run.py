"""Fork a finished run after generation 0 under a changed config, to measure a loop setting without paying for
the bootstrap again (about 8 minutes of a 15-minute demo, and deterministic on one machine anyway).

The fork copies the run directory, deletes every generation after 0 from the lineage, cuts the audit log after
generation 0's last record (the hash chain stays valid: it is a prefix), and writes the changed config both as
the run's config and as `fork.yaml`. Then resume it as any run:

    .venv/bin/python benchmarks/fork_run.py runs/demo runs/fork curator.max_dev_noise=0.05 successor.steps=200
    .venv/bin/successor run runs/fork/fork.yaml --run-dir runs/fork

Settings that shape generation 0 (task, seed, bootstrap) are refused: the copied generation 0 would not be
the one they make.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
from pathlib import Path

import yaml
from overrides import overrides

from successor.config import RunConfig

LATER = {"generations": "idx", "stages": "generation", "candidates": "generation", "experiments": "generation",
         "models": "generation", "data_manifests": "generation", "gate_decisions": "generation"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("source", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("set", nargs="*", help="section.field=value")
    a = ap.parse_args()
    if a.dest.exists():
        raise SystemExit(f"{a.dest} exists")
    cfg = yaml.safe_load((a.source / "config.yaml").read_text())
    for key, value in overrides(a.set).items():
        section, field = key.split(".", 1)
        if section in ("task", "seed", "bootstrap"):
            raise SystemExit(f"{key}: generation 0 depends on it; run the loop from scratch instead")
        cfg[section][field] = value
    try:
        RunConfig(**cfg)  # a bad value fails here, before anything is copied
    except ValueError as e:
        raise SystemExit(f"bad setting: {e}") from None
    shutil.copytree(a.source, a.dest, ignore=shutil.ignore_patterns("report"))
    db = sqlite3.connect(a.dest / "lineage.db")
    for (exp_id,) in db.execute("SELECT id FROM experiments WHERE generation >= 1"):
        shutil.rmtree(a.dest / "workspaces" / exp_id, ignore_errors=True)
    for table, column in LATER.items():
        db.execute(f"DELETE FROM {table} WHERE {column} >= 1")
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    kept = []
    for line in (a.dest / "audit.jsonl").read_text().splitlines():
        kept.append(line)
        rec = json.loads(line)
        if rec["event"] == "generation.end" and rec["data"]["generation"] == 0:
            break
    (a.dest / "audit.jsonl").write_text("\n".join(kept) + "\n")
    text = yaml.safe_dump(cfg, sort_keys=False)
    (a.dest / "config.yaml").write_text(text)
    (a.dest / "fork.yaml").write_text(text)
    print(f"{a.dest}: generation 0 of {a.source}; resume with: successor run {a.dest / 'fork.yaml'} --run-dir {a.dest}")


if __name__ == "__main__":
    main()
