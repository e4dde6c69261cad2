"""`successor.reporting.report.write_report` on a real smoke run: files, plots, tables, escaping, the self-contained HTML,
summary.md, and an unfinished run; `render_plot`, which the dashboard calls on live runs."""
from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from successor.reporting.lineage import acceleration, fidelity, guardrail_points, open_ro
from successor.reporting.report import write_report
from successor.reporting.plots import PLOT_NAMES, render_plot
from successor.reporting.status import status_dict

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ("accuracy_heatmap", "frontier", "guardrail", "acceleration", "lineage")
EMBEDDED = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"')
REF = re.compile(r"""\b(?:src|href)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.I)


def _q(run_dir: Path, sql: str) -> list[tuple]:
    db = sqlite3.connect(f"file:{run_dir / 'lineage.db'}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _candidate_table(md: str) -> list[str]:
    """The body rows of the Markdown candidates table (header and rule excluded)."""
    section = md.split("## Candidates", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return rows[2:]


def _copy_run(src: Path, dst: Path) -> Path:
    """A private copy of what the report reads, so editing it leaves the session's run intact."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("workspaces", "lineage.db*", "report"))
    with sqlite3.connect(src / "lineage.db") as a, sqlite3.connect(dst / "lineage.db") as b:
        a.backup(b)
    return dst


def _png_shape(data: bytes) -> tuple[int, int]:
    """(height, width) of a PNG, after checking its magic bytes and that matplotlib decodes it."""
    assert data[:8] == PNG_MAGIC
    h, w = mpimg.imread(io.BytesIO(data), format="png").shape[:2]
    assert 100 <= h <= 5000 and 100 <= w <= 5000, (h, w)
    return h, w


def check_self_contained(page: str) -> dict[str, bytes]:
    """Assert report.html needs nothing outside itself: every src/href is a data: URI or an anchor to an id on the
    page, no stylesheet, script or CSS url(); every embedded image decodes as a PNG. Returns the PNGs by alt text."""
    refs = [next(v for v in m.groups() if v is not None) for m in REF.finditer(page)]
    assert refs, "no src/href found: the pattern is not finding the images"
    ids = set(re.findall(r'\bid=["\']([^"\']+)["\']', page))
    for ref in refs:
        assert ref.startswith("data:") or (ref.startswith("#") and ref[1:] in ids), ref[:80]
    lower = page.lower()
    for needle in ("<link", "<script", "url(", "@import", "http:", "https:", "//cdn", "<iframe", "<object"):
        assert needle not in lower, needle
    pngs = {alt: base64.b64decode(data, validate=True) for data, alt in EMBEDDED.findall(page)}
    assert len(pngs) == page.count("<img"), "an <img> that is not an embedded PNG"
    for data in pngs.values():
        _png_shape(data)
    return pngs


def _table(md: str, section: str) -> list[list[str]]:
    """The body rows of the first Markdown table in `## section`, as cells."""
    body = md.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in body.splitlines() if line.startswith("|")][2:]
    return [[c.strip() for c in r.strip("|").split(" | ")] for r in rows]


def _num(cell: str) -> float | None:
    return None if cell == "—" else float(cell)


def check_acceleration(md: str, run_dir: Path) -> dict:
    """The Acceleration table has one row per finished successor generation of `lineage.acceleration`, with its
    numbers (to the printed precision) and both verdicts beside it."""
    acc = acceleration(status_dict(run_dir))
    rows = _table(md, "Acceleration")
    assert len(rows) == len(acc["generations"])
    for cells, r in zip(rows, acc["generations"]):
        assert int(cells[0]) == r["generation"] and cells[1] == ("yes" if r["promoted"] else "no")
        for cell, key in zip(cells[2:], ("gain", "frontier_gain", "cpu_h", "gain_per_cpu_h", "cumulative_gain",
                                         "cumulative_cpu_h")):
            want = r[key]
            assert (_num(cell) is None) == (want is None), (key, cell)
            if want is not None:
                assert _num(cell) == pytest.approx(want, rel=5e-3, abs=1e-12), (key, cell, want)
    section = md.split("## Acceleration\n", 1)[1].split("\n## ", 1)[0]
    assert acc["per_generation"]["verdict"] in section and acc["per_cpu_hour"]["verdict"] in section
    return acc


