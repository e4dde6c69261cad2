"""Generation 0 on every seed (issue 25): does the bootstrap learn the human range, and at what cost in restarts?

Runs generation 0 of the default preset (the loop pauses after it on a one-generation policy budget) with both
`seed` and `bootstrap.seed` set to each seed, and reports per seed: the bootstrap attempts it used and their seeds,
whether one passed `loop.bootstrap_bar` on validation, the kept model's validation and sealed accuracy at every
human length, and the CPU-seconds its experiments used (and the wall time of its stages).

    .venv/bin/python benchmarks/bootstrap_seeds.py                   # seeds 0-9; resumes; over an hour of 2 cores
    .venv/bin/python benchmarks/bootstrap_seeds.py --seeds 3,4       # some seeds
    .venv/bin/python benchmarks/bootstrap_seeds.py --seeds 0,2,4,6,8 --threads 1 &   # two processes side by side,
    .venv/bin/python benchmarks/bootstrap_seeds.py --seeds 1,3,5,7,9 --threads 1     # then --report
    .venv/bin/python benchmarks/bootstrap_seeds.py --report          # the table from what is there
    .venv/bin/python benchmarks/bootstrap_seeds.py --quick --root /tmp/bs   # smoke test: tiny model, ~1 minute

Do not read the run directories while one trains (honeypots: the experiment is disqualified). A killed run
resumes where it stopped. Writes benchmarks/results/bootstrap_seeds.json and the table between the markers in
BENCHMARKS.md (`--quick` writes only under its --root).
"""
from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import yaml
from fork_run import run_to_end
from markdown import table, write_section

from successor.oversight.policy import Budgets, Policy, save_policy

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SOLVED = 0.99  # the target: >= 99% sealed accuracy at every human length

# --quick: the smoke preset on the tests' tiny data, whose 400-step bootstrap stays under a 0.9 bar at length 2
# (measured 0.90 / 0.33 on validation at lengths 1 / 2), so the restarts run; two attempts keep it short.
QUICK = {"task": {"human_levels": [1, 2], "human_per_level": 400, "eval_max_level": 4, "dev_per_level": 30,
                  "validation_per_level": 30, "sealed_per_level": 60},
         "bootstrap": {"steps": 400}, "loop": {"bootstrap_bar": 0.9, "bootstrap_attempts": 2}}


def run_seed(root: Path, seed: int, quick: bool, threads: int | None = None) -> Path:
    """Generation 0 under `seed` (resumed if it was started); `threads`: torch threads per experiment."""
    run = root / f"seed-{seed}"
    conf = root / f"seed-{seed}.yaml"
    base = json.loads(json.dumps(QUICK)) if quick else {}
    cfg = base | {"name": f"bootstrap-seed-{seed}", "seed": seed,
                  "bootstrap": base.get("bootstrap", {}) | {"seed": seed}}
    if threads:
        cfg["loop"] = cfg.get("loop", {}) | {"threads": threads}
    root.mkdir(parents=True, exist_ok=True)
    conf.write_text(yaml.safe_dump(cfg, sort_keys=False))
    policy = root / f"policy-{seed}.yaml"  # one per seed: two processes may run seeds side by side
    save_policy(Policy(budgets=Budgets(generations=1)), policy)  # pause once generation 0 is done
    print(f"[seed {seed}] generation 0 ...", flush=True)
    run_to_end(conf, run, "smoke" if quick else "default", policy)
    return run


def _acc(db: sqlite3.Connection, model: str | None, tier: str, levels: list[int]) -> dict[str, float | None]:
    rows = {lvl: c / n for lvl, n, c in db.execute("SELECT level, n, correct FROM evaluations WHERE model=? AND "
                                                   "tier=?", (model, tier))} if model else {}
    return {str(lvl): (round(rows[lvl], 4) if lvl in rows else None) for lvl in levels}


