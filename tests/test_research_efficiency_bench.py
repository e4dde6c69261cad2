"""The research-efficiency benchmark's --quick variant, end to end: real loop runs of two researchers forked from
one generation 0, each stopped by the same CPU-seconds budget, read back from their lineages."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("re")
    before = (REPO / "BENCHMARKS.md").read_text()
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "research_efficiency.py"), "--quick", "--root",
                           str(root)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (REPO / "BENCHMARKS.md").read_text() == before  # --quick writes only under its root
    return root, json.loads((root / "research_efficiency.json").read_text()), done.stdout


def test_both_methods_ran_from_one_generation_zero_under_one_budget(quick):
    root, res, out = quick
    assert set(res["methods"]) == {"evolution", "random"}
    assert res["seeds"] == [0] and res["budget_cpu_s"] > 0
    for name, m in res["methods"].items():
        assert [r["seed"] for r in m["runs"]] == [0], name
        assert "| " + name + " |" in out
        cfg = (root / m["runs"][0]["run"] / "fork.yaml").read_text()
        assert f"name: {name}" in cfg and "seed: 0" in cfg
    assert 0.0 <= res["generation0"]["verified"] <= 1.0


def test_each_run_spent_its_budget_and_at_most_one_batch_more(quick):
    _, res, _ = quick
    budget = res["budget_cpu_s"]
    for name, m in res["methods"].items():
        r = m["runs"][0]
        assert r["exit"] == 3, name  # paused by the budget, not finished: loop.generations is far past it
        assert r["violations"] == 0
        assert r["cpu_s_at_last_check"] < budget  # the check that let the last batch start saw room
        assert budget <= r["cpu_s"] <= budget + r["last_batch_cpu_s"], (name, r)
        # the overshoot is one batch: the quick config's two candidates at most (or one successor)
        assert r["last_batch_cpu_s"] <= 2 * r["max_experiment_cpu_s"] + 1e-6, (name, r)


def test_verified_scores_come_from_the_sealed_tier(quick):
    _, res, _ = quick
    levels = res["task"]["eval_max_level"]
    for name, m in res["methods"].items():
        r = m["runs"][0]
        assert 0.0 <= r["verified"] <= 1.0
        assert sorted(map(int, r["sealed"])) == list(range(1, levels + 1))
        assert r["verified"] == pytest.approx(sum(r["sealed"].values()) / levels, abs=1e-3)
        s = m["summary"]
        assert s["min"] <= s["median"] <= s["max"] and s["median"] == r["verified"]
    assert "evolution median > random median" in json.dumps(res["goals"])
