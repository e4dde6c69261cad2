"""The default preset (what `make demo` runs) on several seeds: the >=99% sealed frontier generation by
generation, every gate decision, the kept labels' true noise (hidden checker, read afterwards; the loop never
sees it), solved lengths lost, and the wall and CPU each generation cost.

    .venv/bin/python benchmarks/default_demo.py --seeds 0,1,2 --root /tmp/dd            # runs them, one by one
    .venv/bin/python benchmarks/default_demo.py --seeds 1 --root /tmp/dd &               # or side by side
    .venv/bin/python benchmarks/default_demo.py --root /tmp/dd --report [--write]        # the table
    .venv/bin/python benchmarks/default_demo.py --preset long --seeds 0 --root /tmp/long  # the hour-long preset

Each seed's run is `seed: k` over the default preset (the bootstrap's seed follows it), plus any `--set k=v`
(`loop.generations=6`); a run directory that exists is resumed. Wall seconds are the stages' own (a run that was
down between two stages did no work then); runs side by side share the two cores, so only a run alone times the
demo. --write puts the table in BENCHMARKS.md and benchmarks/results/default_demo.json.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import yaml
from fork_run import run_to_end
from markdown import table, write_section
from overrides import overrides
from self_improvement import Condition, measure, summary

from successor.config import preset_names

HERE = Path(__file__).resolve().parent


def _pct(x) -> str:
    return "–" if x is None else f"{x:.2%}"


def nested(pairs: list[str]) -> dict:
    """`loop.generations=6` -> {"loop": {"generations": 6}}."""
    out: dict = {}
    for key, value in overrides(pairs).items():
        *path, last = key.split(".")
        node = out
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return out


def run_seed(root: Path, seed: int, sets: list[str], preset: str = "default") -> int:
    config = root / f"seed{seed}.yaml"
    config.write_text(yaml.safe_dump({"name": f"{preset}-demo-s{seed}", "seed": seed} | nested(sets)))
    return run_to_end(config, root / f"run-s{seed}", preset)


def bootstrap_attempts(run: Path) -> int:
    db = sqlite3.connect(f"file:{run / 'lineage.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM experiments WHERE generation=0 AND status='done'").fetchone()[0]
    finally:
        db.close()


def report(root: Path, upto: int | None = None) -> tuple[str, list[dict]]:
    """The table of every `run-s*` under `root`; `upto`: only generations 0..upto of each (a longer run's
    first generations are the demo's when only `loop.generations` differs)."""
    rows, out = [], []
    for run in sorted(root.glob("run-s*"), key=lambda p: int(p.name[5:])):
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        gens = measure(run, cfg)[:None if upto is None else upto + 1]
        if not gens:  # still in its generation 0
            continue
        s = summary(Condition(run.name, "default"), gens, cfg["task"]["human_levels"][1])
        walls = [g["wall_s"] for g in gens]
        out.append({"seed": cfg["seed"], "summary": s, "generations": gens})
        rows.append([cfg["seed"], bootstrap_attempts(run), " → ".join(str(f) for f in s["frontier"]),
                     f"{s['promoted']}/{s['generations']}",
                     _pct(s["mean_noise"]), _pct(s["max_noise"]),
                     s["lost_lengths"], f"{walls[0]:.0f}", " / ".join(f"{w:.0f}" for w in walls[1:]),
                     f"{s['wall_s'] / 60:.1f}", f"{s['cpu_s']:.0f}"])
    text = table(["seed", "bootstrap attempts", "frontier by generation", "promoted", "noise mean", "noise max",
                  "lengths lost", "gen 0 wall s", "gen 1.. wall s", "stages min", "experiments CPU-s"], rows)
    return text, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--preset", default="default", choices=preset_names())
    ap.add_argument("--set", nargs="*", default=[], help="section.field=value over the preset")
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--write", action="store_true", help="with --report: BENCHMARKS.md and results/")
    ap.add_argument("--upto", type=int, help="with --report: generations 0..UPTO of each run only")
    a = ap.parse_args()
    a.root.mkdir(parents=True, exist_ok=True)
    if not a.report:
        for seed in (int(s) for s in a.seeds.split(",")):
            print(f"seed {seed}: exit {run_seed(a.root, seed, a.set, a.preset)}", flush=True)
        return
    text, out = report(a.root, a.upto)
    print(text)
    if a.write:
        name = "default_demo" if a.preset == "default" else f"{a.preset}_preset"
        (HERE / "results" / f"{name}.json").write_text(json.dumps(out, indent=1))
        write_section(HERE.parent / "BENCHMARKS.md", name, f"The {a.preset} preset on several seeds (issue 25)", text)


if __name__ == "__main__":
    main()
