"""Research efficiency (issue 6): at equal CPU-seconds, the default researcher's final verified champion against
random search and against Optuna's TPE (with and without successive halving), over several researcher seeds.

Every run is the real loop (sandboxed experiments, selection, curation, the gate) forked from one shared
generation 0 (benchmarks/fork_run.py), so the bootstrap is the same champion for all of them; the fork changes
only the researcher (`researcher.name`, `researcher.seed`, and for TPE + halving `researcher.candidates` and
`loop.halving`). The run seed cannot change after generation 0, so `researcher.seed` varies each run's search
stream: the challengers drawn and the training seeds of every candidate and successor. The policy budget
`budgets.cpu_s` (CPU-seconds of experiments, the kernel's count for the sandbox's cgroup) stops each run:
`loop.generations` is set far past what it allows. The result of a run is its final champion's *verified*
score, the mean sealed-tier accuracy over every length of the task (the gate's own evaluation, read from the
lineage's `evaluations` table), and its >=99% sealed frontier.

    .venv/bin/python benchmarks/research_efficiency.py                 # every method x 5 seeds; resumes
    .venv/bin/python benchmarks/research_efficiency.py --report        # tables from the runs that are there
    .venv/bin/python benchmarks/research_efficiency.py --quick --root /tmp/re   # 2 methods x 1 seed, tiny

The budget check runs before each batch of experiments is started (a generation's candidates, a rung, a
successor), so a run ends a batch past its budget: CPU-s used is reported in full, overshoot included. Do not
read the run directories while a run trains (their workspaces hold honeypots). Writes
benchmarks/results/research_efficiency.json and the section between the markers in BENCHMARKS.md (`--quick`
writes only under its --root).
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from fork_run import fork, run_to_end

from successor.oversight.policy import Budgets, Policy, Tripwires, save_policy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from markdown import write_section  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


@dataclass
class Method:
    name: str
    changes: dict = field(default_factory=dict)
    note: str = ""


# The smoke preset's task (reversed addition, human lengths 1-2, lengths 1-4 evaluated, a 2-layer d=64 model),
# with three candidates a generation as the default preset has; one experiment at a time per run (two runs go
# side by side on the two cores, --jobs).
# The score sums sealed accuracy over one fixed range of lengths, so the tiers do not grow (`ladder_step: 0`); dev
# labels at every length, as it was measured before the default became label-free.
BASE = {"name": "research-efficiency", "task": {"ladder_step": 0, "dev_levels": "all"}, "researcher": {"candidates": 3},
        "loop": {"generations": 200, "executor": {"workers": 1}}}
HALVING = {"researcher.candidates": 6, "loop.halving": {"rungs": 2, "eta": 3, "unit": "steps"}}
METHODS = [
    Method("evolution", {"researcher.name": "evolution"}, "the default researcher: the incumbent recipe, and "
           "mutations and crossovers of the top third of the recipes measured so far"),
    Method("random", {"researcher.name": "random"}, "the incumbent recipe, and recipes drawn uniformly over "
           "SEARCH_SPACE"),
    Method("tpe", {"researcher.name": "optuna"}, "the incumbent recipe, and optuna TPE asks (4 random start "
           "trials) from a study rebuilt from research memory each generation"),
    Method("tpe+halving", {"researcher.name": "optuna", **HALVING}, "TPE with 6 candidates a generation under "
           "successive halving (2 rungs, eta 3: all 6 at a third of the probe's steps, the best 2 on dev at the "
           "full probe)"),
]
QUICK_BASE = {
    "name": "research-efficiency-quick",
    "task": {"human_per_level": 300, "eval_max_level": 3, "dev_per_level": 20, "validation_per_level": 20,
             "sealed_per_level": 40, "guardrail_per_level": 0, "ladder_step": 0},
    "bootstrap": {"steps": 300, "guardrail_share": 0.0, "guardrail_from": 0},  # 60 was promoted only on some sealed draws
    "successor": {"steps": 40, "guardrail_share": 0.0},
    "researcher": {"candidates": 2},
    "curator": {"problems": 40, "levels_ahead": 1},
    "loop": {"generations": 200, "executor": {"workers": 1}}}
QUICK_METHODS = [METHODS[0], METHODS[1]]


def connect(run: Path) -> closing[sqlite3.Connection]:
    db = sqlite3.connect(f"file:{run / 'lineage.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    return closing(db)


def generations_done(run: Path) -> int:
    if not (run / "lineage.db").exists():
        return 0
    with connect(run) as db:
        return db.execute("SELECT COUNT(*) FROM generations WHERE status='done'").fetchone()[0]


def ensure_base(root: Path, preset: str, config: dict) -> Path:
    """Generation 0, trained once (the loop pauses after it on a one-generation budget)."""
    run = root / "base"
    if generations_done(run) >= 1:
        return run
    root.mkdir(parents=True, exist_ok=True)
    (root / "base.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    save_policy(Policy(budgets=Budgets(generations=1)), root / "base.policy.yaml")
    print("[base] generation 0 ...", flush=True)
    run_to_end(root / "base.yaml", run, preset, root / "base.policy.yaml")
    if generations_done(run) < 1:
        raise SystemExit(f"{run}: generation 0 did not finish; see `successor status {run}`")
    return run


def gen0_cpu(run: Path) -> float:
    with connect(run) as db:
        return float(db.execute("SELECT COALESCE(SUM(cpu_s), 0) FROM experiments WHERE generation=0").fetchone()[0])


def run_dir(root: Path, method: Method, seed: int) -> Path:
    return root / f"{method.name.replace('+', '-')}-s{seed}"


def run_one(root: Path, base: Path, method: Method, seed: int, budget: float) -> Path:
    """One method under one researcher seed, forked from the base, until the CPU budget pauses it. A run that
    already ended (its `ended` marker) is read, not run again; one that was killed resumes."""
    run = run_dir(root, method, seed)
    if (run / "ended.json").exists():
        return run
    if not run.exists():
        fork(base, run, method.changes | {"researcher.seed": seed})
    # the store counts generation 0's CPU-s too (the fork keeps it): the budget is on top of it. No tripwire
    # waits for a human here: a violation still disqualifies its candidate, and is counted below.
    save_policy(Policy(budgets=Budgets(cpu_s=gen0_cpu(base) + budget),
                       tripwires=Tripwires(capability_jump=None, integrity_violation=False)), run / "policy.yaml")
    print(f"[{run.name}] running ...", flush=True)
    t0 = time.monotonic()
    rc = run_to_end(run / "fork.yaml", run)
    if rc not in (0, 3):
        raise SystemExit(f"[{run.name}] successor run exited {rc}; see `successor status {run}`")
    (run / "ended.json").write_text(json.dumps({"rc": rc, "wall_s": round(time.monotonic() - t0, 1)}))
    print(f"[{run.name}] ended (exit {rc}) in {time.monotonic() - t0:.0f} s", flush=True)
    return run


# -- measurement ---------------------------------------------------------------------------------------------
def sealed(db: sqlite3.Connection, model: str) -> dict[int, float]:
    rows = db.execute("SELECT level, n, correct FROM evaluations WHERE model=? AND tier='sealed'", (model,))
    return {lvl: c / n for lvl, n, c in rows}


def measure(run: Path, levels: int) -> dict:
    """The run's final champion (the last promoted) and its verified score, what it spent and how."""
    with connect(run) as db:
        last = db.execute("SELECT idx, champion_model, frontier FROM generations WHERE status='done' "
                          "ORDER BY idx DESC LIMIT 1").fetchone()
        champ = last["champion_model"]
        acc = sealed(db, champ)
        if sorted(acc) != list(range(1, levels + 1)):
            raise SystemExit(f"{run}: champion {champ} has no sealed evaluation of every length")
        won = db.execute("SELECT MAX(idx) FROM generations WHERE status='done' AND promoted=1").fetchone()[0]
        promoted = db.execute("SELECT COUNT(*) FROM generations WHERE status='done' AND promoted=1 AND idx>0"
                              ).fetchone()[0]
        exps = [dict(r) for r in db.execute("SELECT generation, kind, status, started, finished, cpu_s FROM "
                                            "experiments WHERE generation>=1 ORDER BY started")]
        violations = db.execute("SELECT COUNT(*) FROM violations").fetchone()[0]
        started = db.execute("SELECT MAX(idx) FROM generations").fetchone()[0]
        # how often the researcher's own proposals mattered: a challenger (every researcher here proposes the
        # incumbent recipe first, the control arm: ordinal 0) selected to train the successor, and such a
        # successor promoted
        ordinal = {r["id"]: r["ordinal"] for r in db.execute("SELECT id, ordinal FROM candidates")}
        sel = {r["generation"]: json.loads(r["result"])["selected"] for r in db.execute(
            "SELECT generation, result FROM stages WHERE name='select' AND status='done' AND generation>0")}
        chosen = {g: c for g, c in sel.items() if c is not None and ordinal.get(c) != 0}
        won_by = {r["generation"] for r in db.execute("SELECT generation, candidate_id FROM gate_decisions WHERE "
                                                      "role='successor' AND promoted=1 AND generation>0")
                  if chosen.get(r["generation"]) == r["candidate_id"]}
    cpu = [e["cpu_s"] or 0.0 for e in exps]
    # the last budget check that let work start saw only the experiments recorded before the last start
    last_start = max((e["started"] for e in exps), default=0.0)
    committed = sum(c for e, c in zip(exps, cpu) if e["finished"] is not None and e["finished"] < last_start)
    ended = json.loads((run / "ended.json").read_text()) if (run / "ended.json").exists() else {}
    return {"verified": round(float(np.mean(list(acc.values()))), 4),
            "sealed": {str(k): round(v, 4) for k, v in sorted(acc.items())}, "frontier": last["frontier"],
            "champion": champ, "champion_generation": won, "generations": last["idx"], "promoted": promoted,
            "generation_cut_short": started > last["idx"], "experiments": len(exps),
            "cpu_s": round(sum(cpu), 2), "cpu_s_at_last_check": round(committed, 2),
            "last_batch_cpu_s": round(sum(cpu) - committed, 2), "max_experiment_cpu_s": round(max(cpu, default=0), 2),
            "challengers_selected": len(chosen), "challengers_promoted": len(won_by),
            "violations": violations, "exit": ended.get("rc"), "wall_s": ended.get("wall_s")}


