"""The sandbox a candidate experiment runs in, built from the policy.

Isolation, strongest first:
- `bwrap`: bubblewrap with every namespace unshared (no network, own pid namespace), capabilities dropped, and
  a root of its own, read-only, holding only what a candidate needs: the system trees (/usr, /etc, the /bin and
  /lib links, the CPU topology from /sys), the Python environment, the policy's `sandbox.readable_paths`, the
  run directory as an empty tmpfs into which only the experiment's inputs (train and dev shards, parent
  checkpoint) are bound read-only and its workspace read-write, and private empty /tmp, /run, /var/tmp,
  /dev/shm. No host socket is reachable (Docker's, D-Bus's: they live in folders it does not have; abstract
  ones are in the host's network namespace). The validation and sealed tiers are not in its filesystem at all.
  A bound tree could itself hold a socket (a venv, a data folder the policy names): the environment's own
  folders are bound whole.
- `unshare` (fallback when bwrap is missing or cannot start, and the policy says `preferred`): `unshare -rn`
  with its own pid and mount namespace: no network, but the filesystem is only as protected as file
  permissions make it (the harness's hashes and honeypots still catch tampering).
- `none`: rlimits and cgroups only.
Under every mode: rlimits (CPU time, address space, open files, file size), a process group the executor kills
on time-out, and, where the machine lets us create them, a cgroup with memory and pids limits (RLIMIT_NPROC
does nothing for root, which is what CI runs as).
"""
from __future__ import annotations

import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from .policy import Policy, SandboxLimits

GUARD = [sys.executable, "-P", "-m", "successor.oversight.guard"]


class IsolationError(RuntimeError):
    """The policy requires isolation that this machine cannot provide."""


def bwrap_path() -> str | None:
    return os.environ.get("SUCCESSOR_BWRAP") or shutil.which("bwrap")


