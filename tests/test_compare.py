"""`successor compare` on real runs: the session's smoke run and a tiny one-generation run as two conditions (and
two toy script runs, seconds each): the files, a page that carries its own images, a table that says what
`status_dict` and `acceleration` say, one clear line for each input that cannot be compared, and the page in
Chromium."""
from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import pytest
import yaml
from browser import artifact, chromium
from conftest import tiny_config
from PIL import Image
from test_script_workload import CONFIG as SCRIPT_CONFIG
from test_script_workload import EVAL, TRAIN
from typer.testing import CliRunner

import successor
from successor._cli import app
from successor.config import load_config
from successor.oversight.policy import Policy
from successor.oversight.verify import verify_run
from successor.reporting.compare import HEAD, PLOTS, default_labels, write_comparison
from successor.reporting.lineage import acceleration, fidelity, guardrail_points, open_ro
from successor.reporting.status import status_dict

runner = CliRunner()
NO_TRIPWIRE = {"tripwires": {"integrity_violation": False}}  # a violation fails the checks, never waits


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The second condition: the smallest real run, one successor generation (about half a minute)."""
    root = tmp_path_factory.mktemp("compare")
    cfg = load_config(tiny_config(root / "tiny.yaml", generations=1), "smoke")
    assert successor.run(cfg, root / "tiny", policy=Policy.model_validate(NO_TRIPWIRE)).finished
    return root / "tiny"


@pytest.fixture(scope="module")
def script_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two runs of the script workload's toy program (one and two generations; seconds each)."""
    runs = []
    for gens in (1, 2):
        root = tmp_path_factory.mktemp(f"script{gens}")
        (root / "prog").mkdir()
        (root / "prog" / "train.py").write_text(TRAIN)
        (root / "prog" / "eval.py").write_text(EVAL)
        (root / "successor.yaml").write_text(SCRIPT_CONFIG.replace("GENS", str(gens)))
        assert successor.run(root / "successor.yaml", root / "run", policy=Policy.model_validate(NO_TRIPWIRE)).finished
        runs.append(root / "run")
    return runs


def _md_rows(md: str) -> dict[str, dict[str, str]]:
    """The comparison table of compare.md, by label, each row by column name."""
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    head = [c.strip() for c in lines[0].strip("|").split(" | ")]
    assert head == HEAD
    rows = [dict(zip(head, (c.strip() for c in ln.strip("|").split(" | ")))) for ln in lines[1:]]
    assert all(len(r) == len(HEAD) for r in rows)
    return {r["label"]: r for r in rows}


def _check_row(row: dict[str, str], run: Path) -> None:
    """The row's numbers against the shared readings of the same run, read here independently."""
    st = status_dict(run)
    acc = acceleration(st)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    done = sum(1 for g in st["generations"] if g["status"] == "done")
    assert row["run dir"] == str(run)
    assert row["generations done (of planned)"] == f"{done} of {cfg['loop']['generations'] + 1}"
    assert int(row["promoted"]) == st["promoted"]
    if cfg.get("workload") == "script":
        assert row["workload / task"].startswith("script / toy")
        assert float(row["final frontier / metric"]) == pytest.approx(st["metric"], rel=1e-3)
    else:
        assert row["workload / task"] == f"tinylm / {cfg['task']['name']}"
        assert int(row["final frontier / metric"]) == st["frontier"]
    assert float(row["CPU-hours"]) == pytest.approx(acc["total_cpu_h"], abs=6e-5)
    assert acc["total_cpu_h"] > 0, "a finished run used CPU"
    assert float(row["total verified gain"]) == pytest.approx(acc["total_gain"], abs=6e-5)
    assert float(row["gain per successor CPU-hour"]) == pytest.approx(acc["mean_gain_per_cpu_h"], rel=1e-3, abs=1e-9)
    assert row["trend per generation"] == acc["per_generation"]["verdict"]
    assert row["trend per CPU-hour"] == acc["per_cpu_hour"]["verdict"]
    db = open_ro(run)
    try:
        points = guardrail_points(db)
    finally:
        db.close()
    if points is None:
        assert row["guardrail fidelity"] == "no guardrail"
    else:
        f, k = fidelity(points)
        assert row["guardrail fidelity"] == ("no promotion measured yet" if f is None
                                             else f"{f:.4f} per promotion ({k} promotion(s))")
    ok, lines = verify_run(run)
    assert ok, lines
    assert row["audit"] == "verified"


def test_two_conditions_compare_into_a_self_contained_page_whose_table_matches_the_runs(smoke_run, tiny_run,
                                                                                         tmp_path):
    out = write_comparison([smoke_run, tiny_run], tmp_path / "out")
    names = {"compare.html", "compare.md", *PLOTS.values()}
    assert names <= {p.name for p in out.iterdir()}
    for name in PLOTS.values():
        with Image.open(out / name) as im:
            im.verify()  # a whole, decodable PNG
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
    md = (out / "compare.md").read_text()
    rows = _md_rows(md)
    assert list(rows) == [smoke_run.name, tiny_run.name]  # labels default to the dir names
    _check_row(rows[smoke_run.name], smoke_run)
    _check_row(rows[tiny_run.name], tiny_run)
    assert rows[tiny_run.name]["generations done (of planned)"] == "2 of 2"
    for name in PLOTS.values():
        assert f"]({name})" in md

    page = (out / "compare.html").read_text()
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert len(srcs) == len(PLOTS) == page.count("<img")
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in srcs if s.startswith("data:image/png;base64,")}
    assert embedded == {(out / name).read_bytes() for name in PLOTS.values()}, "every plot embedded, byte for byte"
    refs = re.findall(r'(?:src|href|action)\s*=\s*["\']([^"\']*)', page, flags=re.I)
    assert all(r.startswith("data:") for r in refs), refs
    assert not re.search(r"url\(|@import|<link|<script|<iframe|https?://", page, flags=re.I)
    for cell in (str(smoke_run), str(tiny_run), rows[tiny_run.name]["trend per generation"]):
        assert f"<td>{cell}</td>" in page