def _check_report(run_dir: Path) -> tuple[str, str]:
    out = write_report(run_dir)
    assert out == run_dir / "report"
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert md.strip() and page.lstrip().lower().startswith("<!doctype html>")
    pngs = check_self_contained(page)
    assert len(pngs) == len(PLOTS)
    for name in PLOTS:
        path = out / f"{name}.png"
        assert path.stat().st_size > 0
        _png_shape(path.read_bytes())
        assert f"({name}.png)" in md
        assert path.read_bytes() in pngs.values(), f"{name}.png is not the image embedded in report.html"
    for section in ("Acceleration", "Lineage"):
        assert f"\n## {section}\n" in md and f'<h2 id="{section.lower()}">{section}</h2>' in page
    assert (out / "summary.md").is_file()
    check_acceleration(md, run_dir)
    return md, page


def read_summary(run_dir: Path) -> dict[str, str]:
    """summary.md as {label: text}, after checking it fits on one screen."""
    lines = (run_dir / "report" / "summary.md").read_text().splitlines()
    assert len(lines) <= 30 and max(map(len, lines)) < 400
    return dict(re.findall(r"^- \*\*(.+?)\*\*: (.*)$", "\n".join(lines), re.M))


def test_report_on_finished_run(smoke_run: Path, tmp_path: Path):
    run_dir = _copy_run(smoke_run, tmp_path / "run")
    md, page = _check_report(run_dir)

    cands = [cid for (cid,) in _q(run_dir, "SELECT id FROM candidates")]
    rows = _candidate_table(md)
    assert len(rows) == len(cands) > 0
    firsts = Counter(re.match(r"^\| (\S+) \|", r).group(1) for r in rows)
    assert firsts == Counter(cands)  # exactly one row per candidate

    reasons = [r for (r,) in _q(run_dir, "SELECT reason FROM gate_decisions")]
    assert reasons
    for reason in reasons:
        assert html.escape(reason) in page
    assert "<script" not in page.lower()

    gens, promoted, champ = _q(run_dir, "SELECT count(*), sum(promoted), "
                                        "(SELECT champion_model FROM generations ORDER BY idx DESC LIMIT 1) "
                                        "FROM generations WHERE status='done'")[0]
    assert f"**generations done**: {gens}" in md
    assert f"**promoted**: {promoted}" in md
    assert champ[:12] in md and champ[:12] in page
    ok = re.compile(r"verified: ok: \d+ events, \d+ artifacts, \d+ provenance statements, \d+ store rows verified")
    assert ok.search(md) and ok.search(page)
    assert "hidden checker" in md and "hidden checker" in page
    curation = md.split("## Curation", 1)[1]
    for (g,) in _q(run_dir, "SELECT idx FROM generations"):
        assert re.search(rf"^\| {g} \|", curation, re.M), f"no curation row for generation {g}"
    selection = md.split("## Selection", 1)[1].split("## Curation", 1)[0]
    assert '<h2 id="selection">Selection</h2>' in page
    for g, result in _q(run_dir, "SELECT generation, result FROM stages WHERE name='select' AND generation>0"):
        chosen = json.loads(result)["selected"]
        assert re.search(rf"^\| {g} \| {chosen} \|", selection, re.M), f"no selection row for generation {g}"


