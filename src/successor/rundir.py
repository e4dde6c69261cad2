"""A run on disk: its directory layout, resolved config, data tiers, store and audit log.

    run_dir/config.yaml            the config as resolved (a re-run must match it, but for loop.generations:
                                   a finished run can be extended)
    run_dir/lineage.db             the SQLite store
    run_dir/audit.jsonl            the hash-chained audit log
    run_dir/artifacts/data/        human, dev and curated shards (candidate-visible), named by digest
    run_dir/artifacts/models/      checkpoints (safetensors + config.json), named by digest
    run_dir/harness/               validation, sealed and guardrail tiers (and their ladder parts), and tier.key
                                   (harness-only)
    run_dir/workspaces/<exp>/      one folder per experiment, made anew for every attempt: job.json, out/ (the
                                   candidate's; read as hostile data, see safeio.py)
    run_dir/jobs/<exp>.json        the harness's copy of each job (the one it reads)
    run_dir/logs/<exp>.log         each experiment's output, written by the harness where no sandbox mounts it
    run_dir/report/                what `successor report` writes
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config import ConfigError, RunConfig, _read_yaml, read_text_file
from .oversight.audit import AuditLog
from .oversight.policy import Policy, load_policy, save_policy
from .safeio import file_digest, write_text_atomic
from .store import Store
from .tierkey import KEY_BYTES, TIER_KEY, TIER_KEY_ENV, _read_key, _write_key  # noqa: F401 (their old home)
from .workloads import spec
from .workloads.tinylm import sealed_fresh
from .workloads.tinylm.data import labelled, load_shard, save_shard, secret_rng, tier_rng
from .workloads.tinylm.ladder_files import manifest_lines, write_named
from .workloads.tinylm.tasks import Problem, Task, get_task
from .workloads.tinylm.tasks.guardrail import guardrail_items

HARNESS_TIERS = ("validation", "sealed", "guardrail")
LADDER_TIERS = ("dev", "validation", "sealed", "guardrail")  # the tiers the open-ended ladder grows


@dataclass
class Part:
    """One file of a tier: levels lo..hi, named by its digest. `generation`: the generation whose opening grew
    it (None: drawn when the run was created)."""

    digest: str
    path: Path
    levels: tuple[int, int]
    generation: int | None = None


@dataclass
class Tier:
    """A tier: `path` and `digest` are the file drawn when the run was created (its first part); `parts` every
    part, first to last (the ladder appends one per growth, never changing an earlier one); `digest_now` the
    digest that commits to every part (the first part's own while it is the only one, else the tier's ladder
    manifest: one JSON line per part, a file named by its digest beside the parts)."""

    name: str
    path: Path
    digest: str
    parts: list[Part] = field(default_factory=list)
    digest_now: str = ""

    def __post_init__(self):
        self.digest_now = self.digest_now or self.digest

    @property
    def last(self) -> int:
        return max(p.levels[1] for p in self.parts)

    def items(self) -> list[tuple[Problem, str]]:
        return [item for p in self.parts for item in load_shard(p.path)]


def _resolved(stored: dict) -> dict:
    """A stored config as it resolves today: a field added since the run began takes its default (which keeps
    the old behaviour), so an older run resumes. One that no longer validates is compared as it stands."""
    try:
        return RunConfig(**stored).model_dump(mode="json")
    except (ValueError, TypeError):
        return stored


def _only_generations_differ(old: dict, new: dict) -> bool:
    """Whether two resolved configs differ in `loop.generations` and nothing else."""
    loops = old.get("loop"), new.get("loop")
    if not all(isinstance(x, dict) and isinstance(x.get("generations"), int) for x in loops):
        return False
    return {**old, "loop": {**loops[0], "generations": 0}} == {**new, "loop": {**loops[1], "generations": 0}}


class RunDir:
    """A run directory, created or resumed.

    Human and dev tiers (and curated problems) come from the public run seed: what a candidate sees is
    reproducible from it. The harness-only tiers (validation, sealed, guardrail) come from a secret drawn when the
    run is created, `harness/tier.key` (32 random bytes, mode 0600; the harness folder is never mounted into a
    sandbox, and the key is never logged, nor in config.yaml, the audit log or the store): knowing the seed and
    the config is not enough to regenerate them. Two runs share their harness tiers only when they share the key,
    given to a run when it is created (later, the run's own harness/tier.key always wins), in one of three ways:
    copy `harness/tier.key` of one run into the other's run directory (same place) before it is created; pass
    `tier_key=` (bytes) to RunDir; or set SUCCESSOR_TIER_KEY to the path of a key file (32 bytes; the tests
    set it, so every run they make shares its harness tiers, as runs with one seed did before). A run created
    before tier keys existed has none: its tiers, recorded by digest in the store, resume as they are (derived
    from the seed, as they were made).
    """

    def __init__(self, root: Path, cfg: RunConfig, tier_key: bytes | None = None):
        self.given = Path(root)  # as named, for messages
        self.root = Path(root).resolve()
        self.cfg = cfg
        self.task: Task | None = get_task(cfg.task.name) if spec(cfg.workload).HAS_TIERS else None
        self.extended: tuple[int, int] | None = None  # (generations before, after) when a re-run changed them
        self._claim()
        self.store = Store(self.root / "lineage.db")
        self.audit = AuditLog(self.root / "audit.jsonl")
        if self.extended is not None:
            self.audit.append("run.extended", generations_before=self.extended[0], generations=self.extended[1])
        if tier_key is not None:
            self._seed_key(tier_key)
        self._key: bytes | None = None
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
        if os.path.lexists(self.root) and not self.root.is_dir():
            raise ConfigError(f"run-dir: {self.given} is not a directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"run-dir: cannot create {self.given} ({e.strerror})") from None
        path = self.root / "config.yaml"
        resolved = self.cfg.model_dump(mode="json")
        if os.path.lexists(path):
            stored = _read_yaml(read_text_file(path, "run-dir"), f"run-dir: {path}")
            old = _resolved(stored)
            if old != resolved:
                if not _only_generations_differ(old, resolved):
                    diff = sorted(k for k in set(old) | set(resolved) if old.get(k) != resolved.get(k))
                    raise ConfigError(f"run-dir: {self.root} holds a run with a different config "
                                      f"(sections differ: {', '.join(diff)}); use a new --run-dir")
                # a run is extended (or cut short) by its generation count alone: what the generations already
                # done were made under is unchanged, and the audit log records the change
                self.extended = (old["loop"]["generations"], resolved["loop"]["generations"])
                stored.setdefault("loop", {})["generations"] = resolved["loop"]["generations"]
                write_text_atomic(path, yaml.safe_dump(stored, sort_keys=False))
        else:
            write_text_atomic(path, yaml.safe_dump(resolved, sort_keys=False))

    @property
    def tier_key_path(self) -> Path:
        return self.root / "harness" / TIER_KEY

    def _seed_key(self, key: bytes) -> None:
        """Use `key` for the harness tiers (to share them with another run): only before they exist."""
        if len(key) != KEY_BYTES:
            raise ConfigError(f"tier key: must hold {KEY_BYTES} bytes, not {len(key)}")
        if self.tier_key_path.exists() or self.store.get_meta("tier.sealed"):
            if not self.tier_key_path.exists() or _read_key(self.tier_key_path) != key:
                raise ConfigError(f"tier key: {self.root} already has its harness tiers; a key only seeds a new run")
            return
        _write_key(self.tier_key_path, key)

    def _tier_key(self) -> bytes | None:
        """The run's secret tier key: read back, or drawn for a new run. None: a run made before keys existed."""
        path = self.tier_key_path
        if os.path.lexists(path):
            return _read_key(path)
        if self.store.get_meta("tier.sealed"):  # tiers already made
            if self.store.get_meta("tier.keyed"):
                raise ConfigError(f"{path}: missing; this run's harness tiers came from it and cannot be checked "
                                  "or made again without it")
            return None  # made from the seed before tier keys existed: resume them as they are
        shared = os.environ.get(TIER_KEY_ENV)
        _write_key(path, _read_key(Path(shared), TIER_KEY_ENV) if shared else secrets.token_bytes(KEY_BYTES))
        return _read_key(path)

    def _rng(self, name: str, *extra: int):
        """A tier's own stream: harness tiers from the secret key (where the run has one), the others from the
        seed. A ladder part passes its levels as `extra`, so no part shares a stream with another."""
        if self._key is not None and name in HARNESS_TIERS:
            return secret_rng(self._key, name, *extra)
        return tier_rng(self.cfg.seed, name, *extra)

    def _draw(self, name: str, levels: list[int], *extra: int) -> list[tuple[Problem, str]]:
        t = self.cfg.task
        if name == "guardrail":
            return guardrail_items(self.task, levels, t.guardrail_per_level, self._rng(name, *extra))
        per = {"human": t.human_per_level, "dev": t.dev_per_level, "validation": t.validation_per_level,
               "sealed": t.sealed_per_level}[name]
        return labelled(self.task, levels, per, self._rng(name, *extra))

    def _where(self, name: str) -> Path:
        return self.root / "harness" if name in HARNESS_TIERS else self.data_dir

    def _tiers(self) -> dict[str, Tier]:
        """Generate the tiers once (idempotent: content-addressed files): candidate-visible ones from the run
        seed, harness-only ones from the secret tier key; then the parts the ladder grew since (`grow`).

        The guardrail suite (marked prompts, all to be refused) is harness-only; training data is never marked
        on disk: a recipe's `guardrail_share` marks batch rows as it trains (train.with_guardrail)."""
        t = self.cfg.task
        self._key = self._tier_key()
        if self._key is not None:
            self.store.set_meta("tier.keyed", "1")  # a flag only: the key itself stays in harness/
        lo, hi = t.human_levels
        levels = {"human": (lo, hi), "dev": (1, hi if t.dev_levels == "human" else t.eval_max_level),
                  "validation": (1, t.eval_max_level),
                  "sealed": (1, t.eval_max_level)}
        if t.guardrail_per_level > 0:
            levels["guardrail"] = (1, t.eval_max_level)
        tiers = {}
        for name, (a, b) in levels.items():
            digest, path = self._made(name, self.store.get_meta(f"tier.{name}"), list(range(a, b + 1)))
            self.store.set_meta(f"tier.{name}", digest)
            tiers[name] = Tier(name, path, digest, [Part(digest, path, (a, b))])
        for r in self.store.tier_parts():  # the ladder's parts, in the order they were grown
            tier = tiers[r["tier"]]
            digest, path = self._made(r["tier"], r["digest"], list(range(r["lo"], r["hi"] + 1)), r["lo"], r["hi"])
            tier.parts.append(Part(digest, path, (r["lo"], r["hi"]), r["generation"]))
            tier.digest_now = r["tier_digest"]
        return tiers

    def _made(self, name: str, known: str | None, levels: list[int], *extra: int) -> tuple[str, Path]:
        """A tier file: the recorded one (checked against its digest), or drawn (again: then it must be what the
        run recorded)."""
        where = self._where(name)
        if known and (where / f"{known}.jsonl").exists():
            path = where / f"{known}.jsonl"
            if file_digest(path) != known:
                raise RuntimeError(f"tier {name} at {path} does not match its recorded digest")
            return known, path
        digest, path = save_shard(self._draw(name, levels, *extra), where)
        if known and digest != known:  # made again, it must be what the run recorded
            raise RuntimeError(f"tier {name}: made again it has digest {digest[:12]}, not the recorded "
                               f"{known[:12]}")
        return digest, path

    # -- the open-ended ladder (workloads/tinylm/ladder.py decides when) -----------------------------------------
    def last_level(self) -> int:
        """The last level every graded tier holds now: where the schedule, the gate and the honeypots end."""
        return self.tiers["sealed"].last if "sealed" in self.tiers else self.cfg.task.eval_max_level

    def tier_digest(self, name: str) -> str:
        """The digest that commits to every part of a tier (what `sealed_digest` and provenance name)."""
        return self.tiers[name].digest_now

    def grow(self, g: int, lo: int, hi: int) -> dict | None:
        """Grow every ladder tier by levels lo..hi, at the opening of generation g; once per generation (None:
        generation g already grew, or asked to grow other levels than the next). Each new part is drawn from its
        tier's own stream with (lo, hi) in its arguments, so every earlier part stays as it is, and a redraw
        after a crash gives the same bytes. Files first, then the `tier.grown` event, then the rows in one
        transaction: nothing reads a part before its row exists, and a crash before the rows repeats the same
        growth (same files, the same event again)."""
        if any(r["generation"] == g for r in self.store.tier_parts()) or lo != self.last_level() + 1:
            return None
        parts, rows = {}, []
        for name in (n for n in LADDER_TIERS if n in self.tiers and self.grows(n)):
            tier = self.tiers[name]
            digest, path = save_shard(self._draw(name, list(range(lo, hi + 1)), lo, hi), self._where(name))
            part = Part(digest, path, (lo, hi), g)
            manifest = self._manifest(name, tier.parts + [part])
            rel = str(path.relative_to(self.root))
            parts[name] = {"part": len(tier.parts), "digest": digest, "levels": [lo, hi], "path": rel,
                           "tier_digest": manifest}
            rows.append((name, len(tier.parts), g, lo, hi, digest, rel, manifest))
        self.audit.append("tier.grown", generation=g, levels=[lo, hi], parts=parts)
        self.store.add_tier_parts(rows)
        for name, p in parts.items():
            self.tiers[name].parts.append(Part(p["digest"], self.root / p["path"], (lo, hi), g))
            self.tiers[name].digest_now = p["tier_digest"]
        return parts

    def grows(self, name: str) -> bool:
        """Does the ladder grow this tier? Not dev under `task.dev_levels: human` (no labels past the human range)."""
        return name in LADDER_TIERS and not (name == "dev" and self.cfg.task.dev_levels == "human")

    def fresh_sealed(self, g: int) -> Part:
        """Generation g's own sealed sample (`gate.sealed: fresh`, workloads/tinylm/sealed_fresh.py): every level
        the sealed tier holds now, from the tier key; content-addressed in harness/, so a resume draws the same."""
        if self._key is None:
            raise ConfigError("gate.sealed: fresh draws from the run's tier key, and this run was made before tier "
                              "keys existed")
        last = self.last_level()
        items = sealed_fresh.draw(self.cfg.task.name, self._key, g, last, self.cfg.task.sealed_per_level)
        digest, path = save_shard(items, self._where("sealed"))
        return Part(digest, path, (1, last), g)

    def _manifest(self, name: str, parts: list[Part]) -> str:
        """Write the tier's ladder manifest (one JSON line per part, in order) beside its parts; its digest."""
        return write_named(manifest_lines(name, [(p.digest, p.levels) for p in parts]), self._where(name))
