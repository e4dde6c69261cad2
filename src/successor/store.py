"""The lineage store: one SQLite file per run (`lineage.db`). Every write commits at once, so a kill -9 loses
at most the step in flight, and a re-run resumes from what is here."""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS generations(
  idx INTEGER PRIMARY KEY, parent_model TEXT, status TEXT NOT NULL, sealed_digest TEXT,
  started REAL, finished REAL, promoted INTEGER, champion_model TEXT, frontier INTEGER);
CREATE TABLE IF NOT EXISTS stages(
  generation INTEGER, name TEXT, status TEXT NOT NULL, started REAL, finished REAL, result TEXT,
  PRIMARY KEY(generation, name));
CREATE TABLE IF NOT EXISTS candidates(
  id TEXT PRIMARY KEY, generation INTEGER NOT NULL, ordinal INTEGER NOT NULL, recipe TEXT NOT NULL,
  recipe_key TEXT NOT NULL, rationale TEXT, parent_model TEXT);
CREATE TABLE IF NOT EXISTS experiments(
  id TEXT PRIMARY KEY, candidate_id TEXT NOT NULL, generation INTEGER NOT NULL, kind TEXT NOT NULL,
  status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, started REAL, finished REAL, wall_s REAL,
  model TEXT, error TEXT, metrics TEXT, pid INTEGER);
CREATE TABLE IF NOT EXISTS models(
  digest TEXT PRIMARY KEY, path TEXT NOT NULL, parent TEXT, generation INTEGER, experiment_id TEXT, created REAL);
CREATE TABLE IF NOT EXISTS evaluations(
  model TEXT, tier TEXT, tier_digest TEXT, level INTEGER, n INTEGER, correct INTEGER, items TEXT,
  PRIMARY KEY(model, tier, tier_digest, level));
CREATE TABLE IF NOT EXISTS data_manifests(
  digest TEXT, generation INTEGER, kind TEXT, path TEXT, n INTEGER, levels TEXT, stats TEXT,
  accepted INTEGER NOT NULL DEFAULT 1, PRIMARY KEY(digest, generation, kind));
CREATE TABLE IF NOT EXISTS gate_decisions(
  generation INTEGER, candidate_id TEXT, model TEXT, role TEXT, promoted INTEGER NOT NULL, reason TEXT NOT NULL,
  stats TEXT, decided REAL, PRIMARY KEY(generation, candidate_id));
