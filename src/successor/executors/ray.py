"""The Ray executor: each experiment is one Ray task, which Ray places on a node with the CPUs (GPUs, memory) it
asks for. On that node the task runs the local executor's sandbox, with the isolation that node can give
(`sandbox.isolation_mode` is decided there: a node without bubblewrap under `isolation: required` gives a failed
outcome that says so). The outcome comes back as plain data; the driver alone writes the store, the audit log and
the models, in the order the experiments were given (`map`).

Artifacts (`loop.executor.ray.artifacts`):
- `object_store`: the driver packs what an experiment needs (its job, code patch, readable inputs, read-only files
  and, for the script workload, its program folder) into one tar put in Ray's object store. The node unpacks it
  into a fresh staging folder, mirroring the run directory (paths in the job are rewritten to the staging copy),
  runs the sandbox there, and sends back the workspace's results (everything but `tmp/` and the inputs it was
  sent, unchanged), which the driver unpacks into the real workspace before `map` yields: safely (`filter="data"`,
  no links, never over an input). The validation, sealed and guardrail tiers are never sent; where the run
  directory exists on the node too (the driver's machine), the sandbox hides it like the tiers.
- `shared_path`: every node sees the run directory at the same path; the task runs in place, and each attempt
  starts from the workspace as the driver prepared it.

A worker process (or node) that dies mid-experiment takes the sandbox with it: beside each task a watchdog process
holds one end of a pipe whose other end only the worker holds; when the worker dies the pipe closes and the
watchdog kills the sandbox's process group (bubblewrap's `--die-with-parent` does so too). Ray then runs the task
again (`max_retries`; the candidate's own failures are outcomes, never retried) and the driver records the
experiment once. A stop in the driver (Ctrl-C, `successor stop`) cancels every task in flight, with force.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import tarfile
import threading
from typing import Iterator

from .. import safeio
from ..config import ConfigError, RayConfig
from ..oversight.policy import Policy
from .base import Experiment, OnStart, Outcome, usable_cores
from .ray_node import (
    _inputs,
    _inside,
    _pack,
    _run_on_node,
    _sha256,
    _to_plain,
    _tree_size,
    _workspace_inputs,
    unpack_results,
)

INSTALL = "pip install 'successor-lab[ray]'"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(f"loop.executor.name: ray needs the Ray package, which is not installed here: "
                          f"{INSTALL}") from None
    return ray


class RayExecutor:
    """Experiments as Ray tasks, at most `workers` in flight, yielded in the order given."""

    def __init__(self, timeout_s: float, threads: int | None = None, policy: Policy | None = None,
                 isolation: str = "none", workers: int | None = None, cfg: RayConfig | None = None):
        self._ray = ray = _import_ray()
        self.cfg = cfg or RayConfig()
        self.timeout_s = timeout_s
        self._threads = threads
        self.policy = policy or Policy(isolation="none")
        self.isolation = isolation  # the driver's; each outcome carries the one its node gave
        self._owns = False
        if not ray.is_initialized():
            self._init()
        have = ray.cluster_resources()
        cpus, gpus = float(have.get("CPU", 0.0)), float(have.get("GPU", 0.0))
        if cpus < self.cfg.cpus_per_experiment:
            self.close()
            raise ConfigError(f"loop.executor.ray.cpus_per_experiment: {self.cfg.cpus_per_experiment:g} CPUs asked, "
                              f"the Ray cluster has {cpus:g}")
        if gpus < self.cfg.gpus_per_experiment:
            self.close()
            raise ConfigError(f"loop.executor.ray.gpus_per_experiment: {self.cfg.gpus_per_experiment:g} GPUs asked, "
                              f"the Ray cluster has {gpus:g}")
        self.workers = workers or max(1, int(cpus // self.cfg.cpus_per_experiment))
        self._remote = ray.remote(_run_on_node)
        self._options: dict = {"num_cpus": self.cfg.cpus_per_experiment, "num_gpus": self.cfg.gpus_per_experiment,
                               "max_retries": self.cfg.max_retries, "retry_exceptions": False}
        if self.cfg.memory_mb:
            self._options["memory"] = self.cfg.memory_mb << 20

    def _init(self) -> None:
        ray, address = self._ray, self.cfg.address
        quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray's usage report: not from this driver
        try:
            if address is None:  # a new private cluster ("local": never one `ray start` made), this machine only
                ray.init(address="local", num_cpus=usable_cores(), **quiet)
            elif "://" in address:  # Ray Client: the cluster's own settings hold
                ray.init(address=address)
            else:
                ray.init(address=address, **quiet)
        except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ConfigError(f"loop.executor.ray.address: cannot join the Ray cluster at {address!r} ({why}); "
                              f"start one with `ray start --head`, or set address: null for a private one") from None
        self._owns = True

    def threads_for(self, parallel: int) -> int:
        """The config's count if it names one, else the CPUs each experiment asks Ray for."""
        return self._threads or max(1, int(self.cfg.cpus_per_experiment))

    def run(self, exp: Experiment, on_start=None) -> Outcome:
        for _, outcome in self.map([("experiment", exp)]):
            return outcome
        raise AssertionError("unreachable")

    def map(self, items: list[tuple[str, Experiment]], on_start: OnStart | None = None
            ) -> Iterator[tuple[str, Outcome]]:
        """Run the experiments as Ray tasks, at most `workers` at once, and yield their outcomes in the order
        given. `on_start` is not called: a pid on another node means nothing to this machine. A stop while
        waiting cancels every task in flight (force: the worker dies, its watchdog kills the sandbox)."""
        ray = self._ray
        items = list(items)
        todo = iter(enumerate(items))
        inflight: dict = {}  # ObjectRef -> (index, experiment)
        done: dict[int, Outcome] = {}
        nxt = 0
        try:
            while nxt < len(items):
                with _SignalsHeld():
                    while len(inflight) < self.workers:
                        got = next(todo, None)
                        if got is None:
                            break
                        i, (key, exp) = got
                        sub = self._submit(key, exp)
                        if isinstance(sub, Outcome):
                            done[i] = sub
                        else:
                            inflight[sub] = (i, exp)
                while nxt in done:
                    yield items[nxt][0], done.pop(nxt)
                    nxt += 1
                if inflight:
                    with _SignalsHeld():
                        ready, _ = _unwrapped(ray.wait, list(inflight), num_returns=1, timeout=0.5)
                        for ref in ready:
                            i, exp = inflight.pop(ref)
                            done[i] = self._receive(ref, exp)
        except BaseException:
            for ref in inflight:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - finished meanwhile, or the cluster is gone
                    pass
            raise

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False

    # -- the driver's side of one task -----------------------------------------------------------------------
    def _submit(self, key: str, exp: Experiment):
        """Start one task; an Outcome instead where it cannot be sent (its inputs are too large)."""
        shared = self.cfg.artifacts == "shared_path"
        spec = {"key": key, "timeout_s": self.timeout_s, "threads": self._threads,
                "policy": self.policy.model_dump(mode="json"), "artifacts": self.cfg.artifacts,
                "python": sys.executable, "max_bytes": self.cfg.max_transfer_mb << 20,
                "staging_dir": self.cfg.staging_dir, "job_sha256": _sha256(exp.job),
                "gpus": self.cfg.gpus_per_experiment,
                "experiment": _to_plain(exp)}
        paths = _inside(_workspace_inputs(exp), exp.workspace) if shared else _inputs(exp)
        size = sum(_tree_size(p) for p in paths)
        if not shared and size > spec["max_bytes"]:
            return Outcome("failed", 0.0, f"the experiment's inputs are {size / 2**20:.0f} MiB, over "
                           f"loop.executor.ray.max_transfer_mb ({self.cfg.max_transfer_mb} MiB) for Ray's object "
                           f"store: use artifacts: shared_path (a run directory every node mounts)")
        bundle = _unwrapped(self._ray.put, _pack(paths, exp.run_root))
        return self._remote.options(name=f"successor-{key}", **self._options).remote(spec, bundle)

    def _receive(self, ref, exp: Experiment) -> Outcome:
        try:
            got = _unwrapped(self._ray.get, ref)
        except Exception as e:  # noqa: BLE001 - the task itself failed: its worker died too often, a bug
            why = (str(e).strip().splitlines() or [""])[0][:500]
            return Outcome("failed", 0.0, f"the Ray task failed: {type(e).__name__}: {why}")
        outcome = Outcome(**got["outcome"])
        if got.get("log") is not None:  # the node's copy of the harness's log of it (object_store)
            exp.log_path.parent.mkdir(parents=True, exist_ok=True)
            safeio.write_new(exp.log_path, bytes(got["log"]))
        if got.get("results") is not None:
            try:
                unpack_results(got["results"], exp)
            except (tarfile.TarError, OSError) as e:
                return dataclasses.replace(outcome, status="failed", error=f"unreadable results from the node: {e}")
        return outcome


class _SignalsHeld:
    """SIGTERM and SIGINT noted while Ray's own code runs, and handled as soon as it returns, by the handlers that
    were there (the loop's turns SIGTERM into Stopped). A handler that raises inside Ray's C code is swallowed by
    some Ray versions (2.40: "Exception ignored in ray._raylet.check_signals"), and the stop with it."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __enter__(self) -> "_SignalsHeld":
        self.pending: list[int] = []
        self.old: dict = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.old[sig] = signal.signal(sig, lambda signum, frame: self.pending.append(signum))
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(self.pending):
            handler = self.old[sig]
            if callable(handler):
                handler(sig, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), sig)


def _unwrapped(fn, *args, **kwargs):
    """`fn(...)`, except that an exception a signal handler raised while Ray's own code waited (Stopped, from
    SIGTERM) comes out as itself: Ray hands it back as the cause of a SystemError."""
    try:
        return fn(*args, **kwargs)
    except SystemError as e:
        if e.__cause__ is not None:
            raise e.__cause__ from None
        raise


# -- plain data both sides share ------------------------------------------------------------------------------
