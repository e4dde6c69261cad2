"""`successor compare`: several runs overlaid on one page (the self-improvement benchmark's conditions, say), to
share as a single file.

Everything is read with the shared read-only readings (`status_dict`, `lineage.acceleration`, the guardrail
points) so a comparison says exactly what each run's own report and status say; the HTML embeds its plots as
data URIs, so it can be mailed or attached without its folder.
"""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers; set before anything imports pyplot
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..oversight.verify import verify_run  # noqa: E402
from ..workloads import spec  # noqa: E402
from .lineage import acceleration, fidelity, guardrail_points, open_ro  # noqa: E402
from .plots import no_data  # noqa: E402
from .report import CSS, DASH, _html_table, _md_cell, _md_table, data_uri  # noqa: E402
from .runconfig import run_config, workload_key, workload_of  # noqa: E402
from .status import status_dict  # noqa: E402

HEAD = ["label", "run dir", "workload / task", "generations done (of planned)", "promoted",
        "final frontier / metric", "CPU-hours", "total verified gain", "gain per successor CPU-hour",
        "trend per generation", "trend per CPU-hour", "guardrail fidelity", "audit"]
PLOTS = {"frontier": "compare_frontier.png", "gain": "compare_gain_vs_cpu.png",
         "guardrail": "compare_guardrail.png"}
STYLES = ("-", "--", ":", "-.")  # one per run in turn, so that coinciding lines (forks of one generation 0) show
FRONTIER_OFFSET = 0.04  # levels between runs' frontier lines in plot (a)
SCORE_FORMAT = {"frontier": "d", "metric": ".4g"}  # a workload's SCORE, as the table shows it
DEFAULT_GENERATIONS = 5  # LoopConfig.generations' default, for a config.yaml that leaves it out


def default_labels(run_dirs: list[Path]) -> list[str]:
    """Each run dir's name; where names repeat, as many parent folders as it takes to tell them apart (two
    benchmark roots that both hold `offset-vote` read `self_improvement/offset-vote` and `si/offset-vote`)."""
    parts = [Path(d).resolve().parts for d in run_dirs]
    depth = 1
    while True:
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels) or depth >= max(len(p) for p in parts):
            return labels
        depth += 1


def _check(run_dirs: list[Path], labels: list[str] | None) -> list[str]:
    """The labels to use, after refusing what cannot be compared; each refusal is one line for the CLI."""
    if len(run_dirs) < 2:
        raise ValueError(f"compare needs at least two run directories, got {len(run_dirs)}")
    seen: dict[Path, Path] = {}
    for d in run_dirs:
        if not (Path(d) / "lineage.db").is_file():
            raise ValueError(f"{d} is not a run directory (no lineage.db)")
        key = Path(d).resolve()
        if key in seen:
            raise ValueError(f"{d} is given twice (as {seen[key]} too)")
        seen[key] = Path(d)
    if labels:
        if len(labels) != len(run_dirs):
            raise ValueError(f"{len(labels)} label(s) for {len(run_dirs)} run directories; give one --label per "
                             "run, in the same order, or none")
        if dupes := sorted({x for x in labels if labels.count(x) > 1}):
            raise ValueError(f"duplicate label(s): {', '.join(dupes)}; each run needs its own")
    else:
        labels = default_labels(run_dirs)
    kinds: dict[str, list[str]] = {}  # workload -> its runs
    for d in run_dirs:
        kinds.setdefault(workload_key(run_config(d)), []).append(str(d))
    if len(kinds) > 1:
        names = sorted(kinds)  # script's runs first, then tinylm's
        runs = " with ".join(f"{k} runs ({', '.join(kinds[k])})" for k in names)
        scores = " and ".join(f"a {k} run's {spec(k).SCORE}" for k in names)
        raise ValueError(f"cannot compare {runs}: {scores} have no common axis")
    return list(labels)


def _run(run_dir: Path, label: str) -> dict[str, Any]:
    """One run's readings: its status, acceleration, guardrail, audit verdict and config."""
    cfg = run_config(run_dir)
    st = status_dict(run_dir)
    db = open_ro(run_dir)
    try:
        points = guardrail_points(db)
    finally:
        db.close()
    ok, lines = verify_run(run_dir)
    ws = workload_of(cfg)
    return {"label": label, "dir": run_dir, "cfg": cfg, "status": st, "accel": acceleration(st),
            "guardrail": points, "verified": (ok, lines), "workload": ws, "score": ws.SCORE}


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return DASH if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _workload(r: dict) -> str:
    text = r["workload"].compare_label(r["cfg"])
    return text + (" (UPPER BOUND: verifier filter)" if r["status"]["upper_bound"] else "")


