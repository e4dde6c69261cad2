"""The audit log: append-only JSON lines, each carrying the hash of the one before (a hash chain).

Editing, dropping or reordering any line breaks every hash after it, which `verify` reports.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

GENESIS = "0" * 64


def _hash(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class AuditLog:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.touch(exist_ok=True)
        self._repair_torn_tail()
        last = self._last()
        self.seq = last["seq"] + 1 if last else 0
        self.prev = last["hash"] if last else GENESIS

    def _repair_torn_tail(self) -> None:
        """A kill -9 can leave half a line; drop it (it was never acknowledged) and say so in the log."""
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)
            self._torn = len(data) - cut
        else:
            self._torn = 0

    def _last(self) -> dict | None:
        lines = self.path.read_bytes().splitlines()
        return json.loads(lines[-1]) if lines else None

    def append(self, event: str, **data) -> dict:
        if self._torn:
            torn, self._torn = self._torn, 0
            self.append("audit.torn_tail_dropped", bytes=torn)
        rec = {"seq": self.seq, "time": round(time.time(), 3), "event": event, "data": data, "prev": self.prev}
        rec["hash"] = _hash(rec)
        with open(self.path, "a") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.seq, self.prev = self.seq + 1, rec["hash"]
        return rec


def verify(path: Path) -> tuple[bool, str]:
    """(ok, message): checks every line's hash and its link to the line before."""
    prev, n = GENESIS, 0
    for i, line in enumerate(Path(path).read_text().splitlines()):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            return False, f"line {i + 1}: not JSON"
        if rec.get("prev") != prev or rec.get("seq") != i:
            return False, f"line {i + 1}: chain broken (a line was removed, inserted or reordered)"
        if _hash(rec) != rec.get("hash"):
            return False, f"line {i + 1}: hash mismatch (the line was edited)"
        prev, n = rec["hash"], n + 1
    return True, f"{n} events, chain intact"