def test_summary_states_what_the_store_holds(smoke_run: Path, tmp_path: Path):
    run_dir = _copy_run(smoke_run, tmp_path / "run")
    write_report(run_dir)
    facts = read_summary(run_dir)
    done = _q(run_dir, "SELECT idx, promoted, frontier, champion_model FROM generations WHERE status='done' "
                       "ORDER BY idx")
    succ = [d for d in done if d[0] > 0]
    assert facts["generations done"].startswith(f"{len(done)} of ")
    assert facts["promoted"].startswith(f"{sum(p for _, p, _, _ in succ)} of {len(succ)} successor generation(s)")
    assert facts["frontier by generation"] == " → ".join(str(f) for _, _, f, _ in done)
    assert facts["final champion"] == f"{done[-1][3][:12]} (frontier {done[-1][2]})"
    db = open_ro(run_dir)
    try:
        f, k = fidelity(guardrail_points(db))
    finally:
        db.close()
    assert facts["guardrail"].startswith("No promotion after generation 0 yet" if f is None else
                                         f"Measured over {k} promotion(s): fidelity {f:.4g}/gen -> {f ** 50:.3f} "
                                         "after 50 of the refusal rate")
    acc = acceleration(status_dict(run_dir))
    assert acc["per_generation"]["verdict"] in facts["acceleration"]
    assert acc["per_cpu_hour"]["verdict"] in facts["acceleration"]
    assert f"{acc['mean_gain_per_cpu_h']:.3g} per CPU-hour" in facts["verified gain"]
    (n, cpu), = _q(run_dir, "SELECT count(*), sum(cpu_s) FROM experiments")
    cpu_h = round(cpu, 2) / 3600  # the store rounds CPU-seconds to 0.01 s before the line divides them
    assert facts["compute"].startswith(f"{n} experiments") and f"{cpu_h:.3g} CPU-h" in facts["compute"]
    assert facts["sandbox violations"] == str(_q(run_dir, "SELECT count(*) FROM violations")[0][0])
    assert facts["human decisions"] == str(_q(run_dir, "SELECT count(*) FROM approvals WHERE decision IS NOT "
                                                       "NULL")[0][0])
    assert re.match(r"verified: ok: \d+ events", facts["audit log and artifacts"])
    # what "verified" means under the smoke gate (tested lengths, min_effect 0.005): the measured seed-retrain null
    assert facts["what verified means"].endswith("passes this gate in 18.2% of pairs: not proof of a better recipe")
    md = (run_dir / "report" / "report.md").read_text()
    assert "**what verified means**: a promoted successor beat its champion" in md
    assert "in 18.2% of pairs, so a promotion says these weights are better, not that the recipe is" in md


def test_what_verified_means_follows_the_gate_setting():
    from successor.config import load_config
    from successor.reporting.verified import verified_line, verified_short

    default = verified_line(load_config().gate.model_dump())
    assert "past the champion's frontier" in default and "25.8% of pairs or more" in default
    odd = verified_line({"min_effect": 0.03})  # a setting nobody measured says so, with no number
    assert "was not measured" in odd and "%" not in odd
    assert "passes this gate was not measured" in verified_short({"min_effect": 0.03})
    errors = {"effect_on": "unsolved", "min_effect": 0.02, "effect_scale": "errors", "min_error_share": 0.25}
    line = verified_line(errors)  # the same (effect_on, min_effect) on the error scale is another, unmeasured gate
    assert "at least 25% of the champion's errors removed" in line and "was not measured" in line and "25.8" not in line
    assert ">= 25% of errors removed" in verified_short(errors)
    measured = verified_line(errors | {"min_error_share": 0.5})  # measured on one bed, near ceiling: said so
    assert "15.9% of pairs (measured only on a champion near ceiling)" in measured


def test_selection_reasons():
    from successor.reporting.report import _why_selected
    assert _why_selected({"selected": None}) == "no candidate finished"
    assert _why_selected({"selected": "g1c1", "incumbent": None}).startswith("no incumbent that keeps")
    assert _why_selected({"selected": "g1c0", "incumbent": "g1c0", "p_vs_incumbent": {}}) == "incumbent ranked first"
    assert _why_selected({"selected": "g1c0", "incumbent": "g1c0", "p_vs_incumbent": {"g1c1": 0.3}}) == \
        "incumbent kept: no challenger beat it significantly"
    assert _why_selected({"selected": "g1c1", "incumbent": "g1c0", "p_vs_incumbent": {"g1c1": 0.004}}) == \
        "g1c1 beat the incumbent (p=0.004)"


