"""`successor.report.write_report` on a real smoke run: files, plots, tables, escaping, and an unfinished run."""
from __future__ import annotations

import html
import json
import re
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from successor.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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


def _check_report(run_dir: Path) -> tuple[str, str]:
    out = write_report(run_dir)
    assert out == run_dir / "report"
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert md.strip() and page.lstrip().lower().startswith("<!doctype html>")
    for name in ("accuracy_heatmap.png", "frontier.png"):
        path = out / name
        assert path.stat().st_size > 0
        assert path.read_bytes()[:8] == PNG_MAGIC
        h, w = mpimg.imread(path).shape[:2]
        assert 100 <= h <= 5000 and 100 <= w <= 5000, (name, h, w)
        assert name in md and f'src="{name}"' in page
    return md, page


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
    ok = re.compile(r"verified: ok: \d+ events, \d+ artifacts, \d+ provenance statements verified")
    assert ok.search(md) and ok.search(page)
    assert "hidden checker" in md and "hidden checker" in page
    curation = md.split("## Curation", 1)[1]
    for (g,) in _q(run_dir, "SELECT idx FROM generations"):
        assert re.search(rf"^\| {g} \|", curation, re.M), f"no curation row for generation {g}"
    selection = md.split("## Selection", 1)[1].split("## Curation", 1)[0]
    assert "<h2>Selection</h2>" in page
    for g, result in _q(run_dir, "SELECT generation, result FROM stages WHERE name='select' AND generation>0"):
        chosen = json.loads(result)["selected"]
        assert re.search(rf"^\| {g} \| {chosen} \|", selection, re.M), f"no selection row for generation {g}"


def test_selection_reasons():
    from successor.report import _why_selected
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
    for (cid,) in _q(run_dir, f"SELECT id FROM candidates WHERE generation={last}"):
        row = next(r for r in _candidate_table(md) if r.startswith(f"| {cid} |"))
        assert "no gate decision yet" in row


def test_report_on_empty_run(tmp_path: Path):
    """A run directory whose store exists but holds nothing yet still gets a report with placeholder plots."""
    from successor.store import Store

    Store(tmp_path / "lineage.db").close()
    md, _ = _check_report(tmp_path)
    assert _candidate_table(md) == []


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
    from successor.loop import Loop
    from successor.run import RunDir

    root = tmp_path_factory.mktemp("walk")
    over = root / "walk.yaml"
    over.write_text("task: {eval_max_level: 5}\ncurator: {filter: none, levels_ahead: 2}\nloop: {generations: 1}\n")
    rundir = RunDir(root / "run", load_config(over, "smoke"))
    try:
        Loop(rundir).run_all()
    finally:
        rundir.store.close()
    return root / "run"


def test_curation_walks_levels_ahead_and_the_gate_tests_the_levels_it_curated(walk_run: Path):
    """Generation 1 labels levels 3 and 4 (the first two past the human data, 1-2) into one shard, and every
    gate decision of the generation measured effect and significance on levels 1-4, not on level 5."""
    import json

    from successor.data import load_shard

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
