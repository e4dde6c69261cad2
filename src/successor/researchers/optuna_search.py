"""The `optuna` researcher: TPE or CMA-ES over the script's knob space.

The run's store is the source of truth, not optuna's: every generation the study is rebuilt, fresh, from
research memory (done trials with a metric are COMPLETE, the rest FAIL; a patched trial counts for its knobs)
under the name `gen-N` (`ROLE-gen-N` for a manager's role), so a journal file holds one study per generation,
each a mirror of the store at that point, and a resumed run can never diverge from it. The sampler is seeded
from (seed, generation), so a generation's asks are reproducible.

CMA-ES keeps its state in the system attributes of its own trials, which a rebuilt study does not have; so its
start is fitted from memory instead, by warm starting (WS-CMA-ES, `source_trials`): the mean and covariance of
the top 10% of the measured trials; with fewer than ten (the fit needs one in ten) the list is repeated up to
ten, which centres it on the best trial with a spread of 0.1 of each knob's range (`x0`/`sigma0` would say the
same, but are deprecated in optuna 5). Categorical knobs go to its independent sampler, a TPE, which learns
from the rebuilt trials too.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, CmaEsSampler, TPESampler
from optuna.storages import BaseStorage, InMemoryStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from .. import seeds
from ..config import OptunaConfig
from .base import Brief, Dim, Proposal, Space, Trial
from .evolution import safe_key

WARM_START_MIN = 10  # cmaes.get_warm_start_mgd keeps the top 10%: it needs ten solutions for one


def distribution(dim: Dim) -> BaseDistribution:
    if dim.kind == "float":
        return FloatDistribution(float(dim.low), float(dim.high), log=dim.log)
    if dim.kind == "int":
        return IntDistribution(int(math.ceil(dim.low)), int(math.floor(dim.high)), log=dim.log)
    return CategoricalDistribution(list(dim.choices))


def frozen(t: Trial, space: Space, dists: dict[str, BaseDistribution]) -> optuna.trial.FrozenTrial | None:
    """Research memory's trial as optuna's; None when the current space refuses its knobs (an older space)."""
    try:
        knobs = space.validate(t.knobs)
    except ValueError:
        return None
    done = t.status == "done" and t.metric is not None and np.isfinite(t.metric)
    return optuna.trial.create_trial(
        state=TrialState.COMPLETE if done else TrialState.FAIL, value=float(t.metric) if done else None,
        params=knobs, distributions=dists, user_attrs={"successor_id": t.id, "status": t.status})


class OptunaResearcher:
    def __init__(self, cfg: OptunaConfig, seed: int, journal: Path | None = None, role: str | None = None,
                 name: str = "optuna"):
        self.cfg, self.seed, self.role, self.name = cfg, seed, role, name
        self.journal = Path(journal) if journal is not None and cfg.storage == "journal" else None
        if cfg.storage == "journal" and journal is None:
            raise ValueError("optuna storage journal needs a journal path")

    def _storage(self) -> BaseStorage:
        if self.journal is None:
            return InMemoryStorage()
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(self.journal)))

    def _sampler(self, seed: int, memory: list[optuna.trial.FrozenTrial], brief: Brief) -> BaseSampler:
        startup = self.cfg.startup_trials
        if self.cfg.sampler == "tpe":
            return TPESampler(seed=seed, n_startup_trials=startup)
        kw: dict = {}
        done = [t for t in memory if t.state == TrialState.COMPLETE]
        numeric = {k: d for k, d in done[0].distributions.items()
                   if not isinstance(d, CategoricalDistribution) and not d.single()} if done else {}
        if numeric:  # the source trials must have exactly CMA-ES's (numeric) space
            source = [optuna.trial.create_trial(value=t.value, params={k: t.params[k] for k in numeric},
                                                distributions=numeric) for t in done]
            # fewer than ten: repeated up to ten, so the top 10% is the best trial alone (its centre)
            kw["source_trials"] = source * math.ceil(WARM_START_MIN / len(source))
        return CmaEsSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False,
                            independent_sampler=TPESampler(seed=seeds.integer(seed, "optuna-independent"),
                                                                           n_startup_trials=startup), **kw)

    def propose(self, brief: Brief) -> list[Proposal]:
        """brief.n new knob assignments: asks whose knobs are in memory, the champion's, in
        brief.extra["exclude"] or earlier in the batch are told FAIL and asked again (bounded)."""
        space = brief.space
        dists = {k: distribution(d) for k, d in space.dims.items()}
        memory = [f for f in (frozen(t, space, dists) for t in brief.memory) if f is not None]
        seed = seeds.integer(self.seed, "optuna", brief.generation)
        storage = self._storage()
        name = f"gen-{brief.generation}" if self.role is None else f"{self.role}-gen-{brief.generation}"
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if name in optuna.get_all_study_names(storage):
                optuna.delete_study(study_name=name, storage=storage)  # a generation re-run: mirror the store anew
            study = optuna.create_study(storage=storage, study_name=name, direction=brief.direction,
                                        sampler=self._sampler(seed, memory, brief))
            study.add_trials(memory)
            return self._ask(study, brief, dists, sum(t.state == TrialState.COMPLETE for t in memory))

    def _ask(self, study: optuna.Study, brief: Brief, dists: dict, n_done: int) -> list[Proposal]:
        space = brief.space
        seen = {t.key for t in brief.memory} | {safe_key(space, t.knobs, t.diff) for t in brief.memory}
        seen |= {safe_key(space, brief.champion_knobs)} | set(brief.extra.get("exclude", ()))
        label = {"tpe": "TPE", "cmaes": "CMA-ES"}[self.cfg.sampler]
        role = self.role or brief.extra.get("role")
        out: list[Proposal] = []
        for _ in range(10 * brief.n + 10):
            if len(out) >= brief.n:
                break
            trial = study.ask(dists)
            knobs = space.validate(trial.params)
            key = safe_key(space, knobs)
            if key in seen:
                study.tell(trial, state=TrialState.FAIL)
                continue
            seen.add(key)
            trial.set_user_attr("proposed", True)
            phase = "random start" if n_done < self.cfg.startup_trials else "modelled"
            out.append(Proposal(knobs=knobs, role=role, researcher=self.name,
                                rationale=f"{label} sample ({phase}: {n_done} measured trial(s) in memory)"))
        return out