CREATE TABLE IF NOT EXISTS patches(candidate_id TEXT PRIMARY KEY, digest TEXT NOT NULL, source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS violations(
  experiment_id TEXT, generation INTEGER, candidate_id TEXT, kind TEXT NOT NULL, detail TEXT, time REAL);
CREATE TABLE IF NOT EXISTS programs(
  digest TEXT PRIMARY KEY, candidate_id TEXT, generation INTEGER, git_commit TEXT NOT NULL, knobs TEXT NOT NULL,
  artifact TEXT);
CREATE TABLE IF NOT EXISTS script_candidates(
  candidate_id TEXT PRIMARY KEY, generation INTEGER, diff TEXT, role TEXT, researcher TEXT, expected TEXT,
  git_commit TEXT, refused TEXT);
CREATE TABLE IF NOT EXISTS llm_calls(
  id INTEGER PRIMARY KEY AUTOINCREMENT, generation INTEGER, researcher TEXT, role TEXT, provider TEXT, model TEXT,
  started REAL, seconds REAL, attempt INTEGER, prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd REAL,
  status TEXT NOT NULL, error TEXT, transcript TEXT);
CREATE TABLE IF NOT EXISTS rungs(
  generation INTEGER, candidate_id TEXT, rung INTEGER, experiment_id TEXT NOT NULL, unit TEXT NOT NULL,
  budget REAL NOT NULL, steps INTEGER NOT NULL, dev_score REAL, rank INTEGER, promoted INTEGER NOT NULL,
  PRIMARY KEY(generation, candidate_id, rung));
CREATE TABLE IF NOT EXISTS tier_parts(
  tier TEXT, part INTEGER, generation INTEGER NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL,
  digest TEXT NOT NULL, path TEXT NOT NULL, tier_digest TEXT NOT NULL, PRIMARY KEY(tier, part));
CREATE TABLE IF NOT EXISTS approvals(
  generation INTEGER PRIMARY KEY, requested REAL, reasons TEXT NOT NULL, decision TEXT, who TEXT, note TEXT,
  decided REAL);
"""
MIGRATIONS = ["ALTER TABLE experiments ADD COLUMN cpu_s REAL", "ALTER TABLE experiments ADD COLUMN flops REAL",
              "ALTER TABLE stages ADD COLUMN cpu_s REAL"]


class Store:
    def __init__(self, path: Path):
        self.path = Path(path)
        # One connection, shared by the driver and the executor's worker threads (they record a pid as a sandbox
        # starts), serialised by a lock.
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        self.lock = threading.RLock()
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        for sql in MIGRATIONS:  # a run directory made by an older version gains the new columns
            try:
                self.db.execute(sql)
            except sqlite3.OperationalError:
                pass

    def close(self) -> None:
        self.db.close()

    # -- generic helpers -------------------------------------------------------------------------------------
    def q(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        with self.lock:
            return self.db.execute(sql, args).fetchone()

    def x(self, sql: str, *args: Any) -> None:
        with self.lock:
            self.db.execute(sql, args)

    # -- meta ------------------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.one("SELECT value FROM meta WHERE key=?", key)
        return row["value"] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.x("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", key, value)

    # -- stages: the unit of resumption ----------------------------------------------------------------------
    def stage_result(self, generation: int, name: str) -> dict | None:
        row = self.one("SELECT status, result FROM stages WHERE generation=? AND name=?", generation, name)
        return json.loads(row["result"]) if row and row["status"] == "done" else None

    def stage_started(self, generation: int, name: str) -> None:
        self.x("INSERT INTO stages(generation, name, status, started) VALUES(?,?,?,?) "
               "ON CONFLICT(generation, name) DO UPDATE SET status='running', started=excluded.started",
               generation, name, "running", time.time())

    def stage_done(self, generation: int, name: str, result: dict, cpu_s: float | None = None) -> None:
        """`cpu_s`: what the stage cost the harness (`driver.process_cpu_s`; its experiments' CPU is theirs, in
        `experiments.cpu_s`), which, unlike the wall between started and finished, other work on the cores does
        not inflate."""
        self.x("UPDATE stages SET status='done', finished=?, result=?, cpu_s=? WHERE generation=? AND name=?",
               time.time(), stage_text(result), None if cpu_s is None else round(cpu_s, 3), generation, name)

    # -- generations -----------------------------------------------------------------------------------------
    def generation(self, idx: int) -> sqlite3.Row | None:
        return self.one("SELECT * FROM generations WHERE idx=?", idx)

    def open_generation(self, idx: int, parent_model: str | None, sealed_digest: str) -> None:
        self.x("INSERT OR IGNORE INTO generations(idx, parent_model, status, sealed_digest, started) "
               "VALUES(?,?,?,?,?)", idx, parent_model, "running", sealed_digest, time.time())

    def close_generation(self, idx: int, promoted: bool, champion: str, frontier: int) -> None:
        self.x("UPDATE generations SET status='done', finished=?, promoted=?, champion_model=?, frontier=? "
               "WHERE idx=?", time.time(), int(promoted), champion, frontier, idx)

    def champion(self) -> str | None:
        row = self.one("SELECT champion_model FROM generations WHERE status='done' ORDER BY idx DESC LIMIT 1")
        return row["champion_model"] if row else None

    # -- experiments -----------------------------------------------------------------------------------------
    def experiment(self, exp_id: str) -> sqlite3.Row | None:
        return self.one("SELECT * FROM experiments WHERE id=?", exp_id)

    def experiment_started(self, exp_id: str, candidate_id: str, generation: int, kind: str) -> None:
        self.x("INSERT INTO experiments(id, candidate_id, generation, kind, status, attempts, started) "
               "VALUES(?,?,?,?, 'running', 1, ?) ON CONFLICT(id) DO UPDATE SET status='running', "
               "attempts=attempts+1, started=excluded.started, error=NULL",
               exp_id, candidate_id, generation, kind, time.time())

    def experiment_pid(self, exp_id: str, pid: int) -> None:
        self.x("UPDATE experiments SET pid=? WHERE id=?", pid, exp_id)

    def experiment_finished(self, exp_id: str, status: str, wall_s: float, model: str | None,
                            error: str | None, metrics: dict | None, cpu_s: float | None = None,
                            flops: float | None = None) -> None:
        self.x("UPDATE experiments SET status=?, finished=?, wall_s=?, model=?, error=?, metrics=?, cpu_s=?, "
               "flops=? WHERE id=?", status, time.time(), wall_s, model, error,
               json.dumps(metrics) if metrics is not None else None, cpu_s, flops, exp_id)

    def compute(self, generation: int | None = None) -> dict:
        with self.lock:
            return compute(self.db, generation)

    def add_rung(self, generation: int, candidate_id: str, rung: int, experiment_id: str, unit: str,
                 budget: float, steps: int, dev_score: float | None, rank: int | None, promoted: bool) -> None:
        """One candidate on one rung of successive halving; `promoted`: it went on to the next rung."""
        self.x("INSERT OR REPLACE INTO rungs VALUES(?,?,?,?,?,?,?,?,?,?)", generation, candidate_id, rung,
               experiment_id, unit, budget, steps, dev_score, rank, int(promoted))

    def add_violation(self, exp_id: str, generation: int, candidate_id: str, kind: str, detail: str) -> None:
        self.x("INSERT INTO violations VALUES(?,?,?,?,?,?)", exp_id, generation, candidate_id, kind, detail,
               time.time())

    # -- approvals: a promotion waiting for a human ----------------------------------------------------------
    def approval(self, generation: int) -> sqlite3.Row | None:
        return self.one("SELECT * FROM approvals WHERE generation=?", generation)

    def request_approval(self, generation: int, reasons: list[str]) -> None:
        self.x("INSERT OR IGNORE INTO approvals(generation, requested, reasons) VALUES(?,?,?)", generation,
               time.time(), json.dumps(reasons))

    def decide_approval(self, generation: int, decision: str, who: str, note: str | None) -> None:
        """Record a human's decision on a pending approval; raises ValueError if none is pending."""
        cur = self.db.execute("UPDATE approvals SET decision=?, who=?, note=?, decided=? WHERE generation=? AND "
                              "decision IS NULL", (decision, who, note, time.time(), generation))
        if cur.rowcount != 1:
            row = self.approval(generation)
            raise ValueError(f"generation {generation} has no promotion waiting for approval" if row is None else
                             f"generation {generation} was already {row['decision']} by {row['who']}")

    # -- models and evaluations ------------------------------------------------------------------------------
    def add_model(self, digest: str, path: str, parent: str | None, generation: int, experiment_id: str | None):
        self.x("INSERT OR IGNORE INTO models(digest, path, parent, generation, experiment_id, created) "
               "VALUES(?,?,?,?,?,?)", digest, path, parent, generation, experiment_id, time.time())

    def model_path(self, digest: str) -> Path:
        row = self.one("SELECT path FROM models WHERE digest=?", digest)
        if row is None:
            raise KeyError(f"unknown model {digest[:12]}")
        return Path(row["path"])

    def evaluation(self, model: str, tier: str, tier_digest: str) -> dict[int, list[int]] | None:
        rows = self.q("SELECT level, items FROM evaluations WHERE model=? AND tier=? AND tier_digest=?",
                      model, tier, tier_digest)
        return {r["level"]: json.loads(r["items"]) for r in rows} or None

    def save_evaluation(self, model: str, tier: str, tier_digest: str, items: dict[int, list[int]]) -> None:
        """The rows hash to `evaluation_sha256(items)`, which the audit event of the evaluation carries."""
        with self.lock, self.db:
            self.db.execute("BEGIN")
            for level, hits in items.items():
                self.db.execute(
                    "INSERT OR REPLACE INTO evaluations VALUES(?,?,?,?,?,?,?)",
                    (model, tier, tier_digest, level, len(hits), int(sum(hits)), json.dumps(hits)),
                )

    # -- the open-ended ladder: tier parts grown after the run was created (rundir.RunDir.grow) ----------------
    def tier_parts(self) -> list[sqlite3.Row]:
        """Every grown part, in the order it was grown (part 0 of a tier is its first file, in meta)."""
        return self.q("SELECT * FROM tier_parts ORDER BY generation, tier, part")

    def add_tier_parts(self, rows: list[tuple]) -> None:
        """One growth's rows (tier, part, generation, lo, hi, digest, path, tier_digest), all or none."""
        with self.lock, self.db:
            self.db.execute("BEGIN")
            for row in rows:
                self.db.execute("INSERT OR REPLACE INTO tier_parts VALUES(?,?,?,?,?,?,?,?)", row)

    # -- llm researcher accounting ---------------------------------------------------------------------------
    def add_llm_call(self, generation: int, researcher: str, role: str | None, provider: str, model: str,
                     started: float, seconds: float, attempt: int, prompt_tokens: int, completion_tokens: int,
                     cost_usd: float, status: str, error: str | None, transcript: str | None) -> None:
        self.x("INSERT INTO llm_calls(generation, researcher, role, provider, model, started, seconds, attempt, "
               "prompt_tokens, completion_tokens, cost_usd, status, error, transcript) "
               "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)", generation, researcher, role, provider, model, started,
               seconds, attempt, prompt_tokens, completion_tokens, cost_usd, status, error, transcript)

    def llm_spent(self) -> tuple[int, float]:
        """(tokens, USD) every llm call of the run has used so far."""
        row = self.one("SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS t, "
                       "COALESCE(SUM(cost_usd), 0) AS c FROM llm_calls")
        return int(row["t"]), float(row["c"])


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def stage_text(result: dict) -> str:
    """The exact text a stage's result is stored as (its audit event carries this text's sha256)."""
    return json.dumps(result, sort_keys=True)


def evaluation_rows_sha256(rows: list[tuple[int, int, int, str]]) -> str:
    """One evaluation's rows (level, n, correct, items text) as stored, hashed in level order."""
    return sha256_text(json.dumps(sorted([int(a), int(b), int(c), str(d)] for a, b, c, d in rows)))


def evaluation_sha256(items: dict[int, list[int]]) -> str:
    """What `evaluation_rows_sha256` gives for the rows `save_evaluation(items)` writes."""
    return evaluation_rows_sha256([(lvl, len(h), int(sum(h)), json.dumps(h)) for lvl, h in items.items()])


def tier_part_digests(db: sqlite3.Connection, tier: str, digest: str) -> list[str]:
    """The part digests a tier digest commits to (the evaluations are kept per part): itself, unless it is a
    ladder manifest recorded in tier_parts, then the tier's first part and every grown part up to that one."""
    try:
        row = db.execute("SELECT part FROM tier_parts WHERE tier=? AND tier_digest=?", (tier, digest)).fetchone()
    except sqlite3.Error:  # a store made before the ladder
        return [digest]
    if row is None:
        return [digest]
    first = db.execute("SELECT value FROM meta WHERE key=?", (f"tier.{tier}",)).fetchone()
    grown = db.execute("SELECT digest FROM tier_parts WHERE tier=? AND part<=? ORDER BY part", (tier, row[0]))
    return ([first[0]] if first else []) + [r[0] for r in grown]


def compute(db: sqlite3.Connection, generation: int | None = None) -> dict:
    """What experiments used, for the whole run or one generation: CPU-seconds (the kernel's count for the
    sandbox's cgroup), wall seconds, and estimated training FLOPs (None where the workload has no estimate)."""
    where, args = ("WHERE generation=?", (generation,)) if generation is not None else ("", ())
    columns = {r[1] for r in db.execute("PRAGMA table_info(experiments)")}  # a run made before flops was counted
    flops_sql = "SUM(flops)" if "flops" in columns else "NULL"
    n, attempts, cpu, wall, flops = db.execute(
        f"SELECT COUNT(*), COALESCE(SUM(attempts), 0), COALESCE(SUM(cpu_s), 0), COALESCE(SUM(wall_s), 0), "
        f"{flops_sql} FROM experiments {where}", args).fetchone()
    return {"experiments": n, "attempts": attempts, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
            "flops": flops}