def test_report_on_unfinished_run(smoke_run: Path, tmp_path: Path):
    """A run killed before the last gate: the report shows what exists instead of crashing."""
    run_dir = _copy_run(smoke_run, tmp_path / "run")
    (last,) = _q(run_dir, "SELECT max(idx) FROM generations")[0]
    with sqlite3.connect(run_dir / "lineage.db") as db:
        db.execute("DELETE FROM stages WHERE generation=? AND name='gate'", (last,))
        db.execute("UPDATE generations SET status='running', promoted=NULL, champion_model=NULL, frontier=NULL "
                   "WHERE idx=?", (last,))
        db.execute("DELETE FROM gate_decisions WHERE generation=?", (last,))
    md, page = _check_report(run_dir)
    cands = _q(run_dir, "SELECT id FROM candidates")
    assert len(_candidate_table(md)) == len(cands)
    assert f"**generations done**: {last}" in md
    assert [int(r[0]) for r in _table(md, "Acceleration")] == list(range(1, last))  # the running one not yet
    assert read_summary(run_dir)["frontier by generation"].count("→") == last - 1
    for (cid,) in _q(run_dir, f"SELECT id FROM candidates WHERE generation={last}"):
        row = next(r for r in _candidate_table(md) if r.startswith(f"| {cid} |"))
        assert "no gate decision yet" in row


def test_report_on_empty_run(tmp_path: Path):
    """A run directory whose store exists but holds nothing yet still gets a report with placeholder plots."""
    from successor.store import Store

    Store(tmp_path / "lineage.db").close()
    md, _ = _check_report(tmp_path)
    assert _candidate_table(md) == [] and _table(md, "Acceleration") == []
    assert read_summary(tmp_path)["frontier by generation"] == "—"


def render_all(run_dir: Path) -> dict[str, bytes]:
    out = {}
    for name in PLOT_NAMES:
        buf = io.BytesIO()
        render_plot(run_dir, name, buf)
        out[name] = buf.getvalue()
        _png_shape(out[name])
    return out


def test_render_plot_draws_every_plot_to_a_file_object_or_a_path(smoke_run: Path, tmp_path: Path):
    assert set(PLOT_NAMES) == set(PLOTS)
    pngs = render_all(smoke_run)  # read-only: the session's run is not written to
    assert len(set(pngs.values())) == len(PLOTS)  # five different plots, not one panel five times
    render_plot(smoke_run, "lineage", tmp_path / "lineage.png")
    assert (tmp_path / "lineage.png").read_bytes() == pngs["lineage"]
    with pytest.raises(ValueError, match="unknown plot 'nope'.*accuracy_heatmap, frontier, guardrail, "
                                         "acceleration, lineage"):
        render_plot(smoke_run, "nope", io.BytesIO())


def test_render_plot_on_a_run_still_going(smoke_run: Path, tmp_path: Path):
    """What the dashboard sees mid-run: a generation with candidates but no gate yet, then a store with nothing in
    it, then a folder with no store at all; each plot still draws (a "no data yet" panel where there is none)."""
    run_dir = _copy_run(smoke_run, tmp_path / "run")
    finished = render_all(run_dir)
    with sqlite3.connect(run_dir / "lineage.db") as db:
        db.execute("UPDATE stages SET status='running', result=NULL WHERE generation=1 AND name='gate'")
        db.execute("DELETE FROM stages WHERE generation=1 AND name NOT IN ('curate', 'propose', 'gate')")
        db.execute("DELETE FROM generations WHERE idx > 1")
        db.execute("UPDATE generations SET status='running', promoted=NULL, champion_model=NULL, frontier=NULL "
                   "WHERE idx=1")
        db.execute("DELETE FROM gate_decisions WHERE generation>=1")
        db.execute("DELETE FROM candidates WHERE generation>1")
    partial = render_all(run_dir)
    for name in ("frontier", "acceleration", "lineage", "accuracy_heatmap"):
        assert partial[name] != finished[name], f"{name} did not change with the store"
    empty = tmp_path / "empty"
    from successor.store import Store

    empty.mkdir()
    Store(empty / "lineage.db").close()
    render_all(empty)  # each a readable PNG, as render_all checks
    render_all(tmp_path / "no-such-run")


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))


