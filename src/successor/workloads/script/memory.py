"""Research memory for the script workload, read back from the store: what each past candidate changed, what it
scored, how it failed (with its log's tail) and what the gate said; and the champion's weaknesses."""
from __future__ import annotations

import hashlib
import json

import numpy as np

from ... import seeds
from ...researchers.base import Trial
from .patch import allowed
from .program import ProgramRepo

MAX_SOURCE = 40_000  # characters of one allow-listed file shown to a researcher


def program_digest(knobs: dict, commit: str) -> str:
    """A champion is a program version: its commit and its knobs."""
    return hashlib.sha256(json.dumps({"commit": commit, "knobs": knobs}, sort_keys=True).encode()).hexdigest()


def draw_seeds(run_seed: int, g: int, kind: str, n: int) -> list[int]:
    """The seeds the harness draws for a generation: the experiments' and, apart, the gate's."""
    return [int(x) for x in seeds.rng(run_seed, f"script-{kind}", g).integers(2**31 - 1, size=n)]


def seeds_digest(seeds: list[int]) -> str:
    return hashlib.sha256(json.dumps(seeds).encode()).hexdigest()


def brief_sources(repo: ProgramRepo, commit: str, editable: list[str]) -> dict[str, str]:
    out = {}
    for f in repo.files(commit):
        if allowed(f, editable):
            text = repo.read(commit, f)
            out[f] = text if len(text) <= MAX_SOURCE else text[:MAX_SOURCE] + "\n... (truncated)"
    return out


def _log_tail(store, cid: str) -> str:
    row = store.one("SELECT error FROM experiments WHERE candidate_id=? AND status!='done' ORDER BY started DESC "
                    "LIMIT 1", cid)
    return (row["error"] or "")[-1500:] if row else ""


def memory(store) -> list[Trial]:
    """Every past candidate of the run, oldest first (the bootstrap included: it is the first program)."""
    interp = {}
    for r in store.q("SELECT result FROM stages WHERE name='interpret' AND status='done'"):
        interp.update(json.loads(r["result"]))
    out = []
    for r in store.q("SELECT c.id, c.generation, c.recipe, s.diff, s.role, s.researcher, s.refused, d.reason, "
                     "d.promoted FROM candidates c LEFT JOIN script_candidates s ON s.candidate_id=c.id "
                     "LEFT JOIN gate_decisions d ON d.candidate_id=c.id ORDER BY c.generation, c.ordinal"):
        info = interp.get(r["id"], {})
        status = "refused" if r["refused"] else info.get("status", "done" if r["promoted"] else "unknown")
        out.append(Trial(id=r["id"], generation=r["generation"], knobs=json.loads(r["recipe"]), diff=r["diff"],
                         metric=info.get("score"), status=status, error=r["refused"] or info.get("error"),
                         log_tail=_log_tail(store, r["id"]) if status not in ("done", "refused") else "",
                         gate_reason=r["reason"], promoted=bool(r["promoted"]), role=r["role"],
                         researcher=r["researcher"]))
    return out


def gate_values(db, champion: str | None) -> list[float]:
    """A champion's metric on each of the gate seeds it was promoted on (empty: no champion, or tinylm's).
    `db` is an sqlite3 connection whose rows are sqlite3.Row (the store's, or a read-only one)."""
    row = db.execute("SELECT stats FROM gate_decisions WHERE model=? AND promoted=1 ORDER BY generation DESC",
                     (champion,)).fetchone() if champion else None
    return json.loads(row["stats"]).get("contender", []) if row and row["stats"] else []


def weaknesses(store, values: list[float]) -> list[str]:
    """What a researcher should know about the champion beyond its mean: how much seeds move it (`values`, its
    gate runs), and what the last generation's candidates ran into."""
    out = []
    if len(values) > 1:
        out.append(f"seed spread: the champion's metric ranges {min(values):.4g}..{max(values):.4g} over "
                   f"{len(values)} seeds (sd {np.std(values, ddof=1):.3g}); a change smaller than that is noise")
    last = store.one("SELECT MAX(generation) AS g FROM gate_decisions")["g"]
    if last is not None:
        for d in store.q("SELECT candidate_id, reason FROM gate_decisions WHERE generation=? AND promoted=0", last):
            out.append(f"{d['candidate_id']}: {d['reason'][:300]}")
    return out[:8]
