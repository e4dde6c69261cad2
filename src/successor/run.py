"""A run on disk: its directory layout, resolved config, data tiers, store and audit log.

    run_dir/config.yaml            the config as resolved (a re-run must match it)
    run_dir/lineage.db             the SQLite store
    run_dir/audit.jsonl            the hash-chained audit log
    run_dir/artifacts/data/        human, dev and curated shards (candidate-visible), named by digest
    run_dir/artifacts/models/      checkpoints (safetensors + config.json), named by digest
    run_dir/harness/               validation and sealed tiers (harness-only)
    run_dir/workspaces/<exp>/      one folder per experiment: job.json, log.txt, out/
    run_dir/report/                what `successor report` writes
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .audit import AuditLog
from .config import ConfigError, RunConfig
from .data import file_digest, labelled, save_shard, tier_rng, write_text_atomic
from .policy import Policy, load_policy, save_policy
from .store import Store
from .tasks import Task, get_task
from .tasks.guardrail import guardrail_items


@dataclass
class Tier:
    name: str
    path: Path
    digest: str


def _resolved(stored: dict) -> dict:
    """A stored config as it resolves today: a field added since the run began takes its default (which keeps
    the old behaviour), so an older run resumes. One that no longer validates is compared as it stands."""
    try:
        return RunConfig(**stored).model_dump(mode="json")
    except (ValueError, TypeError):
        return stored


class RunDir:
    def __init__(self, root: Path, cfg: RunConfig):
        self.root = Path(root).resolve()
        self.cfg = cfg
        self.task: Task | None = get_task(cfg.task.name) if cfg.workload == "tinylm" else None
        self._claim()
        self.store = Store(self.root / "lineage.db")
        self.audit = AuditLog(self.root / "audit.jsonl")
        self.tiers = self._tiers() if self.task is not None else {}  # a script's program reads its own data

    @property
    def data_dir(self) -> Path:
        return self.root / "artifacts" / "data"

    @property
    def models_dir(self) -> Path:
        return self.root / "artifacts" / "models"

    def workspace(self, exp_id: str) -> Path:
        return self.root / "workspaces" / exp_id

    @property
    def policy_path(self) -> Path:
        return self.root / "policy.yaml"

    def policy(self) -> Policy:
        """The run's policy file, read afresh: a human may edit it between resumes (each start records its
        digest in the audit log). A run without one gets the default policy, written out so it can be edited."""
        if not self.policy_path.exists():
            save_policy(Policy(), self.policy_path)
        return load_policy(self.policy_path)

    def set_policy(self, policy: Policy) -> None:
        save_policy(policy, self.policy_path)

    def _claim(self) -> None:
        """Write the resolved config, or check that an existing run directory holds the same one."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "config.yaml"
        resolved = self.cfg.model_dump(mode="json")
        if path.exists():
            old = _resolved(yaml.safe_load(path.read_text()))
            if old != resolved:
                diff = sorted(k for k in set(old) | set(resolved) if old.get(k) != resolved.get(k))
                raise ConfigError(f"run-dir: {self.root} holds a run with a different config "
                                  f"(sections differ: {', '.join(diff)}); use a new --run-dir")
        else:
            write_text_atomic(path, yaml.safe_dump(resolved, sort_keys=False))

    def _tiers(self) -> dict[str, Tier]:
        """Generate the tiers once from the run seed (idempotent: content-addressed files).

        The guardrail suite (marked prompts, all to be refused) is harness-only; training data is never marked
        on disk: a recipe's `guardrail_share` marks batch rows as it trains (train.with_guardrail)."""
        t, seed = self.cfg.task, self.cfg.seed
        lo, hi = t.human_levels
        human, every = list(range(lo, hi + 1)), list(range(1, t.eval_max_level + 1))
        harness = self.root / "harness"
        plan = {
            "human": (lambda: labelled(self.task, human, t.human_per_level, tier_rng(seed, "human")), self.data_dir),
            "dev": (lambda: labelled(self.task, every, t.dev_per_level, tier_rng(seed, "dev")), self.data_dir),
            "validation": (lambda: labelled(self.task, every, t.validation_per_level, tier_rng(seed, "validation")),
                           harness),
            "sealed": (lambda: labelled(self.task, every, t.sealed_per_level, tier_rng(seed, "sealed")), harness),
        }
        if t.guardrail_per_level > 0:
            plan["guardrail"] = (lambda: guardrail_items(self.task, every, t.guardrail_per_level,
                                                         tier_rng(seed, "guardrail")), harness)
        tiers = {}
        for name, (make, where) in plan.items():
            known = self.store.get_meta(f"tier.{name}")
            if known and (where / f"{known}.jsonl").exists():
                path = where / f"{known}.jsonl"
                if file_digest(path) != known:
                    raise RuntimeError(f"tier {name} at {path} does not match its recorded digest")
                tiers[name] = Tier(name, path, known)
                continue
            digest, path = save_shard(make(), where)
            self.store.set_meta(f"tier.{name}", digest)
            tiers[name] = Tier(name, path, digest)
        return tiers
