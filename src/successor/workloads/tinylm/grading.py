"""The harness's own measurements of tinylm models: checkpoints read as data, graded with the task's hidden
checker on the harness's tiers, each grading computed once and kept in the store (and the audit log).

A tier is graded part by part (the ladder's parts, rundir.Part), each kept under its own digest: a part the
ladder adds is graded when first asked for, and the levels graded before it are read back, never graded again."""
from __future__ import annotations

import os
import stat

from pydantic import BaseModel, ConfigDict, Field

from ... import safeio
from ...store import evaluation_sha256
from . import checkpoint, evaluator
from .data import load_shard
from .tasks import Problem


class PlateauStop(BaseModel):
    """Where a trainer ended its run early on its loss plateau (recipe.plateau_step): shown, never trusted."""

    model_config = ConfigDict(extra="forbid")
    step: int = Field(ge=0, le=10**9)
    loss: float = Field(ge=0, le=1e6)


class TrainMetrics(BaseModel):
    """metrics.json as the trainer writes it, bounded: a candidate writes it, the harness only shows it (and
    checks the self-report against its own measurement)."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(0, ge=0, le=10**9)
    loss_curve: list[tuple[int, float]] = Field([], max_length=100_000)
    train_wall_s: float = Field(0.0, ge=0)
    tokens: int = Field(0, ge=0)
    dev_self_reported: dict[str, float] = Field({}, max_length=1000)
    stopped_on_plateau: PlateauStop | None = None


class Grader:
    def __init__(self, run, store, audit, task):
        self.run, self.store, self.audit, self.task = run, store, audit, task
        self._models: dict[str, object] = {}

    def model(self, digest: str):
        if digest not in self._models:
            self._models[digest] = checkpoint.load(self.store.model_path(digest))
        return self._models[digest]

    def tier_items(self, tier: str) -> list[Problem]:
        return [p for p, _ in self.run.tiers[tier].items()]

    def grade(self, digest: str, tier: str, parts: list | None = None) -> dict[int, list[int]]:
        """Per level, the model's 0/1 items on every part of the tier (or on `parts`: a fresh sealed sample)."""
        out: dict[int, list[int]] = {}
        for part in parts or self.run.tiers[tier].parts:
            items = self.store.evaluation(digest, tier, part.digest)
            if items is None:
                items = evaluator.grade(self.model(digest), self.task, [p for p, _ in load_shard(part.path)])
                self.audit.append("evaluation.saved", model=digest, tier=tier, tier_digest=part.digest,
                                  items_sha256=evaluation_sha256(items))
                self.store.save_evaluation(digest, tier, part.digest, items)
            out.update(items)
        return dict(sorted(out.items()))

    def accuracy(self, digest: str, tier: str, parts: list | None = None) -> dict[int, float]:
        return evaluator.accuracy(self.grade(digest, tier, parts))

    def accuracy_under_offset(self, digest: str, tier: str, offset: int, levels: list[int]) -> dict[int, float]:
        """Accuracy at `levels` decoded under a position offset (a check, not a grading: nothing is stored, and
        the same model and tier always give the same numbers)."""
        problems = [p for p in self.tier_items(tier) if p.level in levels]
        return evaluator.accuracy(evaluator.grade(self.model(digest), self.task, problems, offset))

    def rank(self, champion: str | None, models: dict[str, str], tier: str, threshold: float
             ) -> tuple[list[str], dict[str, bool], dict[str, float]]:
        """Candidates best first on a tier: those that keep every level the champion solves there, then by
        score (selection on validation, successive halving on dev). Returns (ranking, keeps, scores)."""
        solved = set()
        if champion is not None:
            solved = {lvl for lvl, a in self.accuracy(champion, tier).items() if a >= threshold}
        acc = {cid: self.accuracy(m, tier) for cid, m in models.items()}
        keeps = {cid: all(acc[cid].get(lvl, 0.0) >= threshold for lvl in solved) for cid in models}
        scores = {cid: evaluator.score(a) for cid, a in acc.items()}
        return sorted(models, key=lambda c: (not keeps[c], -scores[c])), keeps, scores

    def collect(self, ws, file_size_mb: int) -> tuple[str, dict, bytes, bytes]:
        """Read the checkpoint a candidate left, as hostile data (safeio, checkpoint.from_untrusted), and check
        that the harness can evaluate it on every harness tier the loop grades on. Returns (digest, metrics,
        config bytes, weights bytes): only the bytes read here may be copied into the lineage."""
        metrics = safeio.read_json(ws, "out/metrics.json", 1 << 20, TrainMetrics).model_dump(exclude_unset=True)
        for rel, st in safeio.entries(ws, "out/checkpoint", max_entries=64):
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise safeio.LinkInOutput(f"out/checkpoint/{rel}: {safeio._kind(st.st_mode)}, not a regular file")
        config = safeio.read_bytes(ws, f"out/checkpoint/{checkpoint.CONFIG}", checkpoint.MAX_CONFIG_BYTES)
        weights = safeio.read_bytes(ws, f"out/checkpoint/{checkpoint.WEIGHTS}", file_size_mb << 20)
        model, digest = checkpoint.from_untrusted(config, weights, max_params=(file_size_mb << 20) // 2)
        fresh = digest not in self._models
        self._models[digest] = model
        try:  # a model that cannot be evaluated is a failed experiment; sealed and dev hold the same lengths as
            # validation, the guardrail's marked prompts are their own
            for tier in ("validation",) + (("guardrail",) if "guardrail" in self.run.tiers else ()):
                self.grade(digest, tier)
        except Exception as e:  # noqa: BLE001
            if fresh:
                del self._models[digest]
            raise ValueError(f"the checkpoint cannot be evaluated: {type(e).__name__}: {str(e)[:300]}") from None
        return digest, metrics, config, weights

    def keep(self, digest: str, config: bytes, weights: bytes):
        """Write a collected checkpoint into the lineage's models folder (once; named by its digest)."""
        dest = self.run.models_dir / digest
        if not dest.exists():
            tmp = self.run.models_dir / f"{digest}.{os.getpid()}.tmp"
            safeio.remove(tmp)
            tmp.mkdir(parents=True)
            safeio.write_new(tmp / checkpoint.CONFIG, config)
            safeio.write_new(tmp / checkpoint.WEIGHTS, weights)
            os.replace(tmp, dest)
        return dest
