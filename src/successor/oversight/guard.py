"""The guard: the first processes inside a candidate's sandbox. Detection, not enforcement.

The sandbox (bubblewrap, rlimits, cgroups) is what *blocks* a candidate; the guard makes the attempt *visible*,
so a blocked attempt still disqualifies and is logged. It reports on a pipe the harness holds the other end of,
so a candidate cannot rewrite what was already reported.

    python -P -m successor.oversight.guard reap OWN_FD FD [JOB] -- CMD...  run CMD (handing it FD); afterwards report on
                                                         OWN_FD and kill what it left in the pid namespace
    python -P -m successor.oversight.guard run FD MODULE JOB [PATCH] install the audit hook, run the candidate's code
                                                         patch (if any), then MODULE as __main__ with JOB
    python -P -m successor.oversight.guard script FD FILE ARGS...   install the audit hook, run a user's FILE as __main__

The audit hook (PEP 578) sees the candidate's Python: opening or listing run data it was not given (the
validation and sealed tiers are not even mounted), writing outside its workspace, editing its own job file,
touching a honeypot, opening a socket, setting the clock. Code that leaves Python (ctypes, a shell) is still
blocked by the sandbox and caught by the harness's own checks (hashes, inotify on honeypots, cgroup counters).

The hook runs inside the candidate's process, so it is built to be hard to silence and loud when tampered with:
it looks up nothing at call time (no module global, no mutable set or counter: the harness dedups and caps),
reaching it (gc) or reading or setting its defaults or code is reported as `guard_tamper`, and its last act,
at the interpreter's final audit event or in os._exit, is an end record carrying a token only the reaper and
the hook know. A hooked process that exits without that record was silenced (`guard_silenced`). What it cannot
stop: code that reads the process's memory (ctypes, a signal handler peeking at the hook's frame) can learn the
token, forge the end record and then close the pipe; such code is still confined by the sandbox.
Imports here are stdlib only: this runs before, and beside, untrusted code.
"""
from __future__ import annotations

import json
import os
import runpy
import secrets
import signal
import subprocess
import sys
import time

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_MUTATING = frozenset({"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.utime",
                       "os.truncate", "os.symlink", "os.link", "shutil.rmtree", "shutil.move", "shutil.copyfile"})
_SPAWN = frozenset({"os.fork", "os.forkpty", "os.posix_spawn", "subprocess.Popen", "os.system"})
_TAMPER = frozenset({"gc.get_objects", "gc.get_referrers", "gc.get_referents"})
_EXIT_EVENT = "successor.guard.exit"
TOKEN_FD = "SUCCESSOR_GUARD_TOKEN_FD"  # the reaper hands the hooked process its end token on this pipe


def _roots(paths) -> tuple[frozenset, tuple]:
    """Exact paths and their folder prefixes, immutable: what the hook compares against."""
    norm = [os.path.normpath(p) for p in paths]
    return frozenset(norm), tuple(p.rstrip("/") + "/" for p in norm)


def _ancestors(paths) -> frozenset:
    out = set()
    for p in paths:
        p = os.path.normpath(p)
        while p != os.path.dirname(p):
            p = os.path.dirname(p)
            out.add(p)
    return frozenset(out)


