"""The lineage store checked against the audit chain: every row the loop trusts on resume must be what the chain
last said about it.

Why: lineage.db is a plain SQLite file. Whoever can write the run directory can flip a gate decision, swap the
champion or delete a violation, and the loop resumes from that. The audit chain is hash-linked (and, with a key,
signed), so each row is bound to an event that carries its values or a sha256 of its exact stored text, and
this module re-reads both and reports each difference as one line naming the table, the key and the column.

One mechanism for every table: a `Spec` says which rows the chain must speak for (SQL), their key, the values to
compare, and how to read the same key and values from an event. For one key the chain's LAST event is its word
(a redone stage, an amended decision), except where the store keeps the first (`models`: INSERT OR IGNORE);
violations are compared as a multiset per experiment. The loop appends each event just before the row it binds
where it can, so a crash between them leaves an event the resume repeats, not a row the chain never saw.
"""
from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..store import evaluation_rows_sha256, sha256_text

MISSING = object()  # an event written before this binding existed: that value cannot be compared
FINISHED = ("done", "failed", "timeout", "violation")


@dataclass(frozen=True)
class Spec:
    table: str
    sql: str  # the rows the chain must speak for
    key: Callable[[sqlite3.Row], tuple]
    row: Callable[[sqlite3.Row], dict]
    events: Callable[[str], bool]
    event_key: Callable[[str, dict], tuple]
    event: Callable[[str, dict], dict]
    which: str = "last"  # "last", "first" or "multiset"
    rows_are: str = "rows"  # what a row outside `sql` is called in a message ("done", "finished", ...)


def _get(d: dict, k: str) -> Any:
    return d[k] if k in d else MISSING


def _b(v: Any) -> Any:
    return v if v is MISSING or v is None else bool(v)


def _sha(text: Any) -> str | None:
    return sha256_text(text) if isinstance(text, str) else None


class _Rel:
    """Paths the store holds absolute, compared relative to the run (a copied or forked run moves its root)."""

    def __init__(self, root: Path):
        self.root = root

    def __call__(self, p: Any) -> Any:
        if not isinstance(p, str):
            return p
        path = Path(p)
        if path.is_absolute():
            try:
                return str(path.relative_to(self.root))
            except ValueError:  # a copied run's rows still name the source's folders: compare what follows
                parts = path.parts
                i = max((j for j, x in enumerate(parts) if x == "artifacts"), default=None)
                return str(Path(*parts[i:])) if i is not None else p
        return p


