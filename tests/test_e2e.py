"""End to end through the CLI: `successor run --preset smoke`, then `status --json` and `report`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "successor"]


@pytest.fixture(scope="module")
def cli_smoke_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    out = subprocess.run([*CLI, "run", "--preset", "smoke", "--run-dir", str(run_dir), "--quiet"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir


def test_smoke_run_status_and_report(cli_smoke_run: Path):
    out = subprocess.run([*CLI, "status", str(cli_smoke_run), "--json"], capture_output=True, text=True, check=True)
    status = json.loads(out.stdout)
    gens = status["generations"]
    assert len(gens) >= 3  # generation 0 (bootstrap) and two successor generations
    assert all(g["status"] == "done" for g in gens)
    assert status["promoted"] >= 2, "the bootstrap and at least one gated successor should be promoted"
    successors = [g for g in gens[1:] if g["promoted"]]
    assert successors, "no successor generation was promoted"
    for g in successors:  # a promotion carries the gate's statistics
        stats = g["gate"]["stats"]
        assert stats["p_holm"] <= stats["alpha"] and stats["effect"] >= stats["min_effect"]
        assert stats["forgotten"] == {}
    assert status["frontier"] >= 1
    rep = subprocess.run([*CLI, "report", str(cli_smoke_run)], capture_output=True, text=True)
    assert rep.returncode == 0, rep.stderr
    assert (cli_smoke_run / "report" / "report.md").stat().st_size > 0


def test_status_of_a_non_run_dir_is_refused(tmp_path: Path):
    out = subprocess.run([*CLI, "status", str(tmp_path), "--json"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "not a run directory" in out.stderr


def test_same_seed_same_lineage(cli_smoke_run: Path, smoke_run: Path):
    """Two runs of one config (one through the CLI, one in-process) train bit-identical models."""
    from successor.reporting.status import status_dict

    a, b = status_dict(cli_smoke_run), status_dict(smoke_run)
    assert [g["champion"] for g in a["generations"]] == [g["champion"] for g in b["generations"]]
    assert [g["frontier"] for g in a["generations"]] == [g["frontier"] for g in b["generations"]]