def _hook_for(fd: int, spec: dict, token: str):
    """The audit hook, built so that nothing a candidate can reach steers it. Everything it uses is bound here,
    as keyword-only defaults (builtins, the fd, frozen path sets): no module global is looked up at call time,
    so patching os.write, json or this module changes nothing; no dedup set or counter lives here (the harness
    dedups and caps). Reading or setting these functions' defaults or code fires an audit event, reported as
    guard_tamper; the only other road to them (gc) is reported too. Only this function holds the end token."""
    ws = os.path.normpath(spec["workspace"])
    job_files = frozenset(os.path.normpath(p) for p in spec["job_files"])
    honeypots = frozenset(os.path.normpath(p) for p in spec["honeypots"])
    hidden = _roots(spec.get("hidden", []))
    writable = _roots([ws, "/dev/null", *spec.get("private", [])])
    run_root = _roots([spec["run_root"]])
    given = _roots([ws, *spec["readable"]])
    above_given = _ancestors([ws, *spec["readable"]])
    esc = json.encoder.c_encode_basestring_ascii or json.encoder.py_encode_basestring_ascii

    def send(kind, detail, *, _w=os.write, _fd=fd, _esc=esc, _err=OSError):
        try:  # one write of < PIPE_BUF bytes: atomic, whatever else writes to the pipe
            _w(_fd, ("{\"kind\": " + _esc(kind) + ", \"detail\": " + _esc(detail[:500]) + "}\n").encode())
        except _err:
            pass  # the pipe is gone or replaced: the harness sees no end record and says so

    def norm(path, *, _type=type, _str=str, _bytes=bytes, _issub=issubclass, _sadd=str.__add__,
             _bdec=bytes.decode, _badd=bytes.__add__, _fspath=os.fspath, _getcwd=os.getcwd, _int=int,
             _err=OSError):
        """An absolute normalized path as an exact str, without running a str subclass's methods."""
        t = _type(path)
        if t is not _str and t is not _bytes and not _issub(t, _str) and not _issub(t, _bytes):
            if t is _int or path is None:
                return None  # a file descriptor
            path = _fspath(path)
            t = _type(path)
        if t is not _str:
            path = _bdec(_badd(b"", path), "utf-8", "surrogateescape") if _issub(t, _bytes) else _sadd("", path)
        if not path.startswith("/"):
            try:
                path = _getcwd() + "/" + path
            except _err:
                path = "/" + path
        parts = []
        for c in path.split("/"):
            if c == ".." and parts:
                parts.pop()
            elif c and c != "." and c != "..":
                parts.append(c)
        return "/" + "/".join(parts)

    def check(p, write, how, *, _send=send, _hp=honeypots, _hidden=hidden, _jobs=job_files, _wr=writable,
              _run=run_root, _given=given, _above=above_given):
        if p in _hp:
            _send("honeypot", how + " " + p)
        elif p in _hidden[0] or p.startswith(_hidden[1]):
            _send("harness_data", how + " " + p + " (hidden from candidates: the evaluation's data)")
        elif write and p in _jobs:
            _send("job_edit", how + " " + p + " (its job and budget are the harness's)")
        elif write and not (p in _wr[0] or p.startswith(_wr[1])):
            _send("write_outside", how + " " + p)
        elif (p in _run[0] or p.startswith(_run[1])) and not (p in _given[0] or p.startswith(_given[1])) \
                and p not in _above:
            _send("harness_data", how + " " + p + " (run data the candidate was not given)")

    def hook(event, args, *, _send=send, _norm=norm, _check=check, _ours=frozenset(), _id=id, _repr=repr,
             _str=str, _type=type, _int=int, _wflags=_WRITE_FLAGS, _mutating=_MUTATING, _spawn=_SPAWN,
             _tamper=_TAMPER, _fin=sys.is_finalizing, _getpid=os.getpid, _exit=os._exit, _token=token,
             _bool=bool, _exit_event=_EXIT_EVENT, _err=Exception):
        try:
            if event == "object.__getattr__" or event == "object.__setattr__":
                if _id(args[0]) in _ours:
                    _send("guard_tamper", event + " " + _str(args[1]) + " of the guard's own function")
            elif event == "open":
                path, mode, flags = args
                p = _norm(path)
                if p is not None:
                    write = _bool((flags or 0) & _wflags) or (_type(mode) is _str and (
                        "w" in mode or "a" in mode or "x" in mode or "+" in mode))
                    _check(p, write, "open")
            elif event == "os.listdir" or event == "os.scandir":
                p = _norm(args[0] if args and args[0] is not None else ".")
                if p is not None:
                    _check(p, False, "list")
            elif event in _mutating:
                for path in args[:2]:
                    p = _norm(path)
                    if p is not None:
                        _check(p, True, event)
            elif event in _spawn:
                _send("_spawn", event)  # the harness counts them against the process limit
            elif event.startswith("socket.") and event != "socket.gethostname":
                _send("network", event + " " + _repr(args[:2])[:200])
            elif event in _tamper:
                _send("guard_tamper", event + " (the guard's reporter is reachable only this way)")
            elif event == "cpython.PyInterpreterState_New":
                _send("guard_tamper", "a sub-interpreter (it runs without this audit hook)")
            elif event == "cpython.PyInterpreterState_Clear":
                if _fin():  # the interpreter's last event, after atexit and module teardown
                    _send("_end", _str(_getpid()) + " " + _token)
                else:
                    _send("guard_tamper", "a forged interpreter-shutdown audit event")
            elif event == _exit_event or event == "os.exec":  # os._exit, exec: the process ends here
                _send("_end", _str(_getpid()) + " " + _token)
                if event == _exit_event:
                    code = args[0] if args and _type(args[0]) is _int else 1
                    _exit(code)
            elif event == "successor.guard.clock":
                _send("clock", _str(args[0])[:300])
        except _err as e:  # CPython's own events have known shapes: a malformed one is forged
            _send("guard_tamper", "a malformed audit event " + _str(event)[:100] + ": " + _type(e).__name__)

    return hook, (send, norm, check, hook)