def specs(root: Path) -> list[Spec]:
    rel = _Rel(root)
    stage = lambda e: e.startswith("stage.")  # noqa: E731
    return [
        Spec("stages", "SELECT generation, name, result FROM stages WHERE status='done'",
             lambda r: (r["generation"], r["name"]), lambda r: {"result_sha256": _sha(r["result"])},
             stage, lambda e, d: (d.get("generation"), e[len("stage."):]),
             lambda e, d: {"result_sha256": _get(d, "result_sha256")}, rows_are="done"),
        Spec("generations", "SELECT idx, promoted, champion_model, frontier FROM generations WHERE status='done'",
             lambda r: (r["idx"],),
             lambda r: {"promoted": _b(r["promoted"]), "champion": r["champion_model"], "frontier": r["frontier"]},
             lambda e: e == "generation.end", lambda e, d: (d.get("generation"),),
             lambda e, d: {"promoted": _b(_get(d, "promoted")), "champion": _get(d, "champion"),
                           "frontier": _get(d, "frontier")}, rows_are="done"),
        Spec("generations (start)", "SELECT idx, parent_model, sealed_digest FROM generations",
             lambda r: (r["idx"],), lambda r: {"parent": r["parent_model"], "sealed_digest": r["sealed_digest"]},
             lambda e: e == "generation.start", lambda e, d: (d.get("generation"),),
             lambda e, d: {"parent": _get(d, "champion"), "sealed_digest": _get(d, "sealed_digest")}),
        Spec("gate_decisions", "SELECT * FROM gate_decisions",
             lambda r: (r["generation"], r["candidate_id"]),
             lambda r: {"promoted": _b(r["promoted"]), "reason": r["reason"], "model": r["model"],
                        "role": r["role"], "stats_sha256": _sha(r["stats"])},
             lambda e: e == "gate.decision", lambda e, d: (d.get("generation"), d.get("candidate")),
             lambda e, d: {"promoted": _b(_get(d, "promoted")), "reason": _get(d, "reason"),
                           "model": _get(d, "model"), "role": _get(d, "role"),
                           "stats_sha256": _get(d, "stats_sha256")}),
        Spec("experiments", f"SELECT id, status, model FROM experiments WHERE status IN {FINISHED}",
             lambda r: (r["id"],), lambda r: {"status": r["status"], "model": r["model"]},
             lambda e: e == "experiment.end", lambda e, d: (d.get("experiment"),),
             lambda e, d: {"status": _get(d, "status"), "model": _get(d, "model")}, rows_are="finished"),
        Spec("violations", "SELECT * FROM violations", lambda r: (r["experiment_id"],),
             lambda r: {"generation": r["generation"], "candidate": r["candidate_id"], "kind": r["kind"],
                        "detail": r["detail"]},
             lambda e: e == "violation", lambda e, d: (d.get("experiment"),),
             lambda e, d: {"generation": _get(d, "generation"), "candidate": _get(d, "candidate"),
                           "kind": _get(d, "kind"), "detail": _get(d, "detail")}, which="multiset"),
        Spec("approvals", "SELECT generation, decision, who, note FROM approvals WHERE decision IS NOT NULL",
             lambda r: (r["generation"],), lambda r: {"decision": r["decision"], "who": r["who"], "note": r["note"]},
             lambda e: e in ("approval.approved", "approval.rejected", "approval.applied"),
             lambda e, d: (d.get("generation"),),
             lambda e, d: {"decision": d.get("decision", e.removeprefix("approval.")), "who": _get(d, "who"),
                           "note": _get(d, "note")}, rows_are="decided"),
        Spec("models", "SELECT digest, path, parent, generation, experiment_id FROM models",
             lambda r: (r["digest"],),
             lambda r: {"parent": r["parent"], "generation": r["generation"], "experiment": r["experiment_id"],
                        "path": rel(r["path"])},
             lambda e: e == "model.added", lambda e, d: (d.get("model"),),
             lambda e, d: {"parent": _get(d, "parent"), "generation": _get(d, "generation"),
                           "experiment": _get(d, "experiment"), "path": _get(d, "path")}, which="first"),
        Spec("programs", "SELECT * FROM programs", lambda r: (r["digest"],),
             lambda r: {"candidate": r["candidate_id"], "generation": r["generation"], "git_commit": r["git_commit"],
                        "knobs_sha256": _sha(r["knobs"]), "artifact": rel(r["artifact"])},
             lambda e: e == "program.registered", lambda e, d: (d.get("program"),),
             lambda e, d: {k: _get(d, k) for k in ("candidate", "generation", "git_commit", "knobs_sha256",
                                                   "artifact")}),
    ]


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _key(k: tuple) -> str:
    return "/".join(str(x) for x in k)


def check(db: sqlite3.Connection, records: list[dict], root: Path) -> tuple[list[str], int]:
    """(problems, rows checked): every spec, the evaluations and the data manifests."""
    problems: list[str] = []
    stage_events = [r for r in records if str(r.get("event", "")).startswith("stage.")]
    if stage_events and not any("result_sha256" in (r.get("data") or {}) for r in stage_events):
        return ["lineage.db: not checked against the audit log: the run's events predate store binding (its "
                "stage events carry no result_sha256), so no table row can be verified"], 0
    db.row_factory = sqlite3.Row
    n = 0
    for spec in specs(root):
        try:
            rows = db.execute(spec.sql).fetchall()
        except sqlite3.Error as e:
            if "no such table" in str(e) and not any(spec.events(str(r.get("event"))) for r in records):
                continue  # a store made before that table existed, and a chain that never spoke of it
            problems.append(f"lineage.db: {spec.table}: unreadable ({e})")
            continue
        n += len(rows)
        problems += _compare(spec, rows, records)
    ev, k = _evaluations(db, records)
    dm, m = _manifests(db, records, root)
    tp, t = _tier_parts(db, records)
    return problems + ev + dm + tp, n + k + m + t


