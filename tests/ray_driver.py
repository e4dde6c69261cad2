"""The Ray tests' driver: run inside a network and pid namespace that has only loopback, with a Ray head started
there (tests/test_ray_executor.py launches it). It runs everything that needs the cluster in one go and writes what
it saw to OUT/result.json; the tests read that and the run directories.

    python tests/ray_driver.py OUT ADDRESS

1. `local`: the smallest real run (conftest's TINY, two candidates) on the local executor;
2. `object_store`: the same run on the Ray executor, the worker of a generation-1 candidate (two run at once)
   killed mid-training;
3. `shared_path`: the same run again, with a shared run directory, killed the same way;
4. direct RayExecutor checks: a stop cancels the task and its sandbox; the real run directory hidden from a
   staged run; results over the object-store cap; a node without bubblewrap under `isolation: required`; the
   watchdog alone (no bubblewrap) killing the sandbox of a killed worker, no retries left; a private cluster.

A watcher samples /proc all along: every sandboxed experiment process (a `successor.oversight.guard` process whose command
line names a job file), its experiment, its job's path and whether a Ray worker (`ray::...`) is its ancestor.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TINY  # noqa: E402

from successor.config import RayConfig, load_config  # noqa: E402
from successor.executors import ray as ray_executor  # noqa: E402
from successor.executors.base import Experiment  # noqa: E402
from successor.executors.local import LocalExecutor
from successor.driver import Driver, Stopped  # noqa: E402
from successor.oversight.policy import Policy  # noqa: E402
from successor.rundir import RunDir  # noqa: E402


# -- /proc ---------------------------------------------------------------------------------------------------
def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _ppid(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def ray_worker_of(pid: int) -> int | None:
    """The nearest ancestor whose process title is a Ray task's (`ray::...`)."""
    seen = 0
    while pid > 1 and seen < 64:
        pid, seen = _ppid(pid), seen + 1
        args = _cmdline(pid)
        if args and args[0].startswith("ray::"):
            return pid
    return None


def with_descendants(pids: list[int]) -> list[int]:
    """`pids` and every live process below them (the candidate's own processes name no job file)."""
    parent = {int(d): _ppid(int(d)) for d in os.listdir("/proc") if d.isdigit()}
    out = list(pids)
    for pid in parent:
        p, hops = pid, 0
        while p > 1 and hops < 64 and pid not in out:
            p, hops = parent.get(p, 0), hops + 1
            if p in pids and alive(pid):
                out.append(pid)
    return out


