"""The report's oversight section: how candidates ran, what they tried, what humans decided."""
from __future__ import annotations

import json
import sqlite3

VIOLATION_HEAD = ["generation", "candidate", "experiment", "line crossed", "what the harness saw"]
APPROVAL_HEAD = ["generation", "why it paused", "decision", "by", "note"]


def isolation_line(db: sqlite3.Connection) -> str:
    """How many experiments ran and how many crossed a line."""
    rows = db.execute("SELECT COUNT(*) AS n, SUM(status='violation') AS bad FROM experiments").fetchone()
    return f"{rows['n']} experiments, {rows['bad'] or 0} disqualified for crossing a sandbox line"


def violation_rows(db: sqlite3.Connection) -> list[list[str]]:
    return [[str(r["generation"]), r["candidate_id"], r["experiment_id"], r["kind"], r["detail"]]
            for r in db.execute("SELECT * FROM violations ORDER BY generation, candidate_id, time")]


def approval_rows(db: sqlite3.Connection) -> list[list[str]]:
    return [[str(r["generation"]), "; ".join(json.loads(r["reasons"])), r["decision"] or "waiting",
             r["who"] or "—", r["note"] or "—"]
            for r in db.execute("SELECT * FROM approvals ORDER BY generation")]