def _compare(spec: Spec, rows: list[sqlite3.Row], records: list[dict]) -> list[str]:
    table = spec.table.split(" ")[0]
    said: dict[tuple, list[tuple[dict, dict]]] = defaultdict(list)  # key -> [(record, values)]
    for rec in records:
        e, d = str(rec.get("event")), rec.get("data")
        if spec.events(e) and isinstance(d, dict):
            said[spec.event_key(e, d)].append((rec, spec.event(e, d)))
    have: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        have[spec.key(r)].append(spec.row(r))
    out = []
    for key in sorted(set(have) | set(said), key=repr):
        where = f"lineage.db: {spec.table} {_key(key)}"
        if spec.which == "multiset":
            out += _multiset(where, have.get(key, []), said.get(key, []))
            continue
        if key not in said:
            out.append(f"{where}: not in the audit log (the row was added or changed outside the run)")
            continue
        rec, values = said[key][0 if spec.which == "first" else -1]
        if key not in have:
            out.append(f"{where}: the audit log (seq {rec.get('seq')}, {rec.get('event')}) has it, lineage.db "
                       f"has no {spec.rows_are} row for it (deleted or altered)")
            continue
        row = have[key][0]
        diffs = [f"{c} is {_short(row.get(c))} in {table}, {_short(v)} in the audit log"
                 for c, v in values.items() if v is not MISSING and row.get(c) != v]
        if diffs:
            out.append(f"{where}: " + "; ".join(diffs) + f" (seq {rec.get('seq')}, {rec.get('event')})")
    return out


def _multiset(where: str, rows: list[dict], said: list[tuple[dict, dict]]) -> list[str]:
    freeze = lambda d: tuple(sorted((k, json.dumps(v, sort_keys=True, default=str)) for k, v in d.items()  # noqa
                                    if v is not MISSING))
    a, b = Counter(freeze(r) for r in rows), Counter(freeze(v) for _, v in said)
    out = []
    for f, c in (b - a).items():
        seqs = [str(r.get("seq")) for r, v in said if freeze(v) == f]
        out.append(f"{where}: {c} in the audit log (seq {', '.join(seqs)}: {_show(f)}) missing from "
                   f"lineage.db (deleted)")
    for f, c in (a - b).items():
        out.append(f"{where}: {c} in lineage.db ({_show(f)}) not in the audit log")
    return out


def _show(frozen: tuple) -> str:
    """A violation as `kind: detail` (the rest after), short."""
    d = {k: json.loads(v) for k, v in frozen}
    head = f"{d.pop('kind', '?')}: {d.pop('detail', '')}"
    text = head + "".join(f", {k} {v}" for k, v in d.items())
    return text if len(text) <= 120 else text[:117] + "..."


def _evaluations(db: sqlite3.Connection, records: list[dict]) -> tuple[list[str], int]:
    """Graded items per (model, tier, tier digest): the rows' sha256 must be the last evaluation.saved's."""
    try:
        rows = db.execute("SELECT model, tier, tier_digest, level, n, correct, items FROM evaluations").fetchall()
    except sqlite3.Error as e:
        return [f"lineage.db: evaluations: unreadable ({e})"], 0
    groups: dict[tuple, list[tuple]] = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["tier"], r["tier_digest"])].append((r["level"], r["n"], r["correct"], r["items"]))
    said = {}
    for rec in records:
        d = rec.get("data")
        if rec.get("event") == "evaluation.saved" and isinstance(d, dict):
            said[(d.get("model"), d.get("tier"), d.get("tier_digest"))] = rec
    out = []
    for key in sorted(set(groups) | set(said), key=repr):
        where = f"lineage.db: evaluations {str(key[0])[:12]}/{key[1]}/{str(key[2])[:12]}"
        if key not in said:
            out.append(f"{where}: not in the audit log (the rows were added outside the run)")
        elif key not in groups:
            out.append(f"{where}: the audit log (seq {said[key].get('seq')}) has it, lineage.db has no rows "
                       f"(deleted)")
        elif evaluation_rows_sha256(groups[key]) != said[key]["data"].get("items_sha256"):
            out.append(f"{where}: graded items differ from the audit log's items_sha256 (seq "
                       f"{said[key].get('seq')}): the rows were changed")
    return out, len(rows)


