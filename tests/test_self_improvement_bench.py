"""The self-improvement benchmark's --quick variant, end to end: real loop runs forked from one generation 0,
measured with the hidden checker, tabulated and plotted; a second call resumes instead of redoing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def bench(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "self_improvement.py"), "--quick", "--root",
                           str(root), *args], cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("si")
    before = (REPO / "BENCHMARKS.md").read_text()
    done = bench(root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (REPO / "BENCHMARKS.md").read_text() == before  # --quick writes only under its root
    return root, json.loads((root / "self_improvement.json").read_text()), done.stdout


def by_name(results: list[dict]) -> dict[str, dict]:
    return {r["summary"]["condition"]: r for r in results}


def test_every_condition_ran_its_generations_from_one_generation_zero(quick):
    root, results, out = quick
    runs = by_name(results)
    assert set(runs) == {"none", "verifier", "noise-30"}
    zero = {r["generations"][0]["acc"].__repr__() for r in results}
    assert len(zero) == 1  # the same bootstrap champion in every condition
    for r in results:
        assert [g["generation"] for g in r["generations"]] == [0, 1, 2]
        assert r["generations"][1]["wanted"] == [3]  # standard schedule: one past the human data (1-2)
    assert (root / "self_improvement_frontier_noise.png").stat().st_size > 10_000
    assert (root / "self_improvement_accuracy.png").stat().st_size > 10_000
    assert "| verifier |" in out and "kept-label noise" in out


def test_the_verifier_keeps_only_true_labels_and_the_unfiltered_curator_keeps_everything(quick):
    _, results, _ = quick
    runs = by_name(results)
    for g in runs["verifier"]["generations"][1:]:
        assert g["noise"] in (None, 0.0)
    none = runs["none"]["generations"][1]
    assert none["kept"] == 200  # the smoke preset labels 200 problems a level, and 'none' keeps all of them
    assert none["noise"] is not None and none["noise"] > 0.0  # a tiny champion is wrong somewhere at length 3
    assert runs["verifier"]["generations"][1]["kept"] < none["kept"]


def test_injected_noise_is_counted_and_seen_by_the_hidden_checker_only_where_injected(quick):
    _, results, _ = quick
    gens = by_name(results)["noise-30"]["generations"]
    assert gens[1]["injected"] == round(0.3 * gens[1]["kept"]) > 0
    assert gens[1]["noise"] >= 0.3 * 0.9
    assert gens[2]["injected"] == 0  # injected at generation 1 only


def test_no_promoted_generation_loses_a_length_its_parent_solved(quick):
    _, results, _ = quick
    for r in results:
        assert r["summary"]["lost_lengths"] == 0, r["summary"]["condition"]
        fronts = r["summary"]["frontier"]
        for g, (a, b) in enumerate(zip(fronts, fronts[1:]), start=1):
            assert b >= a or not r["generations"][g]["promoted"]


def test_forked_runs_keep_a_verifiable_audit_chain_that_says_they_are_forks(quick):
    root, _, _ = quick
    for name in ("none", "noise-30"):
        run = root / name
        ok = subprocess.run([sys.executable, "-m", "successor.cli", "audit", "verify", str(run)],
                            capture_output=True, text=True)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        recs = [json.loads(line) for line in (run / "audit.jsonl").read_text().splitlines()]
        forked = [i for i, r in enumerate(recs) if r["event"] == "run.forked"]
        first = [i for i, r in enumerate(recs) if r["event"] == "generation.start" and r["data"]["generation"] == 1]
        assert len(forked) == 1 and forked[0] < first[0]  # after generation 0, before the fork's own work


def test_a_second_call_resumes_and_redoes_nothing(quick):
    root, results, _ = quick
    again = bench(root)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((root / "self_improvement.json").read_text()) == results


def test_unknown_condition_is_refused_in_one_line(tmp_path):
    bad = bench(tmp_path, "--only", "oracle")
    assert bad.returncode != 0 and "unknown condition" in bad.stderr


def test_a_verifier_run_says_upper_bound_in_its_report_and_status_and_others_do_not(quick):
    root, _, _ = quick
    for name, marked in (("verifier", True), ("none", False)):
        run = root / name
        rep = subprocess.run([sys.executable, "-m", "successor.cli", "report", str(run)], capture_output=True,
                             text=True)
        assert rep.returncode == 0, rep.stderr[-2000:]
        md = (run / "report" / "report.md").read_text()
        html = (run / "report" / "report.html").read_text()
        st = subprocess.run([sys.executable, "-m", "successor.cli", "status", str(run)], capture_output=True,
                            text=True)
        for text in (md, html, st.stdout):
            assert ("UPPER BOUND" in text) is marked, (name, text[:500])
    noisy = (root / "noise-30")
    subprocess.run([sys.executable, "-m", "successor.cli", "report", str(noisy)], check=True, capture_output=True)
    assert "corrupted on purpose" in (noisy / "report" / "report.md").read_text()
