"""The audit log: append-only JSON lines, each carrying the hash of the one before (a hash chain).

Editing, dropping or reordering any line breaks every hash after it, which `verify` reports. A chain alone
cannot show that records were cut off the END (the shorter log is still a valid chain), so every append also
writes `audit.head` next to the log (the last seq and hash, written atomically: tmp + os.replace) and `verify`
compares the log's last record with it.

More than one process appends (the run, and `successor stop`/`approve`): every append holds an exclusive
`fcntl.flock` on the log file while it reads the current tail and writes, so seq/prev always continue the
chain as it is on disk, never as this process last saw it.

A half-written last line (a crash mid-write) is cut by the next append, but never silently: the bytes are kept
(`audit.torn/<seq>.bin`, and their first 4 KiB, length and sha256 in an `audit.torn_tail_dropped` note), and
`verify` fails on that note, and on an `audit.head_mismatch` note (the log was cut or its head lost), until a
human acknowledges it in the log (`audit.acknowledged`, `successor audit ack`). With a signer (audit_sign.py),
every append also signs the new head into `audit.sig`, which anchors the chain outside the run.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

GENESIS = "0" * 64
NOTES = ("audit.torn_tail_dropped", "audit.head_mismatch")  # losses a human must acknowledge
ACK = "audit.acknowledged"
TORN_NOTE_BYTES = 4096  # the note keeps the fragment's head; the copy file keeps up to TORN_COPY_MAX
TORN_COPY_MAX = 64 << 20
_EVENT_IN_FRAGMENT = re.compile(rb'\}, "event": "((?:[^"\\]|\\.){1,200})"')


def _hash(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _line(record: dict) -> str:
    """The one serialisation a record has on disk; `verify` insists on it, so no byte can change unseen."""
    return json.dumps(record, sort_keys=True)


def head_path(path: Path) -> Path:
    return Path(path).with_suffix(".head")


def torn_dir(path: Path) -> Path:
    return Path(path).with_suffix(".torn")


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


def _complete_end(fd: int) -> int:
    """The offset just past the last complete line (a torn tail, if any, lies from here to the end)."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    return _rfind_newline(fd, size) + 1


def _last_record(fd: int, end: int) -> dict | None:
    """The last complete record before `end`."""
    if end == 0:
        return None
    start = _rfind_newline(fd, end - 1) + 1
    return json.loads(os.pread(fd, end - 1 - start, start))


def _keep_torn(fd: int, path: Path, start: int, seq: int) -> dict:
    """Copy the torn tail [start, EOF) to audit.torn/<seq>.bin (fsynced before the log is cut) and describe it
    for the note: length, sha256, its first bytes, and the event name if the fragment got that far."""
    size = os.fstat(fd).st_size
    h, pos, head = hashlib.sha256(), start, b""
    found: list[bytes] = []
    folder = torn_dir(path)
    folder.mkdir(exist_ok=True)
    copy = folder / f"{seq}.bin"
    out = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        while pos < size:
            chunk = os.pread(fd, min(1 << 20, size - pos), pos)
            if not chunk:
                break
            h.update(chunk)
            if pos - start < TORN_COPY_MAX:
                os.write(out, chunk[:TORN_COPY_MAX - (pos - start)])
            if len(head) < TORN_NOTE_BYTES:
                head += chunk[:TORN_NOTE_BYTES - len(head)]
            found += _EVENT_IN_FRAGMENT.findall(chunk)
            pos += len(chunk)
        os.fsync(out)
    finally:
        os.close(out)
    event = found[-1].decode("utf-8", "replace") if found else None  # the record's own, after its data
    return {"bytes": size - start, "sha256": h.hexdigest(), "copied": min(size - start, TORN_COPY_MAX),
            "copy": f"{folder.name}/{copy.name}", "head_b64": base64.b64encode(head).decode(), "event": event}


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
    def __init__(self, path: Path, signer=None):
        self.path = Path(path)
        self.signer = signer  # audit_sign.Signer: signs the head after every append of this process
        self._chain: str | None = None
        with self._locked() as fd:  # a torn tail is left in place: the next append keeps and records it
            last = _last_record(fd, _complete_end(fd))
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
        if self.signer is not None and event in ("run.start", "run.resume"):
            data = {**data, "audit_key": self.signer.fingerprint}  # which key anchors this run from here on
        with self._locked() as fd:
            end = _complete_end(fd)
            last = _last_record(fd, end)
            seq, prev = (last["seq"] + 1, last["hash"]) if last else (0, GENESIS)
            notes: list[tuple[str, dict]] = []
            if end < os.fstat(fd).st_size:  # kept first, then cut: a crash in between loses nothing
                notes.append(("audit.torn_tail_dropped", _keep_torn(fd, self.path, end, seq)))
                os.ftruncate(fd, end)
            head = _read_head(self.path)
            if not _head_agrees(head, last):  # the log was cut or the head lost: say so inside the chain
                notes.append(("audit.head_mismatch", {
                    "head_seq": (head or {}).get("seq"), "head_hash": (head or {}).get("hash"),
                    "tail_seq": last["seq"] if last else None, "tail_hash": last["hash"] if last else None}))
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
            if self.signer is not None:
                self._chain = self._chain or _first_hash(fd)
                self.signer.sign_head(self.path, self._chain, rec["seq"], rec["hash"])
        self.seq, self.prev = seq, prev
        return rec