def base_measure(base: Path, levels: int) -> dict:
    with connect(base) as db:
        champ = db.execute("SELECT champion_model FROM generations WHERE idx=0").fetchone()[0]
        acc = sealed(db, champ)
        front = db.execute("SELECT frontier FROM generations WHERE idx=0").fetchone()[0]
    return {"verified": round(float(np.mean(list(acc.values()))), 4), "frontier": front,
            "sealed": {str(k): round(v, 4) for k, v in sorted(acc.items())}, "cpu_s": round(gen0_cpu(base), 2)}


def summary(values: list[float]) -> dict:
    v = np.array(values, dtype=float)
    return {"median": round(float(np.median(v)), 4), "min": round(float(v.min()), 4),
            "max": round(float(v.max()), 4), "q25": round(float(np.percentile(v, 25)), 4),
            "q75": round(float(np.percentile(v, 75)), 4), "mean": round(float(v.mean()), 4)}


def mann_whitney(a: list[float], b: list[float]) -> float | None:
    """One-sided p that `a` tends to be larger than `b` (exact where scipy can); None without both."""
    if not a or not b:
        return None
    from scipy.stats import mannwhitneyu
    return round(float(mannwhitneyu(a, b, alternative="greater").pvalue), 4)


def collect(root: Path, methods: list[Method], seeds: list[int], budget: float, base_cfg: dict,
            preset: str) -> dict:
    base = root / "base"
    cfg = yaml.safe_load((base / "config.yaml").read_text())
    levels = cfg["task"]["eval_max_level"]
    out = {"budget_cpu_s": budget, "seeds": seeds, "preset": preset, "base_overrides": base_cfg,
           "task": cfg["task"], "successor": cfg["successor"], "experiment_budget": cfg["loop"]["experiment_budget"],
           "generation0": base_measure(base, levels), "methods": {}}
    for m in methods:
        runs = []
        for s in seeds:
            run = run_dir(root, m, s)
            if (run / "ended.json").exists():
                runs.append({"seed": s, "run": run.name, **measure(run, levels)})
        out["methods"][m.name] = {"note": m.note, "changes": m.changes, "runs": runs,
                                  **({"summary": summary([r["verified"] for r in runs])} if runs else {})}
    evo = [r["verified"] for r in out["methods"].get("evolution", {}).get("runs", [])]
    med = {k: v["summary"]["median"] for k, v in out["methods"].items() if "summary" in v}
    goals = {}
    if "evolution" in med:
        for other, rule in (("random", "beat"), ("tpe", "match or beat"), ("tpe+halving", "match or beat")):
            if other in med:
                ok = med["evolution"] > med[other] if rule == "beat" else med["evolution"] >= med[other]
                goals[other] = {"rule": f"evolution median {'>' if rule == 'beat' else '>='} {other} median",
                                "met": bool(ok), "evolution": med["evolution"], other: med[other],
                                "p_evolution_greater": mann_whitney(evo, [r["verified"] for r in
                                                                          out["methods"][other]["runs"]])}
    out["goals"] = goals
    return out


