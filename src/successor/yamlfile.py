"""Reading a config or policy file as hostile input: one line naming the file for anything that is not a small
regular file of UTF-8 YAML holding a mapping, and never a hang (a FIFO), a crash (deep nesting) or a blow-up
(an alias bomb) on the way."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config problem, phrased as one line that names the field."""


MAX_FILE_BYTES = 256 << 10  # a config or policy is a few KiB; anything larger is not one (and slow to parse)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: fast, and it caps nesting itself


def read_text_file(path: Path, what: str, error: type[ConfigError] | None = None) -> str:
    """The text of a config or policy file, or one line naming it (`what`: the word the line starts with).

    It must be a regular file (checked on the open descriptor: opening never blocks, so a FIFO cannot hang the
    command), at most MAX_FILE_BYTES, UTF-8 text without NUL bytes."""
    error = error or ConfigError
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise error(f"{what}: file not found: {path}") from None
    except OSError as e:
        raise error(f"{what}: cannot read {path} ({e.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise error(f"{what}: {path} is a directory, not a YAML file")
        if not stat.S_ISREG(mode):
            raise error(f"{what}: {path} is not a regular file (a FIFO, socket or device)")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise error(f"{what}: cannot read {path} ({e.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise error(f"{what}: {path} is larger than {MAX_FILE_BYTES >> 10} KiB; not a config")
    if b"\0" in data:
        raise error(f"{what}: {path} is a binary file (it holds NUL bytes), not YAML text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what}: {path} is not UTF-8 text (bad byte at offset {e.start})") from None


MAX_NODES = 100_000
MAX_DEPTH = 64


def _flow_depth(text: str) -> int:
    """The deepest nesting of [ and { outside quotes and comments (an over-estimate is harmless: a config is
    a few levels deep)."""
    depth = deepest = 0
    quote = None
    comment = False
    prev = "\n"
    for c in text:
        if comment:
            comment = c != "\n"
        elif quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and prev in " \t\n":
            comment = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth = max(depth - 1, 0)
        prev = c
    return deepest


def _expanded_size(data: object) -> int:
    """Values in `data` with YAML aliases expanded (a shared list counts each time it is named), computed once
    per object; a cycle counts as too many. Keeps an alias bomb from growing in validation or an error line."""
    sizes: dict[int, int] = {}

    def size(x: object) -> int:
        if not isinstance(x, (list, dict)):
            return 1
        if id(x) in sizes:
            return sizes[id(x)]
        sizes[id(x)] = MAX_NODES + 1  # seen again while still being counted: a cycle
        items = list(x.keys()) + list(x.values()) if isinstance(x, dict) else x
        total = 1
        for item in items:
            total += size(item)
            if total > MAX_NODES:
                break
        sizes[id(x)] = total
        return total

    try:
        return size(data)
    except RecursionError:
        return MAX_NODES + 1


def read_yaml(text: str, where: str, error: type[ConfigError] | None = None) -> dict:
    """The top-level mapping of a YAML text; `where` names it ("config: FILE"). An empty file, a list or a
    scalar is refused: read as no fields, it would silently run with every default."""
    error = error or ConfigError
    if _flow_depth(text) > MAX_DEPTH:  # the pure-Python scanner takes quadratic time in it, and recurses
        raise error(f"{where}: nested too deeply to be a config (over {MAX_DEPTH} levels of [ and {{)")
    try:
        data = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as e:
        raise error(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise error(f"{where}: nested too deeply to be a config") from None
    if _expanded_size(data) > MAX_NODES:
        raise error(f"{where}: over {MAX_NODES} values once its aliases are expanded, or an alias that "
                    "contains itself; not a config")
    if not isinstance(data, dict):
        got = ("nothing (an empty file)" if data is None else "a list" if isinstance(data, list)
               else f"a single value ({str(data)[:40]!r})")
        raise error(f"{where} must hold a mapping of fields at the top level, not {got}")
    return data
