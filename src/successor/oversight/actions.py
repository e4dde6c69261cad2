"""A human's actions on a run: approve or reject a paused promotion, and stop. One code path for the CLI and
the dashboard, so a decision made in the browser is recorded exactly as one made in a shell."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from ..store import Store
from .audit import AuditLog
from .stop import stop_run

__all__ = ["decide", "stop_run"]


def decide(run_dir: Path, generation: int, decision: Literal["approved", "rejected"], who: str,
           note: str | None, via: str = "cli") -> str:
    """Record the decision in the store and the audit log; a run waiting on it goes on at once. Raises ValueError
    when that generation has no promotion waiting (none, or already decided), or a rejection has no reason."""
    if decision not in ("approved", "rejected"):
        raise ValueError(f"a decision is approved or rejected, not {decision!r}")
    if decision == "rejected" and not (note or "").strip():
        raise ValueError("a rejection needs a reason")
    if not (who or "").strip():
        raise ValueError("the decision needs a name to record (who)")
    run_dir = Path(run_dir)
    store = Store(run_dir / "lineage.db")
    try:
        store.decide_approval(generation, decision, who, note)
    finally:
        store.close()
    AuditLog(run_dir / "audit.jsonl").append(f"approval.{decision}", generation=generation, who=who, note=note,
                                             via=via)
    return (f"generation {generation}: {decision} by {who}; a waiting run goes on at once, a stopped one when it "
            f"is re-run")