# -- writing -------------------------------------------------------------------------------------------------
def table(res: dict) -> str:
    g0 = res["generation0"]
    lines = [f"Budget: {res['budget_cpu_s']:.0f} CPU-s of experiments per run after generation 0; seeds "
             f"(researcher.seed) {', '.join(map(str, res['seeds']))}. Generation 0 (shared): verified "
             f"{g0['verified']:.4f}, frontier {g0['frontier']}, {g0['cpu_s']:.0f} CPU-s.", "",
             "| method | verified: median | min–max | IQR | per seed | generations run | promoted (of them a "
             "challenger's) | challenger selected | CPU-s used (at last check) |", "|" + "---|" * 9]
    for name, m in res["methods"].items():
        if not m["runs"]:
            continue
        s, runs = m["summary"], m["runs"]
        per = " ".join(f"{r['verified']:.3f}" for r in runs)
        gens = " ".join(str(r["generations"]) + ("+" if r["generation_cut_short"] else "") for r in runs)
        prom = " ".join(f"{r['promoted']} ({r.get('challengers_promoted', '?')})" for r in runs)
        chal = " ".join(str(r.get("challengers_selected", "?")) for r in runs)
        cpu = " ".join(f"{r['cpu_s']:.0f} ({r['cpu_s_at_last_check']:.0f})" for r in runs)
        lines.append(f"| {name} | **{s['median']:.4f}** | {s['min']:.4f}–{s['max']:.4f} | {s['q25']:.4f}–"
                     f"{s['q75']:.4f} | {per} | {gens} | {prom} | {chal} | {cpu} |")
    lines += ["", "| goal | met | medians | one-sided Mann-Whitney p (evolution greater) |", "|---|---|---|---|"]
    for other, gl in res["goals"].items():
        lines.append(f"| {gl['rule']} | {'**yes**' if gl['met'] else '**no**'} | {gl['evolution']:.4f} vs "
                     f"{gl[other]:.4f} | {gl['p_evolution_greater']} |")
    fronts = {name: " ".join(str(r["frontier"]) for r in m["runs"]) for name, m in res["methods"].items()}
    lines += ["", "Final >=99% sealed frontier per seed: " + "; ".join(f"{k} {v}" for k, v in fronts.items()) + ".",
              "`generations run`: generations finished after generation 0 (`+`: the budget stopped one more part "
              "way). CPU-s used counts every experiment after generation 0, the last batch's overshoot included; "
              "in brackets what the last budget check that let a batch start had seen."]
    return "\n".join(lines)


