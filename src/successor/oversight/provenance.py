"""Provenance statements: one file per promotion saying what the new champion is and what made it.

Modelled on an in-toto Statement v1 (subject = the promoted checkpoint's digest) with a SLSA-provenance-like
predicate (its parent, data, recipe, code patch, the gate's statistics, who approved it, and the run's
config/policy/sealed-tier digests), so a reader can check a model's history without the lineage database.

Use at each promotion (the loop):

    stmt = provenance.statement(generation=g, model=successor_digest, parent=champion_digest,
                                data={"human": [d0], "newest": [d1], "older": []}, recipe=recipe.model_dump(),
                                code_patch=None, gate=stats, approver_mode="auto", approver_who="gate",
                                approved_at=time.time(), config_sha256=..., policy_sha256=...,
                                sealed_tier_sha256=run.tiers["sealed"].digest)
    path, digest = provenance.record(run.root, run.audit, g, stmt)   # write + audit "provenance.written"

The file is only tamper-evident through that audit event (its sha256 is in the hash chain): `verify_run`
compares each file with the latest `provenance.written` event naming it. Rewriting a generation's statement
(a resumed promotion) is fine as long as a new event is appended.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://successor.dev/promotion/v1"
EVENT = "provenance.written"
DIRNAME = "provenance"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"gen-(\d+)\.json")


def is_digest(value: Any) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def path_for(run_root: Path, generation: int) -> Path:
    return Path(run_root) / DIRNAME / f"gen-{generation}.json"


def _plain(value: Any) -> Any:
    """Gate statistics may hold numpy scalars; a statement is plain JSON."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def statement(*, generation: int, model: str, parent: str | None, data: Mapping[str, Iterable[str]],
              recipe: Mapping[str, Any], code_patch: str | None, gate: Mapping[str, Any], approver_mode: str,
              approver_who: str, approved_at: float, config_sha256: str | None, policy_sha256: str | None,
              sealed_tier_sha256: str | None) -> dict:
    """The statement for promoting `model` in `generation` (pure: the caller supplies the time).

    `data` maps an input kind (human, newest, older, curated...) to the shard digests of that kind, in order.
    Raises ValueError on a malformed statement, so a bad one is never written.
    """
    stmt = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": "model", "digest": {"sha256": model}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "generation": generation,
            "parent": {"sha256": parent},
            "inputs": {
                "data": [{"name": kind, "digest": {"sha256": d}} for kind, ds in data.items() for d in ds],
                "recipe": dict(recipe),
                "code_patch": {"sha256": code_patch},
            },
            "gate": dict(gate),
            "approver": {"mode": approver_mode, "who": approver_who, "time": float(approved_at)},
            "run": {"config_sha256": config_sha256, "policy_sha256": policy_sha256,
                    "sealed_tier_sha256": sealed_tier_sha256},
        },
    }
    stmt = json.loads(json.dumps(stmt, default=_plain))
    problems = problems_in(stmt)
    if problems:
        raise ValueError("provenance statement: " + "; ".join(problems))
    return stmt


def to_bytes(stmt: dict) -> bytes:
    return (json.dumps(stmt, indent=2, sort_keys=True) + "\n").encode()


def write(run_root: Path, generation: int, stmt: dict) -> tuple[Path, str]:
    """Write run_root/provenance/gen-<g>.json atomically; returns (path, sha256 of the file's bytes)."""
    problems = problems_in(stmt, generation)
    if problems:
        raise ValueError("provenance statement: " + "; ".join(problems))
    path = path_for(run_root, generation)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = to_bytes(stmt)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path, hashlib.sha256(data).hexdigest()


def record(run_root: Path, audit, generation: int, stmt: dict) -> tuple[Path, str]:
    """`write`, then append the `provenance.written` audit event that makes the file tamper-evident."""
    path, digest = write(run_root, generation, stmt)
    audit.append(EVENT, generation=generation, path=str(path.relative_to(Path(run_root))), sha256=digest,
                 model=subject_digest(stmt))
    return path, digest


def subject_digest(stmt: dict) -> str | None:
    try:
        return stmt["subject"][0]["digest"]["sha256"]
    except (KeyError, IndexError, TypeError):
        return None


