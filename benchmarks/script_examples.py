"""Your own program: the script workload on the two examples (examples/digits, examples/charlm). Each example's
config runs through the real loop (sandboxed experiments, the harness's own eval.py, the paired gate); then the
program as given (generation 0, default knobs) and the final champion are re-measured on fresh seeds the run
never used, with the loop's own commands, and a paired one-sided t-test says whether the gain is real.

    .venv/bin/python benchmarks/script_examples.py                   # both examples; a finished run is reused
    .venv/bin/python benchmarks/script_examples.py --only charlm --seeds 5 --root /elsewhere/runs
    .venv/bin/python benchmarks/script_examples.py --report          # tables from the runs and results JSON

Runs live in ROOT/<example> (default runs/script-examples). Do not read a run's workspaces while its loop runs
(a `grep -r`, say): they hold honeypots, and the experiment that trips one is disqualified. The re-measurement runs
train.py and eval.py with OMP_NUM_THREADS=1, outside the sandbox, each seed in a fresh export of the program's
commit, eval.py from a pristine export of generation 0. Writes benchmarks/results/script_examples.json and the
section between the markers in BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import yaml
from fork_run import run_to_end
from scipy import stats

from successor.config import RunConfig, validated
from successor.workloads.script.measure import program_command, python_argv, read_metric
from successor.workloads.script.program import ProgramRepo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from markdown import write_section  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
EXAMPLES = ("digits", "charlm")
SEED0 = 10_000  # re-measurement seeds: SEED0, SEED0+1, ... (the loop draws its seeds from 0..2^31)


# -- the run ---------------------------------------------------------------------------------------------------
def connect(run: Path) -> closing[sqlite3.Connection]:
    db = sqlite3.connect(f"file:{run / 'lineage.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    return closing(db)


def load_cfg(run: Path) -> RunConfig:
    return validated(RunConfig, yaml.safe_load((run / "config.yaml").read_text()))


def finished(run: Path) -> bool:
    """Every generation of the config done (generation 0, the program as given, counts as one)."""
    if not (run / "lineage.db").exists() or not (run / "config.yaml").exists():
        return False
    with connect(run) as db:
        done = db.execute("SELECT COUNT(*) FROM generations WHERE status='done'").fetchone()[0]
    return done >= load_cfg(run).loop.generations + 1


def run_loop(name: str, run: Path) -> None:
    config = REPO / "examples" / name / "successor.yaml"
    print(f"[{name}] running the loop: {config} -> {run}", flush=True)
    rc = run_to_end(config, run)
    if rc not in (0, 3) or not finished(run):
        raise SystemExit(f"[{name}] the loop exited {rc} before its last generation; see `successor status {run}`")


def gate_row(db: sqlite3.Connection, g: int) -> dict:
    """Generation g's successor decision; where no candidate was selected, the candidates' shared reason."""
    d = db.execute("SELECT * FROM gate_decisions WHERE generation=? AND role='successor'", (g,)).fetchone()
    if d is None:
        c = db.execute("SELECT reason FROM gate_decisions WHERE generation=?", (g,)).fetchone()
        return {"gen": g, "successor": None, "promoted": False, "reason": c["reason"] if c else "no decision"}
    s = json.loads(d["stats"] or "{}")
    return {"gen": g, "successor": d["candidate_id"], "promoted": bool(d["promoted"]), "reason": d["reason"],
            "champion_mean": s.get("champion_mean"), "successor_mean": s.get("contender_mean"),
            "gain": s.get("gain"), "p_value": s.get("p_value"), "n": s.get("n")}


def program(db: sqlite3.Connection, where: str, arg) -> dict:
    row = dict(db.execute(f"SELECT * FROM programs WHERE {where}", (arg,)).fetchone())
    return {k: row[k] for k in ("candidate_id", "generation", "git_commit")} | {"knobs": json.loads(row["knobs"])}


def lineage(run: Path) -> dict:
    """The gate's numbers a generation, the experiments, the loop's wall time, and generation 0's and the final
    champion's programs (commit and knobs)."""
    with connect(run) as db:
        gens = [gate_row(db, g) for (g,) in db.execute("SELECT idx FROM generations WHERE status='done' ORDER BY idx")]
        exps = {r[0]: {"n": r[1], "wall_s": round(r[2] or 0, 1)} for r in db.execute(
            "SELECT status, COUNT(*), SUM(wall_s) FROM experiments GROUP BY status")}
        used = {json.loads(m).get("seed") for (m,) in db.execute("SELECT metrics FROM experiments")
                if m is not None}
        wall = db.execute("SELECT value FROM meta WHERE key='wall_s'").fetchone()
        last = db.execute("SELECT champion_model FROM generations WHERE status='done' ORDER BY idx DESC").fetchone()[0]
        return {"generations": gens, "experiments": exps, "loop_wall_s": round(float(wall[0]), 1) if wall else None,
                "seeds_used": sorted(x for x in used if x is not None), "original": program(db, "generation=?", 0),
                "final": program(db, "digest=?", last)}


