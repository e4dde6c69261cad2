"""The run's secret tier key file (`harness/tier.key`): read and written here, apart from the run directory, so
`audit verify` can read it without importing the loop (workloads/tinylm/sealed_fresh.py)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .config import ConfigError

TIER_KEY = "tier.key"
TIER_KEY_ENV = "SUCCESSOR_TIER_KEY"  # a key file a new run takes its tier key from (to share harness tiers)
KEY_BYTES = 32


def _read_key(path: Path, where: str = "tier key") -> bytes:
    """A tier key file: a regular file of exactly KEY_BYTES bytes (the run's own one: not a link)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (os.O_NOFOLLOW if where == "tier key" else 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {path} ({e.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"{where}: {path} is not a regular file")
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{where}: {path} must hold {KEY_BYTES} bytes")
    return key


def _write_key(path: Path, key: bytes) -> None:
    """Write the key with mode 0600, appearing whole or not at all; an existing key is never replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{TIER_KEY}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process made one first: that one stands
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
