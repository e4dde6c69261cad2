"""Scale and speed of the loop (issue 6), each measured as a ratio within one run of this script:

- successive halving against full-budget evaluation: the candidate experiments' CPU-seconds to reach the same
  pick (goal <= 1/2), over several candidate sets;
- harness overhead: the share of a run's wall time outside training subprocesses and the harness's evaluation
  and curation (goal <= 3%);
- the sandbox's start cost per experiment: a trivial program through the executor against the same program bare
  (goal <= 0.3 s);
- experiments per hour on 1 and 2 local workers (goal >= 1.8x).

    .venv/bin/python benchmarks/scale.py --report        # the full tables; writes BENCHMARKS.md and results/
    .venv/bin/python benchmarks/scale.py --quick --json out.json   # seconds, for the tests

The halving arms are forks of one generation 0 (benchmarks/fork_run.py): same champion, same candidates (the
researcher's proposals depend on the history and the seed only), one generation each. The last rung's experiment
of a candidate is the very job full-budget evaluation runs (the same experiment id), so "the same pick" is exact.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fork_run import fork  # noqa: E402
from markdown import table, write_section  # noqa: E402

from successor.config import load_config  # noqa: E402
from successor.driver import Driver  # noqa: E402
from successor.executors.base import Experiment, usable_cores  # noqa: E402
from successor.executors.local import LocalExecutor
from successor.oversight import integrity  # noqa: E402
from successor.oversight.policy import Policy  # noqa: E402
from successor.oversight.sandbox import isolation_mode  # noqa: E402
from successor.rundir import RunDir  # noqa: E402
from successor.workloads.tinylm.data import save_shard  # noqa: E402
from successor.workloads.tinylm.recipe import Recipe  # noqa: E402
from successor.workloads.tinylm.tasks import get_task  # noqa: E402

REPO = HERE.parent
NO_WAIT = {"tripwires": {"integrity_violation": False}}
FULL = {"successor_steps": 900, "candidates": 9, "rungs": 3, "eta": 3, "mutation": [0.3, 0.6, 0.9],
        "sandbox_reps": 15, "scaling_exps": 4, "scaling_steps": 600, "scaling_reps": 2}
QUICK = {"successor_steps": 60, "candidates": 3, "rungs": 2, "eta": 3, "mutation": [0.3], "sandbox_reps": 2,
         "scaling_exps": 2, "scaling_steps": 20, "scaling_reps": 1}


# -- successive halving against full-budget evaluation, and the harness overhead of the full arm ---------------
def timed(driver: Driver) -> Driver:
    """The driver, with the intervals it spends on work recorded in `driver.busy`: sandboxed training (Popen to
    reap), grading, curation."""
    busy: list[tuple[float, float]] = []
    wl, run = driver.workload, driver.lab.executor.run

    def timed_run(exp, on_start=None):
        out = run(exp, on_start)
        end = time.monotonic()
        busy.append((end - out.wall_s, end))
        return out

    def interval(fn):
        def wrapped(*a, **kw):
            t0 = time.monotonic()
            try:
                return fn(*a, **kw)
            finally:
                busy.append((t0, time.monotonic()))
        return wrapped

    driver.lab.executor.run = timed_run
    wl.grade = wl.grader.grade = interval(wl.grader.grade)
    wl.curate = interval(wl.curate)
    driver.busy = busy
    return driver


def covered(intervals: list[tuple[float, float]]) -> float:
    """Seconds inside the union of the intervals."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def base_config(p: dict, path: Path) -> Path:
    cfg = yaml.safe_load((REPO / "src/successor/presets/smoke.yaml").read_text())
    cfg["successor"]["steps"] = p["successor_steps"]
    cfg["researcher"]["candidates"] = p["candidates"]
    cfg["loop"].update({"generations": 1, "threads": 1, "experiment_budget": 1.0, "executor": {"workers": 2}})
    if p is QUICK:  # the tests' smallest run: fewer and smaller tiers, a smaller curation
        cfg["task"].update({"human_per_level": 400, "dev_per_level": 30, "validation_per_level": 30,
                            "sealed_per_level": 60, "guardrail_per_level": 0})
        cfg["curator"].update({"problems": 60})
        cfg["successor"]["guardrail_share"] = 0.0
        cfg["bootstrap"].update({"guardrail_share": 0.0})
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_loop(root: Path, conf: Path, policy: dict, instrument=lambda d: d):
    run = RunDir(root, load_config(conf))
    run.set_policy(Policy.model_validate(policy))
    loop = instrument(Driver(run))
    t0 = time.monotonic()
    try:
        state = loop.run_all()
    finally:
        wall = time.monotonic() - t0
        run.store.close()
    return loop, state, wall


