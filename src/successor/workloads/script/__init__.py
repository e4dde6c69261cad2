"""The `script` workload: the user's own training program (workload.py), improved a generation at a time. This
file is its entry in the workload registry (successor.workloads.spec)."""
from __future__ import annotations

HAS_TIERS = False  # a program reads its own data; the gate's seeds are the harness's secret instead
RESEARCHERS = ("evolution", "optuna", "llm", "manager")


def make(lab, researcher=None):
    """The workload on a lab; `researcher` replaces the one the config names (tests, studies)."""
    from .workload import ScriptWorkload

    return ScriptWorkload(lab, researcher)


def check_config(cfg) -> None:
    """Raise ValueError where a run config does not fit this workload."""
    if cfg.script is None:
        raise ValueError("workload script needs a script section (program, command, editable, metric)")
    if cfg.researcher.name not in RESEARCHERS:
        raise ValueError(f"researcher {cfg.researcher.name} is for tinylm; the script workload uses evolution, "
                         "optuna, llm or manager")
    if cfg.researcher.seed is not None:
        raise ValueError("researcher.seed is for tinylm; the script workload's researcher draws from the run seed")
    if cfg.gate.sealed != "fixed":
        raise ValueError("gate.sealed is for tinylm's sealed tier; a script run's gate draws its own seeds each "
                         "generation (gate.seeds)")


# What the reports, `compare` and `verify` ask of a workload (successor.reporting, oversight/verify.py):
SCORE = "metric"  # a champion's number: its mean metric over its gate seeds (status_dict's "metric")
PLOT_PANELS = {  # the report's plots it has no data for (no tiers, no guardrail), each with the panel drawn instead
    "accuracy_heatmap": "sealed accuracy by level: not applicable to a script run (see the metric by generation)",
    "guardrail": "the guardrail suite: not applicable to a script run",
}


def write_report(run_dir, out, css):
    """Its own report (report.md, report.html, summary.md and plots) in `out`; returns `out`."""
    from .report import write_script_report

    return write_script_report(run_dir, out, css)


def compare_label(cfg: dict) -> str:
    """The run in compare's "workload / task" column."""
    return f"script / {cfg.get('name', '—')} ({(cfg.get('script') or {}).get('direction', 'maximize')})"


def verify_artifacts(run) -> None:
    """verify_run's checks of what a script run holds beside the shared ones, where the directory holds a
    program.git: its artifacts (named by digest), its programs (a commit and knobs, named by their digest, the
    commit present in program.git), and each generation's gate seeds (named by their digest). `run` is
    oversight/verify.py's `_Run`: the verified digests go to its `models` and `shards`, problems to `problems`."""
    if not (run.root / "program.git").is_dir():
        return
    import json
    import sqlite3

    import yaml

    from . import memory
    from .measure import artifact_digest
    from .program import ProgramRepo

    arts = run.root / "artifacts" / "script"
    for d in sorted(arts.iterdir()) if arts.is_dir() else []:
        if not d.name.endswith(".tmp"):
            inside = list(d.iterdir()) if run.artifact_folder(d) else []
            run.models[d.name] = len(inside) == 1 and run.check_digest(d, lambda p, f=inside[0]: artifact_digest(f))
    cfg = yaml.safe_load((run.root / "config.yaml").read_text())
    db = sqlite3.connect(f"file:{run.root / 'lineage.db'}?mode=ro", uri=True, timeout=30)
    try:
        progs = db.execute("SELECT digest, git_commit, knobs FROM programs").fetchall()
        gens = [r[0] for r in db.execute("SELECT idx FROM generations")]
    finally:
        db.close()
    repo = ProgramRepo(run.root / "program.git", "x")
    for digest, commit, knobs in progs:
        ok = memory.program_digest(json.loads(knobs), commit) == digest
        if not ok:
            run.problems.append(f"program {digest[:12]}: its commit and knobs hash to another digest")
        try:
            repo.git("cat-file", "-e", f"{commit}^{{commit}}")
        except ValueError:
            ok = False
            run.problems.append(f"program {digest[:12]}: its commit {commit[:12]} is not in program.git")
        run.models[digest] = ok
    from .config import ScriptGateConfig

    gate = cfg["script"]["gate"]  # a run from before the adaptive seeds drew gate.seeds of them
    n = ScriptGateConfig(**gate).looks()[-1] if "max_seeds" in gate else gate["seeds"]
    for g in gens:
        run.shards[memory.seeds_digest(memory.draw_seeds(cfg["seed"], g, "gate", n))] = True
