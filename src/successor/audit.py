"""The audit log: append-only JSON lines, each carrying the hash of the one before (a hash chain).

Editing, dropping or reordering any line breaks every hash after it, which `verify` reports. A chain alone
cannot show that records were cut off the END (the shorter log is still a valid chain), so every append also
writes `audit.head` next to the log (the last seq and hash, written atomically: tmp + os.replace) and `verify`
compares the log's last record with it.

More than one process appends (the run, and `successor stop`/`approve`): every append holds an exclusive
`fcntl.flock` on the log file while it reads the current tail and writes, so seq/prev always continue the
chain as it is on disk, never as this process last saw it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

GENESIS = "0" * 64


def _hash(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _line(record: dict) -> str:
    """The one serialisation a record has on disk; `verify` insists on it, so no byte can change unseen."""
    return json.dumps(record, sort_keys=True)


def head_path(path: Path) -> Path:
    return Path(path).with_suffix(".head")


# -- low-level tail access on a locked descriptor (the log can be large: never read it whole to append) -------
def _rfind_newline(fd: int, end: int) -> int:
    """Offset of the last b"\\n" before `end`, or -1."""
    pos = end
    while pos > 0:
        step = min(1 << 16, pos)
        pos -= step
        i = os.pread(fd, step, pos).rfind(b"\n")
        if i >= 0:
            return pos + i
    return -1


def _cut_torn_tail(fd: int) -> int:
    """A kill -9 can leave half a line; drop it (it was never acknowledged). Returns the bytes dropped."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return 0
    cut = _rfind_newline(fd, size) + 1
    os.ftruncate(fd, cut)
    return size - cut


def _last_record(fd: int) -> dict | None:
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    start = _rfind_newline(fd, size - 1) + 1
    return json.loads(os.pread(fd, size - 1 - start, start))


def _read_head(path: Path) -> dict | None:
    try:
        return json.loads(head_path(path).read_text())
    except (OSError, ValueError):
        return None


def _write_head(path: Path, seq: int, digest: str) -> None:
    head = head_path(path)
    tmp = head.with_name(head.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps({"hash": digest, "seq": seq}, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, head)


def _head_agrees(head: dict | None, last: dict | None) -> bool:
    """The head names the last record, or the one before it (a crash between writing a line and its head)."""
    if last is None:
        return head is None
    if head is None:
        return False
    return (head.get("seq"), head.get("hash")) in ((last["seq"], last["hash"]), (last["seq"] - 1, last["prev"]))


class AuditLog:
    def __init__(self, path: Path):
        self.path = Path(path)
        with self._locked() as fd:
            self._torn = _cut_torn_tail(fd)  # recorded by the next append, as before
            last = _last_record(fd)
        self.seq = last["seq"] + 1 if last else 0
        self.prev = last["hash"] if last else GENESIS

    @contextmanager
    def _locked(self) -> Iterator[int]:
        """A fresh descriptor per use: flock is per open file, so threads and processes exclude each other."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    def append(self, event: str, **data) -> dict:
        """Append one record (plus any repair notes) under the lock; returns the record for `event`."""
        with self._locked() as fd:
            torn, self._torn = self._torn + _cut_torn_tail(fd), 0
            last = _last_record(fd)
            notes: list[tuple[str, dict]] = []
            if torn:
                notes.append(("audit.torn_tail_dropped", {"bytes": torn}))
            head = _read_head(self.path)
            if not _head_agrees(head, last):  # the log was cut or the head lost: say so inside the chain
                notes.append(("audit.head_mismatch", {
                    "head_seq": (head or {}).get("seq"), "head_hash": (head or {}).get("hash"),
                    "tail_seq": last["seq"] if last else None, "tail_hash": last["hash"] if last else None}))
            seq, prev = (last["seq"] + 1, last["hash"]) if last else (0, GENESIS)
            out = []
            for ev, d in notes + [(event, data)]:
                rec = {"seq": seq, "time": round(time.time(), 3), "event": ev, "data": d, "prev": prev}
                rec["hash"] = _hash(rec)
                out.append(_line(rec) + "\n")
                seq, prev = seq + 1, rec["hash"]
            buf = memoryview("".join(out).encode())
            while buf:
                buf = buf[os.write(fd, buf):]
            os.fsync(fd)
            _write_head(self.path, rec["seq"], rec["hash"])
        self.seq, self.prev = seq, prev
        return rec


def read_records(path: Path) -> list[dict]:
    """Every line that parses as a JSON object, verified or not (for tools that scan events)."""
    out = []
    for raw in Path(path).read_bytes().split(b"\n"):
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def verify(path: Path) -> tuple[bool, str]:
    """(ok, message). The message names the FIRST bad record by line number and seq.

    Checks every line is JSON in its canonical form (so even a whitespace byte counts), links to the line
    before (seq and prev: catches removed, inserted and reordered lines) and matches its own hash (catches
    edits). Then compares the last record with `audit.head`, which catches records removed from the end.
    """
    path = Path(path)
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    prev, last = GENESIS, None
    for i, line in enumerate(lines):
        where = f"line {i + 1} (seq {i})"
        try:
            rec = json.loads(line)
        except ValueError:
            return False, f"{where}: not JSON"
        if not isinstance(rec, dict):
            return False, f"{where}: not a record"
        where = f"line {i + 1} (seq {rec.get('seq')})"
        if rec.get("prev") != prev or rec.get("seq") != i:
            return False, (f"{where}: chain broken, expected seq {i} after the hash of line {i} "
                           f"(a line was removed, inserted or reordered)")
        if _hash(rec) != rec.get("hash"):
            return False, f"{where}: hash mismatch (the line was edited)"
        if line.decode("utf-8", "replace") != _line(rec):
            return False, f"{where}: bytes differ from the record's canonical form (the line was edited)"
        prev, last = rec["hash"], rec
    if raw and not raw.endswith(b"\n"):
        return False, f"line {len(lines)}: no newline at the end (a torn write)"
    ok, msg = _check_head(path, last)
    return (True, f"{len(lines)} events, chain intact") if ok else (False, msg)


def _check_head(path: Path, last: dict | None) -> tuple[bool, str]:
    hp = head_path(path)
    if not hp.exists():
        return (True, "") if last is None else (
            False, f"{hp.name} missing: cannot rule out records removed from the end (log ends at seq "
                   f"{last['seq']})")
    head = _read_head(path)
    if not isinstance(head, dict) or not isinstance(head.get("seq"), int):
        return False, f"{hp.name}: unreadable"
    if last is None:
        return False, f"{hp.name} says seq {head['seq']} but the log is empty (records removed)"
    if head["seq"] > last["seq"]:
        return False, (f"{hp.name} says seq {head['seq']} but the log ends at seq {last['seq']} "
                       f"(records removed from the end)")
    if _head_agrees(head, last):
        return True, ""
    if head["seq"] in (last["seq"], last["seq"] - 1):
        return False, f"{hp.name}: hash at seq {head['seq']} does not match the log (the log was rewritten)"
    return False, (f"{hp.name} says seq {head['seq']} but the log continues to seq {last['seq']} "
                   f"(records appended without the audit log)")