def arm_compute(root: Path) -> dict:
    with closing(sqlite3.connect(root / "lineage.db")) as db:
        n, cpu, flops = db.execute("SELECT COUNT(*), SUM(cpu_s), SUM(flops) FROM experiments WHERE generation=1 "
                                   "AND kind='candidate'").fetchone()
    return {"experiments": n, "cpu_s": round(cpu, 2), "flops": flops}


def halving_vs_full(p: dict, work: Path) -> dict:
    base = work / "base"
    _, state, _ = run_loop(base, base_config(p, work / "base.yaml"), {**NO_WAIT, "budgets": {"generations": 1}})
    assert state.startswith("paused"), state  # generation 0 only
    sets = []
    for i, m in enumerate(p["mutation"]):
        arms = {}
        for arm, halv in (("full", {"rungs": 1, "eta": p["eta"]}), ("halving", {"rungs": p["rungs"], "eta": p["eta"]})):
            dest = work / f"{arm}{i}"
            conf = fork(base, dest, {"researcher.mutation_rate": m, "loop.halving": halv})
            loop, state, wall = run_loop(dest, conf, NO_WAIT, timed)
            arms[arm] = {"loop": loop, "wall": wall, "root": dest, **arm_compute(dest)}
        full = arms["full"]
        with closing(sqlite3.connect(full["root"] / "lineage.db")) as db:
            champion = db.execute("SELECT champion_model FROM generations WHERE idx=0").fetchone()[0]
            exp = json.loads(db.execute("SELECT result FROM stages WHERE generation=1 AND name='experiment'")
                             .fetchone()[0])
        again = RunDir(full["root"], load_config(full["root"] / "config.yaml"))  # the run closed its store
        try:
            ranking, _, _ = Driver(again).workload.rank(champion, {c: e["model"] for c, e in exp.items() if e["model"]}, "dev")
        finally:
            again.store.close()
        with closing(sqlite3.connect(arms["halving"]["root"] / "lineage.db")) as db:
            pick = db.execute("SELECT candidate_id FROM rungs WHERE generation=1 AND rung=? AND rank=1",
                              (p["rungs"] - 1,)).fetchone()[0]
        busy = covered(full["loop"].busy)
        sets.append({"mutation_rate": m, "full_pick": ranking[0], "halving_pick": pick, "same": pick == ranking[0],
                     "full": {k: full[k] for k in ("experiments", "cpu_s", "flops")},
                     "halving": {k: arms["halving"][k] for k in ("experiments", "cpu_s", "flops")},
                     "cpu_ratio": arms["halving"]["cpu_s"] / full["cpu_s"],
                     "flops_ratio": arms["halving"]["flops"] / full["flops"],
                     "overhead": {"wall_s": round(full["wall"], 2), "busy_s": round(busy, 2),
                                  "share": 1.0 - busy / full["wall"]}})
    return {"sets": sets, "candidates": p["candidates"], "rungs": p["rungs"], "eta": p["eta"],
            "successor_steps": p["successor_steps"]}


# -- the sandbox's start cost, and experiments per hour on 1 and 2 workers --------------------------------------
def _executor(workers: int) -> LocalExecutor:
    policy = Policy()
    return LocalExecutor(600, 1, policy, isolation_mode(policy), workers)