def sandboxes(marker: str) -> list[tuple[int, str]]:
    """(pid, job path) of the guard processes whose job file lies under a path containing `marker`."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        args = _cmdline(int(d))
        if "successor.oversight.guard" not in args:
            continue
        jobs = [a for a in args if a.endswith("job.json") and marker in a]
        if jobs and alive(int(d)):
            out.append((int(d), jobs[0]))
    return out


class Watcher(threading.Thread):
    """Samples the sandboxes of one run; kills the Ray worker of the `kill_nth` experiment (1-based, in the order
    first seen) once its training has started, and watches what happens to its sandbox."""

    def __init__(self, marker: str, kill_nth: int | None = None):
        super().__init__(daemon=True)
        self.marker, self.kill_nth = marker, kill_nth
        self.seen: dict[str, dict] = {}  # experiment id -> {"jobs", "pids", "ray_worker", "first"}
        self.kill: dict | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.monotonic()
            for pid, job in sandboxes(self.marker):
                exp = Path(job).parent.name
                rec = self.seen.setdefault(exp, {"jobs": [], "pids": [], "ray_worker": [], "first": now,
                                                 "pids_after_kill": []})
                if job not in rec["jobs"]:
                    rec["jobs"].append(job)
                if pid not in rec["pids"]:
                    rec["pids"].append(pid)
                    rec["ray_worker"].append(ray_worker_of(pid))
                    if self.kill and self.kill["experiment"] == exp and pid not in self.kill["sandbox_pids"]:
                        rec["pids_after_kill"].append(pid)
            self._maybe_kill()
            time.sleep(0.1)

    def _maybe_kill(self) -> None:
        if self.kill_nth is None or self.kill is not None or len(self.seen) < self.kill_nth:
            return
        exp = sorted(self.seen, key=lambda e: self.seen[e]["first"])[self.kill_nth - 1]
        job = Path(self.seen[exp]["jobs"][-1])
        if not (job.parent / "out" / "progress.json").exists():
            return  # not training yet
        pids = [p for p, j in sandboxes(self.marker) if j == str(job)]
        worker = next((w for w in map(ray_worker_of, pids) if w), None)
        if worker is None:
            return
        pids = with_descendants(pids)
        title = _cmdline(worker)[0]
        os.kill(worker, signal.SIGKILL)
        t0 = time.monotonic()
        self.kill = {"experiment": exp, "job": str(job), "worker": worker, "worker_title": title,
                     "sandbox_pids": pids}
        while any(alive(p) for p in pids) and time.monotonic() - t0 < 15:
            time.sleep(0.05)
        self.kill["sandbox_gone_after_s"] = round(time.monotonic() - t0, 2)
        self.kill["sandbox_left"] = [p for p in pids if alive(p)]

    def result(self) -> dict:
        return {"seen": self.seen, "kill": self.kill}


# -- runs ----------------------------------------------------------------------------------------------------
def config(path: Path, executor: dict) -> Path:
    cfg = {k: dict(v) for k, v in TINY.items()}
    cfg["bootstrap"]["steps"] = 400
    cfg["researcher"]["candidates"] = 2  # two experiments in flight at once in generation 1
    cfg["loop"]["executor"] = executor
    path.write_text(yaml.safe_dump(cfg))
    return path


def recorded(cls, log: list):
    """Wrap an executor class's `map` to note each outcome as the driver receives it, and the workspace then."""
    real = cls.map

    def map(self, items, on_start=None):
        ws = {key: exp.workspace for key, exp in items}
        items_log = {key: exp.log_path for key, exp in items}
        for key, out in real(self, items, on_start):
            log.append({"experiment": key, "status": out.status, "node": out.node, "isolation": out.isolation,
                        "error": out.error, "checkpoint": (ws[key] / "out" / "checkpoint").is_dir(),
                        "log": items_log[key].is_file()})
            yield key, out
    cls.map = map
    return real


def run_loop(out: Path, name: str, executor: dict, kill_nth: int | None, cls) -> dict:
    root = out / name
    root.mkdir(parents=True, exist_ok=True)
    # one tier key: the runs compared for the same lineage share their harness tiers
    rd = RunDir(root / "run", load_config(config(root / "config.yaml", executor), "smoke"), tier_key=bytes(range(32)))
    rd.set_policy(Policy.model_validate({"tripwires": {"integrity_violation": False}}))
    outcomes: list = []
    real = recorded(cls, outcomes)
    watcher = Watcher(executor.get("ray", {}).get("staging_dir") or str(rd.root), kill_nth)
    watcher.start()
    t0 = time.monotonic()
    try:
        loop = Driver(rd)
        state = loop.run_all()
        loop.lab.executor.close()
    finally:
        cls.map = real
        watcher.stop.set()
        watcher.join()
        rd.store.close()
    return {"state": state, "run_dir": str(rd.root), "wall_s": round(time.monotonic() - t0, 1),
            "outcomes": outcomes, "driver_pid": os.getpid(), **watcher.result()}


# -- direct checks -------------------------------------------------------------------------------------------
def program(root: Path, name: str, source: str) -> Experiment:
    ws = root / "workspaces" / name
    (ws / "program").mkdir(parents=True, exist_ok=True)
    (ws / "job.json").write_text(json.dumps({"name": name}))
    (ws / "program" / "main.py").write_text(source)
    return Experiment(job=ws / "job.json", run_root=root, readable=[], protected=[], command=[sys.executable,
                      "main.py"], cwd=ws / "program", honeypots=[])


