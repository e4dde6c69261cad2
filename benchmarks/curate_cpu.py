"""The curate stage's CPU, level by level, for one generation of a finished run, under the source tree on
PYTHONPATH: its champion, certified frontier, training length and wanted levels replayed in label-free mode on
fresh problems of each level (the run's own are not needed), one torch thread, process CPU-seconds. Run it under
two trees (a clean clone of the commit before a change, and this one) and compare: the kept labels must be the
same, only the CPU may differ.

    PYTHONPATH=/tmp/before/src .venv/bin/python benchmarks/curate_cpu.py RUN --generation G --out before.json
    .venv/bin/python benchmarks/curate_cpu.py RUN --generation G --out after.json
    .venv/bin/python benchmarks/curate_cpu.py --compare before.json after.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import sys
import time
from pathlib import Path

from markdown import table


def replay(run: Path, generation: int, n: int) -> dict:
    import torch

    from successor.config import load_config
    from successor.workloads.tinylm import checkpoint
    from successor.workloads.tinylm.curator import curate_level
    from successor.workloads.tinylm.data import tier_rng
    from successor.workloads.tinylm.tasks import get_task
    try:  # the memo of decodes, where the tree has it
        from successor.workloads.tinylm.decode import decoded_once
    except ImportError:
        decoded_once = contextlib.nullcontext

    torch.set_num_threads(1)
    db = sqlite3.connect(f"file:{run / 'lineage.db'}?mode=ro", uri=True)
    res = json.loads(db.execute("SELECT result FROM stages WHERE name='curate' AND generation=?",
                                (generation,)).fetchone()[0])
    champ = db.execute("SELECT champion_model FROM generations WHERE idx=?", (generation - 1,)).fetchone()[0]
    db.close()
    model = checkpoint.load(next((run / "artifacts" / "models").glob(f"{champ}*")))
    cfg, task = load_config().curator, get_task("addition")
    methods = {lv["level"]: lv["method"] for lv in res["levels"]}
    trained_to = max((lvl for lvl, m in methods.items() if m == "compose"), default=0)
    out = {"tree": str(Path(sys.modules["successor"].__file__).parent), "levels": {}}
    for level in res["wanted"]:
        probs = task.generate(level, n, tier_rng(0, "curate", 1000 + generation, level))
        t = time.process_time()
        with decoded_once():
            cur = curate_level(task, cfg, level, probs, [], model, [], res["certified"], trained_to, True, 100)
        out["levels"][level] = {"cpu": time.process_time() - t, "method": cur.method, "skipped": cur.skipped,
                                "items": [[p.prompt, y] for p, y in cur.items]}
        print(f"level {level}: {cur.method}, {out['levels'][level]['cpu']:.1f} CPU-s, kept {len(cur.items)}",
              file=sys.stderr)
    return out


def compare(before: dict, after: dict) -> str:
    rows, tb, ta = [], 0.0, 0.0
    for level, b in before["levels"].items():
        a = after["levels"][level]
        tb, ta = tb + b["cpu"], ta + a["cpu"]
        rows.append([level, a["method"], len(a["items"]), "yes" if a["items"] == b["items"] else "NO",
                     f"{b['cpu']:.1f}", f"{a['cpu']:.1f}", f"{a['cpu'] / b['cpu']:.2f}"])
    rows.append(["all", "", "", "", f"{tb:.1f}", f"{ta:.1f}", f"{ta / tb:.2f}"])
    return table(["level", "method", "kept", "same labels", "CPU-s before", "CPU-s after", "ratio"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", type=Path)
    ap.add_argument("--generation", type=int, default=4)
    ap.add_argument("--problems", type=int, default=640, help="problems a level (the default preset's)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    a = ap.parse_args()
    if a.compare:
        print(compare(*(json.loads(p.read_text()) for p in a.compare)))
        return
    if a.run is None or a.out is None:
        ap.error("give RUN and --out, or --compare BEFORE AFTER")
    a.out.write_text(json.dumps(replay(a.run, a.generation, a.problems)))


if __name__ == "__main__":
    main()
