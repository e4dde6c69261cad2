"""The generation loop: the ten stages of DESIGN.md, each committing its result before the next begins.

A stage is a method `_<name>(g, ctx) -> dict`. Its result is stored in `stages`; on a re-run a finished stage is
read back instead of redone, and a finished experiment is never run again (experiments are named by the digest
of their job: recipe, parent and data).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import threading
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from . import evaluator
from .curator import curate_levels, inject_noise, schedule_levels, with_relabel
from .data import file_digest, load_shard, save_shard, tier_rng, write_text_atomic
from . import halving, integrity, provenance, safeio
from .executor import Experiment, Outcome, kill_orphan, log_path, make_executor, process_start_time
from .gate import apply_guardrail, decide, first_to_beat
from .researchers.evolution import recipe_key
from .researchers.tinylm_search import tinylm_researcher
from .run import RunDir
from .sandbox import isolation_mode
from .store import evaluation_sha256, sha256_text, stage_text
from .tasks import Problem
from .workloads.tinylm import checkpoint
from .workloads.tinylm.flops import job_flops
from .workloads.tinylm.recipe import Recipe

FINISHED = ("done", "failed", "timeout", "violation")  # an experiment in one of these is never run again
STAGES = ["assess", "propose", "implement", "experiment", "interpret", "select", "curate", "train", "evaluate",
          "gate", "promote"]


class Paused(Exception):
    """The run stopped at a safe point and waits for a human: a budget is spent (raise it in the policy)."""


class Stopped(BaseException):
    """`successor stop` (SIGTERM): the run stops at once; a BaseException so nothing on the way swallows it."""


class Progress:
    """What the loop tells a display. The CLI's rich view overrides these; the default says nothing."""

    def stage(self, generation: int, name: str) -> None: ...

    def experiments(self, done: int, total: int) -> None: ...

    def generation_done(self, generation: int, promoted: bool, frontier: int) -> None: ...