# -- re-measurement --------------------------------------------------------------------------------------------
def sh(argv: list[str], cwd: Path, env: dict, timeout: float) -> str:
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(cwd), "TMPDIR": str(cwd), "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(argv, cwd=cwd, env=base | env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"{argv} in {cwd} exited {r.returncode}: {(r.stdout + r.stderr)[-500:]}")
    return r.stdout + r.stderr


def measure_once(cfg: RunConfig, repo: ProgramRepo, prog: dict, seed: int, pristine: Path, tmp: Path) -> float:
    """Train the program's commit with its knobs on `seed`; the harness's evaluation of the artifact."""
    sc, work = cfg.script, tmp / f"{prog['candidate_id']}-{seed}"
    repo.export(prog["git_commit"], work / "program")
    argv, env, files = program_command(cfg.script, prog["knobs"], seed)
    if files:
        (work / "program" / sc.config_file).write_text(json.dumps(files, indent=2))
    sh(argv, work / "program", env, cfg.loop.experiment_timeout_s)
    shutil.copytree(pristine, work / "eval")
    cmd = [a.replace("{artifact}", str(work / "program" / sc.artifact)) for a in sc.evaluate.command]
    out = sh(python_argv(cmd), work / "eval", {}, sc.evaluate.timeout_s)
    value = read_metric(sc.evaluate.metric, out, work / "eval")
    shutil.rmtree(work)
    return value


def verify(run: Path, lin: dict, n: int) -> dict:
    """Generation 0 and the final champion on n fresh seeds, paired; the one-sided test in the config's direction."""
    cfg, repo = load_cfg(run), ProgramRepo(run / "program.git", "x")
    seeds = [s for s in range(SEED0, SEED0 + n + len(lin["seeds_used"])) if s not in lin["seeds_used"]][:n]
    orig, final, t0 = [], [], time.monotonic()
    with tempfile.TemporaryDirectory(prefix="script-examples-") as d:
        pristine = Path(d) / "pristine"
        repo.export(lin["original"]["git_commit"], pristine)
        for s in seeds:  # interleaved, so that a change of load on the machine falls on both
            orig.append(measure_once(cfg, repo, lin["original"], s, pristine, Path(d)))
            final.append(measure_once(cfg, repo, lin["final"], s, pristine, Path(d)))
            print(f"  seed {s}: original {orig[-1]:.4f}  final {final[-1]:.4f}", flush=True)
    sign = 1.0 if cfg.script.direction == "maximize" else -1.0
    diff = sign * (np.array(final) - np.array(orig))
    sd = float(diff.std(ddof=1)) if n > 1 else 0.0
    p = float(stats.ttest_1samp(diff, 0.0, alternative="greater").pvalue) if sd > 0 else float(diff.mean() <= 0)
    half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)) if n > 1 else float("nan")
    return {"seeds": seeds, "threads": 1, "original": orig, "final": final, "direction": cfg.script.direction,
            "original_mean": float(np.mean(orig)), "original_sd": float(np.std(orig, ddof=1)),
            "final_mean": float(np.mean(final)), "final_sd": float(np.std(final, ddof=1)),
            "gain": float(diff.mean()), "gain_ci95": [float(diff.mean()) - half, float(diff.mean()) + half],
            "p_value": p, "final_commit": lin["final"]["git_commit"], "wall_s": round(time.monotonic() - t0, 1),
            "command": " ".join([".venv/bin/python", "benchmarks/script_examples.py", *sys.argv[1:]])}


# -- tables ----------------------------------------------------------------------------------------------------
def metric_name(sc: dict) -> str:
    m = re.match(r"\^?([A-Za-z_]\w*)", sc["evaluate"]["metric"]["regex"] or "")
    return m.group(1) if m else "metric"


def _f(x, fmt: str = ".4f") -> str:
    return "–" if x is None else format(x, fmt)


def example_table(name: str, r: dict) -> str:
    lin, sc, gate = r["lineage"], r["script"], r["script"]["gate"]
    ex = ", ".join(f"{v['n']} {k}" for k, v in lin["experiments"].items())
    lines = [f"**{name}** ({metric_name(sc)} from eval.py, {sc['direction']}; gate: {gate['test']} over "
             f"{gate['seeds']} fresh seeds, min_effect {gate['min_effect']}): {len(lin['generations']) - 1} "
             f"generations after generation 0; experiments: {ex}, "
             f"{sum(v['wall_s'] for v in lin['experiments'].values()):.0f} s of experiment wall time; "
             f"loop wall time {_f(lin['loop_wall_s'], '.0f')} s.", "",
             "| gen | successor | champion mean | successor mean | gain | p | promoted | reason |", "|" + "---|" * 8]
    lines += [f"| {g['gen']} | {g['successor'] or '–'} | {_f(g.get('champion_mean'))} | "
              f"{_f(g.get('successor_mean'))} | {_f(g.get('gain'), '+.4f')} | {_f(g.get('p_value'), '.3g')} | "
              f"{'yes' if g['promoted'] else 'no'} | {g['reason']} |" for g in lin["generations"]]
    f, o, v = lin["final"], lin["original"]["knobs"], r.get("verified") or {}
    changed = ", ".join(f"{k} {o[k]} → {f['knobs'][k]}" for k in o if o[k] != f["knobs"].get(k)) or "none"
    return "\n".join(lines) + (
        f"\n\nFinal champion: {f['candidate_id']} (generation {f['generation']}); knobs changed: {changed}; code "
        f"changed: {'yes' if r['code_changed'] else 'no'}. Loop: `successor run examples/{name}/successor.yaml "
        f"--run-dir {r['run']} --quiet`" + (f"; re-measured by `{v['command']}`." if v else "; not re-measured."))