def test_experiments_probe_under_a_budget_and_the_successor_trains_in_full(smoke_run: Path):
    """Smoke sets loop.experiment_budget=0.6: a candidate's experiment trains 60% of its recipe's steps, the
    successor trained from the selected recipe trains all of them, and the bootstrap is never cut."""
    import json
    import sqlite3

    db = sqlite3.connect(smoke_run / "lineage.db")
    rows = db.execute("SELECT e.generation, e.kind, e.metrics, c.recipe FROM experiments e "
                      "JOIN candidates c ON c.id = e.candidate_id WHERE e.status='done'").fetchall()
    seen = set()
    for gen, kind, metrics, recipe in rows:
        steps, planned = json.loads(metrics)["steps"], json.loads(recipe)["steps"]
        expected = planned if gen == 0 or kind == "successor" else round(planned * 0.6)
        assert steps == expected, (gen, kind, steps, planned)
        seen.add((gen > 0, kind))
    assert {(True, "candidate"), (True, "successor"), (False, "candidate")} <= seen


@pytest.fixture(scope="module")
def walk_run(tmp_path_factory) -> Path:
    """One successor generation of the smoke preset whose curator labels two levels ahead with the `none` filter
    (every label kept, so both levels are curated whatever the champion knows), on five evaluated levels."""
    from successor.config import load_config
    from successor.driver import Driver
    from successor.rundir import RunDir

    root = tmp_path_factory.mktemp("walk")
    over = root / "walk.yaml"
    over.write_text("task: {eval_max_level: 5}\ncurator: {filter: none, levels_ahead: 2}\nloop: {generations: 1}\n")
    rundir = RunDir(root / "run", load_config(over, "smoke"))
    try:
        Driver(rundir).run_all()
    finally:
        rundir.store.close()
    return root / "run"


def test_curation_walks_levels_ahead_and_the_gate_tests_the_levels_it_curated(walk_run: Path):
    """Generation 1 labels levels 3 and 4 (the first two past the human data, 1-2) into one shard, and every
    gate decision of the generation measured effect and significance on levels 1-4, not on level 5."""
    import json

    from successor.workloads.tinylm.data import load_shard

    db = sqlite3.connect(walk_run / "lineage.db")
    cur = json.loads(db.execute("SELECT result FROM stages WHERE name='curate' AND generation=1").fetchone()[0])
    assert [lv["level"] for lv in cur["levels"]] == [3, 4] and cur["curated"] == [3, 4]
    assert all(lv["skipped"] is None and lv["kept"] == 200 for lv in cur["levels"])
    assert Counter(p.level for p, _ in load_shard(Path(cur["shard"]))) == {3: 200, 4: 200}
    manifest = db.execute("SELECT levels, n FROM data_manifests WHERE generation=1 AND kind='curated'").fetchone()
    assert json.loads(manifest[0]) == [3, 4] and manifest[1] == 400
    tested = [json.loads(s)["levels"] for (s,) in
              db.execute("SELECT stats FROM gate_decisions WHERE generation=1 AND stats != '{}'")]
    assert tested and all(t == [1, 2, 3, 4] for t in tested)
    gate = json.loads(db.execute("SELECT result FROM stages WHERE name='gate' AND generation=1").fetchone()[0])
    assert gate["tested_levels"] == [1, 2, 3, 4]
    g0 = [json.loads(s)["levels"] for (s,) in db.execute("SELECT stats FROM gate_decisions WHERE generation=0")]
    assert g0 == [[1, 2, 3, 4, 5]]  # the bootstrap is tested on every level
