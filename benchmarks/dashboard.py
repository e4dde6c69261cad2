"""What the dashboard costs: each endpoint's latency and the server's CPU per request, on a real run, through a
real `successor dashboard` process (uvicorn on 127.0.0.1) and real HTTP.

    .venv/bin/python benchmarks/dashboard.py --run-dir runs/demo          # 20 repeats; writes BENCHMARKS.md
    .venv/bin/python benchmarks/dashboard.py --run-dir DIR --quick --json out.json   # 3 repeats, no BENCHMARKS.md

An open page polls /api/status every 2 s and, when the run moves on, fetches the lineage, acceleration, guardrail
and audit JSON and redraws the five plots; the summary rows price both, as a share of one core.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from markdown import table, write_section  # noqa: E402

POLL_S = 2.0  # the page's status interval (static/app.js)
JSON = ["/api/status", "/api/lineage", "/api/acceleration", "/api/guardrail", "/api/audit", "/api/capability"]
PLOTS = ["accuracy_heatmap", "frontier", "guardrail", "acceleration", "lineage"]
SLOW = ["/api/lineage", "/api/acceleration", "/api/guardrail", "/api/audit"] + [f"/plots/{p}.png" for p in PLOTS]


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(base: str, path: str, pid: int, repeats: int) -> dict:
    """Median and 90th-percentile latency (ms), and the server's CPU per request (ms), over `repeats` requests
    after one warm-up."""
    urllib.request.urlopen(base + path).read()
    walls, c0 = [], cpu_s(pid)
    for _ in range(repeats):
        t0 = time.perf_counter()
        with urllib.request.urlopen(base + path) as r:
            r.read()
        walls.append((time.perf_counter() - t0) * 1000)
    cpu = (cpu_s(pid) - c0) * 1000 / repeats
    walls.sort()
    return {"path": path, "median_ms": statistics.median(walls), "p90_ms": walls[int(0.9 * (len(walls) - 1))],
            "server_cpu_ms": cpu, "repeats": repeats}


def run(run_dir: Path, repeats: int) -> dict:
    db = sqlite3.connect(f"file:{run_dir / 'lineage.db'}?mode=ro", uri=True)
    champion = db.execute("SELECT candidate_id FROM gate_decisions WHERE promoted=1 ORDER BY generation DESC "
                          "LIMIT 1").fetchone()
    gens, cands = (db.execute(q).fetchone()[0] for q in ("SELECT COUNT(*) FROM generations",
                                                        "SELECT COUNT(*) FROM candidates"))
    db.close()
    dash = subprocess.Popen([sys.executable, "-m", "successor", "dashboard", str(run_dir), "--port", "0",
                             "--exit-after", "1200"], stdout=subprocess.PIPE, text=True)
    try:
        base = re.search(r"(http://127\.0\.0\.1:\d+)/", dash.stdout.readline()).group(1)
        paths = JSON + ([f"/api/node/{champion[0]}"] if champion else []) + [f"/plots/{p}.png" for p in PLOTS]
        rows = [measure(base, p, dash.pid, repeats) for p in paths]
    finally:
        dash.terminate()
        dash.wait(30)
    by = {r["path"]: r for r in rows}
    status_cpu = by["/api/status"]["server_cpu_ms"]
    change_cpu = sum(by[p]["server_cpu_ms"] for p in SLOW)
    return {"run_dir": str(run_dir), "generations": gens, "candidates": cands, "rows": rows,
            "idle_core_share": status_cpu / 1000 / POLL_S, "change_cpu_ms": change_cpu,
            "load_average": os.getloadavg()[0], "cores": os.cpu_count()}


def text(res: dict) -> str:
    rows = [[f"`{r['path']}`", f"{r['median_ms']:.1f}", f"{r['p90_ms']:.1f}", f"{r['server_cpu_ms']:.1f}"]
            for r in res["rows"]]
    return (f"Run `{res['run_dir']}`: {res['generations']} generations, {res['candidates']} candidates; "
            f"{res['rows'][0]['repeats']} requests each after a warm-up; {res['cores']} cores, load average "
            f"{res['load_average']:.2f} at the end.\n\n"
            + table(["request", "median ms", "p90 ms", "server CPU ms per request"], rows)
            + f"\n\nAn open page polls `/api/status` every {POLL_S:.0f} s: "
            f"{100 * res['idle_core_share']:.1f}% of one core while nothing changes. When the run moves on it "
            f"fetches four JSON documents and redraws five plots: {res['change_cpu_ms']:.0f} ms of server CPU.\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="3 repeats; BENCHMARKS.md is left alone")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = ap.parse_args()
    if not (a.run_dir / "lineage.db").exists():
        raise SystemExit(f"{a.run_dir} is not a run directory (no lineage.db); `make demo` makes runs/demo")
    res = run(a.run_dir, 3 if a.quick else a.repeats)
    out = text(res)
    print(out)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    if not a.quick:
        (HERE / "results" / "dashboard.json").write_text(json.dumps(res, indent=2))
        write_section(HERE.parent / "BENCHMARKS.md", "dashboard", "The dashboard's cost: latency and CPU per request",
                      out, "Command: `.venv/bin/python benchmarks/dashboard.py --run-dir runs/demo` (after `make demo`)"
                      ". The server is a real `successor dashboard` process; requests are real HTTP on 127.0.0.1.\n\n")


if __name__ == "__main__":
    main()
