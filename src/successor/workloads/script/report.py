"""The report of a `script` run: the metric by generation, every candidate with its knobs and its diff, the gate's
numbers, what the researchers spent, and the oversight record (the same sections as tinylm's where they apply)."""
from __future__ import annotations

import html
import json
import sqlite3
from pathlib import Path

import yaml
from matplotlib.figure import Figure

from ...oversight.verify import verify_run
from ...reporting.lineage import acceleration, open_ro, tree
from ...reporting.oversight import APPROVAL_HEAD, VIOLATION_HEAD, approval_rows, isolation_line, violation_rows
from ...reporting.plots import plot_acceleration, plot_lineage
from ...reporting.report import (
    ACCEL_HEAD,
    COMPUTE_HEAD,
    acceleration_rows,
    acceleration_verdicts,
    compute_rows,
    html_img,
    html_nav,
    planned_line,
    promoted_line,
    summary_tail,
    write_summary,
)
from ...reporting.report import _html_table as html_table
from ...reporting.report import _md_table as md_table
from ...reporting.status import status_dict

GEN_HEAD = ["gen", "champion", "champion mean", "successor mean", "gain", "seeds", "p", "power", "decision"]
CAND_HEAD = ["candidate", "researcher", "knobs changed", "patch", "experiment mean ± sd", "status", "gate"]
LLM_HEAD = ["gen", "calls", "ok", "prompt tokens", "completion tokens", "USD"]
NOT_SCRIPT = "not applicable to a script run"


def _f(x, spec=".4g") -> str:
    return "-" if x is None else format(x, spec)


def _rows(db: sqlite3.Connection) -> tuple[list[list[str]], list[list[str]], list[tuple[str, str, str]], list]:
    interp, gens, cands, diffs, points = {}, [], [], [], []
    for r in db.execute("SELECT result FROM stages WHERE name='interpret' AND status='done'"):
        interp.update(json.loads(r["result"]))
    knobs_of = {r["id"]: json.loads(r["recipe"]) for r in db.execute("SELECT id, recipe FROM candidates")}
    prog_knobs = {r["digest"]: json.loads(r["knobs"]) for r in db.execute("SELECT digest, knobs FROM programs")}
    for g in db.execute("SELECT * FROM generations ORDER BY idx"):
        d = db.execute("SELECT * FROM gate_decisions WHERE generation=? AND role='successor'", (g["idx"],)).fetchone()
        s = json.loads(d["stats"]) if d and d["stats"] else {}
        gens.append([str(g["idx"]), (g["champion_model"] or "-")[:12], _f(s.get("champion_mean")),
                     _f(s.get("contender_mean")), _f(s.get("gain"), "+.4g") if "gain" in s else "-",
                     str(s.get("n", "-")), _f(s.get("p_value"), ".3g") if "p_value" in s else "-",
                     _f(s.get("power"), ".2f"),
                     d["reason"] if d else "no candidate reached the gate"])
        points.append((g["idx"], s.get("contender"), s.get("champion"), bool(g["promoted"])))
    for c in db.execute("SELECT c.id, c.generation, c.parent_model, c.rationale, s.diff, s.role, s.researcher, "
                        "s.expected, d.reason FROM candidates c LEFT JOIN script_candidates s ON s.candidate_id=c.id "
                        "LEFT JOIN gate_decisions d ON d.candidate_id=c.id ORDER BY c.generation, c.ordinal"):
        base = prog_knobs.get(c["parent_model"], {})
        changed = ", ".join(f"{k}={v}" for k, v in knobs_of[c["id"]].items() if base and base.get(k) != v)
        i = interp.get(c["id"], {})
        mean = f"{_f(i.get('score'))} ± {_f(i.get('sd'), '.2g')}" if i.get("score") is not None else "-"
        who = "/".join(x for x in (c["researcher"], c["role"]) if x) or "-"
        cands.append([c["id"], who, changed or ("as given" if c["parent_model"] is None else "none"),
                      "yes" if c["diff"] else "no", mean, i.get("status", "-"), c["reason"] or "-"])
        if c["diff"]:
            why = c["rationale"] + (f" (expected: {c['expected']})" if c["expected"] else "")
            diffs.append((c["id"], why, c["diff"]))
    return gens, cands, diffs, points


