"""The run's own git repository of the user's program: every candidate is a commit.

`run_dir/program.git` is a bare repository. Generation 0 commits the program as given; the per-run branch
`successor/<run name>` always points at the champion, so `git log` on it is the lineage of promoted programs.
A candidate is a commit whose parent is the champion's: its code patch applied with `git apply --cached` on a
scratch index (nothing is checked out to commit), or the champion's tree unchanged for a knob-only candidate;
`refs/successor/candidates/<id>` names it. A workspace is the commit's tree exported with `git archive`.

A patch's own headers are read first (patch.check_diff, for a friendly reason), but what counts is the tree git
built from it: every path that differs from the parent's tree must be editable and a regular file (mode 100644 or
100755: never a symlink, a submodule, or git's own .gitattributes/.gitmodules), checked before the commit exists
and again for a commit a resumed run finds already made.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from .patch import PatchError, allowed, check_diff

SKIP = {".git", "__pycache__", ".venv", "runs", ".pytest_cache", ".ipynb_checkpoints"}
REGULAR = {"100644", "100755"}  # the only modes a program's file may have: no symlink (120000), gitlink (160000)
GIT_FILES = {".gitattributes", ".gitmodules", ".git"}  # they change what git does with the tree (export-ignore)
MAX_PROGRAM_MB = 64
_ENV = {"GIT_AUTHOR_NAME": "successor", "GIT_AUTHOR_EMAIL": "successor@localhost",
        "GIT_COMMITTER_NAME": "successor", "GIT_COMMITTER_EMAIL": "successor@localhost",
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0",
        # one date for every commit: a commit is then named by its tree and parents alone, so a run repeats its
        # lineage (program digests, experiment ids) under the same seed; the store keeps when things happened
        "GIT_AUTHOR_DATE": "2000-01-01T00:00:00+0000", "GIT_COMMITTER_DATE": "2000-01-01T00:00:00+0000"}


def copy_program(src: Path, dest: Path, skip: set[str] = SKIP) -> list[str]:
    """Copy the program's files (not its VCS folder, caches or earlier runs); returns their relative paths.
    Symlinks are refused: one could point the workspace at anything on the machine."""
    src, files, size = Path(src), [], 0
    if not src.is_dir():
        raise ValueError(f"script.program: {src} is not a directory")
    for root, dirs, names in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in skip)
        for n in sorted(names):
            p = Path(root) / n
            rel = p.relative_to(src).as_posix()
            if p.is_symlink():
                raise ValueError(f"script.program: {rel} is a symlink; copy the file into the program instead")
            if n.endswith(".pyc"):
                continue
            size += p.stat().st_size
            if size > MAX_PROGRAM_MB << 20:
                raise ValueError(f"script.program: {src} holds over {MAX_PROGRAM_MB} MiB; keep data outside it")
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest / rel)
            files.append(rel)
    if not files:
        raise ValueError(f"script.program: {src} holds no files")
    return files


class ProgramRepo:
    def __init__(self, path: Path, branch: str):
        self.path, self.branch = Path(path), f"successor/{_ref_safe(branch)}"

    def git(self, *args: str, stdin: bytes | None = None, env: dict | None = None) -> str:
        r = subprocess.run(["git", f"--git-dir={self.path}", *args], input=stdin, capture_output=True,
                           env={**os.environ, **_ENV, **(env or {})}, timeout=120)
        if r.returncode != 0:
            raise PatchError(f"git {args[0]}: {r.stderr.decode(errors='replace').strip()[-500:]}")
        return r.stdout.decode(errors="replace")

    def exists(self) -> bool:
        return (self.path / "HEAD").exists()

    def init(self, program: Path) -> str:
        """Commit the program as given (generation 0) on the run's branch; returns the commit."""
        if self.exists():
            return self.git("rev-parse", f"refs/heads/{self.branch}").strip()
        tmp = Path(tempfile.mkdtemp(prefix="program-", dir=self.path.parent))
        try:
            copy_program(program, tmp)
            subprocess.run(["git", "init", "-q", "--bare", str(self.path) + ".tmp"], check=True,
                           capture_output=True, env={**os.environ, **_ENV})
            repo = ProgramRepo(Path(str(self.path) + ".tmp"), "x")
            work = {"GIT_WORK_TREE": str(tmp), "GIT_INDEX_FILE": str(tmp.parent / (tmp.name + ".index"))}
            repo.git("add", "-A", ".", env=work)
            tree = repo.git("write-tree", env=work).strip()
            commit = repo.git("commit-tree", tree, "-m", "generation 0: the program as given").strip()
            repo.git("update-ref", f"refs/heads/{self.branch}", commit)
            Path(work["GIT_INDEX_FILE"]).unlink(missing_ok=True)
            os.rename(repo.path, self.path)  # the repository appears whole or not at all
            return commit
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def champion(self) -> str:
        return self.git("rev-parse", f"refs/heads/{self.branch}").strip()

    def promote(self, commit: str) -> None:
        self.git("update-ref", f"refs/heads/{self.branch}", commit)

    def candidate(self, cid: str, parent: str, diff: str | None, editable: list[str], message: str) -> str:
        """The candidate's commit on top of `parent`; raises PatchError (with the reason) for a patch that names
        a file outside the allow-list, does not apply, or builds a tree that changes anything but editable regular
        files (check_tree; a commit a resumed run finds is checked again, and its ref dropped if refused)."""
        ref = f"refs/successor/candidates/{cid}"
        base = self.git("rev-parse", f"{parent}^{{tree}}").strip()
        try:
            made = self.git("rev-parse", "--verify", "-q", ref).strip()  # a resumed run made it already
        except PatchError:
            made = None
        if made is not None:
            try:
                self.check_tree(base, self.git("rev-parse", f"{made}^{{tree}}").strip(), editable)
            except PatchError:
                self.git("update-ref", "-d", ref)  # refused now: no ref names it
                raise
            return made
        tree = base
        if diff:
            bad = check_diff(diff, editable)
            if bad:
                raise PatchError("patch refused: " + "; ".join(bad))
            with tempfile.TemporaryDirectory() as d:
                env = {"GIT_INDEX_FILE": str(Path(d) / "index")}
                self.git("read-tree", tree, env=env)
                text = diff if diff.endswith("\n") else diff + "\n"
                try:
                    self.git("apply", "--cached", "--recount", "--unidiff-zero", "--whitespace=nowarn", "-",
                             stdin=text.encode(), env=env)
                except PatchError as e:
                    raise PatchError(f"patch does not apply: {str(e).removeprefix('git apply: ')}") from None
                tree = self.git("write-tree", env=env).strip()
            self.check_tree(base, tree, editable)
        commit = self.git("commit-tree", tree, "-p", parent, "-m", message).strip()
        self.git("update-ref", ref, commit)
        return commit

    def _raw(self, *args: str) -> list[bytes]:
        """A git command's NUL-separated output, as bytes (paths are not decoded before they are checked)."""
        r = subprocess.run(["git", f"--git-dir={self.path}", *args], capture_output=True,
                           env={**os.environ, **_ENV}, timeout=120)
        if r.returncode != 0:
            raise PatchError(f"git {args[0]}: {r.stderr.decode(errors='replace').strip()[-500:]}")
        return [f for f in r.stdout.split(b"\0") if f]

    def changes(self, old_tree: str, new_tree: str) -> list[tuple[str, str, bytes]]:
        """(status, new mode, path) of every file that differs between two trees, as git sees them (no rename
        detection: a rename is a deletion and an addition, each path checked on its own)."""
        fields = self._raw("diff-tree", "-r", "--raw", "-z", "--no-renames", "--no-ext-diff", old_tree, new_tree)
        out = []
        for meta, path in zip(fields[::2], fields[1::2]):
            _, new_mode, _, _, status = meta.decode("ascii", errors="replace").split(" ", 4)
            out.append((status, new_mode, path))
        return out

    def check_tree(self, old_tree: str, new_tree: str, editable: list[str]) -> None:
        """Refuse (PatchError) a tree that changes a path outside `editable`, one of git's own files, or makes
        anything but a regular file: the tree git built decides, whatever the patch's headers said."""
        bad = []
        for status, mode, raw in self.changes(old_tree, new_tree):
            path = raw.decode("utf-8", errors="replace")
            if "\ufffd" in path or any(ord(c) < 32 for c in path):
                bad.append(f"{path!r}: a path that is not plain UTF-8 text")
            elif not allowed(path, editable):
                bad.append(f"{path}: not in the editable allow-list ({', '.join(editable)})")
            elif GIT_FILES & set(path.split("/")):
                bad.append(f"{path}: one of git's own files (it changes what git does with the tree)")
            elif status != "D" and mode not in REGULAR:
                kind = {"120000": "a symlink", "160000": "a submodule (gitlink)"}.get(mode, f"mode {mode}")
                bad.append(f"{path}: {kind}, not a regular file")
        if bad:
            raise PatchError("patch refused: " + "; ".join(bad[:10]) + (f" (and {len(bad) - 10} more)"
                                                                         if len(bad) > 10 else ""))

    def diff(self, parent: str, commit: str) -> str:
        return self.git("diff", parent, commit)

    def files(self, commit: str) -> list[str]:
        return self.git("ls-tree", "-r", "--name-only", commit).splitlines()

    def read(self, commit: str, path: str) -> str:
        return self.git("show", f"{commit}:{path}")

    def export(self, commit: str, dest: Path) -> None:
        """Write the commit's tree into `dest` (git archive, read as data). Only regular files and folders: a
        tree with anything else (a symlink, a submodule) is refused with PatchError, before anything is written."""
        for entry in self._raw("ls-tree", "-r", "-z", "--full-tree", commit):
            meta, _, path = entry.partition(b"\t")
            mode = meta.split(b" ", 1)[0].decode("ascii", errors="replace")
            if mode not in REGULAR:
                kind = {"120000": "a symlink", "160000": "a submodule (gitlink)"}.get(mode, f"mode {mode}")
                raise PatchError(f"export refused: {path.decode(errors='replace')!r} in {commit[:12]} is {kind}, "
                                 "not a regular file")
        r = subprocess.run(["git", f"--git-dir={self.path}", "archive", "--format=tar", commit],
                           capture_output=True, env={**os.environ, **_ENV}, timeout=120)
        if r.returncode != 0:
            raise PatchError(f"git archive: {r.stderr.decode(errors='replace').strip()}")
        try:
            with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
                odd = [m for m in tar.getmembers() if not (m.isreg() or m.isdir())]
                if odd:
                    raise PatchError(f"export refused: {odd[0].name!r} in {commit[:12]} is not a regular file")
                dest.mkdir(parents=True, exist_ok=True)
                tar.extractall(dest, filter="data")
        except tarfile.TarError as e:
            raise PatchError(f"export refused: {commit[:12]}: {e}") from None


def _ref_safe(name: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip(".-")
    return out or "run"
