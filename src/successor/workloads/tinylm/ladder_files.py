"""The open-ended ladder's files: a tier's manifest (one JSON line per part, named by its digest), and the check
`audit verify` makes of every grown part (each part's file against the digest its row records, each manifest
against the parts it lists). Light on purpose: verify imports it without torch."""
from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from pathlib import Path

PART_PATH = re.compile(r"^(harness|artifacts/data)/([0-9a-f]{64})\.jsonl$")
FIRST_LEVEL = 1


def manifest_lines(name: str, parts: list[tuple[str, tuple[int, int]]]) -> bytes:
    """A tier's ladder manifest: (digest, (lo, hi)) per part, first to last. Its sha256 is the tier's digest
    once it has more than one part (rundir.Tier.digest_now)."""
    return "".join(json.dumps({"tier": name, "part": i, "digest": d, "levels": list(lv)}, sort_keys=True) + "\n"
                   for i, (d, lv) in enumerate(parts)).encode()


def write_named(data: bytes, directory: Path) -> str:
    """Write bytes as `<sha256>.jsonl` in `directory` (once: the same content twice is a no-op); the digest."""
    digest = hashlib.sha256(data).hexdigest()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{digest}.jsonl"
    if not path.exists():
        tmp = path.with_name(f".{digest}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return digest


def check_parts(run) -> None:
    """verify_run's check of the ladder (`run`: oversight/verify.py's `_Run`, whose `shards` already say which
    files match the digest in their name): each grown part's file is where its row says and holds what its digest
    names, and each row's tier digest is the manifest of the tier's parts up to it, present and unaltered. The
    rows against the `tier.grown` events: verify_store."""
    db_path = run.root / "lineage.db"
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
        try:
            rows = db.execute("SELECT tier, part, generation, lo, hi, digest, path, tier_digest FROM tier_parts "
                              "ORDER BY tier, part").fetchall()
            first = dict(db.execute("SELECT key, value FROM meta WHERE key LIKE 'tier.%'").fetchall())
            cfg_max = _eval_max_level(run.root)
        finally:
            db.close()
    except sqlite3.Error:
        return  # no ladder table (a run made before the ladder, or a script run): nothing grown to check
    parts: dict[str, list[tuple[str, tuple[int, int]]]] = {}
    for tier, part, gen, lo, hi, digest, path, tier_digest in rows:
        what = f"lineage.db: tier_parts {tier}/{part} (levels {lo}-{hi}, grown at generation {gen})"
        if tier not in parts:
            if f"tier.{tier}" not in first or cfg_max is None:
                run.problems.append(f"{what}: the tier's first part is not recorded (meta tier.{tier})")
                continue
            parts[tier] = [(first[f"tier.{tier}"], (FIRST_LEVEL, cfg_max))]
        parts[tier].append((digest, (lo, hi)))
        m = PART_PATH.match(str(path))
        if m is None or m.group(2) != digest:
            run.problems.append(f"{what}: path {str(path)[:80]!r} is not harness/ or artifacts/data/ "
                                f"<its digest>.jsonl")
            continue
        if part != len(parts[tier]) - 1:
            run.problems.append(f"{what}: parts of the tier are not numbered in order")
        f = run.root / path
        if not os.path.lexists(f):
            run.problems.append(f"{path}: missing (tier {tier} part {part}, levels {lo}-{hi}, digest {digest[:12]})")
        elif not run.shards.get(digest):
            run.problems.append(f"{path}: altered (tier {tier} part {part}, levels {lo}-{hi}: its content does not "
                                f"hash to its recorded digest {digest[:12]})")
        want = hashlib.sha256(manifest_lines(tier, parts[tier])).hexdigest()
        manifest = f.parent / f"{tier_digest}.jsonl"
        if tier_digest != want:
            run.problems.append(f"{what}: tier digest {str(tier_digest)[:12]} is not the manifest of its parts "
                                f"({want[:12]})")
        elif not os.path.lexists(manifest):
            run.problems.append(f"{manifest.relative_to(run.root)}: missing (tier {tier}'s ladder manifest up to "
                                f"part {part})")
        elif not run.shards.get(tier_digest):
            run.problems.append(f"{manifest.relative_to(run.root)}: altered (tier {tier}'s ladder manifest up to "
                                f"part {part})")


def _eval_max_level(root: Path) -> int | None:
    """The first parts' last level: the run's task.eval_max_level, as its config.yaml records it."""
    import yaml

    try:
        cfg = yaml.safe_load((root / "config.yaml").read_text())
        return int(cfg["task"]["eval_max_level"])
    except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError):
        return None