@functools.lru_cache(maxsize=None)
def _bwrap_works(bwrap: str) -> str | None:
    """None if a bwrap sandbox starts here, else why not (containers often forbid user namespaces)."""
    try:
        r = subprocess.run([bwrap, *_BWRAP_BASE, *system_binds(), "--", "/bin/true"], capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return None if r.returncode == 0 else (r.stderr.strip() or f"exit code {r.returncode}")


@functools.lru_cache(maxsize=None)
def _unshare_works() -> bool:
    exe = shutil.which("unshare")
    if not exe:
        return False
    r = subprocess.run([exe, *_UNSHARE_BASE, "/bin/true"], capture_output=True)
    return r.returncode == 0


_BWRAP_BASE = ["--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
               "--cap-drop", "ALL"]
_UNSHARE_BASE = ["--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--mount",
                 "--mount-proc"]


def isolation_mode(policy: Policy) -> str:
    """The strongest isolation available that the policy accepts; raises IsolationError with the reason."""
    if policy.isolation == "none":
        return "none"
    bwrap = bwrap_path()
    why = "bubblewrap (bwrap) is not installed" if not bwrap else _bwrap_works(bwrap)
    if why is None:
        return "bwrap"
    if policy.isolation == "required":
        raise IsolationError(f"the policy requires isolation (isolation: required) but the sandbox cannot start: "
                             f"{why}. Install bubblewrap (apt-get install bubblewrap), or set isolation: preferred "
                             f"in the policy to accept the weaker `unshare -rn` fallback")
    return "unshare" if _unshare_works() else "none"


class Cgroup:
    """A per-experiment cgroup with memory and pids limits: v2 if the unified hierarchy is writable, else v1's
    memory and pids controllers. `create` returns None where the machine does not allow it."""

    def __init__(self, dirs: dict[str, Path], v2: bool):
        self.dirs, self.v2 = dirs, v2

    @classmethod
    def create(cls, limits: SandboxLimits) -> "Cgroup | None":
        name = f"successor-{uuid.uuid4().hex[:12]}"
        try:
            if Path("/sys/fs/cgroup/cgroup.controllers").exists():
                d = cls._own("", Path("/sys/fs/cgroup")) / name
                d.mkdir()
                cg = cls({"": d}, True)
                (d / "memory.max").write_text(str(limits.memory_mb << 20))
                (d / "pids.max").write_text(str(limits.processes))
                return cg
            dirs = {c: cls._own(c, Path("/sys/fs/cgroup") / c) / name for c in ("memory", "pids", "cpuacct")}
            for c, d in list(dirs.items()):
                try:
                    d.mkdir()
                except OSError:
                    if c == "cpuacct":  # CPU accounting is a bonus; the limits are not
                        del dirs[c]
                        continue
                    raise
            cg = cls(dirs, False)
            (dirs["memory"] / "memory.limit_in_bytes").write_text(str(limits.memory_mb << 20))
            (dirs["pids"] / "pids.max").write_text(str(limits.processes))
            return cg
        except OSError:
            return None

    @staticmethod
    def _own(controller: str, mount: Path) -> Path:
        """Our own cgroup in this hierarchy (from /proc/self/cgroup), so limits nest under the harness's."""
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            if (controller == "" and ctrls == "") or controller in ctrls.split(","):
                own = mount / path.lstrip("/")
                return own if own.is_dir() else mount
        return mount

    def join_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def counters(self) -> dict[str, int]:
        """How often the pids limit refused a fork, how many processes the memory limit killed, and the CPU
        time the kernel charged to the experiment (`cpu_s`, absent without CPU accounting)."""
        out: dict = {"pids_refused": 0, "oom_kills": 0}
        if self.v2:
            for line in _read(self.dirs[""] / "cpu.stat").splitlines():
                if line.startswith("usage_usec "):
                    out["cpu_s"] = int(line.split()[1]) / 1e6
        elif "cpuacct" in self.dirs and _read(self.dirs["cpuacct"] / "cpuacct.usage").strip():
            out["cpu_s"] = int(_read(self.dirs["cpuacct"] / "cpuacct.usage")) / 1e9
        pids = self.dirs.get("pids", self.dirs.get(""))
        mem = self.dirs.get("memory", self.dirs.get(""))
        for line in _read(pids / "pids.events").splitlines():
            if line.startswith("max "):
                out["pids_refused"] = int(line.split()[1])
        for line in _read(mem / ("memory.events" if self.v2 else "memory.oom_control")).splitlines():
            if line.startswith("oom_kill "):
                out["oom_kills"] = int(line.split()[1])
        return out

    def remove(self) -> None:
        """Kill whatever is left in it, then remove it."""
        for d in self.dirs.values():
            for _ in range(50):
                pids = [int(p) for p in _read(d / "cgroup.procs").split()]
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, 9)
                    except ProcessLookupError:
                        pass
                time.sleep(0.02)
            try:
                d.rmdir()
            except OSError:
                pass


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def preexec(limits: SandboxLimits, cgroup_procs: list[str]):
    """Runs in the child between fork and exec: join the cgroup, then set the rlimits every descendant inherits.
    Only os-level calls here (the parent has threads)."""
    cpu, mem = limits.cpu_seconds, limits.memory_mb << 20

    def apply() -> None:
        for f in cgroup_procs:
            fd = os.open(f, os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_mb << 20, limits.file_size_mb << 20))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def wrap(mode: str, inner: list[str], workspace: Path, run_root: Path, readable: list[Path],
         read_only_in_workspace: list[Path], cwd: Path | None = None, hidden: list[Path] = (),
         host_readable: list[Path] = ()) -> list[str]:
    """The full command line for `inner` (the guard and the candidate) under the given isolation mode.
    `readable` are the experiment's inputs (in the run directory), `host_readable` the host paths the policy
    adds (sandbox.readable_paths, the evaluation's hidden data), both bound read-only."""
    if mode == "none":
        return inner
    if mode == "unshare":
        return [shutil.which("unshare") or "unshare", *_UNSHARE_BASE, *inner]
    cmd = [bwrap_path(), *_BWRAP_BASE, *system_binds()]
    for p in [*python_paths(), *(os.path.abspath(p) for p in host_readable)]:
        cmd += ["--ro-bind", p, p]
    cmd += ["--tmpfs", str(run_root)]  # after the host paths: whatever of the run they contain, it hides
    for p in readable:
        cmd += ["--ro-bind", str(p), str(p)]
    cmd += ["--bind", str(workspace), str(workspace)]
    for p in read_only_in_workspace:
        cmd += ["--ro-bind", str(p), str(p)]
    for p in hidden:  # last, over anything above: an empty folder, or an unreadable file, in its place
        cmd += ["--tmpfs", str(p)] if Path(p).is_dir() else ["--ro-bind", "/dev/null", str(p)]
    # The root itself (bwrap's tmpfs, holding the mount points) read-only: a candidate writes only where given.
    return cmd + ["--remount-ro", "/", "--chdir", str(cwd or workspace), "--", *inner]


