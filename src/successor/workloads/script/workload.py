"""The `script` workload: the user's own program, improved a generation at a time.

The driver's stages keep their names and their order (docs/ARCHITECTURE.md); what each means here:
- assess: the champion's metric over its gate seeds, and its weaknesses (seed spread, recent failures);
- propose: the researcher's candidates (knobs and/or a diff), from research memory;
- implement: each candidate becomes a commit in the run's git repository, or is refused with its reason (a patch
  that only moves a seed, too);
- experiment: each candidate runs on the generation's experiment seeds, sandboxed; the harness evaluates each
  artifact itself;
- interpret: research memory (mean, spread, failures with their log tails);
- select: the best candidate, if it beat the champion on its experiment seeds;
- curate: nothing (a program reads its own data);
- train: the selected candidate and the champion both run on fresh seeds the harness drew for the gate, more of
  them while the paired test is undecided (up to gate.max_seeds);
- evaluate: the harness's numbers for those runs;
- gate: a paired (or Welch) t-test on those seeds with a minimum effect; a program whose runs ignore the seed
  is one seed, not many: at generation 0 it stops the run unless gate.seed_ignored is allow;
- promote (the driver's): tripwires and approval, as for tinylm; then the run's branch moves to the successor's
  commit (`promoted`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ... import safeio, seeds
from ...budgets import Paused
from ...executors.base import Experiment, log_path
from ...lab import hostile_output
from ...oversight import integrity
from ...oversight.sandbox import IsolationError
from ...researchers.base import Brief, ResearcherPaused, proposal_key
from ...safeio import write_text_atomic
from .measure import MetricError, evaluate_artifact, metric_name, program_command, read_metric
from .memory import brief_sources, draw_seeds, gate_values, memory, program_digest, seeds_digest, weaknesses
from .patch import PatchError, allowed
from .program import ProgramRepo
from .seedcheck import SeedOnlyPatch, adaptive_gate_runs, first_champion, judge, refuse_seed_only

MAX_LOG_READ = 8 << 20  # the part of a run's output its metric is read from: the last 8 MiB


class ScriptWorkload:
    def __init__(self, lab, researcher=None):
        self.lab, self.run, self.cfg, self.store, self.audit = lab, lab.run, lab.cfg, lab.store, lab.audit
        self.policy, self.isolation = lab.policy, lab.isolation
        self.sc = self.cfg.script
        self.repo = ProgramRepo(self.run.root / "program.git", self.cfg.name)
        self.pristine = self.run.root / "harness" / "program"
        missing = [h for h in self.sc.hidden if not Path(h).exists()]
        if missing:
            raise ValueError(f"script.hidden: {missing[0]} does not exist")
        if self.sc.hidden and self.isolation != "bwrap":
            raise IsolationError(f"script.hidden needs the bubblewrap sandbox to hide {self.sc.hidden[0]}; this "
                                 f"machine gives {self.isolation!r} (install bubblewrap)")
        first = self.repo.init(Path(self.sc.program))
        if not self.pristine.exists():  # the evaluation's copy: the program as given, where no candidate writes
            self.repo.export(first, self.pristine.with_suffix(".tmp"))
            self.pristine.with_suffix(".tmp").rename(self.pristine)
        self.researcher = researcher
        if researcher is None:
            from ...researchers.factory import build

            self.researcher = build(self.cfg.researcher, store=self.store, run_root=self.run.root,
                                    budgets=self.policy.budgets, seed=self.cfg.seed)

    # -- seeds the harness draws -----------------------------------------------------------------------------
    def seeds(self, g: int, kind: str) -> list[int]:
        """The experiments' seeds, or every seed the gate may use (its first look's, then the adaptive ones:
        the first `gate.seeds` are the same either way)."""
        return draw_seeds(self.cfg.seed, g, kind, self.sc.seeds if kind == "experiment" else
                          self.sc.gate.looks()[-1])

    def sealed_digest(self, g: int) -> str:
        """The gate's seeds for this generation (up to its cap), committed before any candidate runs."""
        return seeds_digest(self.seeds(g, "gate"))

    # -- one run of the program ------------------------------------------------------------------------------
    def program(self, digest: str):
        return self.store.one("SELECT * FROM programs WHERE digest=?", digest)

    def make_run(self, g: int, cid: str, commit: str, knobs: dict, seed: int) -> str:
        argv, env, files = program_command(self.sc, knobs, seed)
        champion = self.store.champion()
        parent = self.program(champion)["artifact"] if champion else None
        if parent:
            env["SUCCESSOR_PARENT_ARTIFACT"] = parent
        job = {"commit": commit, "knobs": knobs, "seed": seed, "argv": argv, "env": env, "config_file": files,
               "parent_artifact": parent}
        exp_id = "x" + hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:15]
        if not self.lab.job_path(exp_id).exists():
            self.lab.save_job(exp_id, job | {"candidate": cid, "generation": g})
        return exp_id

    def prepare_experiment(self, g: int, cid: str, exp_id: str) -> tuple[Experiment, dict]:
        job = self.lab.job(exp_id)
        ws = self.lab.fresh_workspace(exp_id, {"job.json": json.dumps(job, indent=2).encode()})
        program = ws / "program"  # every attempt starts from the commit, not a killed run's files
        self.repo.export(job["commit"], program)
        if job["config_file"]:
            write_text_atomic(program / self.sc.config_file, json.dumps(job["config_file"], indent=2))
        frozen = [program / f for f in self.repo.files(job["commit"]) if not allowed(f, self.sc.editable)]
        return Experiment(job=ws / "job.json", run_root=self.run.root,
                          readable=[Path(job["parent_artifact"])] if job["parent_artifact"] else [],
                          protected=integrity.harness_sources() + [self.run.root / "config.yaml",
                                                                   self.run.policy_path, self.pristine],
                          command=job["argv"], cwd=program, env=job["env"], read_only=frozen,
                          honeypots=integrity.plant_script_honeypots(ws),
                          hidden=[Path(h) for h in self.sc.hidden]), {"seed": job["seed"]}

    def flops(self, job: dict) -> None:
        """A user's program has no FLOP estimate; its CPU-seconds and wall time are counted."""
        return None

    def collect(self, g: int, cid: str, exp_id: str, outcome) -> tuple[str | None, dict, dict]:
        ws = self.run.workspace(exp_id)
        program = ws / "program"
        model, metrics = None, {"seed": self.lab.job(exp_id)["seed"]}
        if outcome.status == "done":
            try:
                model, metrics = self._measure(g, exp_id, ws, program, metrics)
            except MetricError as e:
                outcome.status, outcome.error = "failed", str(e)
            except Exception as e:  # noqa: BLE001 - whatever a candidate left, never a crash of the harness
                hostile_output(outcome, e)
        return model, metrics, {"metric": metrics.get("metric")}

    def _measure(self, g: int, exp_id: str, ws: Path, program: Path, metrics: dict) -> tuple[str | None, dict]:
        """The run's number: the harness's evaluation of its artifact where the config names one, else what
        the program printed (marked self-reported)."""
        log = safeio.tail(log_path(self.run.root, exp_id), MAX_LOG_READ)
        try:
            metrics["reported"] = read_metric(self.sc.metric, log, program)
        except MetricError as e:
            if self.sc.evaluate is None:
                raise
            metrics["reported_error"] = str(e)
        model = None
        if self.sc.artifact:
            rel = Path("program") / self.sc.artifact
            if not os.path.lexists(ws / rel):
                raise MetricError(f"the program did not write its artifact {self.sc.artifact}")
            arts = self.run.root / "artifacts" / "script"
            incoming = arts / f"incoming-{exp_id}.tmp"  # the copy, checked and named by its digest once whole
            safeio.remove(incoming)
            incoming.mkdir(parents=True)
            try:
                model = safeio.copy_tree(ws, rel, incoming / rel.name, self.policy.sandbox.workspace_mb << 20)
                home = arts / model
                if not home.exists():
                    os.replace(incoming, home)
            finally:
                safeio.remove(incoming)
            dest = home / rel.name
            parent = self.store.champion()
            self.store.add_model(model, str(dest), parent, g, exp_id)
            self.audit.append("model.added", model=model, parent=parent, generation=g, experiment=exp_id,
                              path=str(dest.relative_to(self.run.root)))
        if self.sc.evaluate is not None:
            ev = evaluate_artifact(self.sc.evaluate, self.pristine, self.store.model_path(model),
                                   self.run.workspace(exp_id + "-eval"), self.run.root, self.isolation, self.policy,
                                   self.sc.hidden)
            metrics["eval_s"] = round(ev.seconds, 2)
            if ev.metric is None:
                raise MetricError(ev.error)
            metrics["harness"] = ev.metric
        metrics["metric"] = metrics.get("harness", metrics.get("reported"))
        metrics["source"] = "harness" if "harness" in metrics else "self-reported"
        return model, metrics

    def run_seeds(self, g: int, groups: list[tuple[str, str, dict, list[int], str]]) -> list[dict]:
        """Run each (candidate, commit, knobs, seeds, kind) once per seed, all of them on the executor together;
        one summary a group: its experiments, their metrics, and the first failure."""
        plans = [(cid, [self.make_run(g, cid, commit, knobs, s) for s in seeds], kind)
                 for cid, commit, knobs, seeds, kind in groups]
        rows = iter(self.lab.execute_many(g, [(cid, e, kind) for cid, exps, kind in plans for e in exps]))
        out = []
        for cid, exps, kind in plans:
            got = [next(rows) for _ in exps]
            values = [json.loads(r["metrics"])["metric"] if r["status"] == "done" else None for r in got]
            bad = next((r for r in got if r["status"] != "done"), None)
            out.append({"experiments": exps, "metrics": values, "status": bad["status"] if bad else "done",
                        "error": bad["error"] if bad else None, "models": [r["model"] for r in got]})
        return out

    # -- the ten stages --------------------------------------------------------------------------------------
    def assess(self, g: int, ctx: dict) -> dict:
        if ctx["champion"] is None:
            return {"metric": None, "weaknesses": []}
        vals = gate_values(self.store.db, ctx["champion"])
        metric = {"mean": float(np.mean(vals)) if vals else None,
                  "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, "values": vals}
        return {"metric": metric, "commit": self.program(ctx["champion"])["git_commit"],
                "weaknesses": weaknesses(self.store, vals)}

    def propose(self, g: int, ctx: dict) -> dict:
        if ctx["champion"] is None:
            props = [("the program as given", self.sc.space().defaults(), None, None, None, None)]
        else:
            brief = self.brief(g, ctx)
            try:
                got = self.researcher.propose(brief)
            except ResearcherPaused as e:
                raise Paused(f"the researcher paused: {e}") from None
            for note in getattr(self.researcher, "last_notes", []) or []:
                self.audit.append("researcher.note", generation=g, note=str(note)[:2000])
            props = [(p.rationale, p.knobs, p.diff, p.role, p.researcher, p.expected) for p in got]
        ids = []
        for i, (why, knobs, diff, role, who, expected) in enumerate(props):
            cid = f"g{g}c{i}"
            self.store.x("INSERT OR REPLACE INTO candidates VALUES(?,?,?,?,?,?,?)", cid, g, i, json.dumps(knobs),
                         proposal_key(knobs, diff), why, ctx["champion"])
            self.store.x("INSERT OR REPLACE INTO script_candidates(candidate_id, generation, diff, role, "
                         "researcher, expected) VALUES(?,?,?,?,?,?)", cid, g, diff, role, who, expected)
            if diff:
                self.store.x("INSERT OR REPLACE INTO patches VALUES(?,?,?)", cid,
                             hashlib.sha256(diff.encode()).hexdigest(), diff)
            ids.append(cid)
        return {"candidates": ids}

    def brief(self, g: int, ctx: dict) -> Brief:
        prog = self.program(ctx["champion"])
        return Brief(generation=g, champion_knobs=json.loads(prog["knobs"]),
                     champion_metric=ctx["assess"]["metric"]["mean"], metric=metric_name(self.sc),
                     direction=self.sc.direction, space=self.sc.space(),
                     sources=brief_sources(self.repo, prog["git_commit"], self.sc.editable) if self.sc.patches else {},
                     editable=self.sc.editable if self.sc.patches else [], memory=memory(self.store),
                     weaknesses=ctx["assess"]["weaknesses"], n=self.cfg.researcher.candidates,
                     rng=seeds.rng(self.cfg.seed, "propose", g))

    def implement(self, g: int, ctx: dict) -> dict:
        parent = ctx["assess"].get("commit") or self.repo.champion()
        commits, refused = {}, {}
        for cid in ctx["propose"]["candidates"]:
            row = self.store.one("SELECT c.recipe, c.rationale, s.diff FROM candidates c JOIN script_candidates s "
                                 "ON s.candidate_id=c.id WHERE c.id=?", cid)
            knobs = json.loads(row["recipe"])
            try:
                if row["diff"] and not self.sc.patches:
                    raise PatchError("patch refused: this run's config does not allow code patches")
                self.sc.space().validate(knobs)
                if ctx["champion"] is not None and not row["diff"] and knobs == self._champion_knobs(ctx):
                    raise PatchError("refused: the champion's own knobs and no patch: nothing to test")
                commit = self.repo.candidate(cid, parent, row["diff"], self.sc.editable,
                                             f"{cid}: {row['rationale']}\n\nknobs: {json.dumps(knobs)}")
                if row["diff"]:
                    refuse_seed_only(self.repo, parent, commit)
                commits[cid] = commit
            except (PatchError, ValueError) as e:
                refused[cid] = str(e)
                kind = {"kind": "seed-only patch"} if isinstance(e, SeedOnlyPatch) else {}
                self.audit.append("candidate.refused", generation=g, candidate=cid, reason=str(e), **kind)
            self.store.x("UPDATE script_candidates SET git_commit=?, refused=? WHERE candidate_id=?",
                         commits.get(cid), refused.get(cid), cid)
        return {"commits": commits, "refused": refused}

    def experiment(self, g: int, ctx: dict) -> dict:
        if ctx["champion"] is None:  # the program as given goes straight to its gate runs
            return {}
        commits = ctx["implement"]["commits"]
        seeds = self.seeds(g, "experiment")
        runs = self.run_seeds(g, [(cid, commit, self._knobs(cid), seeds, "candidate")
                                  for cid, commit in commits.items()])
        return dict(zip(commits, runs))

    def interpret(self, g: int, ctx: dict) -> dict:
        out = {}
        for cid, e in ctx["experiment"].items():
            vals = [v for v in e["metrics"] if v is not None]
            out[cid] = {"status": e["status"], "error": e["error"], "score": float(np.mean(vals)) if
                        e["status"] == "done" else None, "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                        "metrics": e["metrics"]}
        for cid, why in ctx["implement"]["refused"].items():
            out[cid] = {"status": "refused", "error": why, "score": None, "sd": None, "metrics": []}
        return out

    def select(self, g: int, ctx: dict) -> dict:
        if ctx["champion"] is None:
            first = ctx["propose"]["candidates"][0]
            return {"selected": first if first in ctx["implement"]["commits"] else None, "ranking": [first]}
        sign = 1.0 if self.sc.direction == "maximize" else -1.0
        done = sorted((c for c, i in ctx["interpret"].items() if i["score"] is not None),
                      key=lambda c: -sign * ctx["interpret"][c]["score"])
        champ = ctx["assess"]["metric"]["mean"]
        best = done[0] if done else None
        if best is not None and sign * (ctx["interpret"][best]["score"] - champ) <= 0:
            return {"selected": None, "ranking": done, "why": f"no candidate beat the champion's {champ:.4g} "
                    f"on its experiment seeds (best: {best} at {ctx['interpret'][best]['score']:.4g})"}
        return {"selected": best, "ranking": done, "why": "best mean over the experiment seeds" if best else
                "no candidate finished"}

    def curate(self, g: int, ctx: dict) -> dict:
        return {"levels": [], "skipped": "the script workload curates no data: the program reads its own"}

    def train(self, g: int, ctx: dict) -> dict:
        sel = ctx["select"]["selected"]
        if sel is None:
            return {"successor": None, "experiment": None}
        seeds, looks = self.seeds(g, "gate"), self.sc.gate.looks()
        groups = [(sel, ctx["implement"]["commits"][sel], self._knobs(sel), seeds[:looks[0]], "successor")]
        if ctx["champion"] is None:
            runs, champ, seeds = self.run_seeds(g, groups)[0], None, seeds[:looks[0]]
        else:  # the champion runs again on the same fresh seeds, beside it; more of them while undecided
            prog = self.program(ctx["champion"])
            groups.append((prog["candidate_id"], prog["git_commit"], json.loads(prog["knobs"]), seeds, "champion"))
            runs, champ, seeds = adaptive_gate_runs(self, g, groups, seeds, looks)
        return {"successor": program_digest(self._knobs(sel), ctx["implement"]["commits"][sel]),
                "experiment": runs["experiments"][0], "runs": runs, "champion_runs": champ, "seeds": seeds,
                "status": runs["status"], "error": runs["error"]}

    def evaluate(self, g: int, ctx: dict) -> dict:
        t = ctx["train"]
        if t["successor"] is None:
            return {}
        return {"successor": t["runs"]["metrics"], "champion": (t["champion_runs"] or {}).get("metrics"),
                "source": "harness" if self.sc.evaluate else "self-reported"}

    def gate(self, g: int, ctx: dict) -> dict:
        sel, t = ctx["select"]["selected"], ctx["train"]
        for cid in ctx["propose"]["candidates"]:
            if cid == sel:
                continue
            info = ctx["interpret"].get(cid, {})
            why = (f"refused: {info['error']}" if info.get("status") == "refused" else
                   f"refused: experiment {info.get('status')}: {info.get('error')}" if info.get("status") != "done"
                   else f"not selected: {ctx['select'].get('why')}" if sel is None else
                   "not selected: another candidate scored better on the experiment seeds")
            self.lab.decide(g, cid, None, "candidate", False, why, {"metrics": info.get("metrics")})
        if sel is None:
            return {"promoted": False, "champion": ctx["champion"], "frontier": 0, "reasons": {}}
        champ = t["champion_runs"]
        if t["status"] != "done" or (champ and champ["status"] != "done"):
            who, e = ("successor", t) if t["status"] != "done" else ("champion", champ)
            ok, reason, stats = False, f"refused: a gate run of the {who} {e['status']}: {e['error']}", {}
        elif champ is None:
            ok, reason, stats = first_champion(self.sc, self.audit, g, t["runs"])
        else:
            d = judge(self.sc, champ, t["runs"])
            ok, reason, stats = d.promoted, d.reason, d.stats
            if stats["seed_ignored"]["contender"]:
                self.audit.append("script.seed_ignored", generation=g, candidate=sel, role="successor",
                                  policy=self.sc.gate.seed_ignored, promoted=ok)
        self._register(g, sel, ctx, t)
        self.lab.decide(g, sel, t["successor"], "successor", ok, reason, stats | {"seeds": t["seeds"]})
        if stats.get("stop"):
            raise Paused(reason.removeprefix("refused: "))
        return {"promoted": ok, "champion": t["successor"] if ok else ctx["champion"], "frontier": 0,
                "reasons": {sel: reason}}

    def promoted(self, g: int, champion: str) -> None:
        """The run's branch moves to the successor's commit."""
        self.repo.promote(self.program(champion)["git_commit"])

    def provenance(self, g: int, ctx: dict, model: str) -> dict:
        prog = self.program(model)
        patch = self.store.one("SELECT digest FROM patches WHERE candidate_id=?", ctx["select"]["selected"])
        return {"data": {}, "recipe": {"knobs": json.loads(prog["knobs"]), "git_commit": prog["git_commit"]},
                "code_patch": patch["digest"] if patch else None, "sealed_tier_sha256": self.sealed_digest(g)}

    # -- helpers ---------------------------------------------------------------------------------------------
    def _champion_knobs(self, ctx: dict) -> dict:
        return json.loads(self.program(ctx["champion"])["knobs"])

    def _knobs(self, cid: str) -> dict:
        return json.loads(self.store.one("SELECT recipe FROM candidates WHERE id=?", cid)["recipe"])

    def _register(self, g: int, cid: str, ctx: dict, t: dict) -> None:
        commit = ctx["implement"]["commits"][cid]
        artifact = self.store.model_path(t["runs"]["models"][0]) if t["runs"]["models"][0] else None
        knobs = json.dumps(self._knobs(cid))
        self.audit.append("program.registered", program=t["successor"], candidate=cid, generation=g,
                          git_commit=commit, knobs_sha256=hashlib.sha256(knobs.encode()).hexdigest(),
                          artifact=str(artifact.relative_to(self.run.root)) if artifact else None)
        self.store.x("INSERT OR REPLACE INTO programs VALUES(?,?,?,?,?,?)", t["successor"], cid, g, commit,
                     knobs, str(artifact) if artifact else None)


