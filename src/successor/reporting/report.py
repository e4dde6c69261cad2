"""`successor report`: the lineage as a shareable page (Markdown, and HTML with every plot embedded, so the one
file can be mailed or attached), the plots as PNG files beside it, and a one-screen summary.md.

Reads the store read-only, so it can run beside a live loop or on a killed run; whatever is missing (a running
generation, a stage not yet done) shows as a dash instead of failing.
"""
from __future__ import annotations

import base64
import html
import math
import sqlite3
from pathlib import Path
from typing import Any

from ..config import CuratorConfig
from ..oversight.verify import verify_run
from .lineage import acceleration, candidates, fidelity, guardrail_points, open_ro, sealed_grid, stage_result, tree
from .oversight import APPROVAL_HEAD, VIOLATION_HEAD, approval_rows, isolation_line, violation_rows
from .plots import (
    GUIDES,
    HORIZON,
    plot_acceleration,
    plot_frontier,
    plot_guardrail,
    plot_heatmap,
    plot_lineage,
    projection_label,
)
from .runconfig import run_config, workload_of
from .status import UPPER_BOUND, status_dict
from .verified import verified_line, verified_short

DASH = "—"
HIDDEN = "measured with the hidden checker, never used by the loop"
CAND_HEAD = ["candidate", "role", "recipe differences", "experiment", "validation score", "promoted",
             "gate reason"]
SEL_HEAD = ["generation", "selected", "incumbent (control arm)", "challengers' p vs the incumbent's probe",
            "forget a solved level on validation", "why"]
CUR_HEAD = ["generation", "level", "labels kept / labelled", "votes needed", "dev labels wrong / passed",
            "true noise rate (hidden)†", "note"]
GUARD_HEAD = ["generation", "champion's refusal rate", "vs parent champion", "vs generation 0", "weakest levels",
              "successor's rate", "successor p vs parent", "successor p vs generation 0", "guardrail verdict"]
ACCEL_HEAD = ["generation", "promoted", "verified gain", "frontier gain", "CPU-h", "gain per CPU-h",
              "cumulative gain", "cumulative CPU-h"]
CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f0f0f0}tr:nth-child(even){background:#fafafa}
img{max-width:100%;border:1px solid #eee}.ok{color:#070}.bad{color:#b00}.muted{color:#777}"""


def _fmt(x: Any, spec: str = ".3f") -> str:
    return DASH if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _candidate_rows(db: sqlite3.Connection) -> list[list[str]]:
    """One row per proposed candidate, joining its recipe, experiment, validation score and gate decision."""
    return [[c["id"], c["role"], c["rationale"] or DASH, c["status"], _fmt(c["score"]),
             DASH if c["promoted"] is None else ("yes" if c["promoted"] else "no"),
             c["reason"] or "no gate decision yet"] for c in candidates(db)]


def _why_selected(sel: dict) -> str:
    selected, incumbent, p = sel.get("selected"), sel.get("incumbent"), sel.get("p_vs_incumbent") or {}
    if selected is None:
        return "no candidate finished"
    if incumbent is None:
        return "no incumbent that keeps every solved level: the best validation score"
    if selected == incumbent:
        return "incumbent kept: no challenger beat it significantly" if p else "incumbent ranked first"
    return f"{selected} beat the incumbent (p={p[selected]:.3g})"


def _selection_rows(db: sqlite3.Connection) -> list[list[str]]:
    """Per generation, which recipe trained the successor and why: the incumbent stays unless a challenger's
    probe is significantly better on the same validation items."""
    rows = []
    for (g,) in db.execute("SELECT idx FROM generations WHERE idx > 0 ORDER BY idx"):
        sel = stage_result(db, g, "select")
        if sel is None:
            rows.append([str(g), DASH, DASH, DASH, DASH, "select stage not done"])
            continue
        p = sel.get("p_vs_incumbent") or {}
        forgot = [c for c, keeps in (sel.get("keeps_solved_levels") or {}).items() if not keeps]
        rows.append([str(g), sel.get("selected") or DASH, sel.get("incumbent") or DASH,
                     ", ".join(f"{c}: {v:.3g}" for c, v in p.items()) or DASH, ", ".join(forgot) or "none",
                     _why_selected(sel)])
    return rows


def _curation_rows(db: sqlite3.Connection) -> list[list[str]]:
    """Per generation and level, what the curator labelled and kept; the hidden noise rate is for humans only."""
    rows = []
    for (g,) in db.execute("SELECT idx FROM generations ORDER BY idx"):
        cur = stage_result(db, g, "curate")
        if cur is None or not cur.get("levels"):
            why = "curate stage not done" if cur is None else cur.get("skipped") or DASH
            rows.append([str(g), DASH, DASH, DASH, DASH, DASH, why])
            continue
        for lv in cur["levels"]:
            rows.append([str(g), _fmt(lv["level"], "d"), f"{lv['kept']} / {lv['labelled']}",
                         _fmt(lv["threshold"], ".0%"), f"{lv['dev_wrong']} / {lv['dev_passed']}",
                         _fmt(lv["true_noise_hidden"], ".1%"), lv["skipped"] or "curated" + (
                             f"; {lv['injected']} labels corrupted on purpose (noise ablation)"
                             if lv.get("injected") else "")])
    return rows


def _guardrail_rows(points: list[dict]) -> list[list[str]]:
    rows, origin, prev = [], None, None
    for p in points:
        rate, succ = p["rate"], p["successor"] or {}
        origin = rate if origin is None else origin
        weakest = sorted(p["levels"].items(), key=lambda kv: (kv[1], kv[0]))[:2]
        ref = lambda key: (succ.get(key) or {}).get("p_value")  # noqa: E731
        if not succ:
            verdict = DASH
        elif succ.get("vs_parent") is None and succ.get("vs_origin") is None:
            verdict = "bootstrap: sets the reference"
        else:
            verdict = "non-inferior to both" if succ.get("ok") else "refused: not shown non-inferior"
        rows.append([str(p["generation"]), _fmt(rate),
                     "reference" if prev is None else _fmt(None if rate is None else rate - prev, "+.3f"),
                     "reference" if prev is None else _fmt(None if rate is None else rate - origin, "+.3f"),
                     ", ".join(f"{lvl}: {a:.2f}" for lvl, a in weakest) or DASH, _fmt(succ.get("rate")),
                     _fmt(ref("vs_parent"), ".3g"), _fmt(ref("vs_origin"), ".3g"), verdict])
        prev = rate if rate is not None else prev
    return rows


def guardrail_note(points: list[dict] | None) -> str:
    if points is None:
        return "The guardrail is off in this run (task.guardrail_per_level is 0)."
    f, k = fidelity(points)
    if f is None:
        return "No promotion after generation 0 yet: no measured fidelity to project."
    origin = next((p["rate"] for p in points if p["rate"] is not None), None)
    return (f"Measured over {k} promotion(s): {projection_label(f)} of the refusal rate"
            + (f" ({_fmt(origin)} at generation 0 -> {_fmt(origin * f ** HORIZON)})." if origin is not None else ".")
            + " For scale: " + "; ".join(projection_label(g) for g in GUIDES) + ".")


def _md_cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows])


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>\n" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>\n{trs}</tbody></table>"


COMPUTE_HEAD = ["generation", "experiments", "attempts", "CPU-s", "sandbox wall s", "FLOPs (estimated)"]
RUNG_HEAD = ["generation", "candidate", "rung", "steps", "budget", "dev score", "rank", "went on", "experiment"]


def compute_rows(st: dict) -> list[list[str]]:
    """What each generation's experiments used, and the run's total (status_dict's counts)."""
    def row(name: str, c: dict) -> list[str]:
        return [name, str(c["experiments"]), str(c["attempts"]), f"{c['cpu_s']:.0f}", f"{c['wall_s']:.0f}",
                f"{c['flops']:.3g}" if c["flops"] else "-"]
    return [row(str(g["generation"]), g["compute"]) for g in st["generations"]] + [row("run", st["compute"])]


