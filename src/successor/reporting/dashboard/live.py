"""What the dashboard reads that the report does not: the run's state now, the experiments under way with their
training curves, an ETA, the budgets used, and one node of the lineage in full.

Some of it was written by candidates (a workspace's progress.json and log.txt, an experiment's self-reported
metrics): it is parsed as bounded data and shown as text, never trusted and never interpreted as markup.
"""
from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path

from ... import safeio
from ...executors.base import log_path
from ...oversight.policy import PolicyError, load_policy
from ...oversight.stop import runner_alive
from ..lineage import stage_result

PROGRESS_MAX_BYTES = 256 * 1024  # a candidate's progress.json past this is ignored
CURVE_MAX_POINTS = 2000
LOG_TAIL_BYTES = 8 * 1024
AUDIT_TAIL_BYTES = 256 * 1024
RUN_EVENTS = {"run.start": "running", "run.resume": "running", "run.finished": "finished", "run.paused": "paused",
              "run.stopped": "stopped"}


def _json(text: str | None, default=None):
    try:
        return json.loads(text) if text else default
    except (TypeError, ValueError):
        return default


def _finite(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def clean_curve(raw) -> list[list[float]]:
    """[[step, loss], ...] with finite numbers only, at most CURVE_MAX_POINTS (evenly thinned)."""
    if not isinstance(raw, list):
        return []
    pts = [[_finite(p[0]), _finite(p[1])] for p in raw if isinstance(p, (list, tuple)) and len(p) == 2]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    if len(pts) > CURVE_MAX_POINTS:
        step = len(pts) / CURVE_MAX_POINTS
        pts = [pts[int(i * step)] for i in range(CURVE_MAX_POINTS)] + [pts[-1]]
    return pts


def read_progress(workspace: Path) -> dict | None:
    """A running experiment's out/progress.json (written by the candidate: no link followed, no FIFO opened,
    bounded): step, total, loss and curve, or None."""
    try:
        data = json.loads(safeio.read_text(workspace, "out/progress.json", PROGRESS_MAX_BYTES))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    return {"step": _finite(data.get("step")), "total": _finite(data.get("total")), "loss": _finite(data.get("loss")),
            "curve": clean_curve(data.get("curve"))}


def tail(path: Path, n: int = LOG_TAIL_BYTES) -> str | None:
    """The last n bytes of a regular file, decoded leniently; None when there is none (or a link, a FIFO)."""
    if not path.is_file() or path.is_symlink():
        return None
    text = safeio.tail(path, n + 1)
    return text if len(text.encode()) <= n else "…" + text.split("\n", 1)[-1]


def run_events(run_dir: Path) -> list[dict]:
    """The run's lifecycle events (start, resume, paused, stopped, finished) from the audit log's tail."""
    text = tail(Path(run_dir) / "audit.jsonl", AUDIT_TAIL_BYTES) or ""
    out = []
    for line in text.splitlines():
        rec = _json(line.lstrip("…"))
        if isinstance(rec, dict) and (rec.get("event") in RUN_EVENTS or rec.get("event") == "run.stop_requested"):
            out.append({"event": rec["event"], "time": rec.get("time"), "data": rec.get("data") or {}})
    return out


def run_state(run_dir: Path, db: sqlite3.Connection) -> dict:
    """running / waiting for approval / paused / stopped / finished / not running (its process is gone without
    saying why: killed), with the runner's pid."""
    runner = _json((db.execute("SELECT value FROM meta WHERE key='runner'").fetchone() or [None])[0], {})
    alive = runner_alive(runner)
    events = [e for e in run_events(run_dir) if e["event"] in RUN_EVENTS]
    last = events[-1] if events else None
    waiting = db.execute("SELECT generation FROM approvals WHERE decision IS NULL").fetchone()
    # A run that waits for a human says run.paused and goes on living; one that finished or stopped may leave
    # its process alive (a loop run inside a longer program), so the process alone is not the state.
    going = last is not None and (last["event"] in ("run.start", "run.resume") or (
        last["event"] == "run.paused" and last["data"].get("waiting_for")))
    if alive and going:
        state = "waiting for approval" if waiting else "running"
    elif last is None:
        state = "not started"
    else:
        state = RUN_EVENTS[last["event"]]
        state = "not running" if state == "running" else state  # started, never said it ended: killed
    started = next((e["time"] for e in reversed(events) if e["event"] in ("run.start", "run.resume")), None)
    return {"state": state, "pid": runner.get("pid") if alive and going else None, "session_started": started,
            "reason": (last or {}).get("data", {}).get("reason") if state in ("paused", "stopped") else None}


def wall_clock_s(db: sqlite3.Connection, state: dict) -> float:
    """The loop's running time summed over sessions, as its wall-clock budget counts it."""
    saved = float((db.execute("SELECT value FROM meta WHERE key='wall_s'").fetchone() or [0.0])[0] or 0.0)
    live = state["pid"] is not None and state["session_started"]
    return saved + (time.time() - state["session_started"] if live else 0.0)


def budgets(run_dir: Path, db: sqlite3.Connection, st: dict, state: dict) -> list[dict]:
    """Each budget of the policy beside what the run has used of it (limit None: no limit)."""
    try:
        policy = load_policy(Path(run_dir) / "policy.yaml") if (Path(run_dir) / "policy.yaml").exists() else None
    except PolicyError:
        policy = None
    b = policy.budgets if policy else None
    tokens, usd = db.execute("SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0), COALESCE(SUM(cost_usd), 0) "
                             "FROM llm_calls").fetchone()
    c = st["compute"]
    used = [("generations", sum(1 for g in st["generations"] if g["status"] == "done"), "generations finished"),
            ("experiments", c["attempts"], "experiment attempts"), ("cpu_s", c["cpu_s"], "CPU-seconds"),
            ("wall_clock_s", wall_clock_s(db, state), "wall-clock seconds"), ("flops", c["flops"] or 0.0, "FLOPs"),
            ("llm_cost_usd", float(usd), "USD on llm calls"), ("llm_tokens", int(tokens), "llm tokens")]
    out = []
    for name, value, what in used:
        limit = getattr(b, name) if b else None
        out.append({"name": name, "what": what, "used": value, "limit": limit,
                    "fraction": value / limit if limit else None})
    return out


def eta_s(db: sqlite3.Connection, planned: int | None, state: dict) -> float | None:
    """Seconds left at the pace of the finished successor generations (the bootstrap's when none has finished);
    None when the run is not going or there is nothing to go on."""
    if state["state"] != "running" or not planned:
        return None
    rows = db.execute("SELECT idx, status, started, finished FROM generations ORDER BY idx").fetchall()
    done = [r for r in rows if r["status"] == "done" and r["finished"] and r["started"]]
    walls = [r["finished"] - r["started"] for r in done if r["idx"] > 0] or [r["finished"] - r["started"]
                                                                          for r in done]
    if not walls:
        return None
    per = sum(walls) / len(walls)
    current = next((r for r in rows if r["status"] != "done"), None)
    spent = time.time() - current["started"] if current is not None and current["started"] else 0.0
    left = planned - len(done)
    return max(0.0, per * left - min(spent, per)) if left > 0 else 0.0


def experiments_now(run_dir: Path, db: sqlite3.Connection) -> list[dict]:
    """The experiments running now, with their live curve, and the finished ones of the generation under way
    with the curve they reported."""
    row = db.execute("SELECT generation FROM experiments WHERE status='running' ORDER BY started DESC "
                     "LIMIT 1").fetchone() or db.execute("SELECT MAX(idx) FROM generations WHERE status!='done'"
                                                         ).fetchone()
    if row is None or row[0] is None:
        return []
    out = []
    for e in db.execute("SELECT * FROM experiments WHERE generation=? OR status='running' ORDER BY started",
                        (row[0],)).fetchall():
        item = {"id": e["id"], "candidate": e["candidate_id"], "generation": e["generation"], "kind": e["kind"],
                "status": e["status"], "attempts": e["attempts"], "started": e["started"], "wall_s": e["wall_s"]}
        if e["status"] == "running":
            prog = read_progress(Path(run_dir) / "workspaces" / e["id"]) or {}
            item |= {"step": prog.get("step"), "total": prog.get("total"), "loss": prog.get("loss"),
                     "curve": prog.get("curve", []), "elapsed_s": time.time() - e["started"] if e["started"] else None}
        else:
            item["curve"] = clean_curve((_json(e["metrics"], {}) or {}).get("loss_curve"))
        out.append(item)
    return out


def _accuracy(db: sqlite3.Connection, model: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for r in db.execute("SELECT tier, level, SUM(n) AS n, SUM(correct) AS c FROM evaluations WHERE model=? "
                        "GROUP BY tier, level ORDER BY tier, level", (model,)):
        if r["n"]:
            out.setdefault(r["tier"], {})[str(r["level"])] = r["c"] / r["n"]
    return out


def node(run_dir: Path, db: sqlite3.Connection, cid: str) -> dict | None:
    """One candidate in full: recipe, rationale, diff, experiments (metrics, curve, log tail), accuracy by tier and
    level, gate statistics, halving rungs, violations, and the provenance statement of a promotion."""
    c = db.execute("SELECT * FROM candidates WHERE id=?", (cid,)).fetchone()
    if c is None:
        return None
    g = c["generation"]
    patch = db.execute("SELECT source, digest FROM patches WHERE candidate_id=?", (cid,)).fetchone()
    exps = []
    for e in db.execute("SELECT * FROM experiments WHERE candidate_id=? ORDER BY started", (cid,)).fetchall():
        metrics = _json(e["metrics"], {}) or {}
        curve = clean_curve(metrics.pop("loss_curve", None)) if isinstance(metrics, dict) else []
        exps.append({"id": e["id"], "kind": e["kind"], "status": e["status"], "attempts": e["attempts"],
                     "wall_s": e["wall_s"], "cpu_s": e["cpu_s"], "flops": e["flops"], "model": e["model"],
                     "error": e["error"], "metrics": metrics, "curve": curve,
                     "log_tail": tail(log_path(Path(run_dir), e["id"]))})
    models = [e["model"] for e in exps if e["model"]]
    dec = db.execute("SELECT * FROM gate_decisions WHERE generation=? AND candidate_id=?", (g, cid)).fetchone()
    gen = db.execute("SELECT * FROM generations WHERE idx=?", (g,)).fetchone()
    prov = None
    if dec is not None and dec["promoted"] and gen is not None and gen["champion_model"] == dec["model"]:
        prov = _json(tail(Path(run_dir) / "provenance" / f"gen-{g}.json", 1 << 20))
    return {
        "id": cid, "generation": g, "ordinal": c["ordinal"], "rationale": c["rationale"],
        "parent": c["parent_model"], "recipe": _json(c["recipe"], c["recipe"]),
        "diff": patch["source"] if patch else None, "diff_sha256": patch["digest"] if patch else None,
        "experiments": exps,
        "accuracy": {m: _accuracy(db, m) for m in dict.fromkeys(models)},
        "interpret": (stage_result(db, g, "interpret") or {}).get(cid),
        "gate": None if dec is None else {"role": dec["role"], "promoted": bool(dec["promoted"]),
                                          "reason": dec["reason"], "model": dec["model"],
                                          "stats": _json(dec["stats"], {})},
        "rungs": [dict(r) for r in db.execute("SELECT rung, steps, budget, unit, dev_score, rank, promoted, "
                                              "experiment_id FROM rungs WHERE candidate_id=? ORDER BY rung", (cid,))],
        "violations": [dict(r) for r in db.execute("SELECT experiment_id, kind, detail, time FROM violations "
                                                   "WHERE candidate_id=? ORDER BY time", (cid,))],
        "champion_of_generation": g if prov is not None else None,
        "provenance": prov,
    }