def tables(results: dict) -> str:
    rows = ["| example | seeds | program as given: mean ± sd | final champion: mean ± sd | gain | 95% CI of gain | "
            "p (paired, one-sided) | re-measure wall s |", "|" + "---|" * 8]
    for name, r in results.items():
        if v := r.get("verified"):
            rows.append(f"| {name} ({metric_name(r['script'])}, {v['direction']}) | {len(v['seeds'])} "
                        f"({v['seeds'][0]}–{v['seeds'][-1]}) | {v['original_mean']:.4f} ± {v['original_sd']:.4f} | "
                        f"{v['final_mean']:.4f} ± {v['final_sd']:.4f} | {v['gain']:+.4f} | [{v['gain_ci95'][0]:+.4f}, "
                        f"{v['gain_ci95'][1]:+.4f}] | {v['p_value']:.2g} | {v['wall_s']:.0f} |")
    return "\n\n".join([example_table(n, r) for n, r in results.items()] + [
        "Verified gain over the program as given: both re-trained and re-evaluated on the same fresh seeds (never used "
        "by the run), train.py and eval.py with `OMP_NUM_THREADS=1` (the loop's experiments had both cores' threads); "
        "gain in the direction of improvement.", "\n".join(rows),
        "Wall times are the loop's own (meta `wall_s`) and the experiments' (table `experiments`), on 2 cores without "
        "a GPU that the runs partly shared with other work: upper bounds."])


def write_benchmarks_md(text: str, path: Path) -> None:
    write_section(path, "script_examples", "Your own program: the script workload on the two examples", text, INTRO)


INTRO = """Each example's config through the real loop (the evolution researcher's knobs, sandboxed training, the
harness's own `eval.py` on every artifact, the paired gate on fresh seeds), read back from its lineage; then the
verified gain: the program as given and the final champion re-measured on the same fresh seeds, a paired one-sided
t-test. Machine: 2 CPU cores, no GPU, shared with other work. The commands that made the numbers are below each
table; `.venv/bin/python benchmarks/script_examples.py --report` rebuilds the tables.

"""


def collect(name: str, run: Path, earlier: dict | None, seeds: int | None) -> dict | None:
    """An example's results from its run; `seeds` re-measures, else the earlier verification of the same champion
    is kept. A missing run keeps the earlier results whole."""
    if not finished(run):
        return earlier
    lin = lineage(run)
    repo = ProgramRepo(run / "program.git", "x")
    trees = {repo.git("rev-parse", f"{lin[k]['git_commit']}^{{tree}}").strip() for k in ("original", "final")}
    where = run.resolve().relative_to(REPO) if run.resolve().is_relative_to(REPO) else run
    r = {"run": str(where), "script": load_cfg(run).script.model_dump(mode="json"), "lineage": lin,
         "code_changed": len(trees) > 1}
    if seeds:
        print(f"[{name}] re-measuring generation 0 and {lin['final']['candidate_id']} on {seeds} seeds", flush=True)
        r["verified"] = verify(run, lin, seeds)
    elif earlier and earlier.get("verified", {}).get("final_commit") == lin["final"]["git_commit"]:
        r["verified"] = earlier["verified"]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated examples (digits, charlm)")
    ap.add_argument("--root", type=Path, default=REPO / "runs" / "script-examples", help="runs live in ROOT/<example>")
    ap.add_argument("--seeds", type=int, default=10, help="fresh seeds for the re-measurement")
    ap.add_argument("--report", action="store_true", help="only rebuild the tables from the runs and results JSON")
    a = ap.parse_args()
    only = [x for x in a.only.split(",") if x] or list(EXAMPLES)
    if unknown := [x for x in only if x not in EXAMPLES]:
        raise SystemExit(f"unknown example(s) {unknown}; known: {list(EXAMPLES)}")
    saved = RESULTS / "script_examples.json"
    earlier = json.loads(saved.read_text()) if saved.exists() else {}
    results = {}
    for name in EXAMPLES:
        run, chosen = a.root / name, name in only and not a.report
        if chosen and not finished(run):
            run_loop(name, run)
        if r := collect(name, run, earlier.get(name), a.seeds if chosen else None):
            results[name] = r
    RESULTS.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(results, indent=1))
    text = tables(results)
    print(text)
    write_benchmarks_md(text, REPO / "BENCHMARKS.md")


if __name__ == "__main__":
    main()