def test_script_runs_compare_by_their_champion_metric(script_runs, tmp_path):
    out = write_comparison(script_runs, tmp_path / "out", labels=["one", "two"])
    rows = _md_rows((out / "compare.md").read_text())
    assert list(rows) == ["one", "two"]
    for label, run in zip(("one", "two"), script_runs):
        _check_row(rows[label], run)


def test_default_labels_add_parents_only_where_names_repeat():
    assert default_labels([Path("/r/si/none"), Path("/r/si/offset-vote")]) == ["none", "offset-vote"]
    assert default_labels([Path("/r/a/run"), Path("/r/b/run"), Path("/r/b/x")]) == ["a/run", "b/run", "b/x"]
    assert default_labels([Path("/p/a/run"), Path("/q/a/run")]) == ["p/a/run", "q/a/run"]


@pytest.mark.parametrize("case", ["one", "not-a-run", "same-dir-twice", "label-count", "duplicate-labels",
                                  "script-and-tinylm"])
def test_each_bad_input_is_one_clear_line_and_exit_2(case, smoke_run, tiny_run, script_runs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    args, needle = {
        "one": ([smoke_run], "compare needs at least two run directories, got 1"),
        "not-a-run": ([smoke_run, empty], f"{empty} is not a run directory (no lineage.db)"),
        "same-dir-twice": ([smoke_run, tiny_run, smoke_run], "is given twice"),
        "label-count": ([smoke_run, tiny_run, "--label", "a"], "1 label(s) for 2 run directories"),
        "duplicate-labels": ([smoke_run, tiny_run, "--label", "a", "--label", "a"], "duplicate label(s): a"),
        "script-and-tinylm": ([script_runs[0], tiny_run], "cannot compare script runs"),
    }[case]
    result = runner.invoke(app, ["compare", *map(str, args), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr
    assert not (tmp_path / "out").exists(), "nothing is written for input that cannot be compared"


def test_the_cli_writes_the_comparison_and_says_where(smoke_run, tiny_run, tmp_path):
    out = tmp_path / "shared" / "cmp"
    result = runner.invoke(app, ["compare", str(smoke_run), str(tiny_run), "--out", str(out),
                                 "--label", "smoke", "--label", "tiny"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert str(out / "compare.html") in result.stdout
    assert list(_md_rows((out / "compare.md").read_text())) == ["smoke", "tiny"]
    assert "<td>smoke</td>" in (out / "compare.html").read_text()


def test_the_page_alone_shows_every_plot_in_chromium(smoke_run, tiny_run, tmp_path):
    out = write_comparison([smoke_run, tiny_run], tmp_path / "out")
    alone = tmp_path / "alone"  # the page without its folder: what someone it was sent to opens
    alone.mkdir()
    shutil.copy(out / "compare.html", alone / "compare.html")
    url, errors = (alone / "compare.html").as_uri(), []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        page.on("request", lambda r: errors.append(f"request off the page: {r.url}")
                if r.url != url and not r.url.startswith("data:") else None)
        page.goto(url)
        page.wait_for_load_state("load")
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
        assert len(widths) == len(PLOTS) and all(w > 0 for w in widths), widths
        assert page.locator("table tbody tr").count() == 2
        page.screenshot(path=str(artifact("compare.png")), full_page=True)
    assert errors == [], errors


def test_the_dashboard_reads_a_finished_run_of_each_workload(smoke_run, script_runs):
    """The dashboard's read endpoints on a finished tinylm run and a finished script run (this module has one of
    each already): every generation and candidate is there, every plot draws, and a script run reads its metric."""
    from fastapi.testclient import TestClient

    from successor.reporting.dashboard import create_app

    for run, script in ((smoke_run, False), (script_runs[1], True)):
        c = TestClient(create_app(run, "t" * 24), base_url="http://127.0.0.1")
        st, s = status_dict(run), c.get("/api/status").json()
        assert s["state"]["state"] == "finished" and s["eta_s"] is None and s["experiments"] == []
        assert s["workload"] == ("script" if script else "tinylm")
        assert (s["metric"], s["frontier"], s["promoted"]) == (st["metric"], st["frontier"], st["promoted"])
        assert (s["metric"] is not None) is script
        tree = c.get("/api/lineage").json()["generations"]
        assert [g["generation"] for g in tree] == [g["generation"] for g in st["generations"]]
        db = open_ro(run)
        ids = [r["id"] for r in db.execute("SELECT id FROM candidates ORDER BY generation, ordinal")]
        db.close()
        assert [n["id"] for g in tree for n in g["candidates"]] == ids
        for cid in ids:
            node = c.get(f"/api/node/{cid}").json()
            assert node["id"] == cid and node["experiments"], cid
        assert c.get("/api/acceleration").json()["total_gain"] == acceleration(st)["total_gain"]
        assert c.get("/api/audit").json()["ok"] is True
        assert c.get("/api/capability").status_code == 200 and c.get("/api/guardrail").status_code == 200
        for name in ("accuracy_heatmap", "frontier", "guardrail", "acceleration", "lineage"):
            r = c.get(f"/plots/{name}.png")
            assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n", name
