"""Reading what a candidate left behind, as hostile data.

A candidate's workspace is written by untrusted code that may leave a symlink where a file should be (to the
audit log, to the harness's tiers, to /etc/shadow), a FIFO that blocks whoever opens it, a file of terabytes
(sparse), a million empty files, or a directory where a file should be. The harness runs as root, so following
any of these is a write to, or a read of, anything on the machine.

So everything below a trusted folder (a workspace the harness created) is opened one path component at a time
relative to the folder above it (`dir_fd`), with `O_NOFOLLOW` on every component and `O_NONBLOCK` on the last,
and accepted only if `fstat` says it is a regular file (or a directory) of bounded size. A link or a special
file is `LinkInOutput` (a sandbox violation: honest programs write files); anything else wrong is `HostileFile`
(a failed experiment with its reason). Neither is ever a crash of the harness.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import uuid
from pathlib import Path, PurePosixPath
from typing import Iterator, TypeVar

from pydantic import BaseModel, ValidationError

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
M = TypeVar("M", bound=BaseModel)


class HostileFile(ValueError):
    """A file a candidate left cannot be read as the data it should be: missing, too big, malformed."""


class LinkInOutput(HostileFile):
    """A symlink, FIFO, socket or device where the harness expects a regular file or folder: a violation."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "a special file"


def _parts(rel: str | os.PathLike) -> list[str]:
    parts = [p for p in PurePosixPath(os.fspath(rel)).parts if p not in ("", ".")]
    if any(p == ".." or p.startswith("/") for p in parts):
        raise HostileFile(f"{rel}: a path that leaves its folder")
    return parts


def _open_at(dir_fd: int, name: str, flags: int, rel: str) -> int:
    """openat() one component without following it; says what is there when it is not what was asked for."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise HostileFile(f"{rel}: missing") from None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO, errno.EMLINK):
            try:
                mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
            except OSError:
                mode = 0
            kind = _kind(mode)
            if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
                raise HostileFile(f"{rel}: {kind} where {'a folder' if flags & os.O_DIRECTORY else 'a file'} "
                                  f"was expected") from None
            raise LinkInOutput(f"{rel}: {kind}, not a regular file or folder") from None
        raise HostileFile(f"{rel}: cannot be opened ({e.strerror})") from None


def open_dir(root: Path, rel: str | os.PathLike = "") -> int:
    """A descriptor of the folder `root/rel`; `root` itself is the harness's (it may sit below links the harness
    chose), every component of `rel` is the candidate's and is never followed."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, name in enumerate(_parts(rel)):
            new = _open_at(fd, name, _DIR, "/".join(_parts(rel)[:i + 1]))
            os.close(fd)
            fd = new
        return fd
    except BaseException:
        os.close(fd)
        raise


def _read_fd(fd: int, rel: str, max_bytes: int) -> bytes:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        kind = _kind(st.st_mode)
        raise (HostileFile if stat.S_ISDIR(st.st_mode) else LinkInOutput)(f"{rel}: {kind}, not a regular file")
    if st.st_size > max_bytes:
        raise HostileFile(f"{rel}: {st.st_size} bytes, over the {max_bytes} bytes it may have")
    chunks, left = [], max_bytes + 1
    while left > 0:
        b = os.read(fd, min(left, 1 << 20))
        if not b:
            break
        chunks.append(b)
        left -= len(b)
    data = b"".join(chunks)
    if len(data) > max_bytes:  # it grew while we read
        raise HostileFile(f"{rel}: over the {max_bytes} bytes it may have")
    return data


