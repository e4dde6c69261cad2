"""The lineage as data: read-only readings of a run's store, shared by the report, the dashboard and `compare`.

Each reading takes a read-only connection (`open_ro`), so it runs beside a live loop (a reader sees the last
commit) or on a killed run; what is not there yet (a running stage, an unfinished generation) reads as None or
as an empty list, never as an error.
"""
from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
from scipy.stats import linregress

from ..store import tier_part_digests

TREND_ALPHA = 0.05  # a trend in acceleration is called only at this significance
MIN_TREND_POINTS = 3  # fewer successor generations than this cannot show a trend


def open_ro(run_dir: Path) -> sqlite3.Connection:
    """A read-only connection with rows by name; raises FileNotFoundError where there is no lineage.db."""
    path = Path(run_dir) / "lineage.db"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no lineage.db)")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
    db.row_factory = sqlite3.Row
    return db


def stage_result(db: sqlite3.Connection, g: int, name: str) -> dict | None:
    """A stage's result only once it is done: a running stage has no result to show."""
    row = db.execute("SELECT status, result FROM stages WHERE generation=? AND name=?", (g, name)).fetchone()
    return json.loads(row["result"]) if row and row["status"] == "done" and row["result"] else None


def sealed_grid(db: sqlite3.Connection) -> tuple[list[int], list[int], np.ndarray]:
    """(levels, generations, accuracy[level, generation]) of each finished generation's champion."""
    gens = db.execute("SELECT idx, champion_model, sealed_digest FROM generations "
                      "WHERE champion_model IS NOT NULL ORDER BY idx").fetchall()
    acc: dict[tuple[int, int], float] = {}
    for g in gens:
        sql, args = "SELECT level, n, correct FROM evaluations WHERE model=? AND tier='sealed'", [g["champion_model"]]
        # what the generation was gated on: every part of the sealed tier (the ladder's too), or under
        # gate.sealed: fresh its own sample, which its gate's result names
        gated = (stage_result(db, g["idx"], "gate") or {}).get("sealed_digest") or g["sealed_digest"]
        if gated:
            parts = tier_part_digests(db, "sealed", gated)
            sql, args = sql + f" AND tier_digest IN ({','.join('?' * len(parts))})", args + parts
        for r in db.execute(sql, args):
            if r["n"]:
                acc[(r["level"], g["idx"])] = r["correct"] / r["n"]
    levels = sorted({lvl for lvl, _ in acc})
    idx = [g["idx"] for g in gens]
    grid = np.full((len(levels), len(idx)), np.nan)
    for (lvl, g), a in acc.items():
        grid[levels.index(lvl), idx.index(g)] = a
    return levels, idx, grid


def candidates(db: sqlite3.Connection, generation: int | None = None) -> list[dict]:
    """Every proposed candidate with its experiment's status, validation score and gate decision."""
    out: list[dict] = []
    cache: dict[int, tuple[dict, dict]] = {}
    sql, args = "SELECT * FROM candidates", ()
    if generation is not None:
        sql, args = sql + " WHERE generation=?", (generation,)
    for c in db.execute(sql + " ORDER BY generation, ordinal", args).fetchall():
        g, cid = c["generation"], c["id"]
        if g not in cache:
            cache[g] = (stage_result(db, g, "interpret") or {}, stage_result(db, g, "select") or {})
        interpret, select = cache[g]
        exp = db.execute("SELECT status FROM experiments WHERE candidate_id=? AND kind='candidate' "
                         "ORDER BY started DESC LIMIT 1", (cid,)).fetchone()
        dec = db.execute("SELECT role, promoted, reason FROM gate_decisions WHERE generation=? AND candidate_id=?",
                         (g, cid)).fetchone()
        info = interpret.get(cid, {})
        out.append({
            "id": cid, "generation": g, "rationale": c["rationale"], "parent": c["parent_model"],
            "role": dec["role"] if dec and dec["role"] else (
                "successor" if select.get("selected") == cid else "candidate"),
            "status": exp["status"] if exp else info.get("status", "not started"),
            "score": info.get("score"),
            "promoted": None if dec is None else bool(dec["promoted"]),
            "reason": dec["reason"] if dec else None,
            "violations": db.execute("SELECT COUNT(*) FROM violations WHERE candidate_id=?", (cid,)).fetchone()[0],
        })
    return out


def tree(db: sqlite3.Connection) -> list[dict]:
    """The lineage tree, one entry a generation: the champion it started from, its candidates (each a child of
    that champion) and the champion it ended with (the promoted successor, or the same champion kept)."""
    cands: dict[int, list[dict]] = {}
    for c in candidates(db):
        cands.setdefault(c["generation"], []).append(c)
    return [{"generation": g["idx"], "status": g["status"], "parent": g["parent_model"],
             "champion": g["champion_model"], "promoted": None if g["promoted"] is None else bool(g["promoted"]),
             "frontier": g["frontier"], "candidates": cands.get(g["idx"], [])}
            for g in db.execute("SELECT * FROM generations ORDER BY idx")]


