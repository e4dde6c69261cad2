"""A script gate that seeds cannot fool (issue 26, item 5): a program that ignores its seed is detected at
generation 0 and needs `gate.seed_ignored: allow`, whose report then says "one seed, not verified across seeds";
zero spread never gives p = 0; a patch that only moves a seed is refused as such; undecided paired tests add
seeds up to the cap, at alpha split over the looks, and the gate records its power. Tiny pure-Python programs."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from statsmodels.stats.power import TTestPower

from successor.config import ConfigError, load_config
from successor.driver import Driver
from successor.oversight.gate import seed_test
from successor.oversight.policy import Policy
from successor.oversight.verify import verify_run
from successor.researchers.base import Proposal
from successor.rundir import RunDir
from successor.workloads.script.config import ScriptGateConfig
from successor.workloads.script.seedcheck import adaptive_gate_runs, seed_only_change

# seeds itself: every "seed" the harness passes gives the same score and the same artifact
SELF_SEEDED = '''\
import argparse, json, random
p = argparse.ArgumentParser()
p.add_argument("--x", type=float, default=0.0)
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
seed = 1234
random.seed(seed)
score = 1.0 - (a.x - 3.0) ** 2 / 10 + random.gauss(0, 0.02)
json.dump({"score": score}, open("artifact.json", "w"))
print(f"score={score:.5f}")
'''
CONFIG = {"name": "selfseeded", "workload": "script",
          "script": {"program": "prog", "command": ["python", "train.py"], "editable": ["train.py"],
                     "knobs": {"x": {"type": "float", "default": 0.0, "low": 0.0, "high": 6.0}},
                     "metric": {"regex": "score=([-0-9.]+)"}, "artifact": "artifact.json", "seeds": 1,
                     "gate": {"seeds": 3, "min_effect": 0.01}},
          "loop": {"generations": 1}, "researcher": {"name": "evolution", "candidates": 2}}


class Scripted:
    name = "scripted"

    def __init__(self, plan: dict):
        self.plan = plan

    def propose(self, brief):
        return [Proposal({**brief.champion_knobs, **k}, why, diff, researcher="scripted")
                for k, diff, why in self.plan.get(brief.generation, [])]


def _config(tmp_path: Path, gens: int = 1, **gate) -> Path:
    prog = tmp_path / "prog"
    prog.mkdir(exist_ok=True)
    (prog / "train.py").write_text(SELF_SEEDED)
    cfg = json.loads(json.dumps(CONFIG))
    cfg["loop"]["generations"] = gens
    cfg["script"]["gate"].update(gate)
    path = tmp_path / "successor.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _loop(config: Path, run_dir: Path, researcher=None) -> Driver:
    rd = RunDir(run_dir, load_config(config))
    rd.set_policy(Policy.model_validate({"tripwires": {"integrity_violation": False}}))
    return Driver(rd, researcher=researcher)


def _events(run_dir: Path, name: str) -> list[dict]:
    lines = (run_dir / "audit.jsonl").read_text().splitlines()
    return [r["data"] for r in map(json.loads, lines) if r.get("event") == name]


# -- zero spread --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("test", ["paired", "welch"])
@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_zero_spread_never_gives_p_zero_and_is_not_called_significant(test, direction):
    rng = np.random.default_rng(1)
    for _ in range(20):
        c, gain, n = float(rng.normal(1, 0.2)), float(rng.uniform(-0.5, 0.5)), int(rng.integers(2, 8))
        s = c + gain if direction == "maximize" else c - gain
        d = seed_test([c] * n, [s] * n, test, 0.05, 0.0, direction)
        assert d.stats["p_value"] is None and not d.promoted  # one observation: no test, no p
        assert d.stats["verified_across_seeds"] is False and "one seed, not verified across seeds" in d.reason
        if gain > 0:
            assert "seed_ignored: allow" in d.reason
            opted = seed_test([c] * n, [s] * n, test, 0.05, 0.0, direction, seed_ignored="allow")
            assert opted.promoted and opted.stats["p_value"] is None
            assert "one seed, not verified across seeds" in opted.reason and "p=" not in opted.reason
    # identical artifacts count too, though an evaluation's noise made the numbers differ
    d = seed_test([1.0, 1.01, 0.99], [1.2, 1.21, 1.19], "paired", 0.05, 0.0, "maximize", ignored=(True, True))
    assert not d.promoted and d.stats["p_value"] is None


def test_the_same_gain_on_every_seed_gets_the_sign_test_never_zero():
    """Seeds that move both sides by the same amount (a deterministic change): the per-seed gains have no spread,
    so no t-test; the exact sign test's 0.5 ** n is what n seeds show, and 3 seeds cannot pass alpha 0.05."""
    champ = [0.80, 0.85, 0.90]
    d = seed_test(champ, [c + 0.03 for c in champ], "paired", 0.05, 0.01, "maximize")
    assert d.stats["p_value"] == pytest.approx(0.125) and not d.promoted and d.stats["verdict"] == "noise"
    champ6 = champ + [0.82, 0.87, 0.93]
    d6 = seed_test(champ6, [c + 0.03 for c in champ6], "paired", 0.05, 0.01, "maximize")
    assert d6.stats["p_value"] == pytest.approx(0.5 ** 6) and d6.promoted
    worse = seed_test(champ6, [c - 0.03 for c in champ6], "paired", 0.05, 0.0, "maximize")
    assert not worse.promoted


