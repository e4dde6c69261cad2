"""Where a generation's time goes: wall seconds by stage, generation by generation, for one run or several side
by side (a run and its fork under another setting), read from each run's lineage (`stages.started/finished`,
the CPU-seconds its experiments recorded, and each stage's own CPU where the lineage has it: `stages.cpu_s`).

    .venv/bin/python benchmarks/generation_profile.py RUN_DIR [RUN_DIR ...] [--write NAME]

--write NAME puts the table in BENCHMARKS.md under the section NAME (and benchmarks/results/NAME.json).
"""
from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

from markdown import table, write_section

HERE = Path(__file__).resolve().parent
STAGES = ["assess", "propose", "implement", "experiment", "interpret", "select", "curate", "train", "evaluate",
          "gate", "promote"]


def profile(run: Path) -> dict[int, dict]:
    """Per finished generation: wall seconds per stage, the total, and the experiments' recorded CPU-seconds."""
    db = sqlite3.connect(f"file:{run / 'lineage.db'}?mode=ro", uri=True)
    try:
        out: dict[int, dict] = {}
        cols = {r[1] for r in db.execute("PRAGMA table_info(stages)")}
        cpu_col = "cpu_s" if "cpu_s" in cols else "NULL"  # recorded from issue 25's packing stop on
        for g, name, start, end, cpu in db.execute(f"SELECT generation, name, started, finished, {cpu_col} FROM "
                                                   "stages WHERE status='done' ORDER BY generation"):
            row = out.setdefault(g, {"stages": {}, "cpu": {}})
            row["stages"][name] = (end or start) - start
            if cpu is not None:
                row["cpu"][name] = cpu
        for g, cpu in db.execute("SELECT generation, cpu_s FROM experiments WHERE status='done'"):
            if g in out and isinstance(cpu, (int, float)):
                out[g]["experiment_cpu_s"] = out[g].get("experiment_cpu_s", 0.0) + cpu
        done = {g for (g,) in db.execute("SELECT idx FROM generations WHERE status='done'")}
    finally:
        db.close()
    return {g: v | {"total": sum(v["stages"].values())} for g, v in out.items() if g in done}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--write", default=None, help="section name in BENCHMARKS.md")
    args = ap.parse_args()
    profiles = {r.name: profile(r.resolve()) for r in args.runs}
    rows = []
    for name, prof in profiles.items():
        for g in sorted(prof):
            st = prof[g]["stages"]
            rows.append([name, g] + [f"{st.get(s, 0):.0f}" for s in STAGES] + [f"{prof[g]['total']:.0f}"])
    text = table(["run", "gen"] + STAGES + ["total"], rows)
    cpu_rows = []
    for name, prof in profiles.items():
        for g in sorted(prof):
            cpu, exp = prof[g]["cpu"], prof[g].get("experiment_cpu_s", 0.0)
            if len(cpu) == len(prof[g]["stages"]):  # every stage recorded its CPU
                cpu_rows.append([name, g] + [f"{cpu.get(s, 0):.0f}" for s in STAGES] +
                                [f"{sum(cpu.values()):.0f}", f"{exp:.0f}", f"{sum(cpu.values()) + exp:.0f}"])
    if cpu_rows:  # CPU-seconds, which other work on the cores does not inflate
        text += ("\n\nCPU-seconds per stage: the harness's own (`stages.cpu_s`), then its experiments' (the "
                 "sandbox's count) and the sum:\n\n") + table(["run", "gen"] + STAGES + ["harness", "experiments",
                                                                                  "total"], cpu_rows)
    print(text)
    if args.write:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / f"{args.write}.json").write_text(json.dumps(profiles, indent=1))
        write_section(HERE.parent / "BENCHMARKS.md", args.write, "A generation, stage by stage",
                      "Wall seconds per stage (`.venv/bin/python benchmarks/generation_profile.py "
                      + " ".join(str(r) for r in args.runs) + "`).\n\n" + text)


if __name__ == "__main__":
    main()
