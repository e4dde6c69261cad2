"""Verify a whole run directory offline: the audit chain (and, given a key, its signed head), every artifact
against the digest it is named by and the shape of its folder, every digest the audit log mentions, every
provenance statement, the lineage store against the chain (verify_store.py), and each experiment's log.

Why: artifacts are content-addressed and the audit log is hash-chained, so a run is checkable after the fact
by anyone holding the directory; this is the one place that does all the checks and reports each problem as
one line naming the file or record.
"""
from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import stat
from pathlib import Path
from typing import Any, Iterator

from ..safeio import file_digest
from ..workloads import NAMES, spec
from ..workloads.tinylm import checkpoint
from . import provenance, verify_store
from .audit import losses, read_records, verify

MODEL_KEYS = frozenset({"model", "champion", "successor", "parent", "parent_model"})
SHARD_KEYS = frozenset({"sealed_digest"})  # plus every value of a "tiers" mapping
MODEL_FILES = frozenset({"model.safetensors", "config.json"})
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def is_run_dir(path: Path) -> bool:
    return (Path(path) / "lineage.db").is_file()


def _digest_refs(data: Any, key: str | None = None) -> Iterator[tuple[str, str]]:
    """(kind, digest) for each digest an event's data names: kind is "model" or "shard"."""
    if isinstance(data, dict):
        for k, v in data.items():
            if k == "tiers" and isinstance(v, dict):
                yield from (("shard", d) for d in v.values() if provenance.is_digest(d))
            else:
                yield from _digest_refs(v, k)
    elif isinstance(data, list):
        for v in data:
            yield from _digest_refs(v, key)
    elif provenance.is_digest(data):
        if key in MODEL_KEYS:
            yield "model", data
        elif key in SHARD_KEYS:
            yield "shard", data


class _Run:
    """The run's artifacts, each verified once against the digest in its name."""

    def __init__(self, root: Path):
        self.root = root
        self.models_dir = root / "artifacts" / "models"
        self.shard_dirs = [root / "artifacts" / "data", root / "harness"]
        self.problems: list[str] = []
        self.models: dict[str, bool] = {}  # digest -> verified
        self.shards: dict[str, bool] = {}
        if self.models_dir.is_dir():
            for d in sorted(self.models_dir.iterdir()):
                if d.name.endswith(".tmp"):  # an interrupted copy, never named by anything
                    continue
                self.models[d.name] = self._model_folder(d) and self.check_digest(d, lambda p: checkpoint.digest(p))
        for sd in self.shard_dirs:
            if sd.is_dir():
                for f in sorted(sd.glob("*.jsonl")):
                    ok = self._regular(f)  # a FIFO or a link is never read (a FIFO would hang the digest)
                    self.shards[f.stem] = self.shards.get(f.stem, True) and ok and self.check_digest(f, file_digest)
        for name in NAMES:  # each workload checks what only its runs hold, where this directory holds it
            spec(name).verify_artifacts(self)

    def _regular(self, path: Path) -> bool:
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode):
            self.problems.append(f"{path.relative_to(self.root)}: {_kind(mode)}, not a regular file")
            return False
        return True

    def _model_folder(self, d: Path) -> bool:
        """A model folder holds exactly model.safetensors and config.json, regular files: no links, nothing
        else (whatever else lies there is a candidate's, never the harness's)."""
        rel = d.relative_to(self.root)
        mode = os.lstat(d).st_mode
        if not stat.S_ISDIR(mode):
            self.problems.append(f"{rel}: {_kind(mode)}, not a model folder")
            return False
        bad = []
        for e in sorted(os.scandir(d), key=lambda e: e.name):
            m = e.stat(follow_symlinks=False).st_mode
            if not stat.S_ISREG(m):
                bad.append(f"{e.name!r} ({_kind(m)})")
            elif e.name not in MODEL_FILES:
                bad.append(f"{e.name!r} (an extra file)")
        missing = sorted(MODEL_FILES - {e.name for e in os.scandir(d)})
        if bad or missing:
            self.problems.append(f"{rel}: a model folder holds exactly model.safetensors and config.json as "
                                 f"regular files; it holds " + ", ".join(bad + [f"no {m}" for m in missing]))
            return False
        return True

    def artifact_folder(self, d: Path) -> bool:
        """A script artifact (a file or a tree) holds regular files and folders only: no links, FIFOs, devices."""
        rel, bad = d.relative_to(self.root), []
        if not stat.S_ISDIR(os.lstat(d).st_mode):
            self.problems.append(f"{rel}: {_kind(os.lstat(d).st_mode)}, not an artifact folder")
            return False
        for top, dirs, files in os.walk(d, followlinks=False):
            for name in dirs + files:
                m = os.lstat(os.path.join(top, name)).st_mode
                if not (stat.S_ISREG(m) or stat.S_ISDIR(m)):
                    bad.append(f"{os.path.relpath(os.path.join(top, name), d)} ({_kind(m)})")
        if bad:
            self.problems.append(f"{rel}: holds {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}: an "
                                 f"artifact holds regular files and folders only")
        return not bad

    _artifact_folder = artifact_folder  # the name tests/test_redteam_audit.py knows it by

    def check_digest(self, path: Path, digest_of) -> bool:
        """Does the file or folder at `path` hash (by `digest_of`) to the digest in its name? Says why not."""
        rel = path.relative_to(self.root)
        try:
            actual = digest_of(path)
        except (OSError, ValueError, KeyError) as e:
            self.problems.append(f"{rel}: unreadable ({type(e).__name__}: {e})")
            return False
        if actual != path.name.removesuffix(".jsonl"):
            self.problems.append(f"{rel}: content digest is {actual[:12]}, not the digest in its name")
            return False
        return True

    def patch_problem(self, digest: str) -> str | None:
        """A code patch lives in lineage.db (patches: digest, source); its source must hash to its digest."""
        try:
            db = sqlite3.connect(f"file:{self.root / 'lineage.db'}?mode=ro", uri=True, timeout=30)
            try:
                rows = db.execute("SELECT source FROM patches WHERE digest=?", (digest,)).fetchall()
            finally:
                db.close()
        except sqlite3.Error as e:
            return f"names code patch {digest[:12]}, which lineage.db cannot show ({e})"
        if not rows:
            return f"names code patch {digest[:12]}, which is not in lineage.db"
        if all(hashlib.sha256(r[0].encode()).hexdigest() != digest for r in rows):
            return f"names code patch {digest[:12]}, whose source in lineage.db does not match it"
        return None

    def missing(self, kind: str, digest: str) -> str | None:
        """Why the artifact a record names cannot be trusted, or None if it is present and verified."""
        known = self.models if kind == "model" else self.shards
        if digest not in known:
            where = "artifacts/models" if kind == "model" else "artifacts/data or harness"
            return f"names {kind} {digest[:12]}, which is not in {where}"
        return None if known[digest] else f"names {kind} {digest[:12]}, whose content does not match it"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
                       (stat.S_ISREG, "a file")):
        if test(mode):
            return name
    return "a special file"