def _first_hash(fd: int) -> str:
    """The first record's hash: the chain's identity, which the signature names."""
    buf, pos = b"", 0
    while b"\n" not in buf:
        chunk = os.pread(fd, 1 << 16, pos)
        if not chunk:
            break
        buf, pos = buf + chunk, pos + len(chunk)
    return json.loads(buf.split(b"\n", 1)[0])["hash"]


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
    edits). Then compares the last record with `audit.head`, which catches records removed from the end, and
    fails on any loss the log recorded (a torn tail cut, a cut log) that no `audit.acknowledged` record names.
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
    if not ok:
        return False, msg
    lost = losses(path, read_records(path))
    if lost:
        return False, lost[0] + (f" (and {len(lost) - 1} more)" if len(lost) > 1 else "")
    return True, f"{len(lines)} events, chain intact"


def losses(path: Path, records: list[dict]) -> list[str]:
    """One line per loss the log recorded that no human has acknowledged yet, and per torn-tail copy that no
    note names (bytes cut from the log by an append that did not finish)."""
    acked = {r["data"].get("seq") for r in records if r.get("event") == ACK and isinstance(r.get("data"), dict)
             and isinstance(r["data"].get("seq"), int) and r["data"]["seq"] < r.get("seq", -1)}
    out, named = [], set()
    for r in records:
        d = r.get("data") if isinstance(r.get("data"), dict) else {}
        if r.get("event") == "audit.torn_tail_dropped":
            named.add(str(d.get("copy")))
        if r.get("event") in NOTES and r.get("seq") not in acked:
            out.append(f"seq {r.get('seq')} ({r.get('event')}): {_describe(r['event'], d)}; not acknowledged "
                       f"(successor audit ack RUN_DIR --seq {r.get('seq')} --who NAME)")
    folder = torn_dir(path)
    for f in sorted(folder.iterdir()) if folder.is_dir() else []:
        if f"{folder.name}/{f.name}" not in named:
            out.append(f"{folder.name}/{f.name}: bytes cut from the log that no audit.torn_tail_dropped note names")
    return out


def _describe(event: str, d: dict) -> str:
    if event == "audit.torn_tail_dropped":
        what = f"event {d['event']}" if d.get("event") else "its event name unreadable"
        return (f"{d.get('bytes')} bytes of a torn last line were cut ({what}; sha256 {str(d.get('sha256'))[:12]}, "
                f"kept in {d.get('copy')})")
    return (f"the log ended at seq {d.get('tail_seq')} but its head said seq {d.get('head_seq')} "
            f"(records were cut or the head was lost)")


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
