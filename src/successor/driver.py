"""The driver: one generation loop for every workload.

Each generation runs the eleven stages in order. The first ten are the workload's (`Workload`, in
workloads/base.py); the eleventh, `promote`, is the driver's own: tripwires, a human's approval where the policy
asks for one, the champion's change, the one place a generation's curated data is accepted, and the provenance
statement. Every stage commits its result to the store (and its event to the audit log) before the next begins;
on a re-run a finished stage is read back instead of redone, so a run killed anywhere resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import threading
import time

from .budgets import Budgets, Paused
from .executors import make_executor
from .executors.base import process_start_time
from .lab import Lab
from .oversight import provenance
from .oversight.policy import Policy
from .oversight.sandbox import isolation_mode
from .progress import Progress
from .rundir import RunDir
from .safeio import file_digest
from .store import sha256_text, stage_text
from .workloads import spec


def process_cpu_s() -> float:
    """CPU-seconds of this process (every thread) and of the subprocesses it has waited for: what a stage cost the
    harness, whatever else shares its cores. A sandboxed experiment's own CPU is not in it (bwrap's children are not
    ours to wait for); the sandbox's cgroup counts it, in `experiments.cpu_s`."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


STAGES = ["assess", "propose", "implement", "experiment", "interpret", "select", "curate", "train", "evaluate",
          "gate", "promote"]


class Stopped(BaseException):
    """`successor stop` (SIGTERM): the run stops at once; a BaseException so nothing on the way swallows it."""


class Driver:
    def __init__(self, run: RunDir, progress: Progress | None = None, researcher=None):
        self.run, self.cfg, self.store, self.audit = run, run.cfg, run.store, run.audit
        self.progress = progress or Progress()
        self.policy = run.policy()
        self.isolation = isolation_mode(self.policy)  # raises IsolationError before anything runs
        self.budgets = Budgets(self.store, self.policy, run.policy_path)
        self.lab = Lab(run, self.policy, self.isolation, make_executor(self.cfg, self.policy, self.isolation),
                       self.budgets, self.progress)
        self.workload = spec(self.cfg.workload).make(self.lab, researcher)
        self.lab.workload = self.workload

    def run_all(self) -> str:
        """Run or resume to the end; returns `finished`, or `paused: <why>` when a budget is spent. Raises
        Stopped when `successor stop` stops it (the state stays resumable)."""
        resumed = self.store.generation(0) is not None
        self.store.set_meta("runner", json.dumps({"pid": os.getpid(), "start": process_start_time(os.getpid())}))
        self.audit.append("run.resume" if resumed else "run.start", run_dir=str(self.run.root),
                          tiers={k: t.digest for k, t in self.run.tiers.items()}, isolation=self.isolation,
                          policy_sha256=file_digest(self.run.policy_path),
                          config_sha256=file_digest(self.run.root / "config.yaml"))
        if self.isolation != "bwrap":
            self.audit.append("sandbox.weaker", isolation=self.isolation, policy=self.policy.isolation)
        old = _on_sigterm()
        try:
            for g in range(self.cfg.loop.generations + 1):
                row = self.store.generation(g)
                if row is not None and row["status"] == "done":
                    continue
                self.budgets.check()
                self.generation(g)
        except Paused as e:
            self.budgets.save_wall()
            self.audit.append("run.paused", reason=str(e))
            return f"paused: {e}"
        except Stopped:
            self.budgets.save_wall()
            self.audit.append("run.stopped", reason="successor stop")
            raise
        finally:
            _restore_sigterm(old)
            self.lab.executor.close()  # a private Ray cluster ends with the run
        self.budgets.save_wall()
        self.audit.append("run.finished", champion=self.store.champion())
        return "finished"

    def generation(self, g: int) -> None:
        champion = self.store.champion()
        sealed = self.workload.sealed_digest(g)  # what the gate will test on, committed before anything runs
        self.store.open_generation(g, champion, sealed)
        if self.store.stage_result(g, "assess") is None:
            self.audit.append("generation.start", generation=g, champion=champion, sealed_digest=sealed)
        ctx: dict = {"champion": champion}
        for name in STAGES:
            result = self.store.stage_result(g, name)
            if result is None:
                self.progress.stage(g, name)
                self.store.stage_started(g, name)
                body = self.promote if name == "promote" else getattr(self.workload, name)
                cpu = process_cpu_s()
                result = body(g, ctx)
                cpu = process_cpu_s() - cpu
                # each event goes just before the row it binds (verify_store): a crash between leaves an event
                # the resume repeats, never a row the log does not know
                self.audit.append(f"stage.{name}", generation=g, result=_brief(result),
                                  result_sha256=sha256_text(stage_text(result)))
                self.store.stage_done(g, name, result, cpu)
            ctx[name] = result
        end = ctx["promote"]
        self.audit.append("generation.end", generation=g, promoted=end["promoted"], champion=end["champion"],
                          frontier=end["frontier"])
        self.store.close_generation(g, end["promoted"], end["champion"], end["frontier"])
        self.progress.generation_done(g, end["promoted"], end["frontier"])

    # -- stage 11 ---------------------------------------------------------------------------------------------
    def promote(self, g: int, ctx: dict) -> dict:
        """Tripwires and human approval, then the champion changes (or not). A tripwire or `approval: manual`
        records a pending approval and waits, polling the store, until a human decides (`successor approve` /
        `reject`); a stop while waiting leaves it pending, and a resume waits again."""
        gate, champion = ctx["gate"], ctx["champion"]
        sel = ctx["select"]["selected"]
        decision = self.store.one("SELECT stats FROM gate_decisions WHERE generation=? AND candidate_id=?", g, sel)
        stats = json.loads(decision["stats"]) if decision else {}
        violations = [f"{r['candidate_id']} {r['kind']}" for r in
                      self.store.q("SELECT candidate_id, kind FROM violations WHERE generation=?", g)]
        reasons = tripwires(self.policy, violations, gate["promoted"], stats, first=champion is None)
        approver = {"mode": "auto", "who": "gate", "time": time.time()}
        if reasons:
            approver = self._wait_for_approval(g, reasons)
        decided = self.store.approval(g) if reasons else None
        promoted = gate["promoted"] and (decided is None or decided["decision"] == "approved")
        if gate["promoted"] and not promoted:
            self._amend_refused(g, sel, f"refused by {decided['who']}: {decided['note'] or 'no reason given'}")
        if not promoted:
            front = self.store.generation(g - 1)["frontier"] if g > 0 and champion else 0
            return {"promoted": False, "champion": champion, "frontier": front, "approval": approver,
                    "tripwires": reasons}
        # the one place a generation's curated data is accepted: it trains later successors from now on
        self.store.x("UPDATE data_manifests SET accepted=1 WHERE generation=? AND kind='curated'", g)
        stmt = provenance.statement(
            generation=g, model=gate["champion"], parent=champion, gate=stats, approver_mode=approver["mode"],
            approver_who=approver["who"], approved_at=approver["time"],
            config_sha256=file_digest(self.run.root / "config.yaml"), policy_sha256=file_digest(self.run.policy_path),
            **self.workload.provenance(g, ctx, gate["champion"]))
        provenance.record(self.run.root, self.audit, g, stmt)
        self.workload.promoted(g, gate["champion"])
        return {"promoted": True, "champion": gate["champion"], "frontier": gate["frontier"], "approval": approver,
                "tripwires": reasons}

    def _wait_for_approval(self, g: int, reasons: list[str]) -> dict:
        self.store.request_approval(g, reasons)
        row = self.store.approval(g)
        if row["decision"] is None:
            self.audit.append("run.paused", generation=g, reasons=reasons, waiting_for="successor approve")
        while row["decision"] is None:
            self.progress.stage(g, "paused: waiting for approval (" + "; ".join(reasons) + ")")
            time.sleep(0.5)
            row = self.store.approval(g)
        self.audit.append("approval.applied", generation=g, decision=row["decision"], who=row["who"],
                          note=row["note"])
        return {"mode": "manual", "who": row["who"], "time": row["decided"]}

    def _amend_refused(self, g: int, sel: str, why: str) -> None:
        """A human refused what the gate promoted: the gate's decision is amended, on the record."""
        row = self.store.one("SELECT * FROM gate_decisions WHERE generation=? AND candidate_id=?", g, sel)
        self.audit.append("gate.decision", generation=g, candidate=sel, model=row["model"], role=row["role"],
                          promoted=False, reason=why, stats_sha256=sha256_text(row["stats"]), amended=True)
        self.store.x("UPDATE gate_decisions SET promoted=0, reason=? WHERE generation=? AND candidate_id=?",
                     why, g, sel)
        # a run whose gate stage an older version ran accepted the data there; the refusal takes it back
        self.store.x("UPDATE data_manifests SET accepted=0 WHERE generation=? AND kind='curated'", g)


