"""The run's own git repository of the user's program: every candidate is a commit.

`run_dir/program.git` is a bare repository. Generation 0 commits the program as given; the per-run branch
`successor/<run name>` always points at the champion, so `git log` on it is the lineage of promoted programs.
A candidate is a commit whose parent is the champion's: its code patch applied with `git apply --cached` on a
scratch index (nothing is checked out to commit), or the champion's tree unchanged for a knob-only candidate;
`refs/successor/candidates/<id>` names it. A workspace is the commit's tree exported with `git archive`.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from .patch import PatchError, check_diff

SKIP = {".git", "__pycache__", ".venv", "runs", ".pytest_cache", ".ipynb_checkpoints"}
MAX_PROGRAM_MB = 64
_ENV = {"GIT_AUTHOR_NAME": "successor", "GIT_AUTHOR_EMAIL": "successor@localhost",
        "GIT_COMMITTER_NAME": "successor", "GIT_COMMITTER_EMAIL": "successor@localhost",
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0"}


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
        a file outside the allow-list or does not apply."""
        ref = f"refs/successor/candidates/{cid}"
        try:
            return self.git("rev-parse", "--verify", "-q", ref).strip()  # a resumed run made it already
        except PatchError:
            pass
        tree = self.git("rev-parse", f"{parent}^{{tree}}").strip()
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
        commit = self.git("commit-tree", tree, "-p", parent, "-m", message).strip()
        self.git("update-ref", ref, commit)
        return commit

    def diff(self, parent: str, commit: str) -> str:
        return self.git("diff", parent, commit)

    def files(self, commit: str) -> list[str]:
        return self.git("ls-tree", "-r", "--name-only", commit).splitlines()

    def read(self, commit: str, path: str) -> str:
        return self.git("show", f"{commit}:{path}")

    def export(self, commit: str, dest: Path) -> None:
        """Write the commit's tree into `dest` (git archive, read as data: members are regular files only)."""
        r = subprocess.run(["git", f"--git-dir={self.path}", "archive", "--format=tar", commit],
                           capture_output=True, env={**os.environ, **_ENV}, timeout=120)
        if r.returncode != 0:
            raise PatchError(f"git archive: {r.stderr.decode(errors='replace').strip()}")
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
            tar.extractall(dest, filter="data")


def _ref_safe(name: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip(".-")
    return out or "run"