def read_bytes(root: Path, rel: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of the regular file `root/rel`, at most `max_bytes` of them, never through a link."""
    parts = _parts(rel)
    if not parts:
        raise HostileFile(f"{rel}: not a file")
    d = open_dir(root, "/".join(parts[:-1]))
    try:
        fd = _open_at(d, parts[-1], _FILE, "/".join(parts))
    finally:
        os.close(d)
    try:
        return _read_fd(fd, "/".join(parts), max_bytes)
    finally:
        os.close(fd)


def read_text(root: Path, rel: str | os.PathLike, max_bytes: int) -> str:
    return read_bytes(root, rel, max_bytes).decode("utf-8", errors="replace")


def read_json(root: Path, rel: str | os.PathLike, max_bytes: int, model: type[M]) -> M:
    """A JSON file parsed against a schema; any failure is HostileFile naming the file."""
    raw = read_bytes(root, rel, max_bytes)
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ())) or "(top)"
        raise HostileFile(f"{rel}: {where}: {first.get('msg')}") from None


def _pread_regular(path: Path, max_bytes: int, from_end: bool) -> str:
    """Up to `max_bytes` of a regular file (its start, or its end), as text; "" where it is missing or not a
    regular file. Never follows a link, never blocks on a FIFO."""
    try:
        fd = os.open(path, _FILE)
    except OSError:
        return ""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return ""
        offset = max(0, st.st_size - max_bytes) if from_end else 0
        return os.pread(fd, max_bytes, offset).decode("utf-8", errors="replace")
    finally:
        os.close(fd)


def tail(path: Path, max_bytes: int = 2000) -> str:
    """The last `max_bytes` of a file as text, or "" where it is missing or not a regular file. Never blocks."""
    return _pread_regular(path, max_bytes, from_end=True)


def first_line(path: Path, max_bytes: int = 1000) -> str:
    return _pread_regular(path, max_bytes, from_end=False).split("\n", 1)[0].strip()


def entries(root: Path, rel: str | os.PathLike = "", max_entries: int = 100_000) -> Iterator[tuple[str, os.stat_result]]:
    """(path relative to root/rel, lstat) of everything below `root/rel`, folders first, without following a link;
    raises HostileFile past `max_entries`."""
    n = 0
    stack = [("", open_dir(root, rel))]
    try:
        while stack:
            prefix, fd = stack.pop()
            try:
                names = sorted(os.listdir(fd))
                for name in names:
                    n += 1
                    if n > max_entries:
                        raise HostileFile(f"{rel or '.'}: over {max_entries} entries")
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    path = f"{prefix}{name}"
                    yield path, st
                    if stat.S_ISDIR(st.st_mode):
                        stack.append((path + "/", _open_at(fd, name, _DIR, path)))
            finally:
                os.close(fd)
    finally:
        for _, fd in stack:
            os.close(fd)


def usage(root: Path) -> tuple[int, int]:
    """(bytes allocated, entries) of a folder tree, links not followed: what the workspace quota counts."""
    size = files = 0
    try:
        for _, st in entries(root, max_entries=10**7):
            size += st.st_blocks * 512
            files += 1
    except (HostileFile, OSError):
        pass
    return size, files


def copy_tree(root: Path, rel: str | os.PathLike, dest: Path, max_bytes: int, max_files: int = 10_000) -> str:
    """Copy the folder or file `root/rel` into `dest` (which must not exist), refusing any link or special file
    anywhere in it (LinkInOutput) and more than `max_bytes` or `max_files` in all. Returns its digest: a file's
    sha256, or for a folder the sha256 over (relative path, sha256) of its files in path order."""
    total, digests, single = 0, [], None
    parts = _parts(rel)
    if not parts:
        raise HostileFile(f"{rel}: not a file or folder below its workspace")
    d = open_dir(root, "/".join(parts[:-1]))
    try:
        st = os.stat(parts[-1], dir_fd=d, follow_symlinks=False)
    except FileNotFoundError:
        raise HostileFile(f"{rel}: missing") from None
    finally:
        os.close(d)
    tmp = dest.with_name(dest.name + f".{uuid.uuid4().hex[:8]}.tmp")
    try:
        if stat.S_ISREG(st.st_mode):
            data = read_bytes(root, rel, max_bytes)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            write_new(tmp, data)
            single = hashlib.sha256(data).hexdigest()
        elif stat.S_ISDIR(st.st_mode):
            tmp.mkdir(parents=True)
            for path, est in entries(root, rel, max_files):
                full = f"{'/'.join(parts)}/{path}"
                if stat.S_ISDIR(est.st_mode):
                    (tmp / path).mkdir()
                    continue
                if not stat.S_ISREG(est.st_mode):
                    raise LinkInOutput(f"{full}: {_kind(est.st_mode)}, not a regular file or folder")
                total += est.st_size
                if total > max_bytes:
                    raise HostileFile(f"{rel}: over the {max_bytes} bytes it may have")
                data = read_bytes(root, full, max_bytes)
                write_new(tmp / path, data)
                digests.append((PurePosixPath(path).parts, path, hashlib.sha256(data).hexdigest()))
        else:
            raise LinkInOutput(f"{rel}: {_kind(st.st_mode)}, not a regular file or folder")
        if dest.exists():  # the same content, copied before (it is named by its digest)
            remove(tmp)
        else:
            os.replace(tmp, dest)
    except BaseException:
        remove(tmp)
        raise
    if single is not None:
        return single
    h = hashlib.sha256()
    for _, path, digest in sorted(digests):
        h.update(path.encode() + b"\0" + digest.encode())
    return h.hexdigest()


def write_new(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file the harness owns: whatever is at `path` (a link, a FIFO, a file) is unlinked, never
    followed, and the file is created afresh (O_EXCL | O_NOFOLLOW)."""
    path = Path(path)
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def create(path: Path, mode: int = 0o644) -> int:
    """A new, empty file the harness owns, open for writing (see write_new): the experiment log."""
    write_new(path, b"", mode)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)


def remove(path: Path) -> None:
    """Remove a file, link or folder tree without following links (shutil.rmtree works on descriptors)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        def onexc(fn, p, exc):  # a folder the candidate made unwritable (chmod 0): open it up, try once more
            try:
                os.chmod(os.path.dirname(p), 0o700)
                fn(p)
            except OSError:
                pass

        shutil.rmtree(path, onerror=lambda fn, p, e: onexc(fn, p, e))
    else:
        os.unlink(path)


def fresh_dir(path: Path, trash: Path) -> None:
    """Replace the folder `path` by an empty one the harness made: what an earlier attempt left (links, FIFOs,
    files it made unwritable) is moved aside into `trash` and removed."""
    path = Path(path)
    if os.path.lexists(path):
        trash.mkdir(parents=True, exist_ok=True)
        aside = trash / f"{path.name}.{uuid.uuid4().hex[:12]}"
        os.rename(path, aside)
        remove(aside)
    path.mkdir(parents=True)


def json_bytes(obj) -> bytes:
    return json.dumps(obj, indent=2).encode()


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and a rename, so a reader (or a kill -9) never sees half a file."""
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
