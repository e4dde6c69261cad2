"""The local executor: each experiment is a sandboxed subprocess in its own process group, under a wall-clock
limit, watched from outside.

A crash, a NaN loss or a time-out is an *outcome*, recorded as a failed experiment; the loop goes on. Crossing a
sandbox line is an outcome too: status `violation`, with one reason per line crossed. On time-out the whole
process group is killed (the sandbox's pid namespace and cgroup take whatever escaped the group with it).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

from .. import safeio
from ..oversight import integrity
from ..oversight.policy import Policy
from ..oversight.sandbox import GUARD, Cgroup, preexec, wrap
from .base import Aborted, Experiment, OnStart, Outcome, _files_at_least, usable_cores


class LocalExecutor:
    """A pool of `workers` sandboxed subprocesses on this machine. A worker is a thread that starts one
    sandbox and waits on it; the training happens in the subprocess, so threads do not contend for the GIL."""

    def __init__(self, timeout_s: float, threads: int | None = None, policy: Policy | None = None,
                 isolation: str = "none", workers: int | None = None):
        self.timeout_s = timeout_s
        self.workers = workers or usable_cores()
        self._threads = threads
        self.threads = threads or usable_cores()  # one experiment alone
        self.policy = policy or Policy(isolation="none")
        self.isolation = isolation
        self._abort = threading.Event()

    def threads_for(self, parallel: int) -> int:
        """The config's count if it names one; else the usable cores shared among the experiments that run
        at once, so N workers do not oversubscribe the CPU."""
        return self._threads or max(1, usable_cores() // max(1, min(self.workers, parallel)))

    def map(self, items: list[tuple[str, "Experiment"]], on_start: OnStart | None = None
            ) -> Iterator[tuple[str, "Outcome"]]:
        """Run experiments `workers` at a time. A stop (SIGTERM, Ctrl-C) in the driver kills every one under
        way before it propagates."""
        if self.workers == 1 or len(items) <= 1:
            for key, exp in items:
                yield key, self.run(exp, on_start=_bound(on_start, key))
            return
        pool = ThreadPoolExecutor(max_workers=min(self.workers, len(items)), thread_name_prefix="experiment")
        try:
            futures = [(key, pool.submit(self.run, exp, _bound(on_start, key))) for key, exp in items]
            for key, fut in futures:
                yield key, fut.result()
        except BaseException:
            self._abort.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self._abort.clear()

    def close(self) -> None:
        pass

    def run(self, exp: Experiment, on_start=None) -> Outcome:
        """Run one experiment; its stdout/stderr go to `log.txt` in the workspace."""
        ws, limits = exp.workspace, self.policy.sandbox
        honeypots = exp.honeypots if exp.honeypots is not None else \
            integrity.plant_honeypots(ws, _task(exp.job), exp.honeypot_levels, seed=len(str(ws)))
        job_files = [exp.job] + ([exp.patch] if exp.patch else []) + exp.read_only
        before = integrity.snapshot(exp.protected + job_files + exp.readable)
        watch = integrity.Tripwire(honeypots)
        cgroup = Cgroup.create(limits)
        r, w = os.pipe()  # the guard's reports, from inside the candidate's process
        rr, rw = os.pipe()  # the reaper's own records: the candidate never holds this one
        reports, control, tally = [], [], {}
        readers = [threading.Thread(target=_drain, args=args, daemon=True)
                   for args in ((r, reports, tally), (rr, control, {}))]
        for t in readers:
            t.start()
        guard_env = {"workspace": str(ws), "run_root": str(exp.run_root), "readable": [str(p) for p in exp.readable],
                     "job_files": [str(p) for p in job_files], "honeypots": [str(p) for p in honeypots],
                     "max_processes": limits.processes, "hidden": [str(p) for p in exp.hidden],
                     "private": ["/dev/shm"] if self.isolation == "bwrap" else []}  # the sandbox's own tmpfs
        if exp.command is None:
            inner = [*GUARD, "reap", str(rw), str(w), "--", *GUARD, "run", str(w), exp.module, str(exp.job)]
            inner += [str(exp.patch)] if exp.patch else []
        else:  # the job's path on the command line is how kill_orphan knows the process is ours
            inner = [*GUARD, "reap", str(rw), str(w), str(exp.job), "--", *_guarded(exp.command, w)]
        cmd = wrap(self.isolation, inner, ws, exp.run_root, exp.readable, job_files, exp.cwd, exp.hidden,
                   [Path(p) for p in limits.readable_paths])
        if not os.path.lexists(ws / "tmp"):
            (ws / "tmp").mkdir()
        log = exp.log_path
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(ws), "TMPDIR": str(ws / "tmp"), "LANG": "C.UTF-8",
               "PYTHONUNBUFFERED": "1",
               "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": str(exp.threads or self.threads),
               "SUCCESSOR_GUARD": json.dumps(guard_env), **exp.env}
        t0 = time.monotonic()  # the harness's clock: nothing in the sandbox can set it
        timed_out, over_quota, rusage = False, False, None
        try:
            out = safeio.create(log)  # afresh, never through whatever an earlier attempt left at its path
            try:
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env, cwd=exp.cwd or ws, start_new_session=True, pass_fds=(w, rw),
                                        preexec_fn=preexec(limits, cgroup.join_files() if cgroup else []))
            finally:
                os.close(out)
            os.close(w)
            os.close(rw)
            w = -1
            if on_start:
                on_start(proc.pid)
            rc, rusage, timed_out, over_quota = self._wait(proc, ws, limits, t0)
        except BaseException:  # the harness itself is stopping: take the candidate down with it
            if w >= 0:
                os.close(w)
                os.close(rw)
            if "proc" in locals():
                _kill(proc.pid)
            if cgroup:
                cgroup.remove()
            raise
        wall = time.monotonic() - t0
        for t in readers:
            t.join(timeout=5)
        counters = cgroup.counters() if cgroup else {}
        if cgroup:
            cgroup.remove()
        touched = watch.touched()
        watch.close()
        violations = [v for v in reports if not v["kind"].startswith("_")] + guard_records(
            reports, control, tally, limits.processes, exp.command is None or _guarded(exp.command, w) != exp.command)
        violations += [{"kind": "honeypot", "detail": t} for t in touched]
        violations += [{"kind": "integrity", "detail": f"{p} changed during the experiment"}
                       for p in integrity.changed(before, integrity.snapshot(list(map(Path, before))))]
        if counters.get("pids_refused"):
            violations.append({"kind": "fork_bomb", "detail": f"the process limit ({limits.processes}) refused "
                               f"{counters['pids_refused']} fork(s)"})
        if over_quota:
            violations.append({"kind": "disk", "detail": over_quota})
        if counters.get("oom_kills"):
            violations.append({"kind": "memory", "detail": f"the {limits.memory_mb} MiB memory limit killed "
                               f"{counters['oom_kills']} process(es)"})
        full = _files_at_least(ws, limits.file_size_mb << 20)  # Python ignores SIGXFSZ and sees EFBIG instead
        if full or rc in (128 + signal.SIGXFSZ, -signal.SIGXFSZ):
            violations.append({"kind": "disk", "detail": f"a file reached the {limits.file_size_mb} MiB file-size "
                               f"limit{': ' + ', '.join(full[:3]) if full else ''}"})
        exited = any(v["kind"] == "_exit" for v in control)
        first = safeio.first_line(log)
        if not reports and first.startswith(("bwrap:", "unshare:")):  # the sandbox never started: no one's fault
            return Outcome("failed", wall, f"the sandbox could not start: {first}", cpu_s=0.0,
                           isolation=self.isolation)
        if not exited and not timed_out and not over_quota:
            violations.append({"kind": "guard_killed", "detail": f"the sandbox's monitor died (exit code {rc})"})
        # The kernel's count for the whole cgroup; without one, what wait4 saw (bwrap's own share only).
        cpu = counters.get("cpu_s", (rusage.ru_utime + rusage.ru_stime) if rusage else 0.0)
        return self._outcome(rc, wall, cpu, timed_out, violations, counters, log)

    def _wait(self, proc: subprocess.Popen, ws: Path, limits, t0: float):
        """Poll the process: reap it with its resource usage, kill it on time-out or when the workspace grows
        past its quota of bytes or of files (a full disk, or a full inode table, hurts every other experiment,
        so it is stopped, not just reported). Returns (rc, rusage, timed out, why over quota or None)."""
        last_check, nap = 0.0, 0.001
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return proc.returncode, rusage, False, None
            now = time.monotonic()
            if self._abort.is_set():
                self._stop(proc)
                raise Aborted("the driver is stopping")
            if now - t0 > self.timeout_s:
                return self._stop(proc) + (True, None)
            if now - last_check > 0.5:
                last_check = now
                size, files = safeio.usage(ws)
                if size > limits.workspace_mb << 20:
                    return self._stop(proc) + (False, f"the workspace grew past {limits.workspace_mb} MiB")
                if files > limits.workspace_files:
                    return self._stop(proc) + (False, f"the workspace holds over {limits.workspace_files} files "
                                               f"and folders")
            time.sleep(nap)  # from 1 ms up to 50: a short experiment is not kept waiting for the next look
            nap = min(0.05, nap * 1.5)

    @staticmethod
    def _stop(proc: subprocess.Popen):
        _kill(proc.pid)
        _, status, rusage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        return proc.returncode, rusage

    def _outcome(self, rc, wall, cpu, timed_out, violations, counters, log: Path) -> Outcome:
        base = dict(wall_s=wall, cpu_s=cpu, isolation=self.isolation, violations=violations)
        if violations:
            why = "; ".join(f"{v['kind']}: {v['detail']}" for v in violations)
            return Outcome("violation", error=f"crossed the sandbox: {why}"[:2000], **base)
        if timed_out:
            return Outcome("timeout", error=f"killed after {self.timeout_s:.0f}s wall-clock limit", **base)
        if rc in (128 + signal.SIGXCPU, -signal.SIGXCPU):
            return Outcome("timeout", error=f"CPU-time limit ({self.policy.sandbox.cpu_seconds}s) reached", **base)
        if rc != 0:
            tail = safeio.tail(log).strip().splitlines()
            why = tail[-1] if tail else f"exit code {rc}"
            return Outcome("failed", error=f"exit code {rc}: {why}", **base)
        return Outcome("done", **base)


def _bound(on_start: OnStart | None, key: str):
    return None if on_start is None else (lambda pid: on_start(key, pid))


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _drain(fd: int, reports: list[dict], tally: dict, limit: int = 200) -> None:
    """Read the guard's reports until every writer has gone (the sandbox is torn down). Hostile input: each
    line is cut at 4 KiB, each record bounded; distinct records are kept up to `limit`, every record is
    counted by kind in `tally` (`_dropped`: those not kept). The dedup and caps live here, where no candidate
    can reach them."""
    seen: set[tuple[str, str]] = set()
    with os.fdopen(fd, "rb") as f:
        while line := f.readline(4096):
            while not line.endswith(b"\n") and (more := f.readline(4096)):  # the rest of an over-long line
                line = line[:4096] + (b"\n" if more.endswith(b"\n") else b"")
            try:
                rec = json.loads(line)
                rec = {"kind": str(rec["kind"])[:40], "detail": str(rec["detail"])[:500]}
            except (ValueError, KeyError, TypeError):
                rec = {"kind": "garbled_report", "detail": line[:200].decode(errors="replace")}
            tally[rec["kind"]] = tally.get(rec["kind"], 0) + 1
            key = (rec["kind"], rec["detail"])
            if rec["kind"] == "_spawn" or key in seen:
                continue
            if len(seen) >= (limit if not rec["kind"].startswith("_") else 4 * limit):  # end records: kept
                tally["_dropped"] = tally.get("_dropped", 0) + 1
                continue
            seen.add(key)
            reports.append(rec)


def guard_records(reports: list[dict], control: list[dict], tally: dict, processes: int, hooked: bool
                  ) -> list[dict]:
    """What the harness concludes from the guard's records beyond the violations it reported itself: the
    reaper's (leftover processes), a forged reaper record, spawns past the limit, records it did not keep,
    and a hooked process that exited without its end record (its guard was silenced)."""
    out = [v for v in control if v["kind"] != "_exit"]
    out += [{"kind": "guard_tamper", "detail": f"forged a harness record: {v['kind']} {v['detail'][:100]}"}
            for v in reports if v["kind"] == "_exit"]
    if tally.get("_spawn", 0) > processes:
        out.append({"kind": "fork_bomb", "detail": f"{tally['_spawn']} processes spawned (the limit is "
                    f"{processes})"})
    if tally.get("_dropped"):
        out.append({"kind": "guard_flood", "detail": f"{tally['_dropped']} more reports not kept"})
    ends = {v["detail"] for v in reports if v["kind"] == "_end"}
    for v in control:
        if v["kind"] != "_exit" or not hooked:
            continue
        rc, _, pid_token = v["detail"].partition(" ")  # the candidate's exit code, its pid and end token
        forged = [e for e in ends if e.rpartition(" ")[2] != pid_token.rpartition(" ")[2]]
        if forged:
            out.append({"kind": "guard_tamper", "detail": f"an end record with a wrong token: {forged[0][:60]}"})
        if rc.lstrip("-").isdigit() and int(rc) >= 0 and pid_token not in ends:
            out.append({"kind": "guard_silenced", "detail": f"the candidate exited (code {rc}) without its "
                        "guard's end record: its reports were cut off"})
    return out


def _guarded(command: list[str], fd: int) -> list[str]:
    """A Python program (`python FILE ARGS`) runs under the guard's audit hook; any other command runs as is
    (the sandbox still blocks it, and the harness's hashes and honeypots still see it)."""
    if len(command) >= 2 and Path(command[0]).name.startswith("python") and command[1].endswith(".py"):
        return [*GUARD, "script", str(fd), *command[1:]]
    return command


def _task(job: Path):
    from ..workloads.tinylm.tasks import get_task

    return get_task(json.loads(job.read_text()).get("task", "addition"))