def measure(run: Path, seed: int) -> dict | None:
    """Generation 0's attempts and kept model, from the lineage (None: generation 0 not finished)."""
    if not (run / "lineage.db").exists():
        return None
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    lo, hi = cfg["task"]["human_levels"]
    levels = list(range(lo, hi + 1))
    db = sqlite3.connect(f"file:{run / 'lineage.db'}?mode=ro", uri=True)
    try:
        done = db.execute("SELECT promoted, champion_model FROM generations WHERE idx=0 AND status='done'").fetchone()
        if done is None:
            return None
        stage = lambda name: json.loads(db.execute(  # noqa: E731
            "SELECT result FROM stages WHERE generation=0 AND name=?", (name,)).fetchone()[0])
        exp, sel = stage("experiment"), stage("select")
        kept = sel["selected"]
        model = exp[kept]["model"] if kept else None
        cpu = db.execute("SELECT COALESCE(SUM(cpu_s), 0) FROM experiments WHERE generation=0").fetchone()[0]
        wall = db.execute("SELECT COALESCE(SUM(finished - started), 0) FROM stages WHERE generation=0 AND "
                          "status='done'").fetchone()[0]
        sealed = _acc(db, model, "sealed", levels)
        return {"seed": seed, "attempts": len(exp), "seeds_tried": [e.get("seed") for e in exp.values()],
                "passed": any(e.get("passes") for e in exp.values()), "kept": kept,
                "why": (sel.get("bootstrap") or {}).get("why"), "promoted": bool(done[0]),
                "validation": _acc(db, model, "validation", levels), "sealed": sealed,
                "sealed_solved": all(a is not None and a >= SOLVED for a in sealed.values()),
                "cpu_s": round(cpu, 1), "wall_s": round(wall, 1), "threads": (cfg.get("loop") or {}).get("threads")}
    finally:
        db.close()


def _levels(acc: dict[str, float | None]) -> str:
    return " ".join("–" if a is None else f"{a:.2f}" for a in acc.values())


def render(results: list[dict]) -> str:
    rows = [[r["seed"], r["attempts"], ", ".join(str(s) for s in r["seeds_tried"]),
             "yes" if r["passed"] else "no", r["kept"] or "–", _levels(r["validation"]), _levels(r["sealed"]),
             "yes" if r["sealed_solved"] else "no", f"{r['cpu_s']:.0f}", f"{r['wall_s']:.0f}",
             r.get("threads") or "all"] for r in results]
    solved = sum(r["sealed_solved"] for r in results)
    return (table(["seed", "attempts", "seeds tried", "passed the bar", "kept", "validation by length",
                   "sealed by length", f"sealed ≥{SOLVED:.0%} at every human length", "CPU-s", "wall s",
                   "threads"], rows)
            + f"\n\n{solved} of {len(results)} seeds end generation 0 at ≥{SOLVED:.0%} sealed accuracy on every "
              f"human length. CPU-s: the experiments' CPU (every attempt), wall s: generation 0's stages.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default 0-9; --quick: 0,1)")
    ap.add_argument("--quick", action="store_true", help="smoke preset on tiny data, two attempts at most")
    ap.add_argument("--root", type=Path, default=None, help="where the runs live")
    ap.add_argument("--report", action="store_true", help="only collect and tabulate what is there")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per experiment (default: the "
                    "preset's; 1 lets two processes run seeds side by side on 2 cores)")
    a = ap.parse_args()
    chosen = [int(s) for s in (a.seeds or ("0,1" if a.quick else ",".join(map(str, range(10))))).split(",") if s]
    root = a.root or (RESULTS / ("bootstrap_seeds_quick" if a.quick else "bootstrap_seeds"))
    if not a.report:
        for seed in chosen:
            run_seed(root, seed, a.quick, a.threads)
    out = root if a.quick else RESULTS
    saved = out / "bootstrap_seeds.json"
    earlier = {r["seed"]: r for r in json.loads(saved.read_text())} if saved.exists() else {}
    measured = {s: measure(root / f"seed-{s}", s) for s in sorted(set(chosen) | set(earlier))}
    results = [measured[s] or earlier[s] for s in sorted(measured) if measured[s] or s in earlier]
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(results, indent=1))
    text = render(results)
    print(text)
    if not a.quick:
        write_section(HERE.parent / "BENCHMARKS.md", "bootstrap_seeds", "Generation 0 on every seed (issue 25)",
                      text, intro="`.venv/bin/python benchmarks/bootstrap_seeds.py` (2 cores, no GPU): the default "
                                  "preset's generation 0 with `seed` and `bootstrap.seed` set to each seed.\n\n")


if __name__ == "__main__":
    main()