def write_benchmarks_md(text: str, path: Path) -> None:
    write_section(path, "research_efficiency", "Research efficiency: the researchers at equal CPU-seconds (issue 6)", text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 methods x 1 seed on a tiny task and budget")
    ap.add_argument("--root", type=Path, default=None, help="where the runs live")
    ap.add_argument("--seeds", type=int, default=None, help="researcher seeds 0..N-1 (default 5; --quick 1)")
    ap.add_argument("--budget", type=float, default=None, help="CPU-s per run after generation 0 (default 100; "
                    "--quick 12)")
    ap.add_argument("--only", default="", help="comma-separated method names")
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side (each runs one experiment at a time)")
    ap.add_argument("--report", action="store_true", help="only collect and tabulate the runs that are there; "
                    "with the default root, also rewrite BENCHMARKS.md's section")
    a = ap.parse_args()
    methods, base_cfg, preset = (QUICK_METHODS, QUICK_BASE, "smoke") if a.quick else (METHODS, BASE, "smoke")
    budget = a.budget if a.budget is not None else (12.0 if a.quick else 100.0)
    seeds = list(range(a.seeds if a.seeds is not None else (1 if a.quick else 5)))
    root = a.root or (HERE.parent / "runs" / ("research_efficiency_quick" if a.quick else "research_efficiency"))
    known = {m.name for m in methods}
    only = [x for x in a.only.split(",") if x]
    if unknown := [x for x in only if x not in known]:
        raise SystemExit(f"unknown method(s) {unknown}; known: {sorted(known)}")
    chosen = [m for m in methods if not only or m.name in only]
    t0 = time.monotonic()
    saved = RESULTS / "research_efficiency.json"
    if a.report and not a.quick and generations_done(root / "base") < 1 and saved.exists():
        res = json.loads(saved.read_text())  # the runs stay on the machine that made them: the saved results
        text = table(res)
        print(text)
        write_benchmarks_md(section(res, text), HERE.parent / "BENCHMARKS.md")
        return
    if not a.report:
        base = ensure_base(root, preset, base_cfg)
        jobs = [(m, s) for s in seeds for m in chosen]  # seed-major: every method has runs early on
        with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
            for f in [pool.submit(run_one, root, base, m, s, budget) for m, s in jobs]:
                f.result()
    res = collect(root, methods, seeds, budget, base_cfg, preset)
    res["wall_s"] = round(time.monotonic() - t0, 1)
    res["command"] = " ".join(["benchmarks/research_efficiency.py", *sys.argv[1:]])
    if a.report and not a.quick and saved.exists():  # the runs' own wall time and command, not the report's
        earlier = json.loads(saved.read_text())
        res["wall_s"], res["command"] = earlier.get("wall_s"), earlier.get("command", res["command"])
    text = table(res)
    print(text)
    if a.quick:
        (root / "research_efficiency.json").write_text(json.dumps(res, indent=1))
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "research_efficiency.json").write_text(json.dumps(res, indent=1))
    write_benchmarks_md(section(res, text), HERE.parent / "BENCHMARKS.md")


