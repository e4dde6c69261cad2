"""benchmarks/speed.py --quick: it runs, writes its three tables to --json and nothing else, and its comparisons
are fair (equal tokens in both training loops, identical answers from cached and naive decoding). No wall-clock
assertions: the machine is shared."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_speed_quick(tmp_path):
    out = tmp_path / "speed.json"
    md, saved = REPO / "BENCHMARKS.md", REPO / "benchmarks" / "results" / "speed.json"
    md_before = md.read_text() if md.exists() else None
    saved_before = saved.read_bytes() if saved.exists() else None
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "speed.py"), "--quick", "--json", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert {"throughput", "flops", "decoding", "machine"} <= set(res) and res["quick"] is True
    assert res["machine"]["threads"] >= 1

    tp = res["throughput"]
    assert tp["batch_tensors_identical"] and tp["tokens_equal"]
    assert len(tp["ours"]) == len(tp["minimal"]) == len(tp["ratios"]) == tp["reps"] >= 2
    for o, m in zip(tp["ours"], tp["minimal"]):
        assert o["tokens"] == m["tokens"] == tp["tokens_per_run"] > 0
        assert positive(o["tokens_per_s"]) and positive(m["tokens_per_s"])
    assert all(positive(x) for x in tp["ratios"]) and positive(tp["ratio"])
    assert tp["met"] == (tp["ratio"] >= tp["goal"])

    fl = res["flops"]
    assert all(positive(fl[k]) for k in ("ours_gflops", "peak_gflops", "fraction_of_peak", "flops_per_run"))

    dc = res["decoding"]
    assert [row["answer_length"] for row in dc["rows"]] == [10, 20, 40]
    for row in dc["rows"]:
        assert row["identical"] is True
        assert row["distinct_answers"] > 1  # the decoding model is not degenerate: the identity check means something
        assert positive(row["speedup"]) and positive(row["cached_ms_median"]) and positive(row["naive_ms_median"])

    for name in ("Trainer throughput", "Model FLOP/s", "Decoding", "ratio ours/minimal"):
        assert name in r.stdout
    # --quick without --report touches neither BENCHMARKS.md nor results/
    assert (md.read_text() if md.exists() else None) == md_before
    assert (saved.read_bytes() if saved.exists() else None) == saved_before