def direct(out: Path, address: str) -> dict:
    root = (out / "direct" / "run").resolve()
    (root / "harness").mkdir(parents=True, exist_ok=True)
    (root / "harness" / "sealed.jsonl").write_text('{"secret": 1}\n')
    staging = out / "direct" / "staging"
    policy = Policy.model_validate({"isolation": "required"})
    res: dict = {}

    # a stop while the driver waits: the task is cancelled and its sandbox dies with its worker
    ex = ray_executor.RayExecutor(120, 1, policy, "bwrap", None, RayConfig(address=address, staging_dir=str(staging)))
    exp = program(root, "stop", "import time\nprint('started', flush=True)\ntime.sleep(100)\n")
    seen: list[int] = []
    sent: list[float] = []  # when the SIGTERM went: the wait before it is Ray scheduling the task, not the stop

    def stopper() -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            pids = [p for p, _ in sandboxes(str(staging))]
            if pids:
                time.sleep(0.3)
                seen.extend(with_descendants([p for p, _ in sandboxes(str(staging))]))
                time.sleep(0.5)
                sent.append(time.monotonic())
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.1)

    def on_term(signum, frame):
        raise Stopped()

    old = signal.signal(signal.SIGTERM, on_term)
    threading.Thread(target=stopper, daemon=True).start()
    t0 = time.monotonic()
    try:
        list(ex.map([("stop", exp)]))
        res["stop"] = {"stopped": False}
    except Stopped:
        res["stop"] = {"stopped": True}
    finally:
        signal.signal(signal.SIGTERM, old)
    res["stop"]["waited_s"] = round(time.monotonic() - t0, 1)
    res["stop"]["after_signal_s"] = round(time.monotonic() - sent[0], 1) if sent else None
    t1 = time.monotonic()
    while any(alive(p) for p in seen) and time.monotonic() - t1 < 15:
        time.sleep(0.1)
    res["stop"] |= {"sandbox_pids": seen, "left": [p for p in seen if alive(p)],
                    "gone_after_s": round(time.monotonic() - t1, 2)}
    t1 = time.monotonic()
    while staging.exists() and any(staging.glob("successor-ray/*")) and time.monotonic() - t1 < 15:
        time.sleep(0.1)
    res["stop"]["staging_left"] = [str(p) for p in staging.glob("successor-ray/*")]

    # what a staged candidate sees of the real run directory (on this machine): nothing, and trying is caught
    peek = program(root, "peek", f"import os\ntry:\n    print(os.listdir({str(root / 'harness')!r}))\n"
                                 f"except OSError as e:\n    print('refused', e)\n")
    res["peek"] = _outcome(ex.run(peek), peek)

    # results over the cap
    capped = ray_executor.RayExecutor(120, 1, policy, "bwrap", None,
                                      RayConfig(address=address, staging_dir=str(staging), max_transfer_mb=1))
    big = program(root, "big", "open('blob.bin', 'wb').write(b'x' * (3 << 20))\n")
    res["cap"] = _outcome(capped.run(big), big)

    # a node without bubblewrap under isolation: required (the worker's environment names a bwrap that is not there)
    ex._options["runtime_env"] = {"env_vars": {"SUCCESSOR_BWRAP": "/nonexistent/bwrap"}}
    res["no_bwrap"] = _outcome(ex.run(program(root, "nobwrap", "print('ran')\n")), None)
    ex._options.pop("runtime_env")

    # no bubblewrap in the way (isolation: none): the watchdog alone takes the sandbox down with its worker, and
    # with no retries left the driver gets a failed outcome
    once = ray_executor.RayExecutor(120, 1, Policy.model_validate({"isolation": "none"}), "none", None,
                                    RayConfig(address=address, staging_dir=str(staging), max_retries=0))
    doomed = program(root, "doomed", "import time\nprint('started', flush=True)\ntime.sleep(100)\n")
    killed: dict = {}

    def killer() -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            pids = [p for p, _ in sandboxes(str(staging))]
            worker = next((w for w in map(ray_worker_of, pids) if w), None)
            if pids and worker:
                # the guard, then the program it starts: wait for both (0.5 s was too short at a load average of
                # 9, when the guard alone was caught), then kill the worker
                t2 = time.monotonic()
                while len(with_descendants([p for p, _ in sandboxes(str(staging))])) < 2 and \
                        time.monotonic() - t2 < 30:
                    time.sleep(0.1)
                time.sleep(0.5)
                killed["sandbox_pids"] = with_descendants([p for p, _ in sandboxes(str(staging))])
                os.kill(worker, signal.SIGKILL)
                t1 = time.monotonic()
                while any(alive(p) for p in killed["sandbox_pids"]) and time.monotonic() - t1 < 15:
                    time.sleep(0.05)
                killed["gone_after_s"] = round(time.monotonic() - t1, 2)
                killed["left"] = [p for p in killed["sandbox_pids"] if alive(p)]
                return
            time.sleep(0.1)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    res["watchdog"] = _outcome(once.run(doomed), None)
    th.join()
    res["watchdog"] |= killed
    t1 = time.monotonic()
    while any(staging.glob("successor-ray/*")) and time.monotonic() - t1 < 15:
        time.sleep(0.1)
    res["staging_left_at_end"] = [str(p) for p in staging.glob("successor-ray/*")]
    ex.close()

    # address: null, a private cluster inside the driver, shut down by close()
    mine = ray_executor.RayExecutor(120, 1, policy, "bwrap", None, RayConfig(address=None))
    res["private"] = _outcome(mine.run(program(root, "private", "print('hello from a private cluster')\n")), None)
    import ray

    res["private"] |= {"workers": mine.workers, "owned": mine._owns}
    mine.close()
    res["private"]["initialized_after_close"] = ray.is_initialized()
    return res