def test_seeds_that_matter_keep_the_t_test_and_record_its_power():
    rng = np.random.default_rng(0)
    champ = 0.9 + rng.normal(0, 0.02, 5)
    cont = champ + 0.01 + rng.normal(0, 0.01, 5)
    d = seed_test(list(champ), list(cont), "paired", 0.05, 0.005, "maximize")
    sd = float(np.std(cont - champ, ddof=1))
    want = TTestPower().power(effect_size=0.005 / sd, nobs=5, alpha=0.05, alternative="larger")
    assert d.stats["power"] == pytest.approx(want) and 0 < d.stats["power"] < 1
    assert d.stats["detectable_gain"] > 0.005 and d.stats["verified_across_seeds"] is True
    assert d.stats["p_value"] > 0
    # more looks split alpha: the same data read at 0.05 / 3 is harder to pass
    strict = seed_test(list(champ), list(cont), "paired", 0.05, 0.005, "maximize", looks=3)
    assert strict.stats["alpha_per_look"] == pytest.approx(0.05 / 3) and strict.stats["power"] < d.stats["power"]


# -- the config ---------------------------------------------------------------------------------------------------
def test_the_adaptive_looks_double_up_to_the_cap():
    assert ScriptGateConfig(seeds=3).looks() == [3, 6, 10]
    assert ScriptGateConfig(seeds=5, max_seeds=5).looks() == [5]
    assert ScriptGateConfig(seeds=20).looks() == [20]  # the default cap under seeds: one look, as before
    assert ScriptGateConfig(seeds=3, test="welch").looks() == [3]
    with pytest.raises(ValueError, match="max_seeds"):
        ScriptGateConfig(seeds=5, max_seeds=4)


def test_seed_ignored_is_refuse_or_allow(tmp_path):
    with pytest.raises(ConfigError, match="seed_ignored"):
        load_config(_config(tmp_path, seed_ignored="maybe"))
    assert load_config(_config(tmp_path)).script.gate.seed_ignored == "refuse"