def _manifests(db: sqlite3.Connection, records: list[dict], root: Path) -> tuple[list[str], int]:
    """A curated shard is accepted exactly when its generation was promoted (as generation.end says), and its
    path is the content-addressed file its digest names."""
    try:
        rows = db.execute("SELECT digest, generation, kind, path, accepted FROM data_manifests").fetchall()
    except sqlite3.Error as e:
        return [f"lineage.db: data_manifests: unreadable ({e})"], 0
    ended = {}
    for rec in records:
        d = rec.get("data")
        if rec.get("event") == "generation.end" and isinstance(d, dict):
            ended[d.get("generation")] = (bool(d.get("promoted")), rec.get("seq"))
    out, rel = [], _Rel(root)
    for r in rows:
        where = f"lineage.db: data_manifests {r['digest'][:12]}/{r['generation']}/{r['kind']}"
        if rel(r["path"]) != f"artifacts/data/{r['digest']}.jsonl":
            out.append(f"{where}: path is {_short(r['path'])}, not artifacts/data/{r['digest'][:12]}....jsonl")
        if r["kind"] == "curated" and r["generation"] in ended:
            promoted, seq = ended[r["generation"]]
            if bool(r["accepted"]) != promoted:
                out.append(f"{where}: accepted is {r['accepted']}, but the audit log (seq {seq}, generation.end) "
                           f"says generation {r['generation']} was {'' if promoted else 'not '}promoted")
    return out, len(rows)


def _tier_parts(db: sqlite3.Connection, records: list[dict]) -> tuple[list[str], int]:
    """The ladder's grown parts (the open-ended ladder, rundir.RunDir.grow): each row must be what the last
    `tier.grown` event said of that part (its generation, levels, digest, path and tier digest), and each part an
    event names must have its row. The files against the rows: the workload's verify_artifacts."""
    said: dict[tuple, tuple[dict, dict]] = {}
    for rec in records:
        d = rec.get("data")
        if rec.get("event") == "tier.grown" and isinstance(d, dict) and isinstance(d.get("parts"), dict):
            for tier, p in d["parts"].items():
                if isinstance(p, dict):
                    said[(tier, p.get("part"))] = (rec, {
                        "generation": d.get("generation"), "levels": p.get("levels"), "digest": p.get("digest"),
                        "path": p.get("path"), "tier_digest": p.get("tier_digest")})
    try:
        rows = db.execute("SELECT tier, part, generation, lo, hi, digest, path, tier_digest FROM tier_parts"
                          ).fetchall()
    except sqlite3.Error as e:
        if "no such table" in str(e) and not said:
            return [], 0  # a store made before the ladder, and a chain that never grew one
        return [f"lineage.db: tier_parts: unreadable ({e})"], 0
    out = []
    have = {(r["tier"], r["part"]): {"generation": r["generation"], "levels": [r["lo"], r["hi"]],
                                     "digest": r["digest"], "path": r["path"], "tier_digest": r["tier_digest"]}
            for r in rows}
    for key in sorted(set(have) | set(said), key=repr):
        where = f"lineage.db: tier_parts {_key(key)}"
        if key not in said:
            out.append(f"{where}: not in the audit log (no tier.grown event names it: the row was added outside "
                       f"the run)")
        elif key not in have:
            out.append(f"{where}: the audit log (seq {said[key][0].get('seq')}, tier.grown) has it, lineage.db has "
                       f"no row for it (deleted)")
        else:
            rec, values = said[key]
            diffs = [f"{c} is {_short(have[key][c])} in tier_parts, {_short(v)} in the audit log"
                     for c, v in values.items() if have[key][c] != v]
            if diffs:
                out.append(f"{where}: " + "; ".join(diffs) + f" (seq {rec.get('seq')}, tier.grown)")
    return out, len(rows)