def input_digests(stmt: dict) -> list[str]:
    """Every shard digest the statement names as an input (for existence checks)."""
    try:
        return [d["digest"]["sha256"] for d in stmt["predicate"]["inputs"]["data"]]
    except (KeyError, TypeError):
        return []


def problems_in(stmt: Any, generation: int | None = None) -> list[str]:
    """What is malformed in a statement (structure and digest formats, not whether the artifacts exist)."""
    if not isinstance(stmt, dict):
        return ["not a JSON object"]
    out = []
    if stmt.get("_type") != STATEMENT_TYPE:
        out.append(f"_type is {stmt.get('_type')!r}, not {STATEMENT_TYPE}")
    if stmt.get("predicateType") != PREDICATE_TYPE:
        out.append(f"predicateType is {stmt.get('predicateType')!r}, not {PREDICATE_TYPE}")
    subj = stmt.get("subject")
    if not (isinstance(subj, list) and len(subj) == 1 and isinstance(subj[0], dict)
            and subj[0].get("name") == "model" and is_digest(subject_digest(stmt))):
        out.append("subject must be one {name: model, digest: {sha256: <64 hex>}}")
    p = stmt.get("predicate")
    if not isinstance(p, dict):
        return out + ["predicate missing"]
    g = p.get("generation")
    if not isinstance(g, int) or isinstance(g, bool) or g < 0:
        out.append(f"predicate.generation is {g!r}, not a generation number")
    elif generation is not None and g != generation:
        out.append(f"predicate.generation is {g}, but the statement is for generation {generation}")
    out += _optional_digest(p, ("parent", "sha256"))
    inputs = p.get("inputs")
    if not isinstance(inputs, dict):
        out.append("predicate.inputs missing")
    else:
        data = inputs.get("data")
        if not isinstance(data, list) or not all(
                isinstance(d, dict) and isinstance(d.get("name"), str) and is_digest((d.get("digest") or {})
                                                                                    .get("sha256")) for d in data):
            out.append("predicate.inputs.data must be a list of {name, digest: {sha256: <64 hex>}}")
        if not isinstance(inputs.get("recipe"), dict):
            out.append("predicate.inputs.recipe must be an object")
        out += _optional_digest(inputs, ("code_patch", "sha256"), "predicate.inputs")
    if not isinstance(p.get("gate"), dict):
        out.append("predicate.gate must be an object (the gate's statistics)")
    a = p.get("approver")
    if not (isinstance(a, dict) and a.get("mode") in ("auto", "manual") and isinstance(a.get("who"), str)
            and isinstance(a.get("time"), (int, float)) and not isinstance(a.get("time"), bool)):
        out.append("predicate.approver must be {mode: auto|manual, who: str, time: float}")
    run = p.get("run")
    if not isinstance(run, dict):
        out.append("predicate.run missing")
    else:
        for key in ("config_sha256", "policy_sha256", "sealed_tier_sha256"):
            if key not in run or not (run[key] is None or is_digest(run[key])):
                out.append(f"predicate.run.{key} must be a 64-hex sha256 or null")
    return out


def _optional_digest(obj: dict, keys: tuple[str, str], where: str = "predicate") -> list[str]:
    outer, inner = keys
    value = obj.get(outer)
    if not isinstance(value, dict) or inner not in value or not (value[inner] is None or is_digest(value[inner])):
        return [f"{where}.{outer}.{inner} must be a 64-hex sha256 or null"]
    return []


def load(path: Path) -> dict:
    return json.loads(Path(path).read_bytes())


def check(path: Path) -> list[str]:
    """Problems with one statement file, each naming the file: unreadable, malformed, or named for another
    generation. (Whether its subject and inputs exist with the right digests is `verify_run`'s job.)"""
    path = Path(path)
    m = _NAME.fullmatch(path.name)
    try:
        stmt = load(path)
    except (OSError, ValueError) as e:
        return [f"{path.name}: unreadable: {e}"]
    return [f"{path.name}: {p}" for p in problems_in(stmt, int(m.group(1)) if m else None)] + (
        [] if m else [f"{path.name}: not named gen-<generation>.json"])
