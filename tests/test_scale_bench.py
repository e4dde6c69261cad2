"""`benchmarks/scale.py --quick`: every table of the scale benchmark is measured, on the real loop and executor."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_scale_benchmark_quick(tmp_path: Path):
    out = tmp_path / "scale.json"
    before = (REPO / "BENCHMARKS.md").read_text()
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale.py"), "--quick", "--json", str(out),
                        "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (REPO / "BENCHMARKS.md").read_text() == before  # --quick without --report writes nothing there
    res = json.loads(out.read_text())
    (s,) = res["halving"]["sets"]
    # the halving arm ran fewer candidate steps than the full arm, on the same candidates
    assert s["halving"]["experiments"] == 3 + 1 and s["full"]["experiments"] == 3
    assert 0 < s["flops_ratio"] < 1 and s["full"]["cpu_s"] > 0 and s["halving"]["cpu_s"] > 0
    assert s["full_pick"].startswith("g1c") and s["halving_pick"].startswith("g1c")
    assert 0 <= s["overhead"]["share"] < 1 and s["overhead"]["busy_s"] <= s["overhead"]["wall_s"]
    sb = res["sandbox"]
    assert sb["isolation"] == "bwrap" and sb["sandboxed_s"] > sb["bare_s"] > 0
    sc = res["scaling"]
    assert set(sc["per_hour"]) == {"1", "2"} and all(v > 0 and math.isfinite(v) for v in sc["per_hour"].values())
    assert "Speed-up" in r.stdout and "Sandbox start cost" in r.stdout and "halving pick" in r.stdout