def verified_line(db: sqlite3.Connection) -> str:
    """What "verified" means for this run: across seeds, or (a program that ignores its seed, let through by
    `gate.seed_ignored: allow`) one seed only, with the generations it concerns."""
    one = []
    for d in db.execute("SELECT generation, stats FROM gate_decisions WHERE role='successor' ORDER BY generation"):
        s = json.loads(d["stats"]) if d["stats"] else {}
        if s.get("verified_across_seeds") is False:
            one.append(str(d["generation"]))
    if one:
        return (f"one seed, not verified across seeds: the program's runs did not depend on the seed (generation "
                f"{', '.join(one)}); each gain is one seed's, with no p-value")
    return ("across seeds: each promotion passed the gate's t-test on fresh paired seeds the harness drew; the "
            "power column is its chance to tell a gain of min_effect from none")


def _llm_rows(db: sqlite3.Connection) -> list[list[str]]:
    return [[str(r["generation"]), str(r["n"]), str(r["ok"]), str(r["pt"]), str(r["ct"]), f"{r['usd']:.4f}"]
            for r in db.execute("SELECT generation, COUNT(*) AS n, SUM(status='ok') AS ok, SUM(prompt_tokens) AS pt, "
                                "SUM(completion_tokens) AS ct, SUM(cost_usd) AS usd FROM llm_calls "
                                "GROUP BY generation ORDER BY generation")]