def _logs(root: Path, records: list[dict]) -> list[str]:
    """Each finished experiment whose experiment.end carries log_sha256: logs/<exp>.log exists and matches."""
    last: dict[str, dict] = {}
    for rec in records:
        d = rec.get("data")
        if rec.get("event") == "experiment.end" and isinstance(d, dict) and isinstance(d.get("experiment"), str):
            last[d["experiment"]] = d
    out = []
    for exp, d in sorted(last.items()):
        want = d.get("log_sha256")
        if not isinstance(want, str):
            continue
        if not SAFE_NAME.match(exp):
            out.append(f"audit.jsonl: experiment.end names experiment {exp[:40]!r}, not a safe file name")
            continue
        path = root / "logs" / f"{exp}.log"
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            out.append(f"logs/{exp}.log: missing")
            continue
        if not stat.S_ISREG(mode):
            out.append(f"logs/{exp}.log: {_kind(mode)}, not a regular file")
        elif file_digest(path) != want:
            out.append(f"logs/{exp}.log: changed (its sha256 differs from the experiment.end event's)")
    return out


def _relative(root: Path, path: str) -> str:
    p = Path(path)
    return str(p.relative_to(root)) if p.is_absolute() and p.is_relative_to(root) else path


def verify_run(run_dir: Path, key: Path | None = None) -> tuple[bool, list[str]]:
    """(ok, lines): one line per problem, or one "ok: ..." summary line when there are none. With `key` (an
    Ed25519 public key, or the private one), the chain's head must also be signed by it (audit_sign.py)."""
    root = Path(run_dir).resolve()
    if not is_run_dir(root):
        return False, [f"{run_dir}: not a run directory (no lineage.db)"]
    run = _Run(root)
    problems = run.problems
    log = root / "audit.jsonl"
    records: list[dict] = []
    if not log.is_file():
        problems.append("audit.jsonl: missing")
    else:
        ok, msg = verify(log)
        records = read_records(log)
        if not ok:
            lost = losses(log, records)  # the log's own record of what was lost: one line each
            problems += [f"audit.jsonl: {x}" for x in (lost if lost and msg.startswith(lost[0]) else [msg])]

    reported: set[tuple[str, str]] = set()
    written: dict[str, dict] = {}  # provenance path -> its latest provenance.written record
    promoted: dict[int, str] = {}  # generation -> champion, from generation.end
    for rec in records:
        for kind, digest in _digest_refs(rec.get("data")):
            why = run.missing(kind, digest)
            if why and (kind, digest) not in reported:
                reported.add((kind, digest))
                problems.append(f"audit.jsonl: seq {rec.get('seq')} ({rec.get('event')}) {why}")
        data = rec.get("data") if isinstance(rec.get("data"), dict) else {}
        if rec.get("event") == provenance.EVENT and isinstance(data.get("path"), str):
            written[_relative(root, data["path"])] = rec
        if rec.get("event") == "generation.end" and data.get("promoted"):
            promoted[data.get("generation")] = data.get("champion")

    statements = sorted((root / provenance.DIRNAME).glob("gen-*.json"))
    for path in statements:
        problems += [f"{provenance.DIRNAME}/{p}" for p in _check_statement(run, path, written, promoted)]
    for rel, rec in sorted(written.items()):
        if not (root / rel).is_file():
            problems.append(f"audit.jsonl: seq {rec.get('seq')} ({provenance.EVENT}) names {rel}, which is missing")

    problems += _logs(root, records)
    for name in NAMES:  # the records only one workload writes (e.g. tinylm's fresh sealed samples)
        hook = getattr(spec(name), "verify_records", None)
        problems += hook(root, records) if hook and records else []
    n_rows = 0
    try:
        db = sqlite3.connect(f"file:{root / 'lineage.db'}?mode=ro", uri=True, timeout=30)
        try:
            store_problems, n_rows = verify_store.check(db, records, root)
        finally:
            db.close()
        problems += store_problems
    except sqlite3.Error as e:
        problems.append(f"lineage.db: unreadable ({e})")
    anchor = _anchor(log, records, key, problems)

    if problems:
        return False, problems
    n_artifacts = len(run.models) + len(run.shards)
    return True, [f"ok: {len(records)} events, {n_artifacts} artifacts, {len(statements)} provenance statements, "
                  f"{n_rows} store rows verified; {anchor}"]


