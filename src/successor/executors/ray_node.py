"""What runs on a Ray node, and the bundles that carry an experiment there and back: the inputs packed by the
driver, the sandbox started on the node under a watchdog, and the results unpacked as hostile data."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import posixpath
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from .. import safeio
from ..oversight.policy import Policy
from .base import Experiment, Outcome, process_start_time
from .local import LocalExecutor

_PATHS = ("job", "run_root", "patch", "cwd")
_PATH_LISTS = ("readable", "protected", "read_only", "honeypots", "hidden")


def _to_plain(exp: Experiment) -> dict:
    d = dataclasses.asdict(exp)
    for k in _PATHS:
        d[k] = None if d[k] is None else str(d[k])
    for k in _PATH_LISTS:
        d[k] = None if d[k] is None else [str(p) for p in d[k]]
    return d


def _from_plain(d: dict) -> Experiment:
    d = dict(d)
    for k in _PATHS:
        d[k] = None if d[k] is None else Path(d[k])
    for k in _PATH_LISTS:
        d[k] = None if d[k] is None else [Path(p) for p in d[k]]
    return Experiment(**d)


def _workspace_inputs(exp: Experiment) -> list[Path]:
    """What the driver put in the workspace for this experiment."""
    return [exp.job] + ([exp.patch] if exp.patch else []) + list(exp.read_only) + list(exp.honeypots or []) + \
        ([exp.cwd] if exp.cwd else [])


def _inputs(exp: Experiment) -> list[Path]:
    """Everything an experiment reads, to send it to a node. Never the protected tiers (validation, sealed,
    guardrail): those the candidate must not see, and they are hashed where they exist."""
    return _dedupe(_workspace_inputs(exp) + list(exp.readable))


def _inside(paths: list[Path], folder: Path) -> list[Path]:
    return [p for p in paths if _under(str(p), str(folder))]


def _dedupe(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if not any(p == q or _under(str(p), str(q)) for q in out):
            out = [q for q in out if not _under(str(q), str(p))] + [p]
    return out


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _arcname(path: Path, run_root: Path) -> str:
    """Where a file travels in a bundle: `run/<path in the run directory>`, or `ext/<absolute path>`."""
    p, r = str(path), str(run_root)
    return "run" + p[len(r):] if _under(p, r) else "ext" + p


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tree_size(path: Path) -> int:
    if path.is_symlink() or not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _pack(paths: list[Path], run_root: Path) -> bytes:
    """A tar of `paths` (regular files and folders; links are left out), named by `_arcname`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for p in paths:
            if p.exists():
                tar.add(p, arcname=_arcname(p, run_root), recursive=True,
                        filter=lambda m: m if (m.isfile() or m.isdir()) else None)
    return buf.getvalue()


def _safe_members(tar: tarfile.TarFile, refuse: set[str] = frozenset()) -> list[tarfile.TarInfo]:
    """Regular files and folders with a relative, normalised name that climbs nowhere, minus `refuse`."""
    out = []
    for m in tar.getmembers():
        name = posixpath.normpath(m.name)
        if not (m.isfile() or m.isdir()) or name.startswith(("/", "..")) or name == ".":
            continue
        if name in refuse or any(name.startswith(r + "/") for r in refuse):
            continue
        out.append(m)
    return out


def unpack_results(data: bytes, exp: Experiment) -> None:
    """The driver's side: a node's results (from an untrusted candidate's workspace) into the real workspace.
    Only regular files and folders, inside it (`filter="data"`), never over one of the experiment's inputs or
    into `tmp/`."""
    ws = exp.workspace
    refuse = {"tmp"} | {os.path.relpath(p, ws) for p in _inside(_workspace_inputs(exp), ws) if p != exp.cwd}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        tar.extractall(ws, members=_safe_members(tar, refuse), filter="data")


