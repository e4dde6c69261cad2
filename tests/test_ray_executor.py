"""The Ray executor on a real Ray cluster, started for these tests inside a network (and pid) namespace that has
only loopback: Ray binds every interface, and `ray stop` then sees only this cluster's processes.

One session (tests/ray_driver.py) runs the smallest real run three times, on the local executor, on Ray with the
object store and on Ray with a shared run directory, killing a Ray worker mid-training in each Ray run, then a few
direct checks; the tests read what it wrote. Without the cluster: the error when Ray is not installed, and the
driver's unpacking of a node's (untrusted) results.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

HERE = Path(__file__).parent
VENV_BIN = Path(sys.executable).parent
SESSION_TIMEOUT_S = 900  # measured: 4-5 min on 2 cores at a load average of 7 (other tests beside it)


def _unshare_works() -> str | None:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "unshare or ip is not installed"
    r = subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "sh", "-c", "ip link set lo up"],
                       capture_output=True, text=True)
    return None if r.returncode == 0 else f"cannot make a network namespace here: {r.stderr.strip()}"


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> dict:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'successor-lab[ray]')")
    why = _unshare_works()
    if why:
        pytest.skip(f"the Ray tests need `unshare --net --pid` (root or user namespaces): {why}")
    out = tmp_path_factory.mktemp("ray")
    ray, py = VENV_BIN / "ray", sys.executable
    # Ray's session folder on a tmpfs of the namespace's own: no other Ray on the machine sees this cluster, nor
    # this one theirs. `ray stop` runs whatever happened; on a failure Ray's logs are kept beside the result.
    script = (f"set -u; mkdir -p /tmp/ray && mount -t tmpfs tmpfs /tmp/ray && ip link set lo up && "
              f"{ray} start --head --port=6379 --num-cpus=2 --object-store-memory=200000000 "
              f"--include-dashboard=false --disable-usage-stats >> {out}/ray.log 2>&1 && "
              f"{py} {HERE / 'ray_driver.py'} {out} 127.0.0.1:6379; rc=$?; "
              f"[ $rc = 0 ] || cp -r /tmp/ray/session_latest/logs {out}/ray-logs 2>/dev/null; "
              f"{ray} stop --force >> {out}/ray.log 2>&1; exit $rc")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    env.pop("RAY_ADDRESS", None)
    try:
        r = subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "sh", "-c", script], env=env,
                           capture_output=True, text=True, timeout=SESSION_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the Ray session ran past {SESSION_TIMEOUT_S}s: {(e.stderr or b'')[-3000:]!r}")
    result = out / "result.json"
    if r.returncode != 0:
        log = (out / "ray.log").read_text(errors="replace")[-2000:] if (out / "ray.log").exists() else ""
        pytest.fail(f"the Ray session failed (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}\n{log}")
    return json.loads(result.read_text())


def lineage(run_dir: str) -> dict:
    db = sqlite3.connect(Path(run_dir) / "lineage.db")
    db.row_factory = sqlite3.Row
    q = lambda sql: [tuple(r) for r in db.execute(sql).fetchall()]  # noqa: E731
    out = {
        "generations": q("SELECT idx, champion_model, promoted, frontier, status FROM generations ORDER BY idx"),
        "experiments": q("SELECT id, status, model FROM experiments ORDER BY id"),
        "gate": q("SELECT generation, candidate_id, model, promoted, reason FROM gate_decisions "
                  "ORDER BY generation, candidate_id"),
        "ends": [(e["experiment"], e["status"], e["model"]) for e in audit(run_dir, "experiment.end")],
    }
    db.close()
    return out


def audit(run_dir: str, event: str) -> list[dict]:
    lines = (Path(run_dir) / "audit.jsonl").read_text().splitlines()
    return [rec["data"] for rec in map(json.loads, lines) if rec["event"] == event]


def test_the_local_run_is_a_real_lineage(session):
    local = session["local"]
    assert local["state"] == "finished"
    lin = lineage(local["run_dir"])
    assert len(lin["experiments"]) >= 3 and all(s == "done" for _, s, _ in lin["experiments"])
    assert lin["generations"][0][2] == 1 and len(lin["gate"]) >= 3, "a champion, and a generation 1 that tried two"
    assert all(o["node"] is None for o in local["outcomes"])
    # the local executor's sandboxes are the driver's own children, no Ray in between
    assert local["seen"] and all(w is None for rec in local["seen"].values() for w in rec["ray_worker"])


@pytest.mark.parametrize("mode", ["object_store", "shared_path"])
def test_same_lineage_as_local(session, mode):
    """Same champions, promotions, frontiers, experiments (status and model digest), gate decisions with their
    reasons, and the experiments recorded in the same order, though a Ray worker was killed mid-training."""
    run = session[mode]
    assert run["state"] == "finished"
    assert lineage(run["run_dir"]) == lineage(session["local"]["run_dir"])


def test_object_store_runs_on_ray_in_staging(session):
    """Every experiment ran as a Ray task (a `ray::successor-<id>` worker is its sandbox's ancestor) on a staged
    copy of its inputs, and what it produced reached the real workspace by unpacking."""
    run = session["object_store"]
    exps = {e for e, _, _ in lineage(run["run_dir"])["experiments"]}
    assert set(run["seen"]) == exps
    staging = str(Path(run["run_dir"]).parent.parent / "staging" / "successor-ray")
    for exp, rec in run["seen"].items():
        assert all(j.startswith(staging) and j.endswith(f"/run/workspaces/{exp}/job.json") for j in rec["jobs"])
        assert all(rec["ray_worker"]), rec
        ws = Path(run["run_dir"]) / "workspaces" / exp
        assert (ws / "out" / "checkpoint").is_dir() and (ws / "out" / "metrics.json").is_file()
        assert (Path(run["run_dir"]) / "logs" / f"{exp}.log").is_file() and not (ws / "tmp").exists()
        assert json.loads((ws / "job.json").read_text())["out"] == str(ws / "out")  # the driver's job, untouched
    assert run["outcomes"] and all(o["node"] and o["isolation"] == "bwrap" for o in run["outcomes"])
    assert all(o["checkpoint"] and o["log"] for o in run["outcomes"]), "unpacked before map yielded"
    assert run["staging_left"] == [], "every staging folder removed, the killed attempt's included"


@pytest.mark.parametrize("mode", ["object_store", "shared_path"])
def test_worker_death_mid_experiment(session, mode):
    """SIGKILL to the Ray worker running an experiment: its sandbox dies with it, Ray runs the task again, and
    the driver records the experiment once."""
    run = session[mode]
    kill = run["kill"]
    assert kill is not None, "the watcher never found an experiment to kill"
    assert kill["worker_title"].startswith(f"ray::successor-{kill['experiment']}")
    assert kill["sandbox_pids"] and kill["sandbox_left"] == [], kill
    rec = run["seen"][kill["experiment"]]
    assert rec["pids_after_kill"], "no second attempt was seen"
    if mode == "object_store":
        assert len(rec["jobs"]) == 2, "the retry ran in a fresh staging folder"
    else:
        assert rec["jobs"] == [str(Path(run["run_dir"]) / "workspaces" / kill["experiment"] / "job.json")]
    db = sqlite3.connect(Path(run["run_dir"]) / "lineage.db")
    rows = db.execute("SELECT id, status, attempts FROM experiments").fetchall()
    db.close()
    assert len(rows) == len({r[0] for r in rows})
    assert dict((r[0], r[1]) for r in rows)[kill["experiment"]] == "done"
    assert dict((r[0], r[2]) for r in rows)[kill["experiment"]] == 1, "one attempt as the driver counts them"
    ends = [e["experiment"] for e in audit(run["run_dir"], "experiment.end")]
    assert sorted(ends) == sorted({r[0] for r in rows}), "exactly one experiment.end per experiment"


def test_stop_cancels_the_task_and_its_sandbox(session):
    stop = session["direct"]["stop"]
    # the program sleeps 100 s: a wait that ends well before that after the signal was ended by the stop
    assert stop["stopped"] and stop["after_signal_s"] is not None and stop["after_signal_s"] < 60, stop
    assert stop["sandbox_pids"] and stop["left"] == [], stop
    assert stop["staging_left"] == []


def test_staged_candidate_cannot_see_the_real_run_directory(session):
    peek = session["direct"]["peek"]
    assert "refused" in peek["log"] and "secret" not in peek["log"]
    assert peek["status"] == "violation" and any(v["kind"] == "harness_data" for v in peek["violations"]), peek


def test_results_over_the_cap_fail_with_the_way_out(session):
    cap = session["direct"]["cap"]
    assert cap["status"] == "failed"
    assert "max_transfer_mb (1 MiB)" in cap["error"] and "shared_path" in cap["error"]
    assert "program/blob.bin" not in cap["files"] and cap["log"] is not None, "only its log came back"


def test_watchdog_kills_the_sandbox_of_a_dead_worker_without_bubblewrap(session):
    """isolation: none (no pid namespace, no --die-with-parent): the watchdog beside the task kills the sandbox's
    process group when its worker dies; with max_retries 0 the driver gets a failed outcome."""
    got = session["direct"]["watchdog"]
    assert len(got["sandbox_pids"]) >= 2 and got["left"] == [], got  # guard, program
    assert got["status"] == "failed" and got["error"].startswith("the Ray task failed: "), got
    assert session["direct"]["staging_left_at_end"] == []


def test_private_cluster_when_address_is_null(session):
    got = session["direct"]["private"]
    assert got["status"] == "done" and got["node"] and got["owned"] and got["workers"] >= 1
    assert got["initialized_after_close"] is False


def test_node_without_bubblewrap_gives_a_failed_outcome(session):
    got = session["direct"]["no_bwrap"]
    assert got["status"] == "failed" and got["node"]
    assert got["error"].startswith("on node ") and "isolation: required" in got["error"]
    assert "bubblewrap" in got["error"]


# -- no cluster needed ---------------------------------------------------------------------------------------
def test_missing_ray_is_a_config_error_with_the_install_line(monkeypatch):
    from successor.config import ConfigError, RayConfig
    from successor.executors.ray import INSTALL, RayExecutor

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError) as e:
        RayExecutor(60, 1, None, "none", None, RayConfig())
    assert INSTALL in str(e.value) and "\n" not in str(e.value)


def test_cli_says_one_line_and_exits_2_without_ray(tmp_path):
    sys.path.insert(0, str(HERE))
    from conftest import tiny_config

    import yaml

    cfg = tiny_config(tmp_path / "c.yaml")
    data = yaml.safe_load(cfg.read_text())
    data["loop"]["executor"] = {"name": "ray"}
    cfg.write_text(yaml.safe_dump(data))
    code = ("import sys; sys.modules['ray'] = None; from successor._cli import app; "
            "sys.argv = ['successor'] + sys.argv[1:]; app()")
    r = subprocess.run([sys.executable, "-c", code, "run", str(cfg), "--preset", "smoke", "--run-dir",
                        str(tmp_path / "run"), "--quiet"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'successor-lab[ray]'" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def _tar(entries: list[tuple[str, bytes | None, str | None]]) -> bytes:
    """(name, file content, or None with a link target) as a tar, the way a hostile node could build one."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, link in entries:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_unpacking_results_stays_inside_and_spares_the_inputs(tmp_path):
    from successor.executors.base import Experiment
    from successor.executors.ray_node import unpack_results

    root = tmp_path / "run"
    ws = root / "workspaces" / "x1"
    (ws / "program").mkdir(parents=True)
    (ws / "job.json").write_text("{}")
    (ws / "program" / "frozen.py").write_text("frozen")
    (ws / "holdout_answers.json").write_text("honeypot")
    exp = Experiment(job=ws / "job.json", run_root=root, readable=[], protected=[], cwd=ws / "program",
                     read_only=[ws / "program" / "frozen.py"], honeypots=[ws / "holdout_answers.json"],
                     command=["python", "main.py"])
    unpack_results(_tar([("out/metrics.json", b"{}", None), ("program/model.bin", b"weights", None),
                         ("job.json", b'{"evil": 1}', None), ("program/frozen.py", b"edited", None),
                         ("./holdout_answers.json", b"x", None), ("tmp/junk", b"x", None),
                         ("../escaped", b"x", None), ("/abs/escaped", b"x", None),
                         ("out/link", None, "/etc/passwd"), ("out/inner", None, "metrics.json")]), exp)
    assert (ws / "out" / "metrics.json").read_text() == "{}"
    assert (ws / "program" / "model.bin").read_text() == "weights"
    assert (ws / "job.json").read_text() == "{}" and (ws / "program" / "frozen.py").read_text() == "frozen"
    assert (ws / "holdout_answers.json").read_text() == "honeypot"
    assert not (ws / "tmp").exists() and not (ws.parent / "escaped").exists()
    assert not Path("/abs/escaped").exists() and not (ws / "abs").exists()
    assert not (ws / "out" / "link").exists() and not (ws / "out" / "inner").is_symlink()