def _anchor(log: Path, records: list[dict], key: Path | None, problems: list[str]) -> str:
    """How the head is anchored: checked against `key`, or said to be unanchored."""
    keys = [r["data"]["audit_key"] for r in records if r.get("event") in ("run.start", "run.resume")
            and isinstance(r.get("data"), dict) and isinstance(r["data"].get("audit_key"), str)]
    if key is None:
        hint = f" (the run signed with key {keys[-1][:16]}: pass --key)" if keys else ""
        return f"head not anchored (no --key){hint}"
    from . import audit_sign

    try:
        pub = audit_sign.load_public(key)
    except ValueError as e:
        problems.append(f"--key: {e}")
        return ""
    found, summary = audit_sign.check(log, pub, records)
    problems += found
    return summary


def _check_statement(run: _Run, path: Path, written: dict[str, dict], promoted: dict[int, str]) -> list[str]:
    """A statement must be well formed, match the digest the audit log recorded for it, and name artifacts
    that exist with the right digests."""
    rel = str(path.relative_to(run.root))
    out = [p.removeprefix(f"{path.name}: ") for p in provenance.check(path)]
    rec = written.get(rel)
    if rec is None:
        out.append("not recorded in the audit log (no provenance.written event)")
    elif rec["data"].get("sha256") != hashlib.sha256(path.read_bytes()).hexdigest():
        out.append(f"sha256 differs from audit seq {rec.get('seq')} (the file was changed after it was written)")
    try:
        stmt = provenance.load(path)
    except ValueError:
        stmt = None
    if not isinstance(stmt, dict):  # check() has said why
        return [f"{path.name}: {p}" for p in out]
    subject = provenance.subject_digest(stmt)
    refs = [("model", subject, "subject")]
    pred = stmt.get("predicate") if isinstance(stmt.get("predicate"), dict) else {}
    parent = (pred.get("parent") or {}).get("sha256") if isinstance(pred.get("parent"), dict) else None
    refs.append(("model", parent, "parent"))
    refs += [("shard", d, "input") for d in provenance.input_digests(stmt)]
    sealed = (pred.get("run") or {}).get("sealed_tier_sha256") if isinstance(pred.get("run"), dict) else None
    refs.append(("shard", sealed, "sealed tier"))
    for kind, digest, role in refs:
        if provenance.is_digest(digest):
            why = run.missing(kind, digest)
            if why:
                out.append(f"{role} {why}")
    inputs = pred.get("inputs") if isinstance(pred.get("inputs"), dict) else {}
    patch = (inputs.get("code_patch") or {}).get("sha256") if isinstance(inputs.get("code_patch"), dict) else None
    if provenance.is_digest(patch):
        why = run.patch_problem(patch)
        if why:
            out.append(f"code_patch {why}")
    g = pred.get("generation")
    if g in promoted and promoted[g] != subject:
        out.append(f"subject {str(subject)[:12]} is not generation {g}'s champion {str(promoted[g])[:12]} "
                   f"in the audit log")
    return [f"{path.name}: {p}" for p in out]
