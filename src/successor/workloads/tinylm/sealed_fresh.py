"""A fresh sealed sample per generation (`gate.sealed: fresh`), and the check `audit verify` makes of each.

Why: the sealed tier is drawn once, when the run is created, so every later gate reads the same items; a lineage
that drifts toward them (through the gate's own decisions) would be judged on items it has, in effect, been
selected on. Tasks here are generated, so nothing forces the reuse. In fresh mode each generation's evaluate stage,
once its candidates are trained and fixed, draws its own sample of every level the sealed tier holds
(`sealed_per_level` each) from the tier key's stream `sealed-fresh` with the generation; the `sealed.drawn` event
commits to its digest before any model is graded on it, and evaluate and the gate read it alone.

`audit verify` checks each drawn sample three ways: its file holds what its digest names (the shared shard check),
no grading of it precedes its event, and drawn again from the run's tier key it gives the same bytes (so the
sample was drawn, not chosen among draws). Light on purpose: verify imports it without torch.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from .data import labelled, secret_rng, shard_bytes
from .tasks import Problem, get_task

EVENT = "sealed.drawn"
STREAM = "sealed-fresh"


def draw(task_name: str, key: bytes, g: int, last: int, per_level: int) -> list[tuple[Problem, str]]:
    """Generation g's sample: levels 1..last, `per_level` each, from the key's `sealed-fresh` stream with g."""
    return labelled(get_task(task_name), list(range(1, last + 1)), per_level, secret_rng(key, STREAM, g))


def problems(root: Path, records: list[dict]) -> list[str]:
    """verify_run's lines for every `sealed.drawn` event: graded before it was drawn, or not what the key draws."""
    drawn = [(r.get("seq"), r["data"]) for r in records
             if r.get("event") == EVENT and isinstance(r.get("data"), dict)]
    if not drawn:
        return []
    out, first_seen = [], {}
    for r in records:
        d = r.get("data") if isinstance(r.get("data"), dict) else {}
        if r.get("event") == "evaluation.saved" and isinstance(d.get("tier_digest"), str):
            first_seen.setdefault(d["tier_digest"], r.get("seq"))
    key, task, why_not = _key_and_task(root)
    for seq, d in drawn:
        digest, g = d.get("sealed_digest"), d.get("generation")
        where = f"audit.jsonl: seq {seq} ({EVENT}, generation {g})"
        graded = first_seen.get(digest)
        if isinstance(graded, int) and isinstance(seq, int) and graded < seq:
            out.append(f"{where}: its sample was graded at seq {graded}, before it was drawn")
        try:
            last, per = int(d["levels"][1]), int(d["per_level"])
            g = int(g)
        except (KeyError, IndexError, TypeError, ValueError):
            out.append(f"{where}: does not say its generation, levels and per_level")
            continue
        if key is None:
            out.append(f"{where}: cannot be drawn again ({why_not})")
            continue
        again = hashlib.sha256(shard_bytes(draw(task, key, g, last, per))).hexdigest()
        if again != digest:
            out.append(f"{where}: drawn again from the tier key it is {again[:12]}, not the recorded "
                       f"{str(digest)[:12]}")
    return out


def _key_and_task(root: Path) -> tuple[bytes | None, str, str]:
    """The run's tier key and task name, or None and why not."""
    import yaml

    from ...config import ConfigError
    from ...tierkey import KEY_BYTES, TIER_KEY, _read_key

    try:
        task = str(yaml.safe_load((root / "config.yaml").read_text())["task"]["name"])
    except (OSError, KeyError, TypeError, yaml.YAMLError) as e:
        return None, "", f"config.yaml unreadable: {e}"
    try:
        key = _read_key(root / "harness" / TIER_KEY)
    except ConfigError as e:
        return None, task, str(e)
    return (key, task, "") if len(key) == KEY_BYTES else (None, task, "the tier key is malformed")