def section(res: dict, text: str) -> str:
    """The BENCHMARKS.md section: what was run, the table, and how to read it."""
    t, succ = res["task"], res["successor"]
    cmd = res.get("command") or "benchmarks/research_efficiency.py"
    return f"""At equal CPU-seconds, the default researcher (`evolution`) against random search (`random`) and optuna's
TPE (`optuna`, with and without successive halving), each run the real loop (sandboxed experiments, selection,
curation, the gate) forked from one shared generation 0 (`benchmarks/fork_run.py`), so only the researcher
differs. Each run is stopped by the policy budget `budgets.cpu_s` (CPU-seconds of its experiments, the kernel's
count) with `loop.generations` far past it. The score is the final champion's *verified* accuracy: the mean, over
lengths 1-{t['eval_max_level']}, of the gate's own sealed-tier evaluation ({t['sealed_per_level']} items a length).
The new `researcher.seed` (default none: the stream as before) varies each run's search and training seeds;
the run seed, and so generation 0, is the same for all. Every researcher proposes the incumbent recipe first
(the control arm) and its challengers after it: they differ only in how the challengers are chosen.

Task: **the `smoke` preset's**, not the default preset's: reversed addition, human lengths
{t['human_levels'][0]}-{t['human_levels'][1]}, lengths 1-{t['eval_max_level']} evaluated, a 2-layer d=64 model,
successor recipe {succ['steps']} steps at lr {succ['lr']}, probes at {res['experiment_budget']} of a recipe's steps.
On top of it `researcher.candidates: 3` (the default preset's; the smoke preset has 2) and one experiment at
a time per run, two runs side by side. The recipe space searched (`SEARCH_SPACE`) is the same as the default
preset's. Why not the default task: its bootstrap alone takes about 8 minutes of two cores, so 20 runs of it
under a budget that buys a few generations cannot fit the 25-minute goal; the smoke task's were sized for it
(they took 54 minutes on the loaded machine, below).
Command: `.venv/bin/python {cmd}`; `--report` rebuilds this section and
`benchmarks/results/research_efficiency.json` from the runs, `--quick` is the 2 x 1 smoke test.

{text}

{READING}
"""


