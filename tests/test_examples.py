"""The example programs, end to end through the script workload (the quick digits config; charlm's run takes
minutes a candidate and is measured in BENCHMARKS.md instead)."""
from __future__ import annotations

import json
from pathlib import Path

from successor.config import load_config
from successor.reporting.report import write_report
from successor.rundir import RunDir
from successor.oversight.verify import verify_run
from successor.driver import Driver

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_evolution_improves_the_digits_example_and_the_gain_is_verified(tmp_path):
    cfg = load_config(EXAMPLES / "digits" / "quick.yaml")
    loop = Driver(RunDir(tmp_path / "run", cfg))
    assert loop.run_all() == "finished"
    rows = loop.store.q("SELECT generation, promoted, reason, stats FROM gate_decisions WHERE role='successor' "
                        "ORDER BY generation")
    first = json.loads(rows[0]["stats"])
    assert rows[0]["promoted"] and 0.3 < first["contender_mean"] < 0.7  # the under-tuned start: about 0.47
    promoted = [json.loads(r["stats"]) for r in rows[1:] if r["promoted"]]
    assert promoted, [r["reason"] for r in rows]
    best = promoted[-1]
    assert best["contender_mean"] > first["contender_mean"] + 0.1
    assert best["p_value"] < 0.05 and best["gain"] > 0.005 and len(best["contender"]) == 3
    # every number the gate used is the harness's evaluation of an artifact, not the program's own
    runs = [json.loads(r["metrics"]) for r in loop.store.q("SELECT metrics FROM experiments WHERE status='done'")]
    assert runs and all(m["source"] == "harness" and "reported" in m for m in runs)
    ok, lines = verify_run(tmp_path / "run")
    assert ok, lines
    assert "## Candidates" in (write_report(tmp_path / "run") / "report.md").read_text()