def rung_rows(db: sqlite3.Connection) -> list[list[str]]:
    """Successive halving: every candidate on every rung it reached."""
    return [[str(r["generation"]), r["candidate_id"], str(r["rung"]), str(r["steps"]), f"{r['budget']:.0f} {r['unit']}",
             _fmt(r["dev_score"]), str(r["rank"] or "-"), "yes" if r["promoted"] else "no", r["experiment_id"]]
            for r in db.execute("SELECT * FROM rungs ORDER BY generation, rung, rank IS NULL, rank, candidate_id")]


def _header(run_dir: Path, cfg: dict, st: dict) -> list[tuple[str, str]]:
    """The few facts a reader wants first, audit verdict included."""
    ok, lines = verify_run(run_dir)
    msg = lines[0] if ok else f"{len(lines)} problem(s), first: {lines[0]}"
    prog = st["in_progress"]
    return [
        ("run", str(cfg.get("name", run_dir.name))),
        ("seed", str(cfg.get("seed", DASH))),
        ("task and curator", "{} task; {filter} filter, {schedule} schedule, {policy} data".format(
            cfg.get("task", {}).get("name", "addition"),
            **CuratorConfig().model_dump() | cfg.get("curator", {}))),
        ("generations done", planned_line(cfg, st)),
        ("in progress", f"generation {prog['generation']}, stage {prog['stage']}" if prog else "no"),
        ("promoted", str(st["promoted"])),
        ("final champion", st["champion"][:12] if st["champion"] else DASH),
        ("final frontier", _fmt(st["frontier"], "d")),
        ("audit log and artifacts", ("verified: " if ok else "FAILED: ") + msg),
        ("what verified means", verified_line(cfg.get("gate"))),
    ]


def acceleration_rows(acc: dict) -> list[list[str]]:
    """One row per finished successor generation of `lineage.acceleration`: what the gate verified and its cost."""
    return [[str(r["generation"]), "yes" if r["promoted"] else "no", _fmt(r["gain"], "+.4g"),
             _fmt(r["frontier_gain"], "+d"), _fmt(r["cpu_h"], ".3g"), _fmt(r["gain_per_cpu_h"], ".3g"),
             _fmt(r["cumulative_gain"], "+.4g"), _fmt(r["cumulative_cpu_h"], ".3g")] for r in acc["generations"]]


def acceleration_verdicts(acc: dict) -> list[tuple[str, str]]:
    """The two trend verdicts and the run's total, as (label, text); the report and the summary both show them."""
    succ_h = sum(r["cpu_h"] for r in acc["generations"])
    return [("gain per generation", acc["per_generation"]["verdict"]),
            ("gain per CPU-hour", acc["per_cpu_hour"]["verdict"]),
            ("total verified gain", f"{acc['total_gain']:+.4g} ({acc['unit']}; a refused generation gains 0): "
                                    f"{_fmt(acc['mean_gain_per_cpu_h'], '.3g')} per CPU-hour over the successor "
                                    f"generations' {succ_h:.3g} CPU-h ({acc['total_cpu_h']:.3g} with the bootstrap)")]


