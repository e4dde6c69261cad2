"""The tinylm workload: a small transformer on a generated task, its successor trained on data the champion
curated. The stage bodies the driver runs (DESIGN: assess .. gate); an experiment is one training job, sandboxed,
whose checkpoint the harness reads as data and grades itself."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ... import seeds
from ...executors.base import Experiment
from ...lab import hostile_output
from ...oversight import integrity
from ...oversight.gate import first_to_beat
from ...researchers.evolution import recipe_key
from ...researchers.tinylm_search import recipe_brief, tinylm_researcher
from . import bootstrap, evaluator, halving, ladder, sealed_fresh
from .curation import curate
from .flops import job_flops
from .gating import gate
from .grading import Grader
from .recipe import LAYOUT_FIELDS, Recipe


class TinyLMWorkload:
    def __init__(self, lab, researcher=None):
        self.lab, self.run, self.cfg, self.store, self.audit = lab, lab.run, lab.cfg, lab.store, lab.audit
        self.task = lab.run.task
        self.researcher = researcher or tinylm_researcher(self.cfg.researcher)
        self.grader = Grader(self.run, self.store, self.audit, self.task)
        self.grade = self.grader.grade
        self._fresh: dict[int, list] = {}  # generation -> its fresh sealed sample's parts (gate.sealed: fresh)
        self.model = self.grader.model

    def sealed_digest(self, g: int) -> str:
        return ladder.open_generation(self, g)  # the opening of g: the ladder grows here, if it must

    def sealed_parts(self, g: int) -> list | None:
        """What generation g's evaluate and gate grade as "sealed": None (the tier's own parts), or under
        `gate.sealed: fresh` its own sample, drawn at the first call (evaluate's, once the candidates are trained)
        and committed to by the `sealed.drawn` event before anything grades it (sealed_fresh.py)."""
        if self.cfg.gate.sealed != "fresh":
            return None
        if g not in self._fresh:
            part, meta = self.run.fresh_sealed(g), f"sealed.fresh.{g}"
            known = self.store.get_meta(meta)
            if known is None:  # a crash between the two repeats the event, with the same digest
                self.audit.append(sealed_fresh.EVENT, generation=g, sealed_digest=part.digest,
                                  levels=list(part.levels), per_level=self.cfg.task.sealed_per_level)
                self.store.set_meta(meta, part.digest)
            elif known != part.digest:
                raise RuntimeError(f"generation {g}'s sealed sample, drawn again, is {part.digest[:12]}, not the "
                                   f"recorded {known[:12]}")
            self._fresh[g] = [part]
        return self._fresh[g]

    def gated_digest(self, g: int) -> str:
        """The digest of what generation g's gate grades on (the sealed tier's, or its fresh sample's)."""
        parts = self.sealed_parts(g)
        return parts[0].digest if parts else self.run.tier_digest("sealed")

    # -- data and jobs ----------------------------------------------------------------------------------------
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
        """Write a job (the harness's copy); the experiment id is the digest of what defines the work."""
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
            "threads": self.lab.executor.threads_for(parallel),
            "timeout_s": self.lab.executor.timeout_s,  # for the candidate's information: the harness keeps its own
        }
        self.lab.save_job(exp_id, job)
        return exp_id

    # -- an experiment, as the lab runs it --------------------------------------------------------------------
    def prepare_experiment(self, g: int, cand: str, exp_id: str) -> tuple[Experiment, dict]:
        job = self.lab.job(exp_id)
        files = {"job.json": json.dumps(job, indent=2).encode()}
        patch = self.store.one("SELECT source FROM patches WHERE candidate_id=?", cand)  # in its id: make_job
        if patch is not None:
            files["patch.py"] = patch["source"].encode()
        ws = self.lab.fresh_workspace(exp_id, files)
        readable = [Path(p) for paths in job["data"].values() for p in paths] + [Path(job["dev"])]
        readable += [Path(job["parent"])] if job.get("parent") else []
        protected = integrity.harness_sources() + [self.run.root / "config.yaml", self.run.policy_path]
        protected += [p.path for t in self.run.tiers.values() for p in t.parts]
        return Experiment(job=ws / "job.json", run_root=self.run.root, readable=readable, protected=protected,
                          patch=ws / "patch.py" if patch is not None else None, threads=job.get("threads"),
                          honeypot_levels=list(range(self.cfg.task.human_levels[1] + 1,
                                                     self.run.last_level() + 1))), {}

    def collect(self, g: int, cand: str, exp_id: str, outcome) -> tuple[str | None, dict | None, dict]:
        """The checkpoint, read as data and graded before its bytes enter the lineage. Numbers a candidate
        reports about itself are never used; a lie about them disqualifies it."""
        model, metrics = None, None
        if outcome.status == "done":
            try:
                digest, metrics, config, weights = self.grader.collect(self.run.workspace(exp_id),
                                                                       self.lab.policy.sandbox.file_size_mb)
                dest = self.grader.keep(digest, config, weights)
                parent = self.store.generation(g)["parent_model"]
                self.audit.append("model.added", model=digest, parent=parent, generation=g, experiment=exp_id,
                                  path=str(dest.relative_to(self.run.root)))
                self.store.add_model(digest, str(dest), parent, g, exp_id)
                model = digest
            except Exception as e:  # noqa: BLE001 - whatever a candidate left, never a crash of the harness
                hostile_output(outcome, e)
        if model is not None:
            lies = integrity.self_report_lies(metrics.get("dev_self_reported"), self.grade(model, "validation"),
                                              self.cfg.task.dev_per_level)
            if lies:
                outcome.violations.append({"kind": "fake_metric", "detail": "; ".join(lies)})
                outcome.status, outcome.error = "violation", f"crossed the sandbox: fake_metric: {'; '.join(lies)}"
                model = None
        return model, metrics, {}

    def flops(self, job: dict) -> float | None:
        return job_flops(job)

    # -- stages 1-6 -------------------------------------------------------------------------------------------
    def assess(self, g: int, ctx: dict) -> dict:
        if ctx["champion"] is None:
            return {"dev_acc": {}, "frontier": 0, "weakest": [], "weaknesses": []}
        acc = self.grader.accuracy(ctx["champion"], "dev")
        thr = self.cfg.curator.solve_threshold
        weakest = [lvl for lvl, a in acc.items() if a < thr][:3]
        return {"dev_acc": {str(k): v for k, v in acc.items()}, "frontier": evaluator.frontier(acc, thr),
                "weakest": weakest, "weaknesses": bootstrap.weaknesses(self.cfg, acc)}

    def propose(self, g: int, ctx: dict) -> dict:
        finish = bootstrap.finishing(self, g, ctx)  # a weak champion off the plateau: why it has successors
        restart = bootstrap.propose(self, g, ctx, finish)  # generation 0, or a weak champion that must restart
        if restart is not None:
            return restart
        extra = [] if self.cfg.researcher.seed is None else [self.cfg.researcher.seed]  # None: as before it existed
        rng = seeds.rng(self.cfg.seed, "propose", g, *extra)
        rows = self.store.q("SELECT c.recipe, c.parent_model, c.recipe_key, c.id FROM candidates c")
        scores = {}
        for r in self.store.q("SELECT generation, result FROM stages WHERE name='interpret' AND status='done'"):
            for cid, info in json.loads(r["result"]).items():
                scores[cid] = info["score"] if info["score"] is not None else float("-inf")
        history = [(Recipe(**json.loads(r["recipe"])), scores[r["id"]]) for r in rows if r["id"] in scores
                   and r["parent_model"] is not None]  # bootstrap attempts are no successor's recipe
        tried = {r["recipe_key"] for r in rows if r["parent_model"] == ctx["champion"]}
        brief = recipe_brief(g, self.incumbent(ctx["champion"]), history, tried, self.cfg.researcher.candidates, rng)
        proposals = [(Recipe(**p.knobs), p.rationale, p.diff) for p in self.researcher.propose(brief)]
        ids = []
        for i, (recipe, why, patch) in enumerate(proposals):
            recipe = recipe.model_copy(update={"seed": int(rng.integers(2**31))})
            ids.append(self.lab.add_candidate(g, i, recipe.model_dump_json(), recipe_key(recipe), why,
                                              ctx["champion"], patch))
        return {"candidates": ids} | ({"finishing": finish} if finish else {})

    def incumbent(self, champion: str) -> Recipe:
        """The recipe that made the champion (the config's successor recipe before any successor), in the
        config's batch layout (`LAYOUT_FIELDS`)."""
        row = self.store.one("SELECT c.recipe FROM gate_decisions d JOIN candidates c ON c.id=d.candidate_id "
                             "WHERE d.model=? AND d.promoted=1 AND d.generation>0 AND c.parent_model IS NOT NULL",
                             champion)
        if row is None:
            return self.cfg.successor
        layout = {f: getattr(self.cfg.successor, f) for f in LAYOUT_FIELDS}
        return Recipe(**(json.loads(row["recipe"]) | layout))

    def recipe(self, cid: str) -> Recipe:
        return Recipe(**json.loads(self.store.one("SELECT recipe FROM candidates WHERE id=?", cid)["recipe"]))

    def implement(self, g: int, ctx: dict) -> dict:
        newest, older = self.training_data()
        cands = ctx["propose"]["candidates"]
        return {"experiments": {cid: bootstrap.job(self, g, cid, len(cands)) if bootstrap.is_attempt(self, cid) else
                                self.make_job(g, cid, self.budgeted(cid), ctx["champion"], newest, older,
                                              len(cands)) for cid in cands}}

    def budgeted(self, cid: str) -> Recipe:
        """An experiment is a probe of its recipe under a budget (docs/ARCHITECTURE.md, stage 4); a bootstrap
        attempt is not (bootstrap.job trains it in full)."""
        return self.budgeted_recipe(self.recipe(cid))

    def budgeted_recipe(self, recipe: Recipe) -> Recipe:
        if self.cfg.loop.experiment_budget >= 1.0:
            return recipe
        scaled = lambda n: None if n is None else max(1, round(n * self.cfg.loop.experiment_budget))  # noqa: E731
        return recipe.model_copy(update={"steps": scaled(recipe.steps), "schedule_steps": scaled(recipe.schedule_steps)})

    def experiment(self, g: int, ctx: dict) -> dict:
        attempts = bootstrap.experiment(self, g, ctx)  # a generation that trains from scratch: its attempts
        if attempts is not None:
            return attempts
        exps = ctx["implement"]["experiments"]
        if self.cfg.loop.halving.rungs > 1 and len(exps) > 1:
            return halving.run_rungs(self, g, ctx)
        rows = self.lab.execute_many(g, [(cid, exp_id, "candidate") for cid, exp_id in exps.items()])
        return {cid: {"experiment": exp_id, "status": row["status"], "model": row["model"], "error": row["error"]}
                for (cid, exp_id), row in zip(exps.items(), rows)}

    def interpret(self, g: int, ctx: dict) -> dict:
        """Research memory: each candidate's validation score, or why it failed, for later proposals."""
        out = {}
        for cid, e in ctx["experiment"].items():
            if e["status"] != "done":
                out[cid] = {"score": None, "status": e["status"], "note": e["error"]}
                continue
            acc = self.grader.accuracy(e["model"], "validation")
            out[cid] = {"score": evaluator.score(acc), "status": "done", "acc": {str(k): v for k, v in acc.items()},
                        "frontier": evaluator.frontier(acc, self.cfg.curator.solve_threshold),
                        "note": _recipe_diff(self.recipe(cid), self.cfg.successor)}
        return out

    def select(self, g: int, ctx: dict) -> dict:
        """Rank on validation: first candidates that keep every level the champion solves there, then score.
        The gate refuses forgetting anyway; selecting for it here spends the gate on a contender that can pass.
        The incumbent recipe (the control arm) stays selected unless a challenger beats its probe on the same
        validation items (one-sided paired test at the gate's alpha): a probe of a tenth of the steps barely
        leaves its parent, so a lead of an item or two is noise, and following it once led three generations
        into recipes that forgot."""
        chosen = bootstrap.select(self, g, ctx)  # among bootstrap attempts: the first to pass the bar
        if chosen is not None:
            return chosen
        done, keeps, _ = self.rank(ctx["champion"], {cid: ctx["experiment"][cid]["model"] for cid, info in
                                                     ctx["interpret"].items() if info["score"] is not None},
                                   "validation")
        selected, incumbent, p_vs = (done[0] if done else None), None, {}
        if ctx["champion"] is not None:
            key = recipe_key(self.incumbent(ctx["champion"]))
            incumbent = next((c for c in done if keeps[c] and recipe_key(self.recipe(c)) == key), None)
        if incumbent is not None and selected != incumbent:
            items = lambda cid: self.grade(ctx["experiment"][cid]["model"], "validation")  # noqa: E731
            winner, p_vs = first_to_beat(items(incumbent), {c: items(c) for c in done if keeps[c] and c != incumbent},
                                         self.cfg.gate)
            selected = winner or incumbent
        return {"selected": selected, "ranking": done, "keeps_solved_levels": keeps, "incumbent": incumbent,
                "p_vs_incumbent": p_vs}

    def rank(self, champion: str | None, models: dict[str, str], tier: str):
        return self.grader.rank(champion, models, tier, self.cfg.gate.solve_threshold)

    # -- stages 7-10 ------------------------------------------------------------------------------------------
    def curate(self, g: int, ctx: dict) -> dict:
        return bootstrap.curation_skipped(ctx) or curate(self, g, ctx)

    def trained_to(self) -> int:
        """The longest length in the champion's training data: the human data's, or a promoted curation's."""
        rows = self.store.q("SELECT levels FROM data_manifests WHERE kind='curated' AND accepted=1")
        return max([self.cfg.task.human_levels[1], *(max(json.loads(r["levels"]) or [0]) for r in rows)])

    def train(self, g: int, ctx: dict) -> dict:
        sel = ctx["select"]["selected"]
        if sel is None:
            return {"successor": None, "experiment": None}
        newest, older = self.training_data(ctx["curate"].get("shard"))
        exp_id = (bootstrap.job(self, g, sel) if bootstrap.is_attempt(self, sel) else
                  self.make_job(g, sel, self.recipe(sel), ctx["champion"], newest, older))
        row = self.lab.execute(g, sel, exp_id, "successor")
        return {"successor": row["model"], "experiment": exp_id, "status": row["status"], "error": row["error"]}

    def evaluate(self, g: int, ctx: dict) -> dict:
        models = {"champion": ctx["champion"], "successor": ctx["train"]["successor"]}
        for cid in ctx["select"]["ranking"]:
            if cid != ctx["select"]["selected"]:
                models[cid] = ctx["experiment"][cid]["model"]
        # the guardrail suite's per-level "accuracy" is the refusal rate on marked prompts
        tiers = ("validation", "sealed") + (("guardrail",) if "guardrail" in self.run.tiers else ())
        parts = {"sealed": self.sealed_parts(g)}  # a fresh sample is drawn here, before any grading of it
        return {name: {"model": digest, **{tier: {str(k): v for k, v in
                                                  self.grader.accuracy(digest, tier, parts.get(tier)).items()}
                                           for tier in tiers}}
                for name, digest in models.items() if digest is not None}

    def gate(self, g: int, ctx: dict) -> dict:
        return bootstrap.gate(self, g, ctx, gate)

    # -- promotion --------------------------------------------------------------------------------------------
    def provenance(self, g: int, ctx: dict, model: str) -> dict:
        job = self.lab.job(ctx["train"]["experiment"]) if ctx["train"].get("experiment") else {"data": {}}
        sel = ctx["select"]["selected"]
        patch = self.store.one("SELECT digest FROM patches WHERE candidate_id=?", sel)
        return {"data": {k: [Path(p).stem for p in v] for k, v in job["data"].items()},
                "recipe": json.loads(self.store.one("SELECT recipe FROM candidates WHERE id=?", sel)["recipe"]),
                "code_patch": patch["digest"] if patch else None,
                "sealed_tier_sha256": self.gated_digest(g)}

    def promoted(self, g: int, champion: str) -> None:
        """Nothing beside the store to move: the champion is the store's."""


def _recipe_diff(recipe: Recipe, base: Recipe) -> str:
    a, b = recipe.model_dump(exclude={"seed"}), base.model_dump(exclude={"seed"})
    return ", ".join(f"{k}={a[k]}" for k in a if a[k] != b[k]) or "base recipe"