def sandbox_start(p: dict, work: Path) -> dict:
    ex, bare, boxed = _executor(1), [], []
    for i in range(p["sandbox_reps"]):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - t0)
        ws = work / "sandbox" / f"w{i}"
        ws.mkdir(parents=True)
        (ws / "job.json").write_text(json.dumps({"task": "addition"}))
        exp = Experiment(job=ws / "job.json", run_root=work / "sandbox", readable=[],
                         protected=integrity.harness_sources(), command=[sys.executable, "-c", "pass"])
        t0 = time.perf_counter()
        out = ex.run(exp)
        boxed.append(time.perf_counter() - t0)
        assert out.status == "done", out.error
    return {"isolation": ex.isolation, "bare_s": statistics.median(bare), "sandboxed_s": statistics.median(boxed),
            "start_cost_s": statistics.median(boxed) - statistics.median(bare), "reps": p["sandbox_reps"]}


def _scaling_items(p: dict, work: Path, tag: str) -> list[tuple[str, Experiment]]:
    """`scaling_exps` real tinylm jobs of the same size (their own seeds), each in a fresh workspace."""
    task = get_task("addition")
    import numpy as np

    data = work / "data"
    if not (data / "shard.path").exists():
        rng = np.random.default_rng(0)
        _, shard = save_shard([(q, task.answer(q)) for lvl in (1, 2, 3) for q in task.generate(lvl, 500, rng)], data)
        (data / "shard.path").write_text(str(shard))
    shard = Path((data / "shard.path").read_text())
    items = []
    for i in range(p["scaling_exps"]):
        ws = work / "scaling" / f"{tag}e{i}"
        ws.mkdir(parents=True)
        recipe = Recipe(init="scratch", n_layer=2, n_embd=64, steps=p["scaling_steps"], seed=i, mix_newest=0.0,
                        mix_human=1.0)
        job = {"task": "addition", "recipe": recipe.model_dump(), "parent": None,
               "data": {"human": [str(shard)], "newest": [], "older": []}, "dev": None, "out": str(ws / "out"),
               "threads": 1}
        (ws / "job.json").write_text(json.dumps(job))
        items.append((f"e{i}", Experiment(job=ws / "job.json", run_root=work / "scaling", readable=[shard],
                                          protected=integrity.harness_sources(), threads=1)))
    return items


def _per_hour(p: dict, work: Path, executor, tag: str) -> dict:
    """Experiments per hour on 1 and 2 workers, interleaved (the machine is shared: each ratio compares
    neighbours), median wall over the repetitions."""
    walls: dict[str, list[float]] = {"1": [], "2": []}
    for rep in range(p["scaling_reps"]):
        for workers in (1, 2):
            items = _scaling_items(p, work, f"{tag}r{rep}w{workers}")
            ex = executor(workers)
            t0 = time.perf_counter()
            outs = list(ex.map(items))
            walls[str(workers)].append(time.perf_counter() - t0)
            ex.close()
            assert all(o.status == "done" for _, o in outs), [o.error for _, o in outs]
    per_hour = {w: 3600 * p["scaling_exps"] / statistics.median(v) for w, v in walls.items()}
    return {"experiments": p["scaling_exps"], "steps": p["scaling_steps"], "walls": walls, "per_hour": per_hour,
            "speedup": per_hour["2"] / per_hour["1"]}


def scaling(p: dict, work: Path) -> dict:
    return _per_hour(p, work, _executor, "local")


def ray_scaling(p: dict, work: Path) -> dict:
    """The same on a Ray cluster of this machine: `ray start --head` inside a network namespace with loopback
    only (Ray binds every interface), its session folder on the namespace's own tmpfs, `ray stop` at the end."""
    out = work / "ray.json"
    ray = Path(sys.executable).parent / "ray"
    script = (f"set -u; mkdir -p /tmp/ray && mount -t tmpfs tmpfs /tmp/ray && ip link set lo up && "
              f"{ray} start --head --port=6379 --num-cpus=2 --object-store-memory=200000000 "
              f"--include-dashboard=false --disable-usage-stats > {work}/ray.log 2>&1 && "
              f"{sys.executable} {Path(__file__).resolve()} --ray-inner {work} {json.dumps(json.dumps(p))}; "
              f"rc=$?; {ray} stop --force >> {work}/ray.log 2>&1; exit $rc")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "sh", "-c", script], env=env,
                       capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"the Ray cluster run failed (exit {r.returncode}): {r.stderr[-3000:]}")
    return json.loads(out.read_text())