def data_uri(path: Path) -> str:
    """A PNG as a data: URI, so the HTML page needs no file beside it."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def html_img(path: Path, alt: str) -> str:
    return f'<p><img src="{data_uri(path)}" alt="{html.escape(alt)}"></p>'


def html_nav(sections: list[tuple[str, str]]) -> str:
    """In-page links to the sections (the page's only links: it references nothing outside itself)."""
    return "<nav><p>" + " · ".join(f'<a href="#{i}">{html.escape(t)}</a>' for i, t in sections) + "</p></nav>"


def compute_line(c: dict) -> str:
    flops = f", {c['flops']:.3g} FLOPs (estimated)" if c["flops"] else ""
    return (f"{c['experiments']} experiments ({c['attempts']} attempts), {c['cpu_s'] / 3600:.3g} CPU-h, "
            f"{c['wall_s'] / 3600:.3g} sandbox wall-h{flops}")


def summary_tail(st: dict, acc: dict, approvals: list[list[str]], audit: str) -> list[tuple[str, str]]:
    """The summary's lines that every workload shares: acceleration, compute, oversight and the audit verdict."""
    waiting = sum(1 for r in approvals if r[2] == "waiting")
    verdicts = acceleration_verdicts(acc)
    return [("acceleration", f"per generation: {verdicts[0][1]}; per CPU-hour: {verdicts[1][1]}"),
            ("verified gain", verdicts[2][1]),
            ("compute", compute_line(st["compute"])),
            ("sandbox violations", str(st["violations"])),
            ("human decisions", f"{len(approvals) - waiting}" + (f" ({waiting} waiting)" if waiting else "")),
            ("audit log and artifacts", audit)]


def write_summary(out: Path, title: str, facts: list[tuple[str, str]]) -> None:
    """out/summary.md: the run on one screen, for a message or an issue."""
    lines = [f"# {_md_cell(title)}", ""] + [f"- **{k}**: {_md_cell(v)}" for k, v in facts]
    (out / "summary.md").write_text("\n".join(lines + ["", "Full report: report.html (self-contained) or report.md.",
                                                         ""]))


def promoted_line(done: list[dict]) -> str:
    """Promotions among the finished successor generations; the bootstrap's own gate is said apart."""
    succ = [g for g in done if g["generation"] > 0]
    boot = next((g for g in done if g["generation"] == 0), None)
    return (f"{sum(1 for g in succ if g['promoted'])} of {len(succ)} successor generation(s)"
            + ("" if boot is None else f"; the bootstrap {'passed' if boot['promoted'] else 'failed'} its gate"))


def planned_line(cfg: dict, st: dict) -> str:
    planned = (cfg.get("loop") or {}).get("generations")
    done = sum(1 for g in st["generations"] if g["status"] == "done")
    return f"{done}" + (f" of {planned + 1} (bootstrap + {planned})" if planned else "")


def write_report(run_dir: Path) -> Path:
    """Write run_dir/report/: report.md, a self-contained report.html, summary.md and the plots as PNG files
    (accuracy_heatmap, frontier, guardrail, acceleration, lineage); return the folder."""
    run_dir = Path(run_dir)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    cfg = run_config(run_dir)
    own = workload_of(cfg).write_report(run_dir, out, CSS)  # a workload's own report, where it has one
    if own is not None:
        return own
    human = cfg.get("task", {}).get("human_levels")
    st = status_dict(run_dir)
    db = open_ro(run_dir)
    try:
        levels, gens, grid = sealed_grid(db)
        cands, selection, curation = _candidate_rows(db), _selection_rows(db), _curation_rows(db)
        guard, lineage = guardrail_points(db), tree(db)
        sandbox, violations, approvals = isolation_line(db), violation_rows(db), approval_rows(db)
        rungs = rung_rows(db)
    finally:
        db.close()
    compute, acc = compute_rows(st), acceleration(st)
    plot_heatmap(out / "accuracy_heatmap.png", levels, gens, grid)
    plot_frontier(out / "frontier.png", st["generations"], int(human[1]) if human else None)
    plot_guardrail(out / "guardrail.png", guard, cfg.get("gate", {}).get("guardrail_margin"))
    plot_acceleration(out / "acceleration.png", acc)
    plot_lineage(out / "lineage.png", lineage)
    guard_rows, guard_note = _guardrail_rows(guard or []), guardrail_note(guard)
    accel, verdicts = acceleration_rows(acc), acceleration_verdicts(acc)
    head = _header(run_dir, cfg, st)
    title = f"Successor run report: {head[0][1]}"
    cur_note = f"† True noise rate: {HIDDEN}; shown for analysis only."
    cur_cfg = cfg.get("curator", {})
    if st["upper_bound"]:
        cur_note = (f"{UPPER_BOUND} {cur_note}")
        head.insert(1, ("filter", UPPER_BOUND))
    if (cur_cfg.get("noise") or {}).get("rate"):
        n = cur_cfg["noise"]
        cur_note += (f" Label noise injected on purpose (an ablation): {n['rate']:.0%} of kept labels at "
                     f"generation(s) {', '.join(map(str, n.get('generations') or [])) or 'every one'}.")
    done, facts = [g for g in st["generations"] if g["status"] == "done"], dict(head)
    write_summary(out, f"Successor run summary: {facts['run']}", [
        ("generations done", facts["generations done"]), ("in progress", facts["in progress"]),
        ("promoted", promoted_line(done)),
        ("final champion", f"{facts['final champion']} (frontier {facts['final frontier']})"),
        ("frontier by generation", " → ".join(_fmt(g["frontier"], "d") for g in done) or DASH),
        ("guardrail", guard_note), ("what verified means", verified_short(cfg.get("gate")))]
        + ([("filter", UPPER_BOUND)] if st["upper_bound"] else [])
        + summary_tail(st, acc, approvals, facts["audit log and artifacts"]))

    accel_md = [f"- **{k}**: {_md_cell(v)}" for k, v in verdicts]
    md = [f"# {_md_cell(title)}", ""] + [f"- **{k}**: {_md_cell(v)}" for k, v in head] + [
        "", "Summary on one screen: [summary.md](summary.md).", "",
        "## Plots", "", "![sealed accuracy heatmap](accuracy_heatmap.png)", "", "![frontier](frontier.png)", "",
        "## Acceleration", "", "![acceleration](acceleration.png)", ""] + accel_md + [
        "", _md_table(ACCEL_HEAD, accel), "", "## Lineage", "", "![lineage tree](lineage.png)", "",
        "## Candidates", "", _md_table(CAND_HEAD, cands), "", "## Selection", "", _md_table(SEL_HEAD, selection),
        "", "## Curation", "", f"_{cur_note}_", "",
        _md_table(CUR_HEAD, curation), "", "## Guardrail", "", "![guardrail by generation](guardrail.png)", "",
        _md_cell(guard_note), "", _md_table(GUARD_HEAD, guard_rows), "", "## Oversight", "", _md_cell(sandbox), "",
        "### Sandbox violations", "", _md_table(VIOLATION_HEAD, violations), "", "### Human decisions", "",
        _md_table(APPROVAL_HEAD, approvals), "", "## Compute", "", _md_table(COMPUTE_HEAD, compute), "",
        "### Successive halving", "", _md_table(RUNG_HEAD, rungs), ""]
    (out / "report.md").write_text("\n".join(md))

    items = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in head)
    accel_items = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in verdicts)
    nav = html_nav([("plots", "Plots"), ("acceleration", "Acceleration"), ("lineage", "Lineage"),
                    ("candidates", "Candidates"), ("selection", "Selection"), ("curation", "Curation"),
                    ("guardrail", "Guardrail"), ("oversight", "Oversight"), ("compute", "Compute")])
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{CSS}</style></head>
<body><h1>{html.escape(title)}</h1><ul>{items}</ul>{nav}
<h2 id="plots">Plots</h2>{html_img(out / "accuracy_heatmap.png", "sealed accuracy heatmap")}
{html_img(out / "frontier.png", "frontier per generation")}
<h2 id="acceleration">Acceleration</h2>{html_img(out / "acceleration.png", "acceleration")}
<ul>{accel_items}</ul>{_html_table(ACCEL_HEAD, accel)}
<h2 id="lineage">Lineage</h2>{html_img(out / "lineage.png", "lineage tree")}
<h2 id="candidates">Candidates</h2>{_html_table(CAND_HEAD, cands)}
<h2 id="selection">Selection</h2>{_html_table(SEL_HEAD, selection)}
<h2 id="curation">Curation</h2><p class="muted">{html.escape(cur_note)}</p>{_html_table(CUR_HEAD, curation)}
<h2 id="guardrail">Guardrail</h2>{html_img(out / "guardrail.png", "guardrail by generation")}
<p>{html.escape(guard_note)}</p>{_html_table(GUARD_HEAD, guard_rows)}
<h2 id="oversight">Oversight</h2><p>{html.escape(sandbox)}</p>
<h3>Sandbox violations</h3>{_html_table(VIOLATION_HEAD, violations)}
<h3>Human decisions</h3>{_html_table(APPROVAL_HEAD, approvals)}
<h2 id="compute">Compute</h2>{_html_table(COMPUTE_HEAD, compute)}
<h3>Successive halving</h3>{_html_table(RUNG_HEAD, rungs)}
</body></html>
"""
    (out / "report.html").write_text(page)
    return out