def _outcome(o, exp: Experiment | None) -> dict:
    d = {"status": o.status, "error": o.error, "node": o.node, "isolation": o.isolation,
         "violations": o.violations}
    if exp is not None:
        log = exp.log_path
        d["log"] = log.read_text(errors="replace") if log.exists() else None
        d["files"] = sorted(str(p.relative_to(exp.workspace)) for p in exp.workspace.rglob("*") if p.is_file())
    return d


def main() -> None:
    out, address = Path(sys.argv[1]).resolve(), sys.argv[2]
    phases = sys.argv[3].split(",") if len(sys.argv) > 3 else ["local", "object_store", "shared_path", "direct"]
    result: dict = {}

    def save() -> None:
        (out / "result.json").write_text(json.dumps(result, indent=2, default=str))

    t0 = time.monotonic()
    if "local" in phases:
        result["local"] = run_loop(out, "local", {"name": "local"}, None, LocalExecutor)
        save()
    if "object_store" in phases:
        result["object_store"] = run_loop(out, "object_store", {"name": "ray", "ray": {
            "address": address, "artifacts": "object_store", "staging_dir": str(out / "staging")}}, 2,
            ray_executor.RayExecutor)
        result["object_store"]["staging_left"] = [str(p) for p in (out / "staging").glob("successor-ray/*")]
        save()
    if "shared_path" in phases:
        result["shared_path"] = run_loop(out, "shared_path", {"name": "ray", "ray": {
            "address": address, "artifacts": "shared_path"}}, 2, ray_executor.RayExecutor)
        save()
    if "direct" in phases:
        t1 = time.monotonic()
        result["direct"] = direct(out, address)
        result["direct"]["wall_s"] = round(time.monotonic() - t1, 1)
    result["wall_s"] = round(time.monotonic() - t0, 1)
    save()


if __name__ == "__main__":
    main()
