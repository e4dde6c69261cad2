"""The dashboard against a live run: `successor run` (the smallest real config, every promotion waiting for a
human) and `successor dashboard` in subprocesses, read through FastAPI's client and driven in Chromium.

The tests run in file order on one run, and none of them races the run: it pauses at generation 0; the page
refuses an approval without the token, and its Stop button (with the token) stops the waiting run; a re-run
waits again, and the page's approval resumes it; it finishes (generation 1's approval, if its successor is
promoted, through the API), and the finished lineage shows every generation, each node opening its details.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from browser import artifact, chromium
from conftest import tiny_config, wait_for
from fastapi.testclient import TestClient
from playwright.sync_api import expect

from successor.reporting.dashboard import create_app

CLI = [sys.executable, "-m", "successor"]


def _db(root: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{root / 'lineage.db'}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    return db


def _approval(root: Path, g: int) -> sqlite3.Row | None:
    if not (root / "lineage.db").exists():
        return None
    try:
        return _db(root).execute("SELECT * FROM approvals WHERE generation=?", (g,)).fetchone()
    except sqlite3.OperationalError:  # the file is there, its tables not yet
        return None


def _events(root: Path) -> list[str]:
    return [json.loads(x)["event"] for x in (root / "audit.jsonl").read_text().splitlines()]


def _start_run(env: dict, root: Path, cfg: Path, policy: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(CLI + ["run", str(cfg), "--preset", "smoke", "--run-dir", str(root), "--policy",
                                   str(policy), "--quiet"], stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A paused live run and its dashboard: {root, url, token, run (Popen), cfg, policy, env, log}."""
    tmp = tmp_path_factory.mktemp("dashboard")
    cfg, policy, root, log = tiny_config(tmp / "c.yaml", generations=1), tmp / "policy.yaml", tmp / "run", tmp / "run.log"
    policy.write_text(yaml.safe_dump({"approval": "manual", "budgets": {"cpu_s": 100000}}))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run = _start_run(env, root, cfg, policy, log)
    wait_for(lambda: (root / "lineage.db").exists() or run.poll() is not None, 120, "the run's lineage.db")
    dash = subprocess.Popen(CLI + ["dashboard", str(root), "--port", "0", "--exit-after", "900"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    first, second = dash.stdout.readline(), dash.stdout.readline()
    m = re.search(r"(http://127\.0\.0\.1:\d+/)#token=(\S+)", first)
    assert m, f"the dashboard printed {first!r} {second!r}"
    url, token = m.group(1), m.group(2)
    assert second.strip() == f"token (approve, reject, stop): {token}"
    state = {"root": root, "url": url, "token": token, "run": run, "cfg": cfg, "policy": policy, "env": env,
             "log": log}
    try:
        yield state
    finally:
        dash.terminate()
        dash.wait(30)
        for p in (state["run"],):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(30)


def _client(live) -> TestClient:
    return TestClient(create_app(live["root"], live["token"]), base_url="http://127.0.0.1")


def _page(browser, errors: list[str]):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("request", lambda r: errors.append(f"request off the dashboard: {r.url}")
            if not r.url.startswith(("http://127.0.0.1:", "data:")) else None)
    return page


def test_the_api_reads_a_paused_run_and_refuses_what_it_should(live):
    root = live["root"]
    wait_for(lambda: (_approval(root, 0) is not None) or live["run"].poll() is not None, 300,
             "generation 0 to wait for approval")
    assert live["run"].poll() is None, live["log"].read_text()[-3000:]
    c = _client(live)
    s = c.get("/api/status").json()
    assert s["state"]["state"] == "waiting for approval" and s["state"]["pid"] == live["run"].pid
    assert s["waiting_for_approval"]["generation"] == 0
    assert s["waiting_for_approval"]["reasons"] == ["the policy asks a human to approve every promotion"]
    assert s["planned_generations"] == 2 and s["generations_done"] == 0
    budgets = {b["name"]: b for b in s["budgets"]}
    assert set(budgets) >= {"cpu_s", "wall_clock_s", "experiments", "flops", "llm_cost_usd"}
    cpu = budgets["cpu_s"]
    assert cpu["limit"] == 100000 and cpu["used"] == s["compute"]["cpu_s"] > 0 and cpu["fraction"] == cpu["used"] / 1e5
    assert budgets["experiments"]["limit"] is None and budgets["experiments"]["used"] == 1
    assert [e["candidate"] for e in s["experiments"]] == ["g0c0"], "the generation's finished experiment"
    assert s["experiments"][0]["status"] == "done" and len(s["experiments"][0]["curve"]) >= 2
    tree = c.get("/api/lineage").json()["generations"]
    assert [g["generation"] for g in tree] == [0] and [n["id"] for n in tree[0]["candidates"]] == ["g0c0"]
    node = c.get("/api/node/g0c0").json()
    assert node["recipe"]["steps"] == 400 and node["experiments"][0]["log_tail"] is not None
    assert node["gate"]["promoted"] and node["provenance"] is None, "no provenance before the approval"
    assert c.get("/api/node/g9c9").status_code == 404
    assert c.get("/api/audit").json()["ok"] is True

    body = {"generation": 0, "who": "mallory"}
    assert c.post("/api/approve", json=body).status_code == 401
    r = c.post("/api/approve", json=body, headers={"Authorization": "Bearer " + "x" * len(live["token"])})
    assert r.status_code == 401 and "token" in r.json()["detail"]
    assert c.post("/api/stop").status_code == 401 and c.post("/api/reject", json=body).status_code == 401
    auth = {"Authorization": f"Bearer {live['token']}"}
    r = c.post("/api/approve", json={"generation": 3}, headers=auth)
    assert r.status_code == 409 and "generation 3 has no promotion waiting" in r.json()["detail"]
    assert c.post("/api/reject", json={"generation": 0, "reason": ""}, headers=auth).status_code == 422
    assert c.post("/api/approve", json={"generation": -1}, headers=auth).status_code == 422
    assert TestClient(c.app, base_url="http://evil.example").get("/api/status").status_code == 400  # Host check
    assert c.get("/plots/nope.png").status_code == 404 and c.get("/static/secret.py").status_code == 404
    assert "default-src 'none'" in c.get("/").headers["content-security-policy"]
    assert _approval(root, 0)["decision"] is None, "nothing the refused calls did reached the store"


def test_the_page_refuses_an_action_without_the_token_and_its_stop_button_stops_the_run(live):
    root, errors = live["root"], []
    with chromium() as browser:
        page = _page(browser, errors)
        page.goto(live["url"])  # no #token=: the page starts without it
        page.locator("#approval").wait_for(state="visible")
        assert "Generation 0 waits for a human" in page.inner_text("#approval-text")
        expect(page.locator("#state")).to_have_text("waiting for approval")
        assert errors == [], errors
        page.click("#approve")
        expect(page.locator("#action-result")).to_have_text(re.compile(r"^refused \(401\)"))
        assert _approval(root, 0)["decision"] is None and live["run"].poll() is None
        # Chromium logs every refused request as a console error: this one, and only it, was asked for.
        wait_for(lambda: errors, 10, "the browser to log the refused request")
        assert len(errors) == 1 and "status of 401" in errors[0], errors
        errors.clear()
        page.fill("#token", live["token"])
        page.click("#stop")
        expect(page.locator("#action-result")).to_have_text(re.compile("^stopped the run"), timeout=60_000)
        expect(page.locator("#state")).to_have_text("stopped", timeout=30_000)
    assert live["run"].wait(60) == 3, "exit 3: stopped, resumable"
    events = _events(root)
    assert "run.stop_requested" in events and events[-1] == "run.stopped"
    assert _approval(root, 0)["decision"] is None, "a stop while waiting leaves the approval pending"
    assert errors == [], errors


def test_an_approval_in_the_page_resumes_the_paused_run(live):
    root, errors = live["root"], []
    live["run"] = run = _start_run(live["env"], root, live["cfg"], live["policy"], live["log"])
    c = _client(live)
    wait_for(lambda: run.poll() is not None or c.get("/api/status").json()["state"]["state"] ==
             "waiting for approval", 120, "the re-run to wait for generation 0's approval again")
    assert run.poll() is None, live["log"].read_text()[-3000:]
    with chromium() as browser:
        page = _page(browser, errors)
        page.goto(f"{live['url']}#token={live['token']}")
        page.locator("#approval").wait_for(state="visible")
        page.fill("#who", "alice")
        page.fill("#note", "looked at the curves")
        page.click("#approve")
        expect(page.locator("#action-result")).to_have_class("ok")
        row = _approval(root, 0)
        assert (row["decision"], row["who"], row["note"]) == ("approved", "alice", "looked at the curves")
        wait_for(lambda: _db(root).execute("SELECT status FROM generations WHERE idx=0").fetchone()[0] == "done",
                 120, "the run to finish generation 0 after the approval")
        expect(page.locator("#approval")).to_be_hidden()
        page.screenshot(path=str(artifact("dashboard-live.png")), full_page=True)
    events = _events(root)
    assert events.count("approval.approved") == 1 and "approval.applied" in events
    wait_for(lambda: _db(root).execute("SELECT COUNT(*) FROM generations WHERE idx=1").fetchone()[0] == 1, 60,
             "generation 1 to begin")
    assert errors == [], errors


def test_the_run_finishes_and_the_page_shows_every_generation_and_each_node(live):
    root, errors, run = live["root"], [], live["run"]
    c, auth = _client(live), {"Authorization": f"Bearer {live['token']}"}
    # Generation 1 waits for a human only if its successor was promoted: approve it through the API then.
    wait_for(lambda: run.poll() is not None or ((_approval(root, 1) or {"decision": 1})["decision"] is None),
             300, "generation 1 to finish or to wait for approval")
    if run.poll() is None:
        r = c.post("/api/approve", json={"generation": 1, "who": "bob"}, headers=auth)
        assert r.status_code == 200 and r.json()["message"].startswith("generation 1: approved by bob")
    assert run.wait(300) == 0, live["log"].read_text()[-3000:]
    db = _db(root)
    gens = db.execute("SELECT idx, status FROM generations ORDER BY idx").fetchall()
    assert [tuple(g) for g in gens] == [(0, "done"), (1, "done")]
    g1 = [r["id"] for r in db.execute("SELECT id FROM candidates WHERE generation=1 ORDER BY ordinal")]
    # What a candidate writes is shown as text: a log line that is markup must not become an element.
    g0_exp = db.execute("SELECT id FROM experiments WHERE candidate_id='g0c0'").fetchone()["id"]
    with open(root / "logs" / f"{g0_exp}.log", "a") as f:
        f.write('\n<img id="injected" src="/x" onerror="document.title=1"><script>document.title=2</script>\n')
    with chromium() as browser:
        page = _page(browser, errors)
        page.goto(live["url"])
        expect(page.locator("#state")).to_have_text("finished")
        page.locator(".gen[data-generation='1'] .node").first.wait_for()
        assert page.locator(".gen").evaluate_all("els => els.map(e => e.dataset.generation)") == ["0", "1"]
        shown = page.locator(".gen[data-generation='1'] .node").evaluate_all("els => els.map(e => e.dataset.node)")
        assert shown == g1
        page.click(f".node[data-node='{g1[0]}']")
        page.locator("#details").wait_for(state="visible")
        expect(page.locator("#details-body h2")).to_have_text(re.compile(f"^{g1[0]} "))
        body = page.inner_text("#details-body")
        assert "Recipe" in body and "Experiment" in body and "Gate" in body
        page.click("#close-details")
        page.click(".node[data-node='g0c0']")
        expect(page.locator("#details-body h2")).to_have_text(re.compile("^g0c0 "))
        assert "Provenance statement" in page.inner_text("#details-body")
        page.click("#details-body summary:text('log tail')")
        assert '<img id="injected"' in page.inner_text("#details-body")
        assert page.locator("#injected").count() == 0 and page.locator("#details-body script").count() == 0
        # the markup appended to the harness's log above is tampering, and the audit says so (logs/<exp>.log)
        expect(page.locator("#audit-badge")).to_have_text("audit: 1 problem(s)")
        wait_for(lambda: page.locator("img[data-plot]").evaluate_all(
            "imgs => imgs.length === 5 && imgs.every(i => i.complete && i.naturalWidth > 0)"), 60, "the plots")
        page.screenshot(path=str(artifact("dashboard-finished.png")), full_page=True)
    assert errors == [], errors
    assert artifact("dashboard-finished.png").stat().st_size > 10_000


def test_the_dashboard_stops_by_itself_and_refuses_a_busy_port(live):
    r = subprocess.run(CLI + ["dashboard", str(live["root"]), "--port", "0", "--exit-after", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "dashboard stopped" in r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        r = subprocess.run(CLI + ["dashboard", str(live["root"]), "--port", str(busy)], capture_output=True,
                           text=True, timeout=120)
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{busy}" in r.stderr
    r = subprocess.run(CLI + ["dashboard", str(live["root"] / "nope")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "is not a directory" in r.stderr


def test_what_a_candidate_writes_for_the_dashboard_is_read_as_bounded_data(tmp_path):
    from successor.reporting.dashboard.live import PROGRESS_MAX_BYTES, clean_curve, read_progress

    ws = tmp_path / "ws"
    (ws / "out").mkdir(parents=True)
    p = ws / "out" / "progress.json"
    p.write_text(json.dumps({"step": 5, "total": 10, "loss": 1.5, "curve": [[0, 2.0], [5, 1.5]]}))
    assert read_progress(ws) == {"step": 5.0, "total": 10.0, "loss": 1.5, "curve": [[0.0, 2.0], [5.0, 1.5]]}
    p.write_text('{"step": "5; rm -rf /", "loss": NaN, "curve": [[0, Infinity], [1, 2.0], "x", [1]]}')
    assert read_progress(ws) == {"step": None, "total": None, "loss": None, "curve": [[1.0, 2.0]]}
    for junk in ("[1, 2]", "not json", ""):
        p.write_text(junk)
        assert read_progress(ws) is None
    p.write_text(json.dumps({"step": 1, "curve": [[0, 1.0]] * (PROGRESS_MAX_BYTES // 8)}))
    assert read_progress(ws) is None, "a file past the cap is not read at all"
    assert read_progress(tmp_path / "missing") is None
    secret = tmp_path / "secret.json"  # a link to a file the candidate cannot see is not followed
    secret.write_text(json.dumps({"step": 7, "total": 7}))
    p.unlink()
    p.symlink_to(secret)
    assert read_progress(ws) is None
    p.unlink()
    os.mkfifo(p)  # a FIFO nobody writes would block a plain open() forever
    assert read_progress(ws) is None
    thinned = clean_curve([[i, float(i)] for i in range(10_000)])
    assert len(thinned) <= 2001 and thinned[0] == [0.0, 0.0] and thinned[-1] == [9999.0, 9999.0]


def test_the_dashboard_benchmark_prices_every_request(live, tmp_path):
    """benchmarks/dashboard.py --quick on this module's (finished) run: a row per request, real numbers."""
    out = tmp_path / "bench.json"
    bench = Path(__file__).resolve().parent.parent / "benchmarks" / "dashboard.py"
    r = subprocess.run([sys.executable, str(bench), "--run-dir", str(live["root"]), "--quick", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    paths = [row["path"] for row in res["rows"]]
    assert paths[:6] == ["/api/status", "/api/lineage", "/api/acceleration", "/api/guardrail", "/api/audit",
                         "/api/capability"] and len([p for p in paths if p.startswith("/plots/")]) == 5
    assert all(row["median_ms"] > 0 and row["p90_ms"] >= row["median_ms"] and row["repeats"] == 3
               for row in res["rows"])
    assert res["generations"] == 2 and res["idle_core_share"] >= 0 and "| `/api/status` |" in r.stdout


def test_a_running_experiment_shows_its_live_curve(live, tmp_path):
    """A copy of this module's run with one experiment marked running and its progress file as the trainer
    writes it mid-run: the status lists it with step, total, loss and the curve so far."""
    import shutil

    root = tmp_path / "run"
    shutil.copytree(live["root"], root, ignore=shutil.ignore_patterns("lineage.db*"))
    with sqlite3.connect(live["root"] / "lineage.db") as a, sqlite3.connect(root / "lineage.db") as b:
        a.backup(b)
        exp, g = b.execute("SELECT id, generation FROM experiments WHERE generation=1 ORDER BY started").fetchone()
        b.execute("UPDATE experiments SET status='running' WHERE id=?", (exp,))
        b.execute("UPDATE generations SET status='running', started=?, finished=NULL WHERE idx=?",
                  (time.time() - 2.0, g))
        g0 = b.execute("SELECT finished - started FROM generations WHERE idx=0").fetchone()[0]
    out = root / "workspaces" / exp / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "progress.json").write_text(json.dumps({"step": 101, "total": 300, "loss": 0.9,
                                                   "curve": [[0, 2.5], [50, 1.4], [100, 0.9]]}))
    s = TestClient(create_app(root, "t" * 24), base_url="http://127.0.0.1").get("/api/status").json()
    running = [e for e in s["experiments"] if e["status"] == "running"]
    assert [e["id"] for e in running] == [exp]
    assert (running[0]["step"], running[0]["total"], running[0]["loss"]) == (101, 300, 0.9)
    assert running[0]["curve"] == [[0, 2.5], [50, 1.4], [100, 0.9]] and running[0]["elapsed_s"] > 0
    # The ETA of a run going at generation 0's pace, 2 s into generation 1 of 2.
    from successor.reporting.dashboard.live import eta_s
    from successor.reporting.lineage import open_ro

    db = open_ro(root)
    assert eta_s(db, 2, {"state": "running"}) == pytest.approx(max(0.0, g0 - min(2.0, g0)), abs=1.0)
    assert eta_s(db, 2, {"state": "paused"}) is None and eta_s(db, None, {"state": "running"}) is None
    db.close()