def _fidelity_cell(points: list[dict] | None) -> str:
    if points is None:
        return "no guardrail"
    f, k = fidelity(points)
    return "no promotion measured yet" if f is None else f"{f:.4f} per promotion ({k} promotion(s))"


def _audit_cell(verified: tuple[bool, list[str]]) -> str:
    ok, lines = verified
    if ok:
        return "verified"
    more = f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""
    return f"FAILED: {lines[0]}{more}" if lines else "FAILED"


def table_rows(runs: list[dict]) -> list[list[str]]:
    """One row per run, every number from status_dict and acceleration (so it matches `successor status`)."""
    rows = []
    for r in runs:
        st, acc = r["status"], r["accel"]
        done = sum(1 for g in st["generations"] if g["status"] == "done")
        planned = int((r["cfg"].get("loop") or {}).get("generations", DEFAULT_GENERATIONS)) + 1
        final = _fmt(st[r["score"]], SCORE_FORMAT[r["score"]])
        rows.append([r["label"], str(r["dir"]), _workload(r), f"{done} of {planned}", str(st["promoted"]), final,
                     _fmt(acc["total_cpu_h"], ".4f"), _fmt(acc["total_gain"], ".4f"),
                     _fmt(acc["mean_gain_per_cpu_h"], ".4g"), acc["per_generation"]["verdict"],
                     acc["per_cpu_hour"]["verdict"], _fidelity_cell(r["guardrail"]), _audit_cell(r["verified"])])
    return rows


def _marks(ax, xs: list[int], ys: list[float], promoted: list[bool], colour: str) -> None:
    """Promoted generations as dots and refused ones as crosses, in the run's colour."""
    for flag, marker in ((True, "o"), (False, "x")):
        pts = [(x, y) for x, y, p in zip(xs, ys, promoted) if p is flag]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, color=colour, s=40, zorder=3)


def plot_frontier(path: Path, runs: list[dict]) -> None:
    """(a) The frontier (tinylm) or the champion's metric (script) by generation, one line per run."""
    fig = Figure(figsize=(10, 4.5))
    key = runs[0]["score"]  # every run's: _check refuses runs of different workloads
    metric = key == "metric"  # a metric by generation, drawn as is; else integer levels, stepped and offset
    series = []
    for i, r in enumerate(runs):
        done = [g for g in r["status"]["generations"] if g["status"] == "done" and g[key] is not None]
        series.append((r["label"], f"C{i % 10}", done))
    if not any(done for _, _, done in series):
        no_data(fig, "no finished generation in any run yet")
    else:
        ax = fig.add_subplot()
        for i, (label, colour, done) in enumerate(series):
            # integer frontiers of several runs coincide; a small offset per run keeps every line visible
            shift = 0.0 if metric else FRONTIER_OFFSET * (i - (len(series) - 1) / 2)
            xs, ys = [g["generation"] for g in done], [g[key] + shift for g in done]
            if not done:
                ax.plot([], [], color=colour, label=f"{label} (no finished generation)")
                continue
            if metric:
                ax.plot(xs, ys, color=colour, ls=STYLES[i % len(STYLES)], lw=1.5, label=label)
            else:
                ax.step(xs, ys, where="post", color=colour, ls=STYLES[i % len(STYLES)], lw=1.5, label=label)
            _marks(ax, xs, ys, [bool(g["promoted"]) for g in done], colour)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not metric:
            top = max(g[key] for _, _, done in series for g in done)
            ax.set_ylim(-0.5, top + 1)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.text(0.01, 0.97, f"runs offset by {FRONTIER_OFFSET} levels each so that equal frontiers stay "
                    "visible", transform=ax.transAxes, fontsize=7, color="#555", va="top")
        ax.set_xlabel("generation")
        ax.set_ylabel("champion metric (mean over gate seeds)" if metric else "frontier (levels at >= 99%)")
        ax.set_title(("Champion metric" if metric else "Champion frontier") + " by generation "
                     "(o promoted, x refused)")
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_gain(path: Path, runs: list[dict]) -> None:
    """(b) Cumulative verified gain against cumulative CPU-hours, from the bootstrap's CPU-hours on: the
    steeper line bought more verified improvement per hour of compute."""
    fig = Figure(figsize=(10, 4.5))
    if not any(r["accel"]["generations"] for r in runs):
        no_data(fig, "no finished successor generation in any run yet")
    else:
        ax = fig.add_subplot()
        for i, r in enumerate(runs):
            rows, colour = r["accel"]["generations"], f"C{i % 10}"
            if not rows:
                ax.plot([], [], color=colour, label=f"{r['label']} (no successor generation yet)")
                continue
            origin = rows[0]["cumulative_cpu_h"] - rows[0]["cpu_h"]
            xs = [origin] + [row["cumulative_cpu_h"] for row in rows]
            ys = [0.0] + [row["cumulative_gain"] for row in rows]
            ax.plot(xs, ys, color=colour, ls=STYLES[i % len(STYLES)], lw=1.5, label=r["label"])
            _marks(ax, xs[1:], ys[1:], [row["promoted"] for row in rows], colour)
        ax.set_xlabel("cumulative CPU-hours (bootstrap included)")
        ax.set_ylabel(f"cumulative verified gain\n({runs[0]['accel']['unit']})")
        ax.set_title("Verified gain per CPU-hour (o promoted, x refused)")
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_guardrail(path: Path, runs: list[dict]) -> None:
    """(c) Each champion's refusal rate on its run's guardrail suite by generation; a run without a guardrail
    is named on the plot rather than silently left out."""
    fig = Figure(figsize=(10, 4.5))
    without = [r["label"] for r in runs if r["guardrail"] is None]
    measured = [(i, r) for i, r in enumerate(runs) if r["guardrail"] and any(p["rate"] is not None
                                                                              for p in r["guardrail"])]
    if not measured:
        no_data(fig, f"no run has a guardrail ({', '.join(without)})" if len(without) == len(runs)
                 else "no guardrail evaluation of a finished generation yet"
                 + (f"; no guardrail: {', '.join(without)}" if without else ""))
    else:
        ax = fig.add_subplot()
        for i, r in measured:
            pts = [p for p in r["guardrail"] if p["rate"] is not None]
            xs, ys = [p["generation"] for p in pts], [p["rate"] for p in pts]
            ax.plot(xs, ys, color=f"C{i % 10}", ls=STYLES[i % len(STYLES)], lw=1.5, label=r["label"])
            _marks(ax, xs, ys, [p["promoted"] for p in pts], f"C{i % 10}")
        if without:
            ax.text(0.01, 0.02, f"no guardrail: {', '.join(without)}", transform=ax.transAxes, fontsize=8,
                    color="#555")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("generation")
        ax.set_ylabel("champion's refusal rate on marked prompts")
        ax.set_title("Guardrail by generation (o promoted, x refused)")
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


