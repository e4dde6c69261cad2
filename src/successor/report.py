"""`successor report`: the lineage as a human-readable page (Markdown and HTML) with three PNG plots.

Reads the store read-only, so it can run beside a live loop or on a killed run; whatever is missing (a running
generation, a stage not yet done) shows as a dash instead of failing.
"""
from __future__ import annotations

import html
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers; set before anything imports pyplot
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .oversight_report import APPROVAL_HEAD, VIOLATION_HEAD, approval_rows, isolation_line, violation_rows  # noqa: E402
from .config import CuratorConfig  # noqa: E402
from .verify import verify_run  # noqa: E402
from .status import UPPER_BOUND, status_dict  # noqa: E402

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
HORIZON = 50  # generations the compounding projection looks ahead
GUIDES = (0.999, 0.99)  # per-generation fidelities drawn for scale ("99.9% per generation is 95.12% after 50")
CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f0f0f0}tr:nth-child(even){background:#fafafa}
img{max-width:100%;border:1px solid #eee}.ok{color:#070}.bad{color:#b00}.muted{color:#777}"""


def _stage(db: sqlite3.Connection, g: int, name: str) -> dict | None:
    """A stage's result only once it is done: a running stage has no result to show."""
    row = db.execute("SELECT status, result FROM stages WHERE generation=? AND name=?", (g, name)).fetchone()
    return json.loads(row["result"]) if row and row["status"] == "done" and row["result"] else None


def _fmt(x: Any, spec: str = ".3f") -> str:
    return DASH if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _sealed_grid(db: sqlite3.Connection) -> tuple[list[int], list[int], np.ndarray]:
    """(levels, generations, accuracy[level, generation]) of each finished generation's champion."""
    gens = db.execute("SELECT idx, champion_model, sealed_digest FROM generations "
                      "WHERE champion_model IS NOT NULL ORDER BY idx").fetchall()
    acc: dict[tuple[int, int], float] = {}
    for g in gens:
        sql, args = "SELECT level, n, correct FROM evaluations WHERE model=? AND tier='sealed'", [g["champion_model"]]
        if g["sealed_digest"]:
            sql, args = sql + " AND tier_digest=?", args + [g["sealed_digest"]]
        for r in db.execute(sql, args):
            if r["n"]:
                acc[(r["level"], g["idx"])] = r["correct"] / r["n"]
    levels = sorted({lvl for lvl, _ in acc})
    idx = [g["idx"] for g in gens]
    grid = np.full((len(levels), len(idx)), np.nan)
    for (lvl, g), a in acc.items():
        grid[levels.index(lvl), idx.index(g)] = a
    return levels, idx, grid


def _candidate_rows(db: sqlite3.Connection) -> list[list[str]]:
    """One row per proposed candidate, joining its recipe, experiment, validation score and gate decision."""
    rows: list[list[str]] = []
    cache: dict[int, tuple[dict, dict]] = {}
    for c in db.execute("SELECT id, generation, rationale FROM candidates ORDER BY generation, ordinal"):
        g, cid = c["generation"], c["id"]
        if g not in cache:
            cache[g] = (_stage(db, g, "interpret") or {}, _stage(db, g, "select") or {})
        interpret, select = cache[g]
        exp = db.execute("SELECT status FROM experiments WHERE candidate_id=? AND kind='candidate' "
                         "ORDER BY started DESC LIMIT 1", (cid,)).fetchone()
        dec = db.execute("SELECT role, promoted, reason FROM gate_decisions WHERE generation=? AND candidate_id=?",
                         (g, cid)).fetchone()
        info = interpret.get(cid, {})
        role = dec["role"] if dec and dec["role"] else (
            "successor" if select.get("selected") == cid else "candidate")
        status = exp["status"] if exp else info.get("status", "not started")
        rows.append([cid, role, c["rationale"] or DASH, status, _fmt(info.get("score")),
                     DASH if dec is None else ("yes" if dec["promoted"] else "no"),
                     dec["reason"] if dec else "no gate decision yet"])
    return rows


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
        sel = _stage(db, g, "select")
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
        cur = _stage(db, g, "curate")
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


def _guardrail_points(db: sqlite3.Connection) -> list[dict] | None:
    """Per finished generation: its champion's refusal rate on the guardrail suite (pooled and by level), whether
    the generation promoted, and the successor's guardrail stats from its gate decision. None: no guardrail."""
    row = db.execute("SELECT value FROM meta WHERE key='tier.guardrail'").fetchone()
    if row is None:
        return None
    points = []
    for g in db.execute("SELECT idx, promoted, champion_model FROM generations WHERE status='done' "
                        "AND champion_model IS NOT NULL ORDER BY idx").fetchall():
        levels = {r["level"]: r["correct"] / r["n"] for r in db.execute(
            "SELECT level, n, correct FROM evaluations WHERE model=? AND tier='guardrail' AND tier_digest=?",
            (g["champion_model"], row["value"])) if r["n"]}
        cells = db.execute("SELECT sum(n), sum(correct) FROM evaluations WHERE model=? AND tier='guardrail' AND "
                           "tier_digest=?", (g["champion_model"], row["value"])).fetchone()
        dec = db.execute("SELECT stats FROM gate_decisions WHERE generation=? AND role='successor'",
                         (g["idx"],)).fetchone()
        stats = (json.loads(dec["stats"]) if dec and dec["stats"] else {}).get("guardrail")
        points.append({"generation": g["idx"], "promoted": bool(g["promoted"]), "levels": levels,
                       "rate": cells[1] / cells[0] if cells[0] else None, "successor": stats})
    return points


def fidelity(points: list[dict]) -> tuple[float | None, int]:
    """The mean per-generation ratio rate_n / rate_(n-1) of the champion line, over the promotions (a refused
    generation keeps its champion, so its ratio is 1 by construction and says nothing), and how many there were."""
    ratios, prev = [], None
    for p in points:
        if p["rate"] is not None and prev is not None and p["promoted"] and prev > 0:
            ratios.append(p["rate"] / prev)
        prev = p["rate"] if p["rate"] is not None else prev
    return (float(np.mean(ratios)) if ratios else None), len(ratios)


def _projection_label(f: float, start: float | None = None) -> str:
    tail = f"{f ** HORIZON:.3f}" if start is None else f"{start * f ** HORIZON:.3f}"
    return f"fidelity {f:.4g}/gen -> {tail} after {HORIZON}"


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


def _guardrail_note(points: list[dict] | None) -> str:
    if points is None:
        return "The guardrail is off in this run (task.guardrail_per_level is 0)."
    f, k = fidelity(points)
    if f is None:
        return "No promotion after generation 0 yet: no measured fidelity to project."
    origin = next((p["rate"] for p in points if p["rate"] is not None), None)
    return (f"Measured over {k} promotion(s): {_projection_label(f)} of the refusal rate"
            + (f" ({_fmt(origin)} at generation 0 -> {_fmt(origin * f ** HORIZON)})." if origin is not None else ".")
            + " For scale: " + "; ".join(_projection_label(g) for g in GUIDES) + ".")


def _plot_guardrail(path: Path, points: list[dict] | None, margin: float | None) -> None:
    """Refusal rate on the guardrail suite by generation beside the compounding projection fidelity^n: a loss too
    small for one gate to see is what compounds over fifty generations."""
    fig = Figure(figsize=(12, 4.2))
    done = [p for p in (points or []) if p["rate"] is not None]
    if points is None or not done:
        _no_data(fig, "guardrail off (task.guardrail_per_level is 0)" if points is None
                 else "no guardrail evaluation of a finished generation yet")
        fig.savefig(path, dpi=100)
        return
    ax, proj = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    xs, ys, origin = [p["generation"] for p in done], [p["rate"] for p in done], done[0]["rate"]
    ax.plot(xs, ys, color="#555", lw=1.2, label="champion")
    for flag, style in ((True, dict(marker="o", color="tab:green", label="promoted")),
                        (False, dict(marker="x", color="tab:red", label="refused"))):
        pts = [(p["generation"], p["rate"]) for p in done if p["promoted"] is flag]
        if pts:
            ax.scatter(*zip(*pts), s=45, zorder=3, **style)
    ax.axhline(origin, ls="--", color="tab:blue", label=f"generation {done[0]['generation']} reference "
               f"({origin:.3f})")
    if margin:
        ax.axhline(origin - margin, ls=":", color="tab:blue", label=f"reference - margin ({origin - margin:.3f})")
    ax.set_ylim(min(ys + [origin - (margin or 0)]) - 0.05, 1.02)
    ax.set_xticks(xs)
    ax.set_xlabel("generation")
    ax.set_ylabel("refusal rate on marked prompts")
    ax.set_title("Guardrail by generation")
    ax.legend(loc="lower left", fontsize=7)
    n = np.arange(HORIZON + 1)
    f, k = fidelity(points)
    for g, style in zip(GUIDES, ("-.", ":")):
        proj.plot(n, origin * g ** n, ls=style, color="grey", label=_projection_label(g, origin))
    if f is not None:
        proj.plot(n, np.clip(origin * f ** n, 0, 1), color="tab:red", lw=2,
                  label=f"measured ({k} promotion(s)): {_projection_label(f, origin)}")
    proj.scatter(xs, ys, color="black", s=20, zorder=3, label="measured champion rate")
    proj.set_xlim(0, HORIZON)
    proj.set_ylim(0, 1.02)
    proj.set_xlabel("generation")
    proj.set_ylabel("projected refusal rate (rate_0 x fidelity^n)")
    proj.set_title("Compounding projection")
    proj.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _no_data(fig: Figure, text: str) -> None:
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center")
    ax.set_axis_off()


def _plot_heatmap(path: Path, levels: list[int], gens: list[int], grid: np.ndarray) -> None:
    """Accuracy by level and generation: the eye finds where the champion stops generalising."""
    fig = Figure(figsize=(min(16, max(5, 0.7 * len(gens) + 2.5)), min(14, max(4, 0.35 * len(levels) + 1.5))))
    if not levels or not gens:
        _no_data(fig, "no finished generation with sealed evaluations yet")
    else:
        ax = fig.add_subplot()
        im = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(gens)), [str(g) for g in gens])
        step = max(1, len(levels) // 30)
        ax.set_yticks(range(0, len(levels), step), [str(lvl) for lvl in levels[::step]])
        ax.set_xlabel("generation")
        ax.set_ylabel("operand length (level)")
        ax.set_title("Sealed accuracy of each generation's champion")
        fig.colorbar(im, ax=ax, label="sealed accuracy")
        if len(levels) <= 30 and len(gens) <= 30:
            for (i, j), a in np.ndenumerate(grid):
                if not math.isnan(a):
                    ax.text(j, i, f"{a:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if a > 0.6 else "white")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_frontier(path: Path, gens: list[dict], human_max: int | None) -> None:
    """The >=99% frontier per generation; promoted and refused generations marked apart."""
    fig = Figure(figsize=(min(16, max(5, 0.5 * len(gens) + 3)), 4))
    done = [g for g in gens if g["status"] == "done" and g["frontier"] is not None]
    if not done:
        _no_data(fig, "no finished generation yet")
    else:
        ax = fig.add_subplot()
        xs, ys = [g["generation"] for g in done], [g["frontier"] for g in done]
        ax.step(xs, ys, where="post", color="#555", lw=1.5, label="champion frontier")
        for flag, style in ((True, dict(marker="o", color="tab:green", label="promoted")),
                            (False, dict(marker="x", color="tab:red", label="refused"))):
            pts = [(g["generation"], g["frontier"]) for g in done if bool(g["promoted"]) is flag]
            if pts:
                ax.scatter(*zip(*pts), s=50, zorder=3, **style)
        if human_max is not None:
            ax.axhline(human_max, ls="--", color="grey", label=f"longest human-labelled level ({human_max})")
        ax.set_ylim(-0.4, max(ys + [human_max or 0]) + 1)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xticks(xs)
        ax.set_xlabel("generation")
        ax.set_ylabel("frontier (levels at >= 99%)")
        ax.set_title("Champion frontier per generation")
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


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
    planned = cfg.get("loop", {}).get("generations")
    done = sum(1 for g in st["generations"] if g["status"] == "done")
    ok, lines = verify_run(run_dir)
    msg = lines[0] if ok else f"{len(lines)} problem(s), first: {lines[0]}"
    prog = st["in_progress"]
    return [
        ("run", str(cfg.get("name", run_dir.name))),
        ("seed", str(cfg.get("seed", DASH))),
        ("task and curator", "{} task; {filter} filter, {schedule} schedule, {policy} data".format(
            cfg.get("task", {}).get("name", "addition"),
            **CuratorConfig().model_dump() | cfg.get("curator", {}))),
        ("generations done", f"{done}" + (f" of {planned + 1} (bootstrap + {planned})" if planned else "")),
        ("in progress", f"generation {prog['generation']}, stage {prog['stage']}" if prog else "no"),
        ("promoted", str(st["promoted"])),
        ("final champion", st["champion"][:12] if st["champion"] else DASH),
        ("final frontier", _fmt(st["frontier"], "d")),
        ("audit log and artifacts", ("verified: " if ok else "FAILED: ") + msg),
    ]


def write_report(run_dir: Path) -> Path:
    """Write run_dir/report/{report.md, report.html, accuracy_heatmap.png, frontier.png, guardrail.png}; return
    the folder."""
    run_dir = Path(run_dir)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.yaml"
    cfg = (yaml.safe_load(cfg_path.read_text()) or {}) if cfg_path.exists() else {}
    if cfg.get("workload") == "script":
        from .workloads.script.report import write_script_report

        return write_script_report(run_dir, out, CSS)
    human = cfg.get("task", {}).get("human_levels")
    st = status_dict(run_dir)
    db = sqlite3.connect(f"file:{run_dir / 'lineage.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        levels, gens, grid = _sealed_grid(db)
        cands, selection, curation = _candidate_rows(db), _selection_rows(db), _curation_rows(db)
        guard = _guardrail_points(db)
        sandbox, violations, approvals = isolation_line(db), violation_rows(db), approval_rows(db)
        rungs = rung_rows(db)
    finally:
        db.close()
    compute = compute_rows(st)
    _plot_heatmap(out / "accuracy_heatmap.png", levels, gens, grid)
    _plot_frontier(out / "frontier.png", st["generations"], int(human[1]) if human else None)
    _plot_guardrail(out / "guardrail.png", guard, cfg.get("gate", {}).get("guardrail_margin"))
    guard_rows, guard_note = _guardrail_rows(guard or []), _guardrail_note(guard)
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

    md = [f"# {_md_cell(title)}", ""] + [f"- **{k}**: {_md_cell(v)}" for k, v in head] + [
        "", "## Plots", "", "![sealed accuracy heatmap](accuracy_heatmap.png)", "", "![frontier](frontier.png)",
        "", "## Candidates", "", _md_table(CAND_HEAD, cands), "", "## Selection", "", _md_table(SEL_HEAD, selection),
        "", "## Curation", "", f"_{cur_note}_", "",
        _md_table(CUR_HEAD, curation), "", "## Guardrail", "", "![guardrail by generation](guardrail.png)", "",
        _md_cell(guard_note), "", _md_table(GUARD_HEAD, guard_rows), "", "## Oversight", "", _md_cell(sandbox), "",
        "### Sandbox violations", "", _md_table(VIOLATION_HEAD, violations), "", "### Human decisions", "",
        _md_table(APPROVAL_HEAD, approvals), "", "## Compute", "", _md_table(COMPUTE_HEAD, compute), "",
        "### Successive halving", "", _md_table(RUNG_HEAD, rungs), ""]
    (out / "report.md").write_text("\n".join(md))

    items = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in head)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{CSS}</style></head>
<body><h1>{html.escape(title)}</h1><ul>{items}</ul>
<h2>Plots</h2><p><img src="accuracy_heatmap.png" alt="sealed accuracy heatmap"></p>
<p><img src="frontier.png" alt="frontier per generation"></p>
<h2>Candidates</h2>{_html_table(CAND_HEAD, cands)}
<h2>Selection</h2>{_html_table(SEL_HEAD, selection)}
<h2>Curation</h2><p class="muted">{html.escape(cur_note)}</p>{_html_table(CUR_HEAD, curation)}
<h2>Guardrail</h2><p><img src="guardrail.png" alt="guardrail by generation"></p>
<p>{html.escape(guard_note)}</p>{_html_table(GUARD_HEAD, guard_rows)}
<h2>Oversight</h2><p>{html.escape(sandbox)}</p><h3>Sandbox violations</h3>{_html_table(VIOLATION_HEAD, violations)}
<h3>Human decisions</h3>{_html_table(APPROVAL_HEAD, approvals)}
<h2>Compute</h2>{_html_table(COMPUTE_HEAD, compute)}
<h3>Successive halving</h3>{_html_table(RUNG_HEAD, rungs)}
</body></html>
"""
    (out / "report.html").write_text(page)
    return out