# -- adaptive seeds -----------------------------------------------------------------------------------------------
class FakeGate:
    """Just what adaptive_gate_runs asks of the workload: run_seeds, the config, the audit log."""

    def __init__(self, gain: float, noise: float, max_seeds: int = 10):
        self.sc = SimpleNamespace(gate=ScriptGateConfig(seeds=3, max_seeds=max_seeds, min_effect=0.0),
                                  direction="maximize")
        self.gain, self.noise, self.calls, self.events = gain, noise, [], []
        self.audit = SimpleNamespace(append=lambda e, **kw: self.events.append((e, kw)))

    def run_seeds(self, g, groups):
        self.calls.append([len(s) for _, _, _, s, _ in groups])
        out = []
        for cid, _, _, seeds, kind in groups:
            vals = [1.0 + np.random.default_rng(s).normal(0, 0.02) + (self.gain if kind == "successor" else 0) +
                    np.random.default_rng([s, kind == "successor"]).normal(0, self.noise) for s in seeds]
            out.append({"experiments": [f"{cid}{s}" for s in seeds], "metrics": vals, "status": "done",
                        "error": None, "models": [f"{cid}{s}" for s in seeds]})
        return out


def _adaptive(fake: FakeGate) -> tuple[dict, dict, list]:
    looks = fake.sc.gate.looks()
    seeds = list(range(100, 100 + looks[-1]))
    groups = [("s", "c1", {}, seeds, "successor"), ("c", "c0", {}, seeds, "champion")]
    return adaptive_gate_runs(fake, 1, groups, seeds, looks)


def test_undecided_paired_tests_add_seeds_and_stop_at_the_cap():
    fake = FakeGate(gain=0.002, noise=0.02)  # a gain too small to tell from the noise: never decided
    runs, champ, used = _adaptive(fake)
    assert fake.calls == [[3, 3], [3, 3], [4, 4]] and len(used) == 10 == len(set(used))
    assert len(runs["metrics"]) == len(champ["metrics"]) == 10
    assert [kw["next"] for e, kw in fake.events if e == "gate.more_seeds"] == [6, 10]
    d = seed_test(champ["metrics"], runs["metrics"], "paired", 0.05, 0.0, "maximize", looks=3)
    assert d.stats["n"] == 10 and not d.promoted and d.stats["power"] is None  # min_effect 0: no power figure
    capped = FakeGate(gain=0.002, noise=0.02, max_seeds=3)
    assert len(_adaptive(capped)[2]) == 3 and capped.calls == [[3, 3]]  # cap = seeds: today's gate


@pytest.mark.parametrize("gain", [0.3, -0.05])
def test_a_decided_test_adds_no_seeds(gain):
    fake = FakeGate(gain=gain, noise=0.002)  # clearly better (significant) or clearly not (below min_effect)
    assert len(_adaptive(fake)[2]) == 3 and fake.calls == [[3, 3]] and not fake.events


# -- seed-only patches --------------------------------------------------------------------------------------------
SRC = textwrap.dedent('''\
    import random
    import numpy as np
    import torch
    seed = 1234  # the run's seed
    S = 3
    lr = 0.1
    n_seeds = 4
    random.seed(S)
    torch.manual_seed(3)
    np.random.seed(5)
    rng = np.random.default_rng(seed=7)
    g = random.Random(a.seed * 7919 + 1)
    K = 5
    random.seed(K)
    width = K * 64
    def f(seed: int = 11):
        return seed
    ''')


@pytest.mark.parametrize("old, new", [
    ("seed = 1234", "seed = 99"), ("S = 3", "S = 4"), ("torch.manual_seed(3)", "torch.manual_seed(4)"),
    ("np.random.seed(5)", "np.random.seed(6)"), ("default_rng(seed=7)", "default_rng(seed=8)"),
    ("7919 + 1", "7919 + 2"), ("seed = 1234  # the run's seed", "seed = 42    # a luckier one"),
    ("seed: int = 11", "seed: int = 12"),
])
def test_a_patch_that_only_moves_a_seed_is_named(old, new):
    why = seed_only_change({"train.py": SRC}, {"train.py": SRC.replace(old, new)})
    assert why and why.startswith("a seed-only patch") and "train.py:" in why


