"""Code-patch candidates: a unified diff against the allow-listed files, checked before it is applied.

The path check reads the diff's own headers (`--- a/x`, `+++ b/x`, `diff --git`, renames, copies, mode lines):
a patch that names any file outside the allow-list, or a path that climbs out of the program (`..`, an absolute
path), or makes anything but a regular file (a symlink, a submodule), is refused with a reason before git ever
sees it. This is the friendly first check only: headers can be written that git reads otherwise, so the tree git
builds from the patch is checked again, path by path and mode by mode (program.ProgramRepo.check_tree).
"""
from __future__ import annotations

import fnmatch
import re
from pathlib import PurePosixPath

_HEADER = re.compile(r"^(?:---|\+\+\+) (?:[ab]/)?(?P<path>\S+)")
_GIT = re.compile(r"^diff --git a/(?P<a>\S+) b/(?P<b>\S+)")
_MOVE = re.compile(r"^(?:rename|copy) (?:from|to) (?P<path>\S+)")
_MODE = re.compile(r"^(?:(?:old|new|deleted|new file|deleted file) mode|index [0-9a-f]+\.\.[0-9a-f]+) "
                   r"(?P<mode>\d+)\s*$")
REGULAR_MODES = {"100644", "100755"}


class PatchError(ValueError):
    """A patch that is refused: the reason names the file or the failure."""


def touched_files(diff: str) -> list[str]:
    """Every path the diff names, in order of first mention (/dev/null excluded)."""
    seen: list[str] = []
    for line in diff.splitlines():
        for rx in (_GIT, _HEADER, _MOVE):
            m = rx.match(line)
            if m:
                for p in m.groupdict().values():
                    if p != "/dev/null" and p not in seen:
                        seen.append(p)
                break
    return seen


def allowed(path: str, editable: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, pat) for pat in editable)


def check_diff(diff: str, editable: list[str]) -> list[str]:
    """Why the diff is refused (empty: its paths are all allowed). It does not check that it applies."""
    files = touched_files(diff)
    if not files:
        return ["the patch names no file (not a unified diff)"]
    out = []
    for f in files:
        p = PurePosixPath(f)
        if p.is_absolute() or ".." in p.parts:
            out.append(f"{f}: a path outside the program")
        elif not allowed(f, editable):
            out.append(f"{f}: not in the editable allow-list ({', '.join(editable)})")
    for line in diff.splitlines():
        m = _MODE.match(line)
        if m and m["mode"] not in REGULAR_MODES:
            kind = {"120000": "a symlink", "160000": "a submodule (gitlink)"}.get(m["mode"], f"mode {m['mode']}")
            out.append(f"the patch makes or changes {kind}")
            break
        if line.startswith("diff --git") and not re.fullmatch(r"diff --git a/\S+ b/\S+", line):
            out.append(f"an unusual header ({line[:80]!r}): a diff --git line names two paths, a/X b/Y")
            break
    if "GIT binary patch" in diff or re.search(r"^Binary files ", diff, re.M):
        out.append("the patch changes a binary file")
    return out