def tripwires(policy: Policy, violations: list[str], promoted: bool, stats: dict, first: bool) -> list[str]:
    """Why a human must look before this generation ends (empty: nobody needs to). `violations` are the
    generation's ("candidate kind"). The first champion jumps from nothing by definition, so the capability
    tripwire starts with its successors."""
    t, out = policy.tripwires, []
    if t.integrity_violation and violations:
        out.append("integrity violation: " + ", ".join(sorted(set(violations))))
    jump = stats.get("tested_effect", stats.get("effect", 0.0))  # over every tested level, as the policy says
    if promoted and not first and t.capability_jump is not None and jump > t.capability_jump:
        out.append(f"capability jump: sealed accuracy +{jump:.3f} over the tested levels in one generation "
                   f"(tripwire {t.capability_jump})")
    rate = (stats.get("guardrail") or {}).get("rate")
    if promoted and t.guardrail_floor is not None and rate is not None and rate < t.guardrail_floor:
        out.append(f"guardrail {rate:.3f} under its floor {t.guardrail_floor}")
    if promoted and policy.approval == "manual":
        out.append("the policy asks a human to approve every promotion")
    return out


def _on_sigterm():
    """`successor stop` sends SIGTERM: turn it into Stopped, which unwinds through the executor (killing the
    experiment under way) and leaves every finished step in the store."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise Stopped()

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(old) -> None:
    if old is not None:
        signal.signal(signal.SIGTERM, old)


def _brief(result: dict) -> dict:
    """Audit events carry the stage result, minus bulky per-level tables."""
    text = json.dumps(result)
    return result if len(text) < 4000 else {"digest": hashlib.sha256(text.encode()).hexdigest()}
