"""The lab: where a workload's experiments are written down, run and recorded, the same way for every workload.

A workload says what an experiment is (its job, its workspace, how to read what it left); the lab keeps the
harness's copy of every job, makes each attempt's workspace anew, runs the experiments on the executor, and
records each outcome (violations, row, audit event) in the order given, whichever finished first. A finished
experiment is never run again: experiments are named by the digest of their job.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from . import safeio
from .budgets import Budgets, Paused
from .executors.base import Experiment, Outcome, kill_orphan, log_path
from .progress import Progress
from .safeio import file_digest, write_text_atomic
from .store import sha256_text

if TYPE_CHECKING:
    from .oversight.policy import Policy
    from .rundir import RunDir
    from .workloads.base import Workload

FINISHED = ("done", "failed", "timeout", "violation")  # an experiment in one of these is never run again


class Lab:
    def __init__(self, run: RunDir, policy: Policy, isolation: str, executor, budgets: Budgets,
                 progress: Progress):
        self.run, self.cfg, self.store, self.audit = run, run.cfg, run.store, run.audit
        self.policy, self.isolation, self.executor = policy, isolation, executor
        self.budgets, self.progress = budgets, progress
        self.workload: Workload | None = None  # set by the driver once the workload is built on this lab

    # -- an experiment's files: the harness's own copies, and the workspace built from them ---------------------
    def job_path(self, exp_id: str) -> Path:
        """The harness's copy of a job, where no sandbox mounts it: the job the harness reads. The workspace's
        job.json is the candidate's copy, written afresh from this one before every attempt."""
        return self.run.root / "jobs" / f"{exp_id}.json"

    def save_job(self, exp_id: str, job: dict) -> None:
        self.job_path(exp_id).parent.mkdir(exist_ok=True)
        write_text_atomic(self.job_path(exp_id), json.dumps(job, indent=2))

    def job(self, exp_id: str) -> dict:
        """An experiment's job as the harness wrote it. A run made before the harness kept its own copy reads the
        workspace's, as untrusted data (no link followed, bounded, a JSON object)."""
        try:
            return json.loads(self.job_path(exp_id).read_text())
        except FileNotFoundError:
            job = json.loads(safeio.read_bytes(self.run.workspace(exp_id), "job.json", 1 << 20))
            if not isinstance(job, dict):
                raise safeio.HostileFile(f"workspaces/{exp_id}/job.json: not a JSON object") from None
            return job

    def fresh_workspace(self, exp_id: str, files: dict[str, bytes]) -> Path:
        """The workspace of one attempt, made anew: whatever an earlier attempt left (links, FIFOs, files made
        unwritable) is moved aside and removed, and only the harness's `files` are written into it."""
        ws = self.run.workspace(exp_id)
        safeio.fresh_dir(ws, self.run.root / "trash")
        for name, data in files.items():
            (ws / name).parent.mkdir(parents=True, exist_ok=True)
            safeio.write_new(ws / name, data)
        return ws

    # -- running them -----------------------------------------------------------------------------------------
    def execute(self, g: int, cand: str, exp_id: str, kind: str) -> dict:
        """Run one experiment unless it already finished (then its recorded outcome is returned)."""
        return self.execute_many(g, [(cand, exp_id, kind)])[0]

    def execute_many(self, g: int, jobs: list[tuple[str, str, str]]) -> list[dict]:
        """Run experiments (candidate, experiment id, kind) on the executor, as many at once as it has
        workers, and return their rows in the order given. Every record is written here, by the driver, in
        that order: the lineage does not depend on which experiment finished first. A budget spent on the way
        stops the submitting; the experiments already started run to their end and are recorded first."""
        rows: dict[str, dict] = {}
        specs: list[tuple[str, Experiment]] = []
        owner: dict[str, str] = {}
        paused = None
        for cand, exp_id, kind in jobs:
            if exp_id in rows or exp_id in owner:  # the same work twice (two candidates, one job): run it once
                continue
            try:
                got = self.prepare(g, cand, exp_id, kind)
            except Paused as e:
                paused = e
                break
            except Exception as e:  # noqa: BLE001 - e.g. a candidate's commit that cannot be exported
                got = self.unpreparable(g, cand, exp_id, kind, e)
            if isinstance(got, dict):
                rows[exp_id] = got
            else:
                specs.append((exp_id, got))
                owner[exp_id] = cand
        for _, spec in specs:  # a job that names no thread count shares the cores with the others under way
            spec.threads = spec.threads or self.executor.threads_for(len(specs))
        done = len(rows)
        self.progress.experiments(done, len(jobs))
        for exp_id, outcome in self.executor.map(specs, on_start=self.store.experiment_pid):
            rows[exp_id] = self.conclude(g, owner[exp_id], exp_id, outcome)
            done += 1
            self.progress.experiments(done, len(jobs))
        if paused is not None:
            raise paused
        return [rows[exp_id] for _, exp_id, _ in jobs]

    def prepare(self, g: int, cand: str, exp_id: str, kind: str) -> dict | Experiment:
        """The recorded row of a finished experiment, or the sandbox's spec of one to run (now started)."""
        done = self.claim(exp_id)
        if done is not None:
            return done
        spec, extra = self.workload.prepare_experiment(g, cand, exp_id)
        self.start(g, cand, exp_id, kind, **extra)
        return spec

    def unpreparable(self, g: int, cand: str, exp_id: str, kind: str, e: Exception) -> dict:
        """An experiment whose workspace could not be made: a failed experiment with the reason, recorded once
        (a resume reads it back instead of failing the same way forever)."""
        if self.store.experiment(exp_id) is None or self.store.experiment(exp_id)["status"] != "running":
            self.start(g, cand, exp_id, kind)
        why = f"the experiment could not be prepared: {type(e).__name__}: {str(e)[:500]}"
        return self.finish(g, cand, exp_id, Outcome("failed", 0.0, why, isolation=self.isolation), None, None)

    def conclude(self, g: int, cand: str, exp_id: str, outcome) -> dict:
        """Read what a finished experiment left (as hostile data: the workload's `collect`) and record it."""
        model, metrics, extra = self.workload.collect(g, cand, exp_id, outcome)
        return self.finish(g, cand, exp_id, outcome, model, metrics, **extra)

    def claim(self, exp_id: str) -> dict | None:
        """The experiment's recorded row if it already finished (nothing to run); else None, once the budgets
        allow it and the orphan of a harness that died mid-experiment is killed (it must not write on)."""
        row = self.store.experiment(exp_id)
        if row is not None and row["status"] in FINISHED:
            return dict(row)
        self.budgets.check()
        if row is not None and row["pid"]:
            kill_orphan(row["pid"], self.run.workspace(exp_id) / "job.json")
        return None

    # -- recording --------------------------------------------------------------------------------------------
    def start(self, g: int, cand: str, exp_id: str, kind: str, **extra) -> None:
        self.store.experiment_started(exp_id, cand, g, kind)
        self.audit.append("experiment.start", generation=g, candidate=cand, experiment=exp_id, kind=kind,
                          isolation=self.isolation, **extra)

    def finish(self, g: int, cand: str, exp_id: str, outcome, model: str | None, metrics: dict | None,
               **extra) -> dict:
        """Record an experiment's outcome: its violations, its row, its audit event; returns the row."""
        for v in outcome.violations:
            self.store.add_violation(exp_id, g, cand, v["kind"], v["detail"])
            self.audit.append("violation", generation=g, candidate=cand, experiment=exp_id, **v)
        flops = self.workload.flops(self.job(exp_id)) if outcome.status == "done" else None
        log = log_path(self.run.root, exp_id)
        log_sha256 = file_digest(log) if log.is_file() else None
        # The event before the row it binds: a kill between them leaves the experiment running, the resume runs
        # it again and the chain's last word matches the row (verify_store).
        self.audit.append("experiment.end", generation=g, experiment=exp_id, status=outcome.status, model=model,
                          error=outcome.error, wall_s=round(outcome.wall_s, 2), cpu_s=round(outcome.cpu_s, 2),
                          flops=flops, isolation=outcome.isolation, node=outcome.node, log_sha256=log_sha256,
                          **extra)
        self.store.experiment_finished(exp_id, outcome.status, outcome.wall_s, model, outcome.error, metrics,
                                       outcome.cpu_s, flops)
        return dict(self.store.experiment(exp_id))

    def add_candidate(self, g: int, i: int, recipe_json: str, key: str, why: str, parent: str | None,
                      patch: str | None = None) -> str:
        """A proposal, as a row of `candidates` (and its code patch, if any); returns its id."""
        cid = f"g{g}c{i}"
        self.store.x("INSERT OR REPLACE INTO candidates VALUES(?,?,?,?,?,?,?)", cid, g, i, recipe_json, key, why,
                     parent)
        if patch:
            self.store.x("INSERT OR REPLACE INTO patches VALUES(?,?,?)", cid, sha256_text(patch), patch)
        return cid

    def decide(self, g: int, cid: str, model: str | None, role: str, promoted: bool, reason: str,
               stats: dict) -> None:
        """Record one gate decision: its audit event, then its row."""
        text = json.dumps(stats)
        self.audit.append("gate.decision", generation=g, candidate=cid, model=model, role=role,
                          promoted=promoted, reason=reason, stats_sha256=sha256_text(text))
        self.store.x("INSERT OR REPLACE INTO gate_decisions VALUES(?,?,?,?,?,?,?,strftime('%s','now'))", g, cid,
                     model, role, int(promoted), reason, text)


def hostile_output(outcome, e: Exception) -> None:
    """What reading a candidate's output raised, as its outcome: a link or a special file crossed the sandbox's
    line (a violation); anything else is a failed experiment with its reason."""
    if isinstance(e, safeio.LinkInOutput):
        outcome.violations.append({"kind": "output_link", "detail": str(e)[:500]})
        outcome.status, outcome.error = "violation", f"crossed the sandbox: output_link: {str(e)[:500]}"
    else:
        outcome.status, outcome.error = "failed", f"unreadable output: {str(e)[:1000]}"
