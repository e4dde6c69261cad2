"""The guard: the first processes inside a candidate's sandbox. Detection, not enforcement.

The sandbox (bubblewrap, rlimits, cgroups) is what *blocks* a candidate; the guard makes the attempt *visible*,
so a blocked attempt still disqualifies and is logged. It reports on a pipe the harness holds the other end of,
so a candidate cannot rewrite what was already reported.

    python -P -m successor.guard reap FD -- CMD...        run CMD; afterwards report and kill every process
                                                         it left behind in the sandbox's pid namespace
    python -P -m successor.guard run FD MODULE JOB [PATCH] install the audit hook, run the candidate's code
                                                         patch (if any), then MODULE as __main__ with JOB
    python -P -m successor.guard script FD FILE ARGS...   install the audit hook, run a user's FILE as __main__

The audit hook (PEP 578) sees the candidate's Python: opening or listing run data it was not given (the
validation and sealed tiers are not even mounted), writing outside its workspace, editing its own job file,
touching a honeypot, opening a socket, setting the clock. Code that leaves Python (ctypes, a shell) is still
blocked by the sandbox and caught by the harness's own checks (hashes, inotify on honeypots, cgroup counters).
Imports here are stdlib only: this runs before, and beside, untrusted code.
"""
from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import time

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_MUTATING = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.utime", "os.truncate",
             "os.symlink", "os.link", "shutil.rmtree", "shutil.move", "shutil.copyfile"}
_MAX_REPORTS = 200


class Reporter:
    def __init__(self, fd: int):
        self.fd, self.seen, self.n = fd, set(), 0

    def __call__(self, kind: str, detail: str) -> None:
        if (kind, detail) in self.seen or self.n >= _MAX_REPORTS:
            return
        self.seen.add((kind, detail))
        self.n += 1
        try:
            os.write(self.fd, (json.dumps({"kind": kind, "detail": detail}) + "\n").encode())
        except OSError:
            pass  # the pipe is gone: the harness is stopping us anyway


def _under(path: str, roots) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


class Rules:
    """Which paths a candidate may read and write, from the harness (env SUCCESSOR_GUARD, a JSON object)."""

    def __init__(self, spec: dict, report: Reporter):
        self.workspace = spec["workspace"]
        self.run_root = spec["run_root"]
        self.readable = set(spec["readable"])
        self.readable_dirs = list(spec["readable"])
        self.max_processes = spec.get("max_processes", 64)
        self.spawned = 0
        self.job_files = set(spec["job_files"])
        self.honeypots = set(spec["honeypots"])
        self.hidden = list(spec.get("hidden", []))
        self.writable = [self.workspace, "/dev/null", *spec.get("private", [])]
        self.report = report

    def check(self, path: str, write: bool, how: str) -> None:
        p = os.path.normpath(os.path.join(os.getcwd(), path))
        if p in self.honeypots:
            self.report("honeypot", f"{how} {p}")
        elif _under(p, self.hidden):
            self.report("harness_data", f"{how} {p} (hidden from candidates: the evaluation's data)")
        elif write and p in self.job_files:
            self.report("job_edit", f"{how} {p} (its job and budget are the harness's)")
        elif write and not _under(p, self.writable):
            self.report("write_outside", f"{how} {p}")
        elif _under(p, [self.run_root]) and not _under(p, [self.workspace]) and not _under(p, self.readable_dirs) \
                and not any(r.startswith(p.rstrip("/") + "/") for r in self.readable | {self.workspace}):
            self.report("harness_data", f"{how} {p} (run data the candidate was not given)")

    def hook(self, event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if isinstance(path, (str, bytes)):
                write = bool((flags or 0) & _WRITE_FLAGS) or any(c in str(mode or "") for c in "wax+")
                self.check(os.fsdecode(path), write, "open")
        elif event in ("os.listdir", "os.scandir"):
            path = args[0] if args and args[0] is not None else "."
            if isinstance(path, (str, bytes)):
                self.check(os.fsdecode(path), False, "list")
        elif event in _MUTATING:
            for path in args[:2]:
                if isinstance(path, (str, bytes)):
                    self.check(os.fsdecode(path), True, event)
        elif event in ("os.fork", "os.forkpty", "os.posix_spawn", "subprocess.Popen", "os.system"):
            self.spawned += 1
            if self.spawned > self.max_processes:
                self.report("fork_bomb", f"{self.spawned} processes spawned (the limit is {self.max_processes})")
        elif event.startswith("socket.") and event != "socket.gethostname":
            self.report("network", f"{event} {args[:2]!r}")


def _watch_clock(report: Reporter) -> None:
    """Setting the clock has no audit event; wrap the calls that do it (the kernel refuses them anyway)."""
    import time as t

    for name in ("clock_settime", "clock_settime_ns"):
        real = getattr(t, name, None)
        if real is not None:
            def wrapped(*a, _real=real, _name=name):
                report("clock", f"time.{_name}{a!r}")
                return _real(*a)
            setattr(t, name, wrapped)


def run(fd: int, module: str, job: str, patch: str | None) -> None:
    report = Reporter(fd)
    rules = Rules(json.loads(os.environ.pop("SUCCESSOR_GUARD")), report)
    sys.addaudithook(rules.hook)  # cannot be removed once added
    _watch_clock(report)
    if patch:
        runpy.run_path(patch, run_name="candidate_patch")
    sys.argv = [module, job]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def run_script(fd: int, argv: list[str]) -> None:
    """A user's Python program (the script workload) under the same audit hook, as `python FILE ARGS` would."""
    report = Reporter(fd)
    rules = Rules(json.loads(os.environ.pop("SUCCESSOR_GUARD")), report)
    sys.addaudithook(rules.hook)
    _watch_clock(report)
    sys.argv = list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
    runpy.run_path(argv[0], run_name="__main__")


def _alive_others() -> list[tuple[int, str]]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in (1, os.getpid()):
            continue
        try:
            state = open(f"/proc/{d}/stat").read().rsplit(")", 1)[-1].split()[0]
            cmd = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if state != "Z":
            out.append((int(d), cmd[:200]))
    return out


def reap(fd: int, cmd: list[str]) -> int:
    """Run the candidate, then find what it left running. Only inside a pid namespace of its own (our pid is 1
    or 2 there): outside one, /proc shows the whole machine."""
    report = Reporter(fd)
    proc = subprocess.Popen(cmd, pass_fds=(fd,))
    rc = proc.wait()
    if os.getpid() <= 2:
        time.sleep(0.005)  # a fork returns once its child exists, so what it forked is in /proc already
        left = _alive_others()
        if left:
            report("leftover_process", f"{len(left)} process(es) still running after it exited: "
                   + "; ".join(f"pid {p}: {c}" for p, c in left[:5]))
            for pid, _ in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    os.write(fd, (json.dumps({"kind": "_exit", "detail": str(rc)}) + "\n").encode())
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    mode, fd = sys.argv[1], int(sys.argv[2])
    if mode == "reap":
        sys.exit(reap(fd, sys.argv[sys.argv.index("--") + 1:]))
    if mode == "script":
        run_script(fd, sys.argv[3:])
        sys.exit(0)
    run(fd, sys.argv[3], sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else None)