def _plot(path: Path, points: list, metric: str) -> None:
    """Every gate seed's number: the successor's beside the champion's it had to beat."""
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    labelled = False
    for g, succ, champ, promoted in points:
        if champ:
            ax.scatter([g - 0.1] * len(champ), champ, color="tab:gray", s=14,
                       label=None if labelled else "champion (gate seeds)")
            labelled = True
        if succ:
            ax.scatter([g + 0.1] * len(succ), succ, color="tab:green" if promoted else "tab:red", s=14)
    ax.set_xlabel("generation")
    ax.set_ylabel(metric)
    ax.set_title("gate runs: successor (green: promoted, red: refused) and champion (gray)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    return md_table(head, rows) if rows else "_none_"


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    return html_table(head, rows) if rows else "<p><i>none</i></p>"


def write_script_report(run_dir: Path, out: Path, css: str) -> Path:
    """The script run's report.md, self-contained report.html, summary.md and plots, in `out`."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    sc = cfg.get("script") or {}
    metric = "metric"
    db = open_ro(run_dir)
    try:
        gens, cands, diffs, points = _rows(db)
        llm = _llm_rows(db)
        sandbox, violations, approvals = isolation_line(db), violation_rows(db), approval_rows(db)
        lineage = tree(db)
        verified = verified_line(db)
    finally:
        db.close()
    st = status_dict(run_dir)
    acc = acceleration(st)
    _plot(out / "metric.png", points, metric)
    plot_acceleration(out / "acceleration.png", acc)
    plot_lineage(out / "lineage.png", lineage)
    compute, accel, verdicts = compute_rows(st), acceleration_rows(acc), acceleration_verdicts(acc)
    ok, lines = verify_run(run_dir)
    audit = ("verified: " if ok else "FAILED: ") + lines[0]
    source = "the harness's own evaluation of each artifact" if sc.get("evaluate") else \
        "what the program printed about itself (no evaluate command: self-reported)"
    gate = sc.get("gate", {})
    head = [("run", str(cfg.get("name"))), ("program", str(sc.get("program"))),
            ("command", " ".join(sc.get("command", []))), ("editable", ", ".join(sc.get("editable", []))),
            ("direction", str(sc.get("direction"))), ("the gate's number", source),
            ("gate", f"{gate.get('test')} t-test over {gate.get('seeds')} fresh seeds" + (
                f" (up to {gate['max_seeds']} while undecided)" if gate.get("max_seeds", 0) > gate.get("seeds", 0)
                and gate.get("test") == "paired" else "") + f", alpha {gate.get('alpha')}, min_effect "
                f"{gate.get('min_effect')}, a program that ignores its seed: {gate.get('seed_ignored', 'refuse')}"),
            ("verified", verified),
            ("researcher", str((cfg.get("researcher") or {}).get("name"))),
            ("audit log and artifacts", audit)]
    done = [g for g in st["generations"] if g["status"] == "done"]
    prog = st["in_progress"]
    write_summary(out, f"Successor run summary: {cfg.get('name')}", [
        ("generations done", planned_line(cfg, st)),
        ("in progress", f"generation {prog['generation']}, stage {prog['stage']}" if prog else "no"),
        ("promoted", promoted_line(done)),
        ("final champion", f"{(st['champion'] or '-')[:12]}: mean {metric} {_f(st['metric'])} over its gate "
                           f"seeds ({sc.get('direction')}; {source})"),
        (f"{metric} by generation", " → ".join(_f(g["metric"]) for g in done) or "-"),
        ("verified", verified), ("guardrail", NOT_SCRIPT)] + summary_tail(st, acc, approvals, audit))
    title = f"Successor run report: {cfg.get('name')}"
    md = [f"# {title}", ""] + [f"- **{k}**: {v}" for k, v in head] + [
        "", "Summary on one screen: [summary.md](summary.md).", "",
        "## Plots", "", "![gate runs by generation](metric.png)", "", "## Acceleration", "",
        "![acceleration](acceleration.png)", ""] + [f"- **{k}**: {v}" for k, v in verdicts] + [
        "", _md_table(ACCEL_HEAD, accel), "", "## Lineage", "", "![lineage tree](lineage.png)", "",
        "## Generations", "", _md_table(GEN_HEAD, gens), "", "## Candidates", "", _md_table(CAND_HEAD, cands), "",
        "## Diffs", ""]
    for cid, why, diff in diffs:
        md += [f"### {cid}", "", why, "", "```diff", diff.rstrip("\n"), "```", ""]
    md += ["_none_", ""] if not diffs else []
    md += ["## LLM calls", "", _md_table(LLM_HEAD, llm), "", "## Oversight", "", sandbox, "",
           "### Sandbox violations", "", _md_table(VIOLATION_HEAD, violations), "", "### Human decisions", "",
           _md_table(APPROVAL_HEAD, approvals), "", "## Compute", "", _md_table(COMPUTE_HEAD, compute), ""]
    (out / "report.md").write_text("\n".join(md))
    items = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in head)
    accel_items = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in verdicts)
    diff_html = "".join(f"<h3 id='diff-{html.escape(c)}'>{html.escape(c)}</h3><p>{html.escape(w)}</p>"
                        f"<pre class='diff'>{html.escape(d)}</pre>" for c, w, d in diffs) or "<p><i>none</i></p>"
    nav = html_nav([("plots", "Plots"), ("acceleration", "Acceleration"), ("lineage", "Lineage"),
                    ("generations", "Generations"), ("candidates", "Candidates"), ("diffs", "Diffs"),
                    ("llm", "LLM calls"), ("oversight", "Oversight"), ("compute", "Compute")])
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{css}</style></head>
<body><h1>{html.escape(title)}</h1><ul>{items}</ul>{nav}
<h2 id="plots">Plots</h2>{html_img(out / "metric.png", "gate runs by generation")}
<h2 id="acceleration">Acceleration</h2>{html_img(out / "acceleration.png", "acceleration")}
<ul>{accel_items}</ul>{_html_table(ACCEL_HEAD, accel)}
<h2 id="lineage">Lineage</h2>{html_img(out / "lineage.png", "lineage tree")}
<h2 id="generations">Generations</h2>{_html_table(GEN_HEAD, gens)}
<h2 id="candidates">Candidates</h2>{_html_table(CAND_HEAD, cands)}
<h2 id="diffs">Diffs</h2>{diff_html}
<h2 id="llm">LLM calls</h2>{_html_table(LLM_HEAD, llm)}
<h2 id="oversight">Oversight</h2><p>{html.escape(sandbox)}</p>
<h3>Sandbox violations</h3>{_html_table(VIOLATION_HEAD, violations)}
<h3>Human decisions</h3>{_html_table(APPROVAL_HEAD, approvals)}
<h2 id="compute">Compute</h2>{_html_table(COMPUTE_HEAD, compute)}
</body></html>
"""
    (out / "report.html").write_text(page)
    return out
