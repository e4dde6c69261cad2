"""The probes' one way to load a model of a finished run: the champion of one of its generations, as data."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from successor.workloads.tinylm import checkpoint
from successor.workloads.tinylm.model import TinyLM


def champion_of(run: Path, generation: int) -> tuple[str, TinyLM]:
    """The champion after `generation` of the run in `run`, with its digest; exits with one line where there is
    none."""
    db = sqlite3.connect(f"file:{Path(run) / 'lineage.db'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT champion_model FROM generations WHERE idx=?", (generation,)).fetchone()
    finally:
        db.close()
    if row is None or row[0] is None:
        raise SystemExit(f"generation {generation} of {run} has no champion")
    return row[0], checkpoint.load(Path(run) / "artifacts" / "models" / row[0])
