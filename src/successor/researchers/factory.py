"""The researcher a `script` run's config names, built with what it needs (store, budgets, its files' places).

Files under the run directory: researcher/transcripts/ (every llm call, verbatim) and researcher/optuna.journal
(optuna's mirror of research memory, when storage is journal: one study per generation, `gen-N`, or
`ROLE-gen-N` for an optuna role under the manager).
"""
from __future__ import annotations

from pathlib import Path

from .. import seeds
from ..config import LLMConfig, OptunaConfig, ResearcherConfig, RoleConfig
from .base import Researcher
from .evolution import EvolutionSearch
from .manager import Manager
from .optuna_search import OptunaResearcher

STYLES = {  # what an llm role is told about its job (appended to its system prompt)
    "explorer": "explorer. Propose bold changes: knob values far from the champion's, and code changes that "
                "try a different idea; a proposal that fails teaches the team something.",
    "exploiter": "exploiter. Refine the champion: small steps of one or two knobs, or a small, safe code "
                 "change, around what has worked best so far.",
    "critic": "critic. Review the team's proposals before they cost compute: refuse any that repeat a past "
              "failure, cannot work as written, or break the program's rules; keep the rest.",
}


def _llm(cfg: LLMConfig | None, store, run_root: Path, budgets, role: str | None) -> Researcher:
    from .llm import LLMResearcher  # imported here: it needs the chat SDKs only when an llm is configured

    if cfg is None:
        raise ValueError("an llm researcher needs an llm section")
    return LLMResearcher(cfg, store, Path(run_root) / "researcher" / "transcripts", budgets, role=role,
                         style=STYLES.get(role) if role else None)


def _optuna(cfg: OptunaConfig, run_root: Path, seed: int, role: str | None) -> OptunaResearcher:
    journal = Path(run_root) / "researcher" / "optuna.journal"
    return OptunaResearcher(cfg, seed, journal if cfg.storage == "journal" else None, role=role)


def _role(rc: RoleConfig, name: str, crossover: bool, *, store, run_root: Path, budgets, seed: int) -> Researcher:
    if rc.name == "evolution":
        return EvolutionSearch(rc.mutation_rate, crossover, role=name)
    if rc.name == "optuna":
        # each role its own seed stream: two optuna roles on one seed would propose the same points
        return _optuna(rc.optuna, run_root, seeds.integer(seed, "optuna-role", ["explorer", "exploiter"].index(name)),
                       name)
    return _llm(rc.llm, store, run_root, budgets, name)


def build(cfg: ResearcherConfig, *, store, run_root: Path, budgets, seed: int) -> Researcher:
    """The researcher `cfg.name` names; `budgets` (the policy's) caps an llm's cost."""
    if cfg.name == "evolution":
        return EvolutionSearch(cfg.mutation_rate, cfg.crossover)
    if cfg.name == "optuna":
        return _optuna(cfg.optuna, run_root, seed, None)
    if cfg.name == "llm":
        return _llm(cfg.llm, store, run_root, budgets, None)
    m = cfg.manager
    kw = dict(store=store, run_root=run_root, budgets=budgets, seed=seed)
    roles = {"explorer": _role(m.explorer, "explorer", cfg.crossover, **kw),
             "exploiter": _role(m.exploiter, "exploiter", cfg.crossover, **kw)}
    critic = None  # the memory checks run whatever the critic's config; only an llm critic adds a review
    if m.critic is not None and m.critic.name == "llm":
        critic = _llm(m.critic.llm, store, run_root, budgets, "critic")
    return Manager(m, roles, critic)