# -- the node's side ------------------------------------------------------------------------------------------
_WATCHDOG = r"""
import os, shutil, signal, sys, time
if os.fork():  # not the worker's child: Ray kills those when it cancels the task, and the folder must go too
    os._exit(0)
def start(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[-1].split()[19]
    except (OSError, IndexError):
        return None
groups = []
for line in sys.stdin:
    if line.strip() == "done":
        sys.exit(0)
    pid, st = line.split()
    groups.append((int(pid), st))
groups = [pid for pid, st in groups if start(pid) in (st, None)]  # not a pid used again since
for pid in groups:  # the worker died: its experiment must not live on
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
t0 = time.monotonic()
while time.monotonic() - t0 < 10:
    try:
        for pid in groups:
            os.killpg(pid, 0)
        time.sleep(0.05)
    except OSError:
        break
if len(sys.argv) > 1 and sys.argv[1]:
    shutil.rmtree(sys.argv[1], ignore_errors=True)
"""


class _Watchdog:
    """A process beside the task that kills the sandbox's process group if the worker dies (the pipe it reads
    closes without a `done`), then removes the staging folder."""

    def __init__(self, cleanup: Path | None):
        r, self._w = os.pipe()  # neither end is inherited by the sandbox (not inheritable, not in pass_fds)
        try:
            subprocess.run([sys.executable, "-I", "-c", _WATCHDOG, str(cleanup or "")], stdin=r, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        finally:
            os.close(r)

    def watch(self, pid: int) -> None:
        os.write(self._w, f"{pid} {process_start_time(pid) or '-'}\n".encode())

    def __enter__(self) -> "_Watchdog":
        return self

    def __exit__(self, *exc) -> None:
        try:
            os.write(self._w, b"done\n")
        finally:
            os.close(self._w)


def _run_on_node(spec: dict, bundle: bytes) -> dict:
    """One experiment on the node Ray chose: the sandbox as the local executor runs it; the outcome (and, under
    object_store, the workspace's results) back as plain data. Nothing here writes the store or the audit log."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    where = f"node {socket.gethostname()} ({node[:12]})"
    t0 = time.monotonic()

    def failed(why: str, isolation: str = "none") -> dict:
        return {"outcome": dataclasses.asdict(Outcome("failed", time.monotonic() - t0, f"on {where}: {why}",
                                                      isolation=isolation, node=node)), "results": None}

    from ..oversight.sandbox import IsolationError, isolation_mode

    policy = Policy.model_validate(spec["policy"])
    try:
        isolation = isolation_mode(policy)
    except IsolationError as e:
        return failed(str(e))
    exp = _from_plain(spec["experiment"])
    root = exp.run_root
    staging = None
    try:
        if spec["artifacts"] == "shared_path":
            if not exp.job.is_file() or _sha256(exp.job) != spec["job_sha256"]:
                return failed(f"the run directory {root} is not here, or not the driver's (artifacts: shared_path "
                              f"needs every node to see it at the same path)", isolation)
            _kill_leftovers(exp.job)  # an earlier attempt's sandbox, if its worker died on this node
            _restore(exp.workspace, bundle, root)
            exp.hidden = [p for p in exp.hidden if p.exists()]  # what is not on this node needs no hiding
            sent: dict[str, str] = {}
        else:
            base = Path(spec["staging_dir"] or tempfile.gettempdir()) / "successor-ray"
            base.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f"{spec['key']}-", dir=base))
            if _under(str(staging), str(root)):
                return failed(f"loop.executor.ray.staging_dir {base} is inside the run directory {root}", isolation)
            exp, sent = _stage(exp, spec, bundle, staging)
        if spec.get("gpus") and os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
            exp.env = {**exp.env, "CUDA_VISIBLE_DEVICES": os.environ["CUDA_VISIBLE_DEVICES"]}
        with _Watchdog(staging) as dog:
            outcome = LocalExecutor(spec["timeout_s"], spec["threads"], policy, isolation, workers=1).run(
                exp, on_start=dog.watch)
        outcome.node = node
        results, log = None, None
        if staging is not None:  # the log comes back beside the results, where it fits
            log = safeio.tail(exp.log_path, spec["max_bytes"]).encode()
            files = _results(exp.workspace, sent)
            size = sum(f.stat().st_size for f in files)
            if size > spec["max_bytes"]:
                got = failed(f"the experiment's results are {size / 2**20:.0f} MiB, over "
                             f"loop.executor.ray.max_transfer_mb ({spec['max_bytes'] >> 20} MiB) for Ray's object "
                             f"store: use artifacts: shared_path (a run directory every node mounts)", isolation)
                return got | {"log": log}
            results = _pack_relative(files, exp.workspace)
        return {"outcome": dataclasses.asdict(outcome), "results": results, "log": log}
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _stage(exp: Experiment, spec: dict, bundle: bytes, staging: Path) -> tuple[Experiment, dict[str, str]]:
    """Unpack the inputs into `staging` and the experiment as it is there: paths in the run directory mirrored
    under staging/run, others under staging/ext; the job's own paths rewritten to match."""
    root = str(exp.run_root)
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:") as tar:
        tar.extractall(staging, members=_safe_members(tar), filter="data")
    new_root = staging / "run"
    moved = {root: str(new_root)} | {str(p): str(staging) + "/ext" + str(p) for p in _inputs(exp)
                                     if not _under(str(p), root)}

    def m(s: str) -> str:
        best = max((k for k in moved if _under(s, k)), key=len, default=None)
        return s if best is None else moved[best] + s[len(best):]

    mp = lambda p: None if p is None else Path(m(str(p)))  # noqa: E731
    job = mp(exp.job)
    job.write_text(json.dumps(_rewrite(json.loads(job.read_text()), m), indent=2))
    command = None
    if exp.command is not None:
        command = [sys.executable if i == 0 and a == spec["python"] else m(a) for i, a in enumerate(exp.command)]
    here = set(map(str, _harness_sources()))
    hidden = [p for p in exp.hidden if p.exists()]
    if exp.run_root.exists():  # the driver's machine: the real run directory is hidden like the tiers it holds
        hidden.append(exp.run_root)
    staged = dataclasses.replace(
        exp, job=job, run_root=new_root, readable=[mp(p) for p in exp.readable], patch=mp(exp.patch),
        command=command, cwd=mp(exp.cwd), env={k: m(v) for k, v in exp.env.items()},
        read_only=[mp(p) for p in exp.read_only], honeypots=None if exp.honeypots is None else
        [mp(p) for p in exp.honeypots], hidden=hidden,
        protected=[*map(Path, sorted(here)), *(p for p in exp.protected if p.exists() and str(p) not in here)])
    ws = staged.workspace
    sent = {str(f.relative_to(ws)): _sha256(f) for f in ws.rglob("*") if f.is_file() and not f.is_symlink()}
    return staged, sent


def _harness_sources() -> list[Path]:
    from ..oversight import integrity

    return integrity.harness_sources()


def _rewrite(obj, m):
    if isinstance(obj, str):
        return m(obj)
    if isinstance(obj, list):
        return [_rewrite(x, m) for x in obj]
    if isinstance(obj, dict):
        return {k: _rewrite(v, m) for k, v in obj.items()}
    return obj


def _results(ws: Path, sent: dict[str, str]) -> list[Path]:
    """The workspace's files to send back: regular files, not under tmp/, not an input sent unchanged."""
    out = []
    for f in sorted(ws.rglob("*")):
        rel = f.relative_to(ws)
        if rel.parts[0] == "tmp" or f.is_symlink() or not f.is_file():
            continue
        if sent.get(str(rel)) == _sha256(f):
            continue
        out.append(f)
    return out


def _pack_relative(files: list[Path], folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in files:
            tar.add(f, arcname=str(f.relative_to(folder)), recursive=False)
    return buf.getvalue()


def _restore(ws: Path, bundle: bytes, run_root: Path) -> None:
    """shared_path: the workspace as the driver prepared it, whatever an earlier attempt left there."""
    for child in list(ws.iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:") as tar:
        members = [m for m in _safe_members(tar) if posixpath.normpath(m.name).startswith("run/")]
        for m in members:
            m.name = posixpath.normpath(m.name)[len("run/"):]
        tar.extractall(run_root, members=members, filter="data")


def _kill_leftovers(job: Path) -> None:
    """Kill, on this node, the process groups whose command line names this job (an earlier attempt's)."""
    needle, ours = str(job).encode(), os.getpgid(0)
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            if needle in Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0") and os.getpgid(int(d)) != ours:
                os.killpg(os.getpgid(int(d)), signal.SIGKILL)
        except OSError:
            pass