READING = """**The goal is not met.** Evolution's median equals random search's (0.5300 each; one-sided p = 0.70 that
evolution is better), and TPE's is higher (0.5450; one-sided Mann-Whitney p = 0.058 that TPE is better than
evolution, 0.12 that it is better than random: not significant on 5 seeds). Evolution ties TPE with halving, which
says little (below). What the lineages show about why:

- *Evolution's challengers never won.* In its 15 finished generations a challenger was selected twice and promoted
  never: every evolution promotion is the control arm's, the incumbent recipe's successor, so its final champion is
  what no search at all would give, and its spread (0.517-0.542) is training-seed noise. Its challengers are
  neighbour steps (one or two grid points on about three of the eleven fields) of the only parent it has early on,
  the incumbent; a probe at 0.6 of the steps then barely differs from the incumbent's, and the loop's selection
  keeps the incumbent unless a challenger beats its probe on the same 120 validation items at alpha 0.05.
- *TPE's wins are far moves, mostly unmodelled.* With 4 random start trials and 3 measured recipes after
  generation 1, TPE's asks in generations 1-2 are random draws; only generation 3 is modelled. 2 of its 5 runs
  promoted a challenger's successor (steps 250 -> 800 and 1200, with other lr, warmup, ema, mixture): one a
  random-start draw, one a modelled ask; TPE + halving promoted 3, all random-start draws. Random search draws the
  same kind of recipes, two a generation, and none of its 5 runs promoted one; so TPE's lead over random is mostly
  the luck of the draws, and its lead over evolution points at exploration (far moves) rather than at modelling.
  TPE and TPE + halving under the same `researcher.seed` share their first asks (seed 2 promoted the same recipe in
  both).
- *Halving pays a fixed cost per experiment.* Starting a sandboxed experiment (Python and torch) costs about 5 of the
  7-8 CPU-s of a 150-step probe here, so 6 candidates at a third of the steps plus 2 at the full probe cost more
  than 3 full probes: TPE + halving finished one generation in the budget where the others finished 2-3.
- *The budget buys 2-3 generations*, and the gate (600 sealed items, min_effect 0.005) promoted 1-2 successors a
  run: the differences between methods (0.01-0.02) are the size of the spread within one method. A verdict needs a
  larger budget per run and more seeds, which on the default preset's task is hours of two cores, not minutes.

Wall time: 3,262 s (54 minutes) for the 20 runs and the shared generation 0, over the 25-minute goal, on two cores
shared with other work (load 7-10 for most of it; the last runs, at load ~4, took 150-270 s each where the first
took 330-450 s). CPU-seconds are the kernel's count, which load does not change much. A run overshoots its
budget by at most the batch the last check let start (up to 32 CPU-s here: a generation's candidates, or a rung);
that CPU is spent, and counted, but a generation it does not finish gives its champion nothing. No experiment of
any run was disqualified."""


if __name__ == "__main__":
    main()
