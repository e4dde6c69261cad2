"""The brief-based researchers of the `script` workload: evolution, optuna (TPE, CMA-ES), the manager and its
critic, and the factory that builds them from the config."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from successor.config import LLMConfig, ManagerConfig, OptunaConfig, ResearcherConfig, RoleConfig
from successor.oversight.policy import Budgets
from successor.researchers import factory
from successor.researchers.base import Brief, Dim, Proposal, ResearcherPaused, Space, Trial, proposal_key
from successor.researchers.evolution import EvolutionSearch, knob_grid
from successor.researchers.manager import Manager, split
from successor.researchers.optuna_search import OptunaResearcher

SPACE = Space({
    "lr": Dim("lr", "float", 1e-3, 1e-4, 1e-1, log=True),
    "layers": Dim("layers", "int", 2, 1, 8),
    "act": Dim("act", "choice", "relu", choices=("relu", "gelu", "tanh")),
    "dropout": Dim("dropout", "float", 0.1, 0.0, 0.5),
})
DIFF = """--- a/train.py
+++ b/train.py
@@ -10,3 +10,3 @@
 def model():
-    act = relu
+    act = swish
     return act
"""


def make_brief(memory=(), n=4, seed=0, direction="maximize", generation=1, **kw) -> Brief:
    return Brief(generation=generation, champion_knobs=SPACE.defaults(), champion_metric=None, metric="score",
                 direction=direction, space=SPACE, sources={"train.py": "..."}, editable=["train.py"],
                 memory=list(memory), weaknesses=[], n=n, rng=np.random.default_rng(seed), **kw)


def trial(i: str, metric: float | None, status: str = "done", diff: str | None = None, **knobs) -> Trial:
    return Trial(i, 1, {**SPACE.defaults(), **knobs}, diff, metric, status)


def assert_valid_new(props: list[Proposal], memory: list[Trial]) -> None:
    keys = [proposal_key(p.knobs, p.diff) for p in props]
    assert len(set(keys)) == len(keys), "distinct"
    assert not set(keys) & ({t.key for t in memory} | {proposal_key(SPACE.defaults(), None)}), "new"
    for p in props:
        assert SPACE.validate(p.knobs) == p.knobs  # full, typed, in bounds
        assert p.rationale


# -- evolution --------------------------------------------------------------------------------------------------
MEMORY = [trial("g1c0", 0.5, lr=3e-3), trial("g1c1", 0.7, layers=4), trial("g1c2", None, "failed", act="tanh"),
          trial("g1c3", 0.6, dropout=0.3, diff=DIFF)]


def test_evolution_proposals_valid_distinct_new_deterministic():
    evo = EvolutionSearch(0.3, crossover=True)
    a = evo.propose(make_brief(MEMORY, n=8, seed=3))
    assert len(a) == 8
    assert_valid_new(a, MEMORY)
    assert all(p.diff is None and p.researcher == "evolution" for p in a)
    b = evo.propose(make_brief(MEMORY, n=8, seed=3))
    c = evo.propose(make_brief(MEMORY, n=8, seed=4))
    assert [(p.knobs, p.rationale) for p in a] == [(p.knobs, p.rationale) for p in b]
    assert [p.knobs for p in a] != [p.knobs for p in c]
    for p in a:  # every value is a grid point or a parent's own
        for k, v in p.knobs.items():
            assert v in knob_grid(SPACE.dims[k]) + [t.knobs[k] for t in MEMORY], (k, v)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_evolution_parents_are_the_best_for_the_direction(direction):
    memory = [trial(f"g1c{v}", float(v), layers=v) for v in range(1, 9)]  # the score is the layer count
    props = EvolutionSearch(0.3, crossover=True).propose(make_brief(memory, n=10, seed=1, direction=direction))
    assert len(props) == 10
    assert_valid_new(props, memory)
    layers = [p.knobs["layers"] for p in props]
    best = ("g1c8", "g1c7") if direction == "maximize" else ("g1c1", "g1c2")
    if direction == "maximize":
        assert min(layers) >= 5, layers  # children of layers 8 and 7, at most two steps away
    else:
        assert max(layers) <= 4, layers
    assert all(any(b in p.rationale for b in best) for p in props)


def test_evolution_without_memory_mutates_the_champion_and_honours_exclude():
    evo = EvolutionSearch(0.3, crossover=False)
    first = evo.propose(make_brief(n=5, seed=0))
    assert len(first) == 5
    assert_valid_new(first, [])
    assert all("champion" in p.rationale for p in first)
    again = evo.propose(make_brief(n=5, seed=0, extra={"exclude": [proposal_key(p.knobs, None) for p in first]}))
    assert len(again) == 5 and not {proposal_key(p.knobs, None) for p in again} & \
        {proposal_key(p.knobs, None) for p in first}


# -- optuna -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["tpe", "cmaes"])
def test_optuna_proposes_valid_new_knobs_deterministically(sampler):
    memory = [trial(f"g1c{i}", float(i), lr=10 ** -(1 + i / 2), layers=1 + i) for i in range(6)]
    memory.append(trial("g1c9", None, "timeout", layers=8))
    cfg = OptunaConfig(sampler=sampler, startup_trials=2)
    a = OptunaResearcher(cfg, seed=5).propose(make_brief(memory, n=6, generation=2))
    b = OptunaResearcher(cfg, seed=5).propose(make_brief(memory, n=6, generation=2))
    c = OptunaResearcher(cfg, seed=5).propose(make_brief(memory, n=6, generation=3))
    assert len(a) == 6
    assert_valid_new(a, memory)
    assert [p.knobs for p in a] == [p.knobs for p in b]
    assert [p.knobs for p in a] != [p.knobs for p in c]
    for p in a:
        assert 1e-4 <= p.knobs["lr"] <= 1e-1 and 1 <= p.knobs["layers"] <= 8
        assert 0.0 <= p.knobs["dropout"] <= 0.5 and p.knobs["act"] in SPACE.dims["act"].choices
        assert isinstance(p.knobs["layers"], int) and p.researcher == "optuna"


def test_optuna_journal_mirrors_memory_one_study_per_generation(tmp_path):
    journal = tmp_path / "researcher" / "optuna.journal"
    memory = MEMORY + [trial("g1c4", None, "refused", diff=DIFF)]
    res = OptunaResearcher(OptunaConfig(storage="journal"), seed=0, journal=journal)
    for _ in range(2):  # the same generation twice (a resumed run): rebuilt, not appended to
        props = res.propose(make_brief(memory, n=3, generation=2))
    res.propose(make_brief(memory[:2], n=2, generation=3))
    assert journal.is_file() and journal.stat().st_size > 0
    storage = JournalStorage(JournalFileBackend(str(journal)))
    assert sorted(optuna.get_all_study_names(storage)) == ["gen-2", "gen-3"]
    trials = optuna.load_study(study_name="gen-2", storage=storage).get_trials(deepcopy=False)
    complete = {t.user_attrs["successor_id"]: t.value for t in trials if t.state == TrialState.COMPLETE}
    assert complete == {"g1c0": 0.5, "g1c1": 0.7, "g1c3": 0.6}
    failed = {t.user_attrs.get("successor_id") for t in trials if t.state == TrialState.FAIL}
    assert {"g1c2", "g1c4"} <= failed
    asked = [t.params for t in trials if t.user_attrs.get("proposed")]
    assert [SPACE.validate(p) for p in asked] == [p.knobs for p in props]
    assert len(optuna.load_study(study_name="gen-3", storage=storage).get_trials()) >= 4


def toy(k: dict) -> float:
    """Peak at lr 1e-2, 6 layers, gelu, dropout 0.2 (value 0)."""
    return -((math.log10(k["lr"]) + 2) ** 2 + 0.2 * (k["layers"] - 6) ** 2 + 4 * (k["dropout"] - 0.2) ** 2
             + (0.0 if k["act"] == "gelu" else 0.5))


@pytest.mark.parametrize("sampler", ["tpe", "cmaes"])
def test_optuna_learns_from_memory_over_generations(sampler):
    """The modelled generations' proposals score better on average than the random start's: a researcher that
    ignored memory (say, a rebuild that lost the trials) would fail this about half the time per seed, all
    three seeds together about one time in eight."""
    for seed in range(3):
        res, memory, means = OptunaResearcher(OptunaConfig(sampler=sampler, startup_trials=6), seed=seed), [], []
        for g in range(1, 7):
            props = res.propose(make_brief(memory, n=6, generation=g, direction="maximize"))
            assert len(props) == 6
            memory += [Trial(f"g{g}c{i}", g, p.knobs, None, toy(p.knobs), "done") for i, p in enumerate(props)]
            means.append(np.mean([toy(p.knobs) for p in props]))
        assert np.mean(means[-2:]) > means[0], (seed, means)


# -- manager ----------------------------------------------------------------------------------------------------
class Stub:
    """A role that replays scripted batches and records the briefs it was given."""

    def __init__(self, *batches: list[Proposal], name: str = "stub"):
        self.batches, self.briefs, self.name = list(batches), [], name

    def propose(self, brief: Brief) -> list[Proposal]:
        self.briefs.append(brief)
        return [replace(p) for p in (self.batches.pop(0) if self.batches else [])][: brief.n]


FAILED = Trial("g2c1", 2, {**SPACE.defaults(), "layers": 5}, DIFF, None, "failed",
               error="exit code 1: NameError: name 'swish' is not defined")


def fresh(layers: int, dropout: float = 0.1) -> Proposal:
    return Proposal(knobs={**SPACE.defaults(), "layers": layers, "dropout": dropout}, rationale="stub")


def test_critic_drops_a_repeat_of_a_failed_trial_and_asks_for_a_refill():
    repeat = Proposal(knobs=dict(FAILED.knobs), rationale="try swish", diff=DIFF)
    explorer, exploiter = Stub([repeat], [fresh(7)]), Stub([fresh(3)])
    mgr = Manager(ManagerConfig(), {"explorer": explorer, "exploiter": exploiter})
    props = mgr.propose(make_brief([FAILED], n=2))
    assert [p.knobs["layers"] for p in props] == [3, 7]
    assert [p.role for p in props] == ["exploiter", "explorer"]
    assert len(explorer.briefs) == 2 and explorer.briefs[1].n == 1  # the refill, for the shortfall
    assert proposal_key(FAILED.knobs, DIFF) in explorer.briefs[1].extra["exclude"]
    dropped = [n for n in mgr.last_notes if n.startswith("dropped")]
    assert len(dropped) == 1 and "duplicate of g2c1 (failed: exit code 1: NameError" in dropped[0]


def test_critic_drops_a_dead_end_diff_with_other_knobs_and_batch_duplicates():
    same_change = DIFF.replace("@@ -10,3 +10,3 @@", "@@ -12,3 +12,3 @@")  # other context, the same change
    other_knobs = Proposal(knobs={**SPACE.defaults(), "layers": 2, "lr": 0.01}, rationale="swish", diff=same_change)
    twin = fresh(6)
    mgr = Manager(ManagerConfig(), {"explorer": Stub([other_knobs, twin]), "exploiter": Stub([fresh(6), fresh(4)])})
    props = mgr.propose(make_brief([FAILED], n=4))
    notes = " | ".join(mgr.last_notes)
    assert "known dead end: its diff is that of g2c1 (failed" in notes
    assert "duplicate within the batch (the explorer's)" in notes
    assert [p.knobs["layers"] for p in props] == [6, 4]  # the roles had nothing more for the refill
    assert "refill: 2 short" in notes


def test_llm_critic_reviews_the_survivors():
    class Critic:
        def review(self, brief, proposals):
            return [(p.knobs["layers"] != 7, "7 layers overflow memory") for p in proposals]

    mgr = Manager(ManagerConfig(), {"explorer": Stub([fresh(7)], [fresh(8)]), "exploiter": Stub([fresh(3)])},
                  critic=Critic())
    props = mgr.propose(make_brief(n=2))
    assert sorted(p.knobs["layers"] for p in props) == [3, 8]
    assert any("critic: 7 layers overflow memory" in n for n in mgr.last_notes)


def test_budget_split_follows_yield():
    memory = [replace(trial(f"g1c{i}", 1.0), role="exploiter", promoted=True) for i in range(3)]
    memory += [replace(trial(f"g1e{i}", 0.5, layers=i + 1), role="explorer") for i in range(3)]
    explorer, exploiter = Stub(), Stub()
    mgr = Manager(ManagerConfig(), {"explorer": explorer, "exploiter": exploiter})
    mgr.propose(make_brief(memory, n=6))
    # yields: explorer (0+1)/(3+2) = 0.2, exploiter (3+1)/(3+2) = 0.8 -> 1.2 and 4.8 -> 1 and 5
    assert (explorer.briefs[0].n, exploiter.briefs[0].n) == (1, 5)
    assert explorer.briefs[0].extra["role"] == "explorer"
    assert "exploiter 5 (yield 0.80 = (3+1)/(3+2))" in mgr.last_notes[0]
    assert split(2, {"a": 0.9, "b": 0.1}) == {"a": 1, "b": 1}  # each at least one when n >= 2
    assert split(1, {"a": 0.3, "b": 0.6}) == {"a": 0, "b": 1}
    assert split(5, {"a": 0.5, "b": 0.5}) == {"a": 3, "b": 2}  # ties: the first role
    assert sum(split(7, {"a": 0.2, "b": 0.7, "c": 0.1}).values()) == 7


def test_manager_pauses_only_when_every_role_is_paused():
    class Paused:
        name = "llm"

        def propose(self, brief):
            raise ResearcherPaused("cost cap")

    mgr = Manager(ManagerConfig(), {"explorer": Paused(), "exploiter": Stub([fresh(3)], [fresh(4)])})
    props = mgr.propose(make_brief(n=2))
    assert [p.knobs["layers"] for p in props] == [3, 4]  # the exploiter takes the paused role's share
    assert any("explorer paused" in n for n in mgr.last_notes)
    with pytest.raises(ResearcherPaused):
        Manager(ManagerConfig(), {"explorer": Paused(), "exploiter": Paused()}).propose(make_brief(n=2))


def test_manager_over_real_roles_gives_n_new_proposals():
    mgr = factory.build(ResearcherConfig(name="manager"), store=None, run_root=Path("/nonexistent"),
                        budgets=Budgets(), seed=0)
    props = mgr.propose(make_brief(MEMORY, n=5, seed=2))
    assert len(props) == 5
    assert_valid_new(props, MEMORY)
    assert {p.role for p in props} == {"explorer", "exploiter"}


# -- factory ----------------------------------------------------------------------------------------------------
def test_factory_builds_each_kind(tmp_path, monkeypatch):
    kw = dict(store=None, run_root=tmp_path, budgets=Budgets(), seed=1)
    evo = factory.build(ResearcherConfig(mutation_rate=0.4), **kw)
    assert isinstance(evo, EvolutionSearch) and evo.rate == 0.4
    opt = factory.build(ResearcherConfig(name="optuna", optuna=OptunaConfig(sampler="cmaes", storage="journal")), **kw)
    assert isinstance(opt, OptunaResearcher) and opt.journal == tmp_path / "researcher" / "optuna.journal"
    assert factory.build(ResearcherConfig(name="optuna"), **kw).journal is None
    mgr = factory.build(ResearcherConfig(name="manager", manager=ManagerConfig(
        exploiter=RoleConfig(name="optuna", optuna=OptunaConfig(storage="journal")))), **kw)
    assert isinstance(mgr, Manager) and mgr.critic is None
    assert isinstance(mgr.roles["explorer"], EvolutionSearch) and mgr.roles["explorer"].rate == 0.8
    assert isinstance(mgr.roles["exploiter"], OptunaResearcher) and mgr.roles["exploiter"].role == "exploiter"
    mgr.propose(make_brief(MEMORY, n=3, generation=4))
    assert "exploiter-gen-4" in optuna.get_all_study_names(
        JournalStorage(JournalFileBackend(str(tmp_path / "researcher" / "optuna.journal"))))

    llm_mod = pytest.importorskip("successor.researchers.llm")
    monkeypatch.setattr(llm_mod, "_make_client", lambda cfg: (None, None), raising=False)
    llm_cfg = LLMConfig(model="m", base_url="http://127.0.0.1:9/v1")
    llm = factory.build(ResearcherConfig(name="llm", llm=llm_cfg), **kw)
    assert isinstance(llm, llm_mod.LLMResearcher) and (tmp_path / "researcher" / "transcripts").is_dir()
    team = factory.build(ResearcherConfig(name="manager", manager=ManagerConfig(
        explorer=RoleConfig(name="llm", llm=llm_cfg), critic=RoleConfig(name="llm", llm=llm_cfg))), **kw)
    assert isinstance(team.roles["explorer"], llm_mod.LLMResearcher) and team.roles["explorer"].role == "explorer"
    assert isinstance(team.critic, llm_mod.LLMResearcher) and team.critic.role == "critic"