def _ray_inner(work: Path, p: dict) -> None:
    from successor.config import RayConfig
    from successor.executors.ray import RayExecutor

    policy = Policy()
    iso = isolation_mode(policy)
    res = _per_hour(p, work, lambda w: RayExecutor(600, 1, policy, iso, w, RayConfig(address="127.0.0.1:6379")),
                    "ray")  # the load average is the outer process's, once this returns
    (work / "ray.json").write_text(json.dumps(res))


# -- report ---------------------------------------------------------------------------------------------------
SECTIONS = {"sandbox": sandbox_start, "scaling": scaling, "ray_scaling": ray_scaling, "halving": halving_vs_full}
COMMAND = ".venv/bin/python benchmarks/scale.py --report"


def render(r: dict) -> str:
    h, sb, sc, ry = r["halving"], r["sandbox"], r["scaling"], r.get("ray_scaling")
    rows = [[s["mutation_rate"], s["full_pick"], s["halving_pick"], "yes" if s["same"] else "no",
             f"{s['full']['cpu_s']:.0f}", f"{s['halving']['cpu_s']:.0f}", f"{s['cpu_ratio']:.2f}",
             f"{s['flops_ratio']:.2f}"] for s in h["sets"]]
    same = [s for s in h["sets"] if s["same"]]
    ratio = statistics.median(s["cpu_ratio"] for s in h["sets"])
    over = [s["overhead"] for s in h["sets"]]
    share = statistics.median(o["share"] for o in over)
    shares_of = ", ".join(f"1/{h['eta'] ** (h['rungs'] - 1 - k)}" for k in range(h["rungs"] - 1)) + " and all"
    took = ", ".join(f"{k} {r[k]['seconds']:.0f} s" for k in SECTIONS if k in r and r[k].get("seconds"))
    shares = ", ".join(f"{100 * o['share']:.1f}%" for o in over)
    rung_steps = ", ".join(str(round(h["successor_steps"] * h["eta"] ** -(h["rungs"] - 1 - k))) for k in range(h["rungs"]))
    m = r["machine"]
    return "\n\n".join([
        f"Machine: {m['cores']} cores ({m['cpu']}), no GPU, torch {m['torch']}, shared with other sessions' work "
        f"(the load average is given with each table). Command: `{COMMAND}`; `--only SECTION,...` measures some "
        f"again ({', '.join(SECTIONS)}) and keeps the others. Wall time: {took}.",
        f"**Successive halving against full-budget evaluation.** The smoke task, one generation forked from one "
        f"generation 0, {h['candidates']} candidates from a successor recipe of {h['successor_steps']} steps (the "
        f"researcher mutates `steps` too, so each candidate's full budget is its own); halving: {h['rungs']} rungs, "
        f"eta {h['eta']}, rungs of {shares_of} of a candidate's steps ({rung_steps} for {h['successor_steps']}). A candidate set per mutation rate of the evolution researcher. The pick is the best candidate on "
        f"the dev tier at full budget (the loop's own ranking); CPU-seconds are the kernel's count of the candidate "
        f"experiments' sandboxes.",
        table(["mutation rate", "full-budget pick", "halving pick", "same", "full CPU-s", "halving CPU-s",
               "CPU ratio", "FLOP ratio"], rows),
        f"Same pick in {len(same)} of {len(h['sets'])} sets; median CPU ratio **{ratio:.2f}** (goal <= 0.5: "
        f"{'met' if ratio <= 0.5 else 'not met'}). Each experiment also pays a fixed start (Python, torch, the data), "
        f"which the FLOP ratio leaves out.",
        f"**Harness overhead** (the full-budget arms): the share of the run's wall time outside sandboxed training "
        f"(Popen to reap), the harness's grading and its curation. Median **{100 * share:.1f}%** over "
        f"{len(over)} runs ({shares}; goal <= 3%: "
        f"{'met' if share <= 0.03 else 'not met'}). Load average {h['load_average']:.1f} at the end of the halving runs.",
        f"**Sandbox start cost** ({sb['isolation']}): `python -c pass` through the executor (cgroup, honeypots, "
        f"hashes of the harness's sources before and after, bwrap, the guard) against the same command bare, "
        f"median of {sb['reps']} interleaved pairs: {sb['sandboxed_s']:.3f} s against {sb['bare_s']:.3f} s, a start "
        f"cost of **{sb['start_cost_s']:.3f} s** (goal <= 0.3 s: {'met' if sb['start_cost_s'] <= 0.3 else 'not met'}; "
        f"load average {sb['load_average']:.1f}).",
        f"**Experiments per hour, 1 and 2 local workers**: {sc['experiments']} tinylm experiments of {sc['steps']} "
        f"steps (2 layers, 64 wide, one torch thread each), median wall over {len(sc['walls']['1'])} interleaved "
        f"repetitions; load average {sc['load_average']:.1f} at the end.",
        table(["workers", "experiments / hour"], [[w, f"{v:.0f}"] for w, v in sc["per_hour"].items()]),
        f"Speed-up **{sc['speedup']:.2f}x** (goal >= 1.8x: {'met' if sc['speedup'] >= 1.8 else 'not met'})."]
        + ([] if ry is None else [
        "**The same on a Ray cluster of this machine** (`ray start --head --num-cpus=2` in a network namespace with "
        f"loopback only; each experiment a Ray task of one CPU, inputs and checkpoint through the object store; "
        f"load average {ry['load_average']:.1f} at the end):",
        table(["Ray workers", "experiments / hour"], [[w, f"{v:.0f}"] for w, v in ry["per_hour"].items()]),
        f"Speed-up **{ry['speedup']:.2f}x** (goal >= 1.8x: {'met' if ry['speedup'] >= 1.8 else 'not met'}); "
        f"the Ray tasks against the local pool at 2 workers: {ry['per_hour']['2'] / sc['per_hour']['2']:.2f}x."]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny sizes, seconds; for the tests")
    ap.add_argument("--report", action="store_true", help="write BENCHMARKS.md and benchmarks/results/scale.json")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--work", type=Path, help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--only", help="comma-separated sections to measure again (sandbox, scaling, halving); the "
                    "others are kept from benchmarks/results/scale.json; none: rebuild the section from it")
    ap.add_argument("--ray-inner", nargs=2, help=argparse.SUPPRESS)  # inside the namespace: WORK PARAMS
    a = ap.parse_args()
    if a.ray_inner:
        return _ray_inner(Path(a.ray_inner[0]), json.loads(a.ray_inner[1]))
    p = QUICK if a.quick else FULL
    work = a.work or Path(tempfile.mkdtemp(prefix="scale-"))
    only = (set() if a.only == "none" else set(a.only.split(","))) if a.only else \
        set(SECTIONS) - ({"ray_scaling"} if a.quick else set())
    if only - set(SECTIONS):
        raise SystemExit(f"--only: unknown section(s) {sorted(only - set(SECTIONS))}; choose from {list(SECTIONS)}")
    results = HERE / "results" / "scale.json"
    r = json.loads(results.read_text()) if a.only and results.exists() else {}
    try:
        for name, measure in SECTIONS.items():
            if name in only:
                t0 = time.monotonic()
                r[name] = measure(p, work) | {"seconds": round(time.monotonic() - t0, 1),
                                              "load_average": round(os.getloadavg()[0], 1)}
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    missing = set(SECTIONS) - set(r) - ({"ray_scaling"} if a.quick else set())
    if missing:
        raise SystemExit(f"no results for {sorted(missing)}: measure them (drop --only)")
    r["machine"] = {"cores": usable_cores(), "cpu": platform.processor() or platform.machine(),
                    "torch": torch.__version__}
    text = render(r)
    print(text)
    if a.json:
        a.json.write_text(json.dumps(r, indent=2, default=str))
    if a.report:
        (HERE / "results" / "scale.json").write_text(json.dumps(r, indent=2, default=str))
        write_section(REPO / "BENCHMARKS.md", "scale", "Scale: successive halving, overhead, sandbox start, workers",
                      text)


if __name__ == "__main__":
    main()