@pytest.mark.parametrize("old, new", [
    ("lr = 0.1", "lr = 0.2"), ("n_seeds = 4", "n_seeds = 8"), ("seed = 1234", "seed = 99\nlr2 = 1"),
    ("import random\n", "import random\nBONUS = 1\n"), ("seed = 1234", "seed = 1234"),
    ("torch.manual_seed(3)", "torch.manual_seed(3 * 2)"), ("K = 5", "K = 6"),  # K also sets a width
])
def test_a_patch_that_changes_more_than_a_seed_is_not(old, new):
    assert seed_only_change({"train.py": SRC}, {"train.py": SRC.replace(old, new)}) is None
    assert seed_only_change({"train.py": SRC}, {"train.py": None}) is None  # a file removed


# -- the loop, end to end -----------------------------------------------------------------------------------------
def test_a_self_seeding_program_stops_the_run_at_generation_0_without_the_opt_in(tmp_path):
    """`seed: null`, the issue's external program: the harness passes no seed and every run is the same."""
    cfg = _config(tmp_path)
    raw = yaml.safe_load(cfg.read_text())
    raw["script"]["seed"] = None
    cfg.write_text(yaml.safe_dump(raw))
    loop = _loop(cfg, tmp_path / "run", Scripted({1: [({"x": 1.0}, None, "never judged")]}))
    state = loop.run_all()
    assert state.startswith("paused: the program ignores its seed") and "seed_ignored: allow" in state
    (ev,) = _events(tmp_path / "run", "script.seed_ignored")
    assert ev["generation"] == 0 and ev["policy"] == "refuse" and ev["identical"] == "metrics and artifacts"
    rows = loop.store.q("SELECT generation, promoted, reason FROM gate_decisions")
    assert [(r["generation"], r["promoted"]) for r in rows] == [(0, 0)]  # no candidate of generation 1 judged
    assert "cannot verify any gain across seeds" in rows[0]["reason"]
    assert "script.gate.seed_ignored: allow" in rows[0]["reason"]
    assert loop.store.champion() is None


def test_with_the_opt_in_the_report_says_one_seed_and_a_seed_only_patch_is_refused(tmp_path):
    seed_patch = "--- a/train.py\n+++ b/train.py\n@@ -6 +6 @@\n-seed = 1234\n+seed = 99\n"
    plan = {1: [({}, seed_patch, "a luckier seed"), ({"x": 1.0}, None, "move x toward 3")]}
    loop = _loop(_config(tmp_path, seed_ignored="allow"), tmp_path / "run", Scripted(plan))
    assert loop.run_all() == "finished"
    dec = {r["candidate_id"]: r for r in loop.store.q("SELECT * FROM gate_decisions")}
    assert dec["g1c0"]["promoted"] == 0 and dec["g1c0"]["reason"].startswith("refused: a seed-only patch")
    assert "train.py:6 1234 -> 99" in dec["g1c0"]["reason"]
    (refusal,) = [e for e in _events(tmp_path / "run", "candidate.refused") if e["candidate"] == "g1c0"]
    assert refusal["kind"] == "seed-only patch"
    g0, g1 = (json.loads(dec[c]["stats"]) for c in ("g0c0", "g1c1"))
    assert dec["g0c0"]["promoted"] and "one seed, not verified across seeds" in dec["g0c0"]["reason"]
    assert dec["g1c1"]["promoted"] and "one seed, not verified across seeds" in dec["g1c1"]["reason"]
    assert g0["verified_across_seeds"] is False and g1["verified_across_seeds"] is False
    assert g1["p_value"] is None and g1["n"] == 3  # no p, and no extra seeds spent on a repeated run
    assert [e["generation"] for e in _events(tmp_path / "run", "script.seed_ignored")] == [0, 1]
    from successor.reporting.report import write_report
    from successor.reporting.status import status_dict

    out = write_report(tmp_path / "run")
    for text in ((out / "report.md").read_text(), (out / "summary.md").read_text()):
        assert "one seed, not verified across seeds" in text and "generation 0, 1" in text
    assert "not verified across seeds" in status_dict(tmp_path / "run")["generations"][1]["gate"]["reason"]
    ok, lines = verify_run(tmp_path / "run")
    assert ok, lines