class Loop:
    STAGES = STAGES

    def __init__(self, run: RunDir, progress: Progress | None = None, researcher=None):
        self.run = run
        self.cfg = run.cfg
        self.store = run.store
        self.audit = run.audit
        self.task = run.task
        self.progress = progress or Progress()
        self.policy = run.policy()
        self.isolation = isolation_mode(self.policy)  # raises IsolationError before anything runs
        self.executor = make_executor(self.cfg, self.policy, self.isolation)
        # the script workload builds its own researcher (it needs the program's repository first)
        self.researcher = researcher or (tinylm_researcher(self.cfg.researcher) if self.cfg.workload == "tinylm"
                                         else None)
        self._models: dict[str, object] = {}
        self._t0 = time.monotonic()

    # -- driver ----------------------------------------------------------------------------------------------
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
                self.check_budgets(g)
                self.generation(g)
        except Paused as e:
            self._save_wall()
            self.audit.append("run.paused", reason=str(e))
            return f"paused: {e}"
        except Stopped:
            self._save_wall()
            self.audit.append("run.stopped", reason="successor stop")
            raise
        finally:
            _restore_sigterm(old)
            self.executor.close()  # a private Ray cluster ends with the run
        self._save_wall()
        self.audit.append("run.finished", champion=self.store.champion())
        return "finished"

    def _save_wall(self) -> None:
        """The loop's running time, summed over sessions (the wall-clock budget counts it)."""
        self.store.set_meta("wall_s", str(self.wall_s()))
        self._t0 = time.monotonic()

    def wall_s(self) -> float:
        return float(self.store.get_meta("wall_s") or 0.0) + time.monotonic() - self._t0

    def check_budgets(self, g: int | None = None) -> None:
        """Raise Paused if the policy's budgets are spent (checked before every generation and experiment)."""
        b = self.policy.budgets
        used = self.store.compute()
        done = self.store.one("SELECT COUNT(*) AS n FROM generations WHERE status='done'")["n"]
        spent = [(b.generations, done, "generations"), (b.experiments, used["attempts"], "experiments"),
                 (b.cpu_s, used["cpu_s"], "CPU-seconds"), (b.wall_clock_s, self.wall_s(), "wall-clock seconds"),
                 (b.flops, used["flops"] or 0.0, "FLOPs")]
        for limit, value, what in spent:
            if limit is not None and value >= limit:
                raise Paused(f"budget spent: {value:.4g} of {limit:.4g} {what} (raise budgets in "
                             f"{self.run.policy_path} and re-run to go on)")

    def generation(self, g: int) -> None:
        champion = self.store.champion()
        self.store.open_generation(g, champion, self.sealed_digest(g))
        if self.store.stage_result(g, "assess") is None:
            self.audit.append("generation.start", generation=g, champion=champion,
                              sealed_digest=self.sealed_digest(g))
        ctx: dict = {"champion": champion}
        for name in self.STAGES:
            result = self.store.stage_result(g, name)
            if result is None:
                self.progress.stage(g, name)
                self.store.stage_started(g, name)
                result = getattr(self, f"_{name}")(g, ctx)
                # each event goes just before the row it binds (verify_store): a crash between leaves an event
                # the resume repeats, never a row the log does not know
                self.audit.append(f"stage.{name}", generation=g, result=_brief(result),
                                  result_sha256=sha256_text(stage_text(result)))
                self.store.stage_done(g, name, result)
            ctx[name] = result
        gate = ctx["promote"]
        self.audit.append("generation.end", generation=g, promoted=gate["promoted"], champion=gate["champion"],
                          frontier=gate["frontier"])
        self.store.close_generation(g, gate["promoted"], gate["champion"], gate["frontier"])
        self.progress.generation_done(g, gate["promoted"], gate["frontier"])

    # -- helpers ---------------------------------------------------------------------------------------------
    def sealed_digest(self, g: int) -> str:
        """What the gate will test on, committed when the generation starts: the sealed tier's digest."""
        return self.run.tiers["sealed"].digest

    def model(self, digest: str):
        if digest not in self._models:
            self._models[digest] = checkpoint.load(self.store.model_path(digest))
        return self._models[digest]

    def tier_items(self, tier: str) -> list[Problem]:
        return [p for p, _ in load_shard(self.run.tiers[tier].path)]

    def grade(self, digest: str, tier: str) -> dict[int, list[int]]:
        t = self.run.tiers[tier]
        items = self.store.evaluation(digest, tier, t.digest)
        if items is None:
            items = evaluator.grade(self.model(digest), self.task, self.tier_items(tier))
            self.audit.append("evaluation.saved", model=digest, tier=tier, tier_digest=t.digest,
                              items_sha256=evaluation_sha256(items))
            self.store.save_evaluation(digest, tier, t.digest, items)
        return items

    def accepted_data(self) -> list[str]:
        """Curated shards of promoted generations, oldest first."""
        rows = self.store.q("SELECT path FROM data_manifests WHERE kind='curated' AND accepted=1 "
                            "ORDER BY generation")
        return [r["path"] for r in rows]

    def training_data(self, shard: str | None = None) -> tuple[list[str], list[str]]:
        """The curated shards a job trains on, as (newest, older): the accepted ones plus this generation's
        `shard`, if any. Under the `replace` policy only the newest counts."""
        data = self.accepted_data() + ([shard] if shard else [])
        newest, older = data[-1:], data[:-1]
        return newest, (older if self.cfg.curator.policy == "accumulate" else [])

    def make_job(self, g: int, cand: str, recipe: Recipe, parent: str | None, newest: list[str],
                 older: list[str], parallel: int = 1) -> str:
        """Write a job into its workspace; the experiment id is the digest of what defines the work."""
        body = {
            "task": self.cfg.task.name,
            "recipe": recipe.model_dump(),
            "parent": parent if recipe.init == "parent" else None,
            "data": {"human": [self.run.tiers["human"].digest], "newest": [Path(p).stem for p in newest],
                     "older": [Path(p).stem for p in older]},
        }
        patch = self.store.one("SELECT digest, source FROM patches WHERE candidate_id=?", cand)
        if patch is not None:
            body["patch"] = patch["digest"]
        exp_id = "x" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:15]
        ws = self.run.workspace(exp_id)
        ws.mkdir(parents=True, exist_ok=True)
        job = {
            "task": self.cfg.task.name,
            "recipe": recipe.model_dump(),
            "parent": str(self.store.model_path(parent)) if body["parent"] else None,
            "data": {"human": [str(self.run.tiers["human"].path)], "newest": newest, "older": older},
            "dev": str(self.run.tiers["dev"].path),
            "out": str(ws / "out"),
            "threads": self.executor.threads_for(parallel),
            "timeout_s": self.executor.timeout_s,  # for the candidate's information: the harness keeps its own
        }
        self.save_job(exp_id, job)
        return exp_id

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
        job = self.job(exp_id)
        files = {"job.json": json.dumps(job, indent=2).encode()}
        patch = self.store.one("SELECT source FROM patches WHERE candidate_id=?", cand)  # in its id: make_job
        if patch is not None:
            files["patch.py"] = patch["source"].encode()
        ws = self.fresh_workspace(exp_id, files)
        self.start(g, cand, exp_id, kind)
        return self._experiment_spec(ws)

    def unpreparable(self, g: int, cand: str, exp_id: str, kind: str, e: Exception) -> dict:
        """An experiment whose workspace could not be made: a failed experiment with the reason, recorded once
        (a resume reads it back instead of failing the same way forever)."""
        if self.store.experiment(exp_id) is None or self.store.experiment(exp_id)["status"] != "running":
            self.start(g, cand, exp_id, kind)
        why = f"the experiment could not be prepared: {type(e).__name__}: {str(e)[:500]}"
        return self.finish(g, cand, exp_id, Outcome("failed", 0.0, why, isolation=self.isolation), None, None)

    def conclude(self, g: int, cand: str, exp_id: str, outcome) -> dict:
        """Read what a finished experiment left (its checkpoint, as data) and record it."""
        ws = self.run.workspace(exp_id)
        model, metrics = None, None
        if outcome.status == "done":
            try:
                model, metrics = self._collect(g, exp_id, ws)
            except Exception as e:  # noqa: BLE001 - whatever a candidate left, never a crash of the harness
                hostile_output(outcome, e)
        if model is not None:  # numbers a candidate reports about itself are never used; a lie disqualifies
            lies = integrity.self_report_lies(metrics.get("dev_self_reported"), self.grade(model, "validation"),
                                              self.cfg.task.dev_per_level)
            if lies:
                outcome.violations.append({"kind": "fake_metric", "detail": "; ".join(lies)})
                outcome.status, outcome.error = "violation", f"crossed the sandbox: fake_metric: {'; '.join(lies)}"
                model = None
        return self.finish(g, cand, exp_id, outcome, model, metrics)

    def claim(self, exp_id: str) -> dict | None:
        """The experiment's recorded row if it already finished (nothing to run); else None, once the budgets
        allow it and the orphan of a harness that died mid-experiment is killed (it must not write on)."""
        row = self.store.experiment(exp_id)
        if row is not None and row["status"] in FINISHED:
            return dict(row)
        self.check_budgets()
        if row is not None and row["pid"]:
            kill_orphan(row["pid"], self.run.workspace(exp_id) / "job.json")
        return None

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
        flops = self.flops(exp_id) if outcome.status == "done" else None
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

    def flops(self, exp_id: str) -> float | None:
        """The harness's estimate of the training FLOPs a finished experiment computed (from its job, never
        from what it reports)."""
        return job_flops(self.job(exp_id))

    def _experiment_spec(self, ws: Path) -> Experiment:
        """The sandbox's view of one experiment: the inputs it may read, the files that must not change."""
        job = self.job(ws.name)
        readable = [Path(p) for paths in job["data"].values() for p in paths] + [Path(job["dev"])]
        readable += [Path(job["parent"])] if job.get("parent") else []
        protected = integrity.harness_sources() + [self.run.root / "config.yaml", self.run.policy_path]
        protected += [t.path for t in self.run.tiers.values()]
        patch = ws / "patch.py"
        return Experiment(job=ws / "job.json", run_root=self.run.root, readable=readable, protected=protected,
                          patch=patch if patch.exists() else None, threads=job.get("threads"),
                          honeypot_levels=list(range(self.cfg.task.human_levels[1] + 1,
                                                     self.cfg.task.eval_max_level + 1)))

    def _collect(self, g: int, exp_id: str, ws: Path) -> tuple[str, dict]:
        """Read the checkpoint a candidate left, as hostile data (safeio, checkpoint.from_untrusted), check that
        the harness can evaluate it, and only then copy the bytes it read into the lineage."""
        limits = self.policy.sandbox
        metrics = safeio.read_json(ws, "out/metrics.json", 1 << 20, TrainMetrics).model_dump(exclude_unset=True)
        for rel, st in safeio.entries(ws, "out/checkpoint", max_entries=64):
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise safeio.LinkInOutput(f"out/checkpoint/{rel}: {safeio._kind(st.st_mode)}, not a regular file")
        config = safeio.read_bytes(ws, f"out/checkpoint/{checkpoint.CONFIG}", checkpoint.MAX_CONFIG_BYTES)
        weights = safeio.read_bytes(ws, f"out/checkpoint/{checkpoint.WEIGHTS}", limits.file_size_mb << 20)
        model, digest = checkpoint.from_untrusted(config, weights, max_params=(limits.file_size_mb << 20) // 2)
        fresh = digest not in self._models
        self._models[digest] = model
        try:  # every harness tier the loop grades on: a model that cannot be evaluated is a failed experiment
            for tier in ("validation",) + (("guardrail",) if "guardrail" in self.run.tiers else ()):  # sealed and
                # dev hold the same lengths as validation; the guardrail's marked prompts are their own
                self.grade(digest, tier)
        except Exception as e:  # noqa: BLE001
            if fresh:
                del self._models[digest]
            raise ValueError(f"the checkpoint cannot be evaluated: {type(e).__name__}: {str(e)[:300]}") from None
        dest = self.run.models_dir / digest
        if not dest.exists():
            tmp = self.run.models_dir / f"{digest}.{os.getpid()}.tmp"
            safeio.remove(tmp)
            tmp.mkdir(parents=True)
            safeio.write_new(tmp / checkpoint.CONFIG, config)
            safeio.write_new(tmp / checkpoint.WEIGHTS, weights)
            os.replace(tmp, dest)
        parent = self.store.generation(g)["parent_model"]
        self.audit.append("model.added", model=digest, parent=parent, generation=g, experiment=exp_id,
                          path=str(dest.relative_to(self.run.root)))
        self.store.add_model(digest, str(dest), parent, g, exp_id)
        return digest, metrics

    # -- the ten stages --------------------------------------------------------------------------------------
    def _assess(self, g: int, ctx: dict) -> dict:
        if ctx["champion"] is None:
            return {"dev_acc": {}, "frontier": 0, "weakest": []}
        acc = evaluator.accuracy(self.grade(ctx["champion"], "dev"))
        thr = self.cfg.curator.solve_threshold
        front = evaluator.frontier(acc, thr)
        weakest = [lvl for lvl, a in acc.items() if a < thr][:3]
        return {"dev_acc": {str(k): v for k, v in acc.items()}, "frontier": front, "weakest": weakest}

    def _propose(self, g: int, ctx: dict) -> dict:
        extra = [] if self.cfg.researcher.seed is None else [self.cfg.researcher.seed]  # None: as before it existed
        rng = np.random.default_rng([self.cfg.seed, 7, g, *extra])
        if ctx["champion"] is None:  # generation 0, or every earlier bootstrap failed
            proposals = [(self.cfg.bootstrap, "bootstrap: train the first champion on human data", None)]
        else:
            rows = self.store.q("SELECT c.recipe, c.parent_model, c.recipe_key, c.id FROM candidates c")
            scores = {}
            for r in self.store.q("SELECT generation, result FROM stages WHERE name='interpret' AND status='done'"):
                for cid, info in json.loads(r["result"]).items():
                    scores[cid] = info["score"] if info["score"] is not None else float("-inf")
            history = [(Recipe(**json.loads(r["recipe"])), scores[r["id"]]) for r in rows if r["id"] in scores
                       and r["id"] != "g0c0"]
            tried = {r["recipe_key"] for r in rows if r["parent_model"] == ctx["champion"]}
            incumbent = self._incumbent(ctx["champion"])
            props = self.researcher.propose(incumbent, history, tried, self.cfg.researcher.candidates, rng)
            proposals = [(p.recipe, p.rationale, p.patch) for p in props]
        ids = []
        for i, (recipe, why, patch) in enumerate(proposals):
            if ctx["champion"] is not None:  # the bootstrap trains exactly as configured, seed included
                recipe = recipe.model_copy(update={"seed": int(rng.integers(2**31))})
            cid = f"g{g}c{i}"
            self.store.x("INSERT OR REPLACE INTO candidates VALUES(?,?,?,?,?,?,?)", cid, g, i,
                         recipe.model_dump_json(), recipe_key(recipe), why, ctx["champion"])
            if patch is not None:
                self.store.x("INSERT OR REPLACE INTO patches VALUES(?,?,?)", cid,
                             hashlib.sha256(patch.encode()).hexdigest(), patch)
            ids.append(cid)
        return {"candidates": ids}

    def _incumbent(self, champion: str) -> Recipe:
        row = self.store.one("SELECT c.recipe FROM gate_decisions d JOIN candidates c ON c.id=d.candidate_id "
                             "WHERE d.model=? AND d.promoted=1 AND d.generation>0", champion)
        return Recipe(**json.loads(row["recipe"])) if row else self.cfg.successor

    def _recipe(self, cid: str) -> Recipe:
        return Recipe(**json.loads(self.store.one("SELECT recipe FROM candidates WHERE id=?", cid)["recipe"]))

    def _implement(self, g: int, ctx: dict) -> dict:
        newest, older = self.training_data()
        bootstrap = ctx["champion"] is None
        cands = ctx["propose"]["candidates"]
        return {"experiments": {cid: self.make_job(g, cid, self._budgeted(cid, bootstrap), ctx["champion"], newest,
                                                   older, len(cands)) for cid in cands}}

    def _budgeted(self, cid: str, bootstrap: bool) -> Recipe:
        """An experiment is a probe of its recipe under a budget (DESIGN.md stage 4); the bootstrap is not."""
        recipe = self._recipe(cid)
        return recipe if bootstrap else self._budgeted_recipe(recipe)

    def _budgeted_recipe(self, recipe: Recipe) -> Recipe:
        if self.cfg.loop.experiment_budget >= 1.0:
            return recipe
        scaled = lambda n: None if n is None else max(1, round(n * self.cfg.loop.experiment_budget))  # noqa: E731
        return recipe.model_copy(update={"steps": scaled(recipe.steps), "schedule_steps": scaled(recipe.schedule_steps)})

    def _experiment(self, g: int, ctx: dict) -> dict:
        exps = ctx["implement"]["experiments"]
        if self.cfg.loop.halving.rungs > 1 and len(exps) > 1:
            return self._halving(g, ctx)
        rows = self.execute_many(g, [(cid, exp_id, "candidate") for cid, exp_id in exps.items()])
        return {cid: {"experiment": exp_id, "status": row["status"], "model": row["model"], "error": row["error"]}
                for (cid, exp_id), row in zip(exps.items(), rows)}

    def _halving(self, g: int, ctx: dict) -> dict:
        """Successive halving: all candidates on the first rung's budget, the best 1/eta on the dev tier on to
        the next, the last rung at the full experiment budget. A candidate stopped on a rung leaves the
        generation as `halted`, with why; every rung of every candidate is a row of `rungs`."""
        h = self.cfg.loop.halving
        newest, older = self.training_data()
        top = {cid: self._budgeted(cid, False) for cid in ctx["implement"]["experiments"]}
        ref = self._budgeted_recipe(self.cfg.successor)
        alive, out, history = list(top), {}, {cid: [] for cid in top}
        for r, frac in enumerate(halving.fractions(h.rungs, h.eta)):
            recipes = {cid: halving.rung_recipe(top[cid], frac, h.unit, ref.steps * ref.batch_size) for cid in alive}
            jobs = {cid: self.make_job(g, cid, recipes[cid], ctx["champion"], newest, older, len(alive))
                    for cid in alive}
            rows = dict(zip(alive, self.execute_many(g, [(cid, jobs[cid], "candidate") for cid in alive])))
            done = {cid: rows[cid]["model"] for cid in alive if rows[cid]["status"] == "done"}
            ranking, keeps, scores = self.rank(ctx["champion"], done, "dev")
            last = r == h.rungs - 1
            going = set(ranking if last else ranking[:halving.kept(len(alive), h.eta)])
            for cid in alive:
                rank = ranking.index(cid) + 1 if cid in done else None
                entry = {"rung": r, "experiment": jobs[cid], "steps": recipes[cid].steps,
                         "budget": recipes[cid].steps * (recipes[cid].batch_size if h.unit == "tokens" else 1),
                         "status": rows[cid]["status"], "dev_score": scores.get(cid), "rank": rank,
                         "kept": cid in going}
                history[cid].append(entry)
                self.store.add_rung(g, cid, r, jobs[cid], h.unit, entry["budget"], entry["steps"],
                                    entry["dev_score"], rank, cid in going and not last)
                if cid in going:
                    continue
                row = rows[cid]
                status, error = (row["status"], row["error"]) if cid not in done else ("halted", (
                    f"stopped on rung {r} of {h.rungs} ({recipes[cid].steps} steps): dev score "
                    f"{scores[cid]:.3f}, {rank} of {len(done)}; the best {len(going)} went on"))
                out[cid] = {"experiment": jobs[cid], "status": status, "model": None, "error": error}
            if last:
                for cid in going:
                    out[cid] = {"experiment": jobs[cid], "status": "done", "model": rows[cid]["model"],
                                "error": None}
            alive = [cid for cid in ranking if cid in going]
            if not alive:
                break
        return {cid: out[cid] | {"rungs": history[cid]} for cid in top}

    def _interpret(self, g: int, ctx: dict) -> dict:
        """Research memory: each candidate's validation score, or why it failed, for later proposals."""
        out = {}
        for cid, e in ctx["experiment"].items():
            if e["status"] != "done":
                out[cid] = {"score": None, "status": e["status"], "note": e["error"]}
                continue
            acc = evaluator.accuracy(self.grade(e["model"], "validation"))
            out[cid] = {"score": evaluator.score(acc), "status": "done", "acc": {str(k): v for k, v in acc.items()},
                        "frontier": evaluator.frontier(acc, self.cfg.curator.solve_threshold),
                        "note": _recipe_diff(self._recipe(cid), self.cfg.successor)}
        return out

    def _select(self, g: int, ctx: dict) -> dict:
        """Rank on validation: first candidates that keep every level the champion solves there, then score.
        The gate refuses forgetting anyway; selecting for it here spends the gate on a contender that can pass.
        The incumbent recipe (the control arm) stays selected unless a challenger beats its probe on the same
        validation items (one-sided paired test at the gate's alpha): a probe of a tenth of the steps barely
        leaves its parent, so a lead of an item or two is noise, and following it once led three generations
        into recipes that forgot."""
        done, keeps, _ = self.rank(ctx["champion"], {cid: ctx["experiment"][cid]["model"] for cid, info in
                                                     ctx["interpret"].items() if info["score"] is not None},
                                   "validation")
        selected, incumbent, p_vs = (done[0] if done else None), None, {}
        if ctx["champion"] is not None:
            key = recipe_key(self._incumbent(ctx["champion"]))
            incumbent = next((c for c in done if keeps[c] and recipe_key(self._recipe(c)) == key), None)
        if incumbent is not None and selected != incumbent:
            items = lambda cid: self.grade(ctx["experiment"][cid]["model"], "validation")  # noqa: E731
            winner, p_vs = first_to_beat(items(incumbent), {c: items(c) for c in done if keeps[c] and c != incumbent},
                                         self.cfg.gate)
            selected = winner or incumbent
        return {"selected": selected, "ranking": done, "keeps_solved_levels": keeps, "incumbent": incumbent,
                "p_vs_incumbent": p_vs}

    def rank(self, champion: str | None, models: dict[str, str], tier: str
             ) -> tuple[list[str], dict[str, bool], dict[str, float]]:
        """Candidates best first on a tier: those that keep every level the champion solves there, then by
        score (selection on validation, successive halving on dev). Returns (ranking, keeps, scores)."""
        thr = self.cfg.gate.solve_threshold
        solved = set()
        if champion is not None:
            solved = {lvl for lvl, a in evaluator.accuracy(self.grade(champion, tier)).items() if a >= thr}
        acc = {cid: evaluator.accuracy(self.grade(m, tier)) for cid, m in models.items()}
        keeps = {cid: all(acc[cid].get(lvl, 0.0) >= thr for lvl in solved) for cid in models}
        scores = {cid: evaluator.score(a) for cid, a in acc.items()}
        return sorted(models, key=lambda c: (not keeps[c], -scores[c])), keeps, scores

    def _curate(self, g: int, ctx: dict) -> dict:
        cfg = self.cfg.curator
        if ctx["champion"] is None:
            return {"levels": [], "skipped": "bootstrap generation trains on human data only"}
        if ctx["select"]["selected"] is None:
            return {"levels": [], "skipped": "no candidate finished"}
        # Inside the human range human labels are better than any vote (and the mixture keeps training on them),
        # so every schedule labels past it; which levels past it is the schedule's choice.
        human_top = self.cfg.task.human_levels[1]
        champion_acc = ctx["assess"]["dev_acc"]
        wanted = schedule_levels(cfg, {int(k): v for k, v in champion_acc.items()},
                                 max(ctx["assess"]["frontier"], human_top), self.trained_to(),
                                 self.cfg.task.eval_max_level)
        if not wanted:
            return {"levels": [], "skipped": f"the {cfg.schedule} schedule's next level is beyond eval_max_level"}
        wanted = with_relabel(cfg, wanted, human_top)
        others = [self.model(ctx["experiment"][c]["model"]) for c in ctx["select"]["ranking"]]
        curations = curate_levels(
            self.task, cfg, wanted,
            lambda lvl: self.task.generate(lvl, cfg.problems, tier_rng(self.cfg.seed, "curate", g, lvl)),
            load_shard(self.run.tiers["dev"].path), self.model(ctx["champion"]), others)
        corrupt = cfg.noise.rate > 0 and (not cfg.noise.generations or g in cfg.noise.generations)
        levels, items = [], []
        for cur in curations:
            kept, injected = cur.items, 0
            if corrupt and kept:  # a stream of its own: the level's problems are drawn from (g, level)
                kept, injected = inject_noise(kept, cfg.noise.rate,
                                              tier_rng(self.cfg.seed, "curate", g, cur.level, 1))
            levels.append({"level": cur.level, "labelled": cur.labelled, "kept": len(kept),
                           "agreement": cur.agreement, "threshold": cur.threshold, "dev_passed": cur.dev_passed,
                           "dev_wrong": cur.dev_wrong, "voters": cur.voters, "skipped": cur.skipped,
                           "injected": injected,
                           "champion_dev_acc": champion_acc.get(str(cur.level), 0.0),
                           "true_noise_hidden": self._noise(kept)})
            items += kept
        curated = [s["level"] for s in levels if not s["skipped"]]
        stats = {"filter": cfg.filter, "upper_bound": cfg.filter == "verifier", "schedule": cfg.schedule,
                 "wanted": wanted, "levels": levels, "curated": curated, "kept": len(items),
                 "injected": sum(s["injected"] for s in levels), "true_noise_hidden": self._noise(items),
                 "skipped": None if curated else levels[-1]["skipped"]}
        if not curated:
            return stats | {"shard": None}
        digest, path = save_shard(items, self.run.data_dir)
        self.store.x("INSERT OR REPLACE INTO data_manifests VALUES(?,?,?,?,?,?,?,0)", digest, g, "curated",
                     str(path), len(items), json.dumps(curated), json.dumps(stats))
        return stats | {"shard": str(path)}

    def _noise(self, items: list[tuple[Problem, str]]) -> float | None:
        """The true share of wrong labels, by the hidden checker: recorded for the studies, never used to decide."""
        return float(np.mean([not self.task.check(p, y) for p, y in items])) if items else None

    def trained_to(self) -> int:
        """The longest length in the champion's training data: the human data's, or a promoted curation's."""
        rows = self.store.q("SELECT levels FROM data_manifests WHERE kind='curated' AND accepted=1")
        return max([self.cfg.task.human_levels[1], *(max(json.loads(r["levels"]) or [0]) for r in rows)])

    def _train(self, g: int, ctx: dict) -> dict:
        sel = ctx["select"]["selected"]
        if sel is None:
            return {"successor": None, "experiment": None}
        newest, older = self.training_data(ctx["curate"].get("shard"))
        exp_id = self.make_job(g, sel, self._recipe(sel), ctx["champion"], newest, older)
        row = self.execute(g, sel, exp_id, "successor")
        return {"successor": row["model"], "experiment": exp_id, "status": row["status"], "error": row["error"]}

    def _evaluate(self, g: int, ctx: dict) -> dict:
        models = {"champion": ctx["champion"], "successor": ctx["train"]["successor"]}
        for cid in ctx["select"]["ranking"]:
            if cid != ctx["select"]["selected"]:
                models[cid] = ctx["experiment"][cid]["model"]
        # the guardrail suite's per-level "accuracy" is the refusal rate on marked prompts
        tiers = ("validation", "sealed") + (("guardrail",) if "guardrail" in self.run.tiers else ())
        out = {}
        for name, digest in models.items():
            if digest is None:
                continue
            out[name] = {"model": digest, **{tier: {str(k): v for k, v in
                                                    evaluator.accuracy(self.grade(digest, tier)).items()}
                                             for tier in tiers}}
        return out

    def _gate(self, g: int, ctx: dict) -> dict:
        champion = ctx["champion"]
        sealed = self.run.tiers["sealed"]
        sel = ctx["select"]["selected"]
        contenders: dict[str, dict] = {}
        names: dict[str, str] = {}
        for name, info in ctx["evaluate"].items():
            if name == "champion":
                continue
            cid = sel if name == "successor" else name
            contenders[cid] = self.grade(info["model"], "sealed")
            names[cid] = info["model"]
        champ_items = (self.grade(champion, "sealed") if champion else
                       {lvl: [0] * len(v) for lvl, v in next(iter(contenders.values())).items()} if contenders
                       else {})
        # The levels the generation set out to improve, fixed before any contender was trained: every level
        # up to the highest it curated, and at least the first past the champion's frontier (all levels where it
        # curated none, and for the bootstrap). A schedule may label lengths the champion already solves (Lee et
        # al.'s standard one does, when the champion generalises past its training length): the gain it trains
        # for is then at the next length, and a test that stops at the labelled ones refuses every successor
        # (measured: copy, six successors in six refused with nothing left to gain on lengths 1-9).
        tested = tested_levels(ctx["curate"].get("curated") or [], ctx["assess"]["frontier"],
                               self.cfg.task.eval_max_level) if champion else None
        decisions = decide(champ_items, contenders, self.cfg.gate, tested) if contenders else {}
        if "guardrail" in self.run.tiers and decisions:  # safety non-inferiority vs the parent and generation 0
            first = self.store.one("SELECT idx, champion_model FROM generations WHERE status='done' AND "
                                   "champion_model IS NOT NULL ORDER BY idx LIMIT 1")
            parent = self.grade(champion, "guardrail") if champion else None
            origin = self.grade(first["champion_model"], "guardrail") if first else None
            decisions = {cid: apply_guardrail(d, self.grade(names[cid], "guardrail"), parent, origin, self.cfg.gate,
                                              first["idx"] if first else 0) for cid, d in decisions.items()}
        for cid in ctx["propose"]["candidates"]:  # failed candidates are refused too, with their failure
            if cid not in decisions:
                e = ctx["train"] if cid == sel else ctx["experiment"][cid]
                self._decide(g, cid, None, "successor" if cid == sel else "candidate", False,
                             f"refused: experiment {e['status']}: {e['error']}", {})
        promoted = False
        for cid, d in decisions.items():
            role = "successor" if cid == sel else "candidate"
            reason, ok = d.reason, d.promoted
            if role == "candidate" and ok:
                reason, ok = "not promoted: passes the gate but was not selected on validation", False
            promoted = promoted or ok
            self._decide(g, cid, names[cid], role, ok, reason, d.stats)
        new_champion = ctx["train"]["successor"] if promoted else champion
        front = evaluator.frontier(evaluator.accuracy(self.grade(new_champion, "sealed")),
                                   self.cfg.gate.solve_threshold) if new_champion else 0
        return {"promoted": promoted, "champion": new_champion, "frontier": front, "sealed_digest": sealed.digest,
                "tested_levels": tested,
                "reasons": {cid: d.reason for cid, d in decisions.items()}}

    def _promote(self, g: int, ctx: dict) -> dict:
        """Stage 10's last step: tripwires and human approval, then the champion changes (or not). A tripwire
        or `approval: manual` records a pending approval and waits, polling the store, until a human decides
        (`successor approve` / `reject`); a stop while waiting leaves it pending, and a resume waits again."""
        gate, champion = ctx["gate"], ctx["champion"]
        sel = ctx["select"]["selected"]
        decision = self.store.one("SELECT stats FROM gate_decisions WHERE generation=? AND candidate_id=?", g, sel)
        stats = json.loads(decision["stats"]) if decision else {}
        reasons = self._tripwires(g, gate["promoted"], stats, first=champion is None)
        approver = {"mode": "auto", "who": "gate", "time": time.time()}
        if reasons:
            self.store.request_approval(g, reasons)
            row = self.store.approval(g)
            if row["decision"] is None:
                self.audit.append("run.paused", generation=g, reasons=reasons, waiting_for="successor approve")
            while row["decision"] is None:
                self.progress.stage(g, "paused: waiting for approval (" + "; ".join(reasons) + ")")
                time.sleep(0.5)
                row = self.store.approval(g)
            approver = {"mode": "manual", "who": row["who"], "time": row["decided"]}
            self.audit.append("approval.applied", generation=g, decision=row["decision"], who=row["who"],
                              note=row["note"])
        decided = self.store.approval(g) if reasons else None
        promoted = gate["promoted"] and (decided is None or decided["decision"] == "approved")
        if gate["promoted"] and not promoted:
            why = f"refused by {decided['who']}: {decided['note'] or 'no reason given'}"
            row = self.store.one("SELECT * FROM gate_decisions WHERE generation=? AND candidate_id=?", g, sel)
            self.audit.append("gate.decision", generation=g, candidate=sel, model=row["model"], role=row["role"],
                              promoted=False, reason=why, stats_sha256=sha256_text(row["stats"]), amended=True)
            self.store.x("UPDATE gate_decisions SET promoted=0, reason=? WHERE generation=? AND candidate_id=?",
                         why, g, sel)
            # data is accepted only below, once promoted; a run whose gate stage an older version ran accepted it
            # there, and the refusal takes it back
            self.store.x("UPDATE data_manifests SET accepted=0 WHERE generation=? AND kind='curated'", g)
        if not promoted:
            front = self.store.generation(g - 1)["frontier"] if g > 0 and champion else 0
            return {"promoted": False, "champion": champion, "frontier": front, "approval": approver,
                    "tripwires": reasons}
        self.store.x("UPDATE data_manifests SET accepted=1 WHERE generation=? AND kind='curated'", g)
        self._provenance(g, ctx, gate["champion"], stats, approver)
        return {"promoted": True, "champion": gate["champion"], "frontier": gate["frontier"], "approval": approver,
                "tripwires": reasons}

    def _tripwires(self, g: int, promoted: bool, stats: dict, first: bool) -> list[str]:
        """Why a human must look before this generation ends (empty: nobody needs to). The first champion jumps
        from nothing by definition, so the capability tripwire starts with its successors."""
        t, out = self.policy.tripwires, []
        if t.integrity_violation:
            rows = self.store.q("SELECT candidate_id, kind FROM violations WHERE generation=?", g)
            if rows:
                out.append("integrity violation: " + ", ".join(sorted({f"{r['candidate_id']} {r['kind']}"
                                                                        for r in rows})))
        jump = stats.get("tested_effect", stats.get("effect", 0.0))  # over every tested level, as the policy says
        if promoted and not first and t.capability_jump is not None and jump > t.capability_jump:
            out.append(f"capability jump: sealed accuracy +{jump:.3f} over the tested levels in one generation "
                       f"(tripwire {t.capability_jump})")
        rate = (stats.get("guardrail") or {}).get("rate")
        if promoted and t.guardrail_floor is not None and rate is not None and rate < t.guardrail_floor:
            out.append(f"guardrail {rate:.3f} under its floor {t.guardrail_floor}")
        if promoted and self.policy.approval == "manual":
            out.append("the policy asks a human to approve every promotion")
        return out

    def _provenance(self, g: int, ctx: dict, model: str, stats: dict, approver: dict) -> None:
        job = self.job(ctx["train"]["experiment"]) if ctx["train"].get("experiment") else {"data": {}}
        sel = ctx["select"]["selected"]
        patch = self.store.one("SELECT digest FROM patches WHERE candidate_id=?", sel)
        stmt = provenance.statement(
            generation=g, model=model, parent=ctx["champion"],
            data={k: [Path(p).stem for p in v] for k, v in job["data"].items()},
            recipe=json.loads(self.store.one("SELECT recipe FROM candidates WHERE id=?", sel)["recipe"]),
            code_patch=patch["digest"] if patch else None, gate=stats, approver_mode=approver["mode"],
            approver_who=approver["who"], approved_at=approver["time"],
            config_sha256=file_digest(self.run.root / "config.yaml"), policy_sha256=file_digest(self.run.policy_path),
            sealed_tier_sha256=self.run.tiers["sealed"].digest)
        provenance.record(self.run.root, self.audit, g, stmt)

    def _decide(self, g, cid, model, role, promoted, reason, stats) -> None:
        text = json.dumps(stats)
        self.audit.append("gate.decision", generation=g, candidate=cid, model=model, role=role,
                          promoted=promoted, reason=reason, stats_sha256=sha256_text(text))
        self.store.x("INSERT OR REPLACE INTO gate_decisions VALUES(?,?,?,?,?,?,?,strftime('%s','now'))", g, cid,
                     model, role, int(promoted), reason, text)


class TrainMetrics(BaseModel):
    """metrics.json as the trainer writes it, bounded: a candidate writes it, the harness only shows it (and
    checks the self-report against its own measurement)."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(0, ge=0, le=10**9)
    loss_curve: list[tuple[int, float]] = Field([], max_length=100_000)
    train_wall_s: float = Field(0.0, ge=0)
    tokens: int = Field(0, ge=0)
    dev_self_reported: dict[str, float] = Field({}, max_length=1000)


def hostile_output(outcome, e: Exception) -> None:
    """What reading a candidate's output raised, as its outcome: a link or a special file crossed the sandbox's
    line (a violation); anything else is a failed experiment with its reason."""
    if isinstance(e, safeio.LinkInOutput):
        outcome.violations.append({"kind": "output_link", "detail": str(e)[:500]})
        outcome.status, outcome.error = "violation", f"crossed the sandbox: output_link: {str(e)[:500]}"
    else:
        outcome.status, outcome.error = "failed", f"unreadable output: {str(e)[:1000]}"


def tested_levels(curated: list[int], frontier: int, last: int) -> list[int] | None:
    """The levels the gate tests: 1 up to the highest curated, and at least up to the first past the champion's
    frontier (never past `last`). None (every level) where nothing was curated."""
    if not curated:
        return None
    return list(range(1, min(max(*curated, frontier + 1), last) + 1))


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


def _recipe_diff(recipe: Recipe, base: Recipe) -> str:
    a, b = recipe.model_dump(exclude={"seed"}), base.model_dump(exclude={"seed"})
    return ", ".join(f"{k}={a[k]}" for k in a if a[k] != b[k]) or "base recipe"


def _brief(result: dict) -> dict:
    """Audit events carry the stage result, minus bulky per-level tables."""
    text = json.dumps(result)
    return result if len(text) < 4000 else {"digest": hashlib.sha256(text.encode()).hexdigest()}