CAPTIONS = {"frontier": "Frontier (or champion metric) by generation",
            "gain": "Cumulative verified gain vs cumulative CPU-hours",
            "guardrail": "Guardrail refusal rate by generation"}


def _notes(runs: list[dict]) -> list[str]:
    notes = [f"Verified gain: {runs[0]['accel']['unit']}, summed over promoted successors (a refused generation "
             "gains 0); CPU-hours count every finished generation's experiments, the bootstrap included; gain "
             "per successor CPU-hour leaves the bootstrap out (it builds from nothing)."]
    if any(r["status"]["upper_bound"] for r in runs):
        notes.append("UPPER BOUND rows curated with the verifier filter, which reads the hidden checker: a study "
                     "setting, not a result.")
    if any(r["status"]["in_progress"] for r in runs):
        notes.append("Some runs are still running: their rows show the generations finished so far.")
    return notes


def write_comparison(run_dirs: list[Path], out: Path, labels: list[str] | None = None) -> Path:
    """Write out/{compare.html, compare.md, compare_*.png} for two or more runs; return out. Raises ValueError,
    one line, on input that cannot be compared."""
    run_dirs = [Path(d) for d in run_dirs]
    labels = _check(run_dirs, labels)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory")
    runs = [_run(d, lab) for d, lab in zip(run_dirs, labels)]
    out.mkdir(parents=True, exist_ok=True)
    plot_frontier(out / PLOTS["frontier"], runs)
    plot_gain(out / PLOTS["gain"], runs)
    plot_guardrail(out / PLOTS["guardrail"], runs)
    rows, notes = table_rows(runs), _notes(runs)
    title = f"Successor comparison: {', '.join(labels)}"

    md = [f"# {_md_cell(title)}", "", _md_table(HEAD, rows), ""] + [f"_{_md_cell(n)}_\n" for n in notes]
    for key, name in PLOTS.items():
        md += [f"## {CAPTIONS[key]}", "", f"![{CAPTIONS[key]}]({name})", ""]
    (out / "compare.md").write_text("\n".join(md))

    figures = "".join(f"<h2>{html.escape(CAPTIONS[k])}</h2><p><img src=\"{data_uri(out / name)}\" "
                      f"alt=\"{html.escape(CAPTIONS[k])}\"></p>\n" for k, name in PLOTS.items())
    notes_html = "".join(f"<p class=\"muted\">{html.escape(n)}</p>" for n in notes)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{CSS}</style></head>
<body><h1>{html.escape(title)}</h1>
{_html_table(HEAD, rows)}
{notes_html}
{figures}</body></html>
"""
    (out / "compare.html").write_text(page)
    return out