def _exit_via_hook(code, *, _audit=sys.audit, _event=_EXIT_EVENT, _exit=os._exit):
    """os._exit for the candidate: the hook sends the end record, then ends the process itself."""
    _audit(_event, code)
    _exit(code)


def _clock(name: str, real):
    def clock_settime(*a, _real=real, _audit=sys.audit, _name=name):
        _audit("successor.guard.clock", "time." + _name + repr(a))  # the kernel refuses it anyway
        return _real(*a)
    return clock_settime


def install(fd: int) -> None:
    """Add the audit hook (it cannot be removed once added) with its spec from $SUCCESSOR_GUARD and its end
    token from the reaper's pipe; route os._exit and clock setting through it."""
    spec = json.loads(os.environ.pop("SUCCESSOR_GUARD"))
    token = "-"
    tfd = os.environ.pop(TOKEN_FD, "")
    if tfd.isdigit():
        try:
            token = os.read(int(tfd), 64).decode("ascii", "replace").strip() or "-"
            os.close(int(tfd))
        except OSError:
            pass
    hook, ours = _hook_for(fd, spec, token)
    import time as t

    wrappers = [_exit_via_hook]
    for name in ("clock_settime", "clock_settime_ns"):
        real = getattr(t, name, None)
        if real is not None:
            wrappers.append(_clock(name, real))
            setattr(t, name, wrappers[-1])
    hook.__kwdefaults__ = {**hook.__kwdefaults__, "_ours": frozenset(map(id, (*ours, *wrappers)))}
    os._exit = _exit_via_hook
    sys.addaudithook(hook)


def run(fd: int, module: str, job: str, patch: str | None) -> None:
    install(fd)
    if patch:
        runpy.run_path(patch, run_name="candidate_patch")
    sys.argv = [module, job]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def run_script(fd: int, argv: list[str]) -> None:
    """A user's Python program (the script workload) under the same audit hook, as `python FILE ARGS` would."""
    install(fd)
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


def _undumpable() -> None:
    """PR_SET_DUMPABLE 0: without CAP_SYS_PTRACE (the sandbox drops it) no other process may open this one's
    /proc/PID/fd, mem or environ, so the candidate cannot reach the reaper's own pipe through /proc."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
    except (OSError, AttributeError):
        pass


def _record(fd: int, kind: str, detail: str) -> None:
    try:
        os.write(fd, (json.dumps({"kind": kind, "detail": detail[:500]}) + "\n").encode())
    except OSError:
        pass


def reap(own_fd: int, fd: int, cmd: list[str]) -> int:
    """Run the candidate, then find what it left running. Only inside a pid namespace of its own (our pid is 1
    or 2 there): outside one, /proc shows the whole machine. The candidate gets `fd` (its guard's reports) and
    a one-time end token on a pipe; this process's own records (`_exit`, leftovers) go on `own_fd`, which the
    candidate never holds: it cannot forge them."""
    _undumpable()
    token = secrets.token_hex(16)
    tr, tw = os.pipe()
    os.write(tw, token.encode())
    os.close(tw)
    proc = subprocess.Popen(cmd, pass_fds=(fd, tr), env={**os.environ, TOKEN_FD: str(tr)})
    os.close(tr)
    os.close(fd)
    rc = proc.wait()
    if os.getpid() <= 2:
        time.sleep(0.005)  # a fork returns once its child exists, so what it forked is in /proc already
        left = _alive_others()
        if left:
            _record(own_fd, "leftover_process", f"{len(left)} process(es) still running after it exited: "
                    + "; ".join(f"pid {p}: {c}" for p, c in left[:5]))
            for pid, _ in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    _record(own_fd, "_exit", f"{rc} {proc.pid} {token}")
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    mode, fd = sys.argv[1], int(sys.argv[2])
    if mode == "reap":
        sys.exit(reap(fd, int(sys.argv[3]), sys.argv[sys.argv.index("--") + 1:]))
    if mode == "script":
        run_script(fd, sys.argv[3:])
        sys.exit(0)
    run(fd, sys.argv[3], sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else None)
