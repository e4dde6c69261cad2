"""`successor status`: the lineage as data, read straight from the store."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import yaml

from ..store import compute
from .lineage import open_ro

UPPER_BOUND = ("UPPER BOUND: this run's curator kept labels with the verifier filter, which reads the hidden checker; "
               "a study setting that no real loop has, not a result.")


def upper_bound(run_dir: Path) -> bool:
    """Did this run curate with the `verifier` filter (the hidden checker)? Then its results are an upper bound."""
    cfg = Path(run_dir) / "config.yaml"
    data = (yaml.safe_load(cfg.read_text()) or {}) if cfg.exists() else {}
    return (data.get("curator") or {}).get("filter") == "verifier"


def _champion_metric(db: sqlite3.Connection, champion: str | None) -> float | None:
    """A script run's champion's mean metric over its gate seeds (None for tinylm, or before a champion)."""
    from ..workloads.script.memory import gate_values

    vals = gate_values(db, champion)
    return sum(vals) / len(vals) if vals else None


def status_dict(run_dir: Path) -> dict:
    db = open_ro(run_dir)
    gens = []
    for g in db.execute("SELECT * FROM generations ORDER BY idx"):
        decisions = db.execute("SELECT * FROM gate_decisions WHERE generation=? ORDER BY candidate_id",
                               (g["idx"],)).fetchall()
        succ = next((d for d in decisions if d["role"] == "successor"), None)
        gens.append({
            "generation": g["idx"],
            "status": g["status"],
            "parent": g["parent_model"],
            "champion": g["champion_model"],
            "promoted": bool(g["promoted"]) if g["promoted"] is not None else None,
            "frontier": g["frontier"],
            "metric": _champion_metric(db, g["champion_model"]),
            "sealed_digest": g["sealed_digest"],
            "wall_s": round(g["finished"] - g["started"], 1) if g["finished"] else None,
            "compute": compute(db, g["idx"]),
            "gate": ({"candidate": succ["candidate_id"], "reason": succ["reason"], "stats": json.loads(succ["stats"])}
                     if succ else None),
            "decisions": [{"candidate": d["candidate_id"], "role": d["role"], "promoted": bool(d["promoted"]),
                           "reason": d["reason"]} for d in decisions],
        })
    stage = db.execute("SELECT generation, name FROM stages WHERE status='running' ORDER BY started DESC "
                       "LIMIT 1").fetchone()
    waiting = db.execute("SELECT generation, reasons FROM approvals WHERE decision IS NULL").fetchone()
    violations = db.execute("SELECT COUNT(*) FROM violations").fetchone()[0]
    total = compute(db)
    db.close()
    done = [g for g in gens if g["status"] == "done"]
    return {
        "run_dir": str(run_dir),
        "generations": gens,
        "promoted": sum(1 for g in done if g["promoted"]),
        "champion": done[-1]["champion"] if done else None,
        "frontier": done[-1]["frontier"] if done else None,
        "metric": done[-1]["metric"] if done else None,
        "in_progress": {"generation": stage["generation"], "stage": stage["name"]} if stage else None,
        "waiting_for_approval": ({"generation": waiting["generation"], "reasons": json.loads(waiting["reasons"])}
                                 if waiting else None),
        "violations": violations,
        "compute": total,
        "upper_bound": upper_bound(run_dir),
    }