def guardrail_points(db: sqlite3.Connection) -> list[dict] | None:
    """Per finished generation: its champion's refusal rate on the guardrail suite (pooled and by level), whether
    the generation promoted, and the successor's guardrail stats from its gate decision. None: no guardrail."""
    row = db.execute("SELECT value FROM meta WHERE key='tier.guardrail'").fetchone()
    if row is None:
        return None
    points = []
    for g in db.execute("SELECT idx, promoted, champion_model FROM generations WHERE status='done' "
                        "AND champion_model IS NOT NULL ORDER BY idx").fetchall():
        levels = {r["level"]: r["correct"] / r["n"] for r in db.execute(
            "SELECT level, n, correct FROM evaluations WHERE model=? AND tier='guardrail' AND tier_digest=?",
            (g["champion_model"], row["value"])) if r["n"]}
        cells = db.execute("SELECT sum(n), sum(correct) FROM evaluations WHERE model=? AND tier='guardrail' AND "
                           "tier_digest=?", (g["champion_model"], row["value"])).fetchone()
        dec = db.execute("SELECT stats FROM gate_decisions WHERE generation=? AND role='successor'",
                         (g["idx"],)).fetchone()
        stats = (json.loads(dec["stats"]) if dec and dec["stats"] else {}).get("guardrail")
        points.append({"generation": g["idx"], "promoted": bool(g["promoted"]), "levels": levels,
                       "rate": cells[1] / cells[0] if cells[0] else None, "successor": stats})
    return points


def fidelity(points: list[dict]) -> tuple[float | None, int]:
    """The mean per-generation ratio rate_n / rate_(n-1) of the champion line, over the promotions (a refused
    generation keeps its champion, so its ratio is 1 by construction and says nothing), and how many there were."""
    ratios, prev = [], None
    for p in points:
        if p["rate"] is not None and prev is not None and p["promoted"] and prev > 0:
            ratios.append(p["rate"] / prev)
        prev = p["rate"] if p["rate"] is not None else prev
    return (float(np.mean(ratios)) if ratios else None), len(ratios)


def verified_gain(gate_stats: dict | None, promoted: bool) -> float:
    """What the gate verified a promoted successor gains: sealed accuracy over the tested levels (tinylm) or the
    metric's gain over the gate seeds, in the direction that is better (script). A refused generation gains 0."""
    if not promoted or not gate_stats:
        return 0.0
    for key in ("tested_effect", "effect", "gain"):
        v = gate_stats.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            return float(v)
    return 0.0


def _trend(xs: list[float], ys: list[float]) -> dict:
    """Least-squares slope of ys on xs, its two-sided p, and the verdict a reader wants."""
    if len(xs) < MIN_TREND_POINTS or len(set(xs)) < 2:
        return {"slope": None, "p": None, "verdict": f"too few successor generations ({len(xs)}) to tell; "
                f"needs {MIN_TREND_POINTS}"}
    if len(set(ys)) == 1:
        return {"slope": 0.0, "p": 1.0, "verdict": "flat: every generation gained the same"}
    fit = linregress(xs, ys)
    slope, p = float(fit.slope), float(fit.pvalue)
    if p < TREND_ALPHA:
        verdict = f"{'speeding up' if slope > 0 else 'slowing down'} (slope {slope:+.3g}, p={p:.3g})"
    else:
        verdict = f"no significant trend (slope {slope:+.3g}, p={p:.3g})"
    return {"slope": slope, "p": p, "verdict": verdict}


def acceleration(st: dict) -> dict:
    """Is the loop speeding up? Verified improvement per successor generation and per CPU-hour, cumulative
    curves, and a test of the trend, from `status_dict`. The bootstrap builds from nothing, so it is the origin
    of the cumulative CPU-hours but not a point."""
    script = any(g["metric"] is not None for g in st["generations"])
    rows, cum_gain, cum_cpu_h, prev_front = [], 0.0, 0.0, None
    for g in st["generations"]:
        if g["status"] != "done":
            continue
        cpu_h = g["compute"]["cpu_s"] / 3600.0
        cum_cpu_h += cpu_h
        if g["generation"] == 0:
            prev_front = g["frontier"]
            continue
        gain = verified_gain((g["gate"] or {}).get("stats"), bool(g["promoted"]))
        cum_gain += gain
        front = None if script or g["frontier"] is None or prev_front is None else g["frontier"] - prev_front
        prev_front = g["frontier"] if g["frontier"] is not None else prev_front
        rows.append({"generation": g["generation"], "promoted": bool(g["promoted"]), "gain": gain,
                     "frontier_gain": front, "cpu_h": cpu_h, "gain_per_cpu_h": gain / cpu_h if cpu_h > 0 else None,
                     "cumulative_gain": cum_gain, "cumulative_cpu_h": cum_cpu_h})
    with_cpu = [r for r in rows if r["gain_per_cpu_h"] is not None]
    return {
        "unit": "metric gain over the gate seeds" if script else "sealed accuracy over the tested levels",
        "generations": rows,
        "per_generation": _trend([r["generation"] for r in rows], [r["gain"] for r in rows]),
        "per_cpu_hour": _trend([r["generation"] for r in with_cpu], [r["gain_per_cpu_h"] for r in with_cpu]),
        "total_gain": cum_gain, "total_cpu_h": cum_cpu_h,
        "mean_gain_per_cpu_h": cum_gain / sum(r["cpu_h"] for r in rows) if sum(r["cpu_h"] for r in rows) else None,
    }