_SYSTEM = ("/usr", "/etc")
_SYSFS = ("/sys/devices/system/cpu", "/sys/devices/system/node")  # what torch's cpuinfo and OpenBLAS read
_PRIVATE = ("/tmp", "/run", "/var/tmp", "/dev/shm")  # empty, the sandbox's own: no host socket lives there


@functools.lru_cache(maxsize=None)
def system_binds() -> tuple[str, ...]:
    """The root of a sandbox: the system trees read-only, bwrap's own /dev and /proc, private empty tmpfs for
    every folder where hosts keep sockets (/tmp, /run, /var/run, /dev/shm). Nothing else of the host: no
    /home, /root, /var, /mnt, /srv, /opt, no Docker or D-Bus socket."""
    out: list[str] = []
    for d in _SYSTEM + _SYSFS:
        if os.path.isdir(d):
            out += ["--ro-bind", d, d]
    for d in ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
        if os.path.islink(d):  # merged /usr: /bin -> usr/bin
            out += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            out += ["--ro-bind", d, d]
    out += ["--dev", "/dev", "--proc", "/proc"]
    for d in _PRIVATE:
        out += ["--tmpfs", d]
    return tuple(out + ["--symlink", "../run", "/var/run"])


@functools.lru_cache(maxsize=None)
def python_paths() -> tuple[str, ...]:
    """The host paths a candidate's Python needs, read-only: its environment (sys.prefix, base_prefix,
    exec_prefix), its interpreter's real path, the installed successor package, and the sys.path a fresh
    interpreter of this environment gets (stdlib, site-packages, the folders .pth files add, e.g. an editable
    install's src/), each at its own path and at its real one. The project may live anywhere (a clone under
    /tmp, a CI checkout). Not this process's own sys.path: it holds its working directory under `python -m`
    (a home folder, a project with its runs) and whatever a test runner inserted. A path the system trees
    already hold is left out, and so is a whole host folder (/, /tmp, /home...)."""
    import successor

    try:
        fresh = json.loads(subprocess.run(
            [sys.executable, "-P", "-c", "import sys, json; print(json.dumps(sys.path))"], capture_output=True,
            text=True, timeout=60, env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}).stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        fresh = []
    found = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.executable, *successor.__path__,
             *[p for p in fresh if isinstance(p, str) and p]]
    paths = {q for p in found for q in (os.path.abspath(p), os.path.realpath(p)) if os.path.exists(q) and _bindable(q)}
    # Each at its own path: what lies inside a bound folder is there already (binding it again would follow
    # a link inside a read-only tree).
    return tuple(sorted(q for q in paths if not any(q.startswith(o.rstrip("/") + "/") for o in paths)))


_HOST_FOLDERS = {"/", "/tmp", "/run", "/var", "/home", "/root", "/mnt", "/srv", "/opt", "/media", "/dev", "/proc",
                 "/sys", "/boot", "/var/run", "/var/tmp", "/var/lib"}


def _bindable(path: str) -> bool:
    if any(path == d or path.startswith(d + "/") for d in _SYSTEM + ("/bin", "/sbin", "/lib", "/lib64")):
        return False  # the system trees hold it already
    return (path.rstrip("/") or "/") not in _HOST_FOLDERS
