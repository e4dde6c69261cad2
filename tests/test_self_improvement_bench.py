"""The self-improvement benchmark's --quick variant, end to end: real loop runs forked from one generation 0,
measured with the hidden checker, tabulated and plotted; a second call resumes instead of redoing."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from successor.reporting.report import write_report
from successor.reporting.status import status_dict
from successor.oversight.verify import verify_run

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
    assert set(runs) == {"none", "verifier-noise"}
    zero = {r["generations"][0]["acc"].__repr__() for r in results}
    assert len(zero) == 1  # the same bootstrap champion in every condition
    for r in results:
        assert [g["generation"] for g in r["generations"]] == [0, 1]
        assert r["generations"][1]["wanted"] == [3]  # standard schedule: one past the human data (1-2)
    assert (root / "self_improvement_frontier_noise.png").stat().st_size > 10_000
    assert (root / "self_improvement_accuracy.png").stat().st_size > 10_000
    assert "| verifier-noise |" in out and "kept-label noise" in out


def test_the_unfiltered_curator_keeps_everything_and_the_verifier_only_true_labels(quick):
    _, results, _ = quick
    runs = by_name(results)
    none = runs["none"]["generations"][1]
    assert none["kept"] == 200  # the smoke preset labels 200 problems a level, and 'none' keeps all of them
    assert none["noise"] is not None and none["noise"] > 0.0  # a tiny champion is wrong somewhere at length 3
    verified = runs["verifier-noise"]["generations"]
    assert 0 < verified[1]["kept"] < none["kept"]


def test_injected_noise_is_exactly_the_corrupted_share_where_injected(quick):
    _, results, _ = quick
    g1 = by_name(results)["verifier-noise"]["generations"][1]
    assert g1["injected"] == round(0.3 * g1["kept"]) > 0
    assert g1["noise"] == pytest.approx(g1["injected"] / g1["kept"])  # the hidden checker sees just those


def test_no_promoted_generation_loses_a_length_its_parent_solved(quick):
    _, results, _ = quick
    for r in results:
        assert r["summary"]["lost_lengths"] == 0, r["summary"]["condition"]
        fronts = r["summary"]["frontier"]
        for g, (a, b) in enumerate(zip(fronts, fronts[1:]), start=1):
            assert b >= a or not r["generations"][g]["promoted"]


def test_forked_runs_keep_a_verifiable_audit_chain_that_says_they_are_forks(quick):
    root, _, _ = quick
    for name in ("none", "verifier-noise"):
        run = root / name
        ok, lines = verify_run(run)
        assert ok, lines
        recs = [json.loads(line) for line in (run / "audit.jsonl").read_text().splitlines()]
        forked = [i for i, r in enumerate(recs) if r["event"] == "run.forked"]
        first = [i for i, r in enumerate(recs) if r["event"] == "generation.start" and r["data"]["generation"] == 1]
        assert len(forked) == 1 and forked[0] < first[0]  # after generation 0, before the fork's own work


def test_a_second_call_resumes_and_redoes_nothing(quick):
    root, results, _ = quick
    again = bench(root)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((root / "self_improvement.json").read_text()) == results


def test_time_a_promotion_waited_for_a_human_is_not_counted_as_work(quick, tmp_path):
    """A tripwire holds the promote stage open until someone decides: that wait is not the generation's wall time
    (measured: relabel-long's generation 2 waited 630 s for an approval)."""
    root, _, _ = quick
    sys.path.insert(0, str(REPO / "benchmarks"))
    import self_improvement as si

    cfg = yaml.safe_load((root / "none" / "config.yaml").read_text())
    run = tmp_path / "none"
    run.mkdir()
    with sqlite3.connect(root / "none" / "lineage.db") as src, sqlite3.connect(run / "lineage.db") as dst:
        src.backup(dst)
    before = si.measure(run, cfg)[1]["wall_s"]
    wait = round(before / 2, 1)
    db = sqlite3.connect(run / "lineage.db")
    db.execute("INSERT INTO approvals(generation, requested, reasons, decision, who, decided) "
               "VALUES(1, 1000.0, '[]', 'approved', 'alice', ?)", (1000.0 + wait,))
    db.execute("INSERT INTO approvals(generation, requested, reasons) VALUES(0, 5.0, '[]')")  # undecided: no wait
    db.commit()
    db.close()
    after = si.measure(run, cfg)
    assert before > 0 and after[1]["wall_s"] == pytest.approx(before - wait, abs=0.11)
    assert after[0]["wall_s"] == si.measure(root / "none", cfg)[0]["wall_s"]


def test_unknown_condition_is_refused_in_one_line(tmp_path):
    bad = bench(tmp_path, "--only", "oracle")
    assert bad.returncode != 0 and "unknown condition" in bad.stderr


def test_a_verifier_run_says_upper_bound_in_its_report_and_status_and_others_do_not(quick):
    root, _, _ = quick
    for name, marked in (("verifier-noise", True), ("none", False)):
        out = write_report(root / name)
        md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
        assert status_dict(root / name)["upper_bound"] is marked
        for text in (md, html):
            assert ("UPPER BOUND" in text) is marked, (name, text[:500])
        assert ("corrupted on purpose" in md) is marked  # the report names the injected labels
    st = subprocess.run([sys.executable, "-m", "successor", "status", str(root / "verifier-noise")],
                        capture_output=True, text=True)
    assert st.returncode == 0 and "UPPER BOUND" in st.stdout


def test_a_condition_whose_run_directory_is_gone_keeps_its_earlier_results(quick, tmp_path):
    """Only results/ is committed; the run directories stay on the machine that made them. A --report on another
    machine must not drop the conditions it cannot read again, nor keep stale numbers for one it can."""
    root, results, _ = quick
    sys.path.insert(0, str(REPO / "benchmarks"))
    import self_improvement as si

    conds = list(si.QUICK)
    gone = tmp_path / "elsewhere"
    gone.mkdir()
    stale = json.loads(json.dumps(results))
    for r in stale:
        r["summary"]["final_frontier"] = -1
    kept = si.collect(gone, conds, stale)
    assert [r["summary"]["condition"] for r in kept] == ["none", "verifier-noise"]
    assert all(r["summary"]["final_frontier"] == -1 for r in kept)  # nothing to read: the earlier numbers stay
    assert si.collect(gone, conds) == []
    fresh = si.collect(root, conds, stale)  # the run directories are there: they win over the earlier results
    assert [r["summary"]["final_frontier"] for r in fresh] == [r["summary"]["final_frontier"] for r in results]
