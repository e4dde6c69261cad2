"""The script workload: the user's own program, its code patches as commits, the harness's evaluation, and a gate
that seed noise does not pass. A toy program keeps these fast: its score is a known function of its knob `x` and
a `BONUS` line a patch can change, plus seed noise (sd 0.02) that the knob `salt` reshuffles without helping."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from successor.config import ConfigError, load_config
from successor.oversight.gate import seed_test
from successor.oversight.policy import Policy
from successor.researchers.base import Proposal, ResearcherPaused
from successor.rundir import RunDir
from successor.oversight.verify import verify_run
from successor.driver import Driver
from successor.workloads.script.patch import PatchError, check_diff
from successor.workloads.script.program import ProgramRepo

TRAIN = '''\
import argparse, json, random
p = argparse.ArgumentParser()
p.add_argument("--x", type=float, default=0.0)
p.add_argument("--salt", type=int, default=0)
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
BONUS = 0.0
rng = random.Random(a.seed * 7919 + a.salt)
score = 1.0 - (a.x - 3.0) ** 2 / 10 + BONUS + rng.gauss(0, 0.02)
json.dump({"score": score}, open("artifact.json", "w"))
print(f"score={CLAIM if 'CLAIM' in dir() else score:.5f}")
'''
EVAL = '''\
import json, sys
print(f"score={json.load(open(sys.argv[1]))['score']:.5f}")
'''
CONFIG = """\
name: toy
workload: script
script:
  program: prog
  command: [python, train.py]
  editable: [train.py]
  knobs:
    x: {type: float, default: 0.0, low: 0.0, high: 6.0}
    salt: {type: int, default: 0, low: 0, high: 100}
  metric: {regex: "score=([-0-9.]+)"}
  artifact: artifact.json
  evaluate: {command: [python, eval.py, "{artifact}"], metric: {regex: "score=([-0-9.]+)"}}
  seeds: 1
  gate: {seeds: 3, min_effect: 0.01}
loop: {generations: GENS}
researcher: {name: evolution, candidates: 3}
"""


def _diff(old: str, new: str, path: str = "train.py") -> str:
    added = "".join(f"+{line}\n" for line in new.splitlines())
    return f"--- a/{path}\n+++ b/{path}\n@@ -7 +7 @@\n-{old}\n{added}"


GOOD = _diff("BONUS = 0.0", "BONUS = 0.3")


@pytest.fixture
def toy(tmp_path: Path):
    prog = tmp_path / "prog"
    prog.mkdir()
    (prog / "train.py").write_text(TRAIN)
    (prog / "eval.py").write_text(EVAL)

    def make(generations: int = 2, **over) -> Path:
        cfg = yaml.safe_load(CONFIG.replace("GENS", str(generations)))
        for k, v in over.items():
            cfg["script"][k] = v
        path = tmp_path / "successor.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path
    return make


class Scripted:
    """A researcher whose proposals the test writes, generation by generation."""

    name = "scripted"

    def __init__(self, plan: dict):
        self.plan, self.briefs = plan, []

    def propose(self, brief):
        self.briefs.append(brief)
        step = self.plan.get(brief.generation, [])
        if isinstance(step, Exception):
            raise step
        return [Proposal({**brief.champion_knobs, **k}, why, diff, researcher="scripted") for k, diff, why in step]


def _loop(config: Path, run_dir: Path, researcher=None, human_on_violation: bool = False) -> Driver:
    """The loop, with the integrity tripwire off unless asked (with it on, a violation waits for a human)."""
    rd = RunDir(run_dir, load_config(config))
    if not human_on_violation:
        rd.set_policy(Policy.model_validate({"tripwires": {"integrity_violation": False}}))
    return Driver(rd, researcher=researcher)


def _decisions(loop: Driver) -> dict[str, tuple[int, str]]:
    return {r["candidate_id"]: (r["promoted"], r["reason"]) for r in loop.store.q("SELECT * FROM gate_decisions")}


# -- config -------------------------------------------------------------------------------------------------------
def test_the_readme_config_is_under_20_lines_and_resolves_the_program_next_to_it(toy, tmp_path):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("<!-- readme-script-config -->\n```yaml\n", 1)[1].split("```", 1)[0]
    assert len([ln for ln in block.splitlines() if ln.strip()]) < 20
    (tmp_path / "prog" / "successor.yaml").write_text(block)
    mine = load_config(tmp_path / "prog" / "successor.yaml")
    assert mine.script.direction == "minimize" and mine.script.space().dims["hidden"].kind == "int"
    assert Path(mine.script.program) == (tmp_path / "prog").resolve()
    cfg = load_config(toy())
    assert cfg.workload == "script" and Path(cfg.script.program) == (tmp_path / "prog").resolve()
    assert cfg.script.space().dims["x"].check(2) == 2.0


@pytest.mark.parametrize("over, needle", [
    ({"evaluate": {"command": ["python", "eval.py"], "metric": {"regex": "s=(\\d)"}}, "artifact": None},
     "evaluate needs artifact"),
    ({"metric": {"regex": "score=[0-9]+"}}, "needs a group"),
    ({"knobs": {"x": {"type": "float", "default": 9.0, "low": 0.0, "high": 6.0}}}, "outside"),
    ({"knobs": {"x": {"type": "float", "default": 1.0, "low": 0.0, "high": 6.0, "log": True}}}, "low > 0"),
    ({"metric": {"json": "m.json"}}, "needs key"),
    ({"metric": {"json": "m.json", "key": "a", "regex": "a=(1)"}}, "exactly one of regex or json"),
])
def test_bad_script_configs_are_one_clear_line(toy, over, needle):
    with pytest.raises(ConfigError) as e:
        load_config(toy(**over))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_script_run_without_its_section_is_refused_by_the_cli(tmp_path):
    (tmp_path / "c.yaml").write_text("workload: script\n")
    r = subprocess.run([sys.executable, "-m", "successor", "run", str(tmp_path / "c.yaml"), "--run-dir",
                        str(tmp_path / "run"), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 2 and "needs a script section" in r.stderr


# -- patches as commits ---------------------------------------------------------------------------------------------
def test_patch_paths_are_checked_before_git_sees_them():
    assert check_diff(GOOD, ["train.py"]) == []
    assert "eval.py: not in the editable allow-list" in check_diff(_diff("a", "b", "eval.py"), ["train.py"])[0]
    assert "outside the program" in check_diff(_diff("a", "b", "../x.py"), ["*"])[0]
    assert check_diff("just prose", ["*"]) == ["the patch names no file (not a unified diff)"]


def test_every_candidate_is_a_commit_whose_parent_is_the_champion(toy, tmp_path):
    repo = ProgramRepo(tmp_path / "program.git", "toy run")
    first = repo.init(tmp_path / "prog")
    c = repo.candidate("g1c0", first, GOOD, ["train.py"], "bonus")
    assert repo.git("rev-parse", f"{c}^").strip() == first
    assert "BONUS = 0.3" in repo.read(c, "train.py") and "BONUS = 0.0" in repo.read(first, "train.py")
    with pytest.raises(PatchError, match="does not apply"):
        repo.candidate("g1c1", first, _diff("BONUS = 7", "BONUS = 8"), ["train.py"], "stale")
    with pytest.raises(PatchError, match="eval.py: not in the editable"):
        repo.candidate("g1c2", first, _diff("x", "y", "eval.py"), ["train.py"], "forbidden")
    assert repo.champion() == first  # the run's branch moves only on promotion


# -- the gate -----------------------------------------------------------------------------------------------------
def test_seed_noise_is_refused_and_a_real_gain_promoted():
    rng = np.random.default_rng(0)
    champ = list(0.9 + rng.normal(0, 0.02, 5))
    lucky = [c + d for c, d in zip(champ, [0.03, -0.02, 0.01, -0.01, 0.0])]  # one lucky seed, mean +0.002
    d = seed_test(champ, lucky, "paired", 0.05, 0.0, "maximize")
    assert not d.promoted and "seed noise" in d.reason
    real = [c + 0.02 + e for c, e in zip(champ, rng.normal(0, 0.003, 5))]
    assert seed_test(champ, real, "paired", 0.05, 0.005, "maximize").promoted
    assert not seed_test(champ, real, "paired", 0.05, 0.05, "maximize").promoted  # under min_effect
    assert seed_test([2.0, 2.1, 2.05], [1.8, 1.85, 1.9], "welch", 0.05, 0.02, "minimize").promoted
    assert not seed_test([2.0, 2.1, 2.05], [1.8, 1.85, 1.9], "welch", 0.05, 0.02, "maximize").promoted
    flat = seed_test([1.0] * 3, [1.1] * 3, "paired", 0.05, 0.0, "maximize")  # a program that ignores its seed
    assert not flat.promoted and flat.stats["p_value"] is None and "not verified across seeds" in flat.reason


# -- the loop, end to end -------------------------------------------------------------------------------------------
def test_evolution_improves_the_program_and_the_run_verifies(toy, tmp_path):
    loop = _loop(toy(generations=2), tmp_path / "run")
    assert loop.run_all() == "finished"
    gens = loop.store.q("SELECT idx, promoted, champion_model FROM generations ORDER BY idx")
    assert [g["promoted"] for g in gens][0] == 1 and sum(g["promoted"] for g in gens[1:]) >= 1
    first = json.loads(loop.store.one("SELECT stats FROM gate_decisions WHERE generation=0")["stats"])
    last = json.loads(loop.store.one("SELECT stats FROM gate_decisions WHERE promoted=1 ORDER BY generation DESC")
                      ["stats"])
    assert last["contender_mean"] > first["contender_mean"] + 0.1  # x moved toward 3 from 0 (score 0.1)
    assert ok_run(tmp_path / "run")
    branch = loop.workload.repo.champion()
    assert loop.workload.program(gens[-1]["champion_model"])["git_commit"] == branch


def ok_run(run_dir: Path) -> bool:
    ok, lines = verify_run(run_dir)
    assert ok, lines
    return ok


def test_patches_commit_refusals_and_seed_noise_never_promoted(toy, tmp_path):
    plan = {1: [({"salt": 17}, None, "a new seed stream, 42 -> 137"),
                ({}, None, "the champion again"),
                ({"salt": 71}, None, "another seed stream"),
                ({}, _diff("x", "y", "eval.py"), "edit the evaluation"),
                ({}, _diff("BONUS = 7", "BONUS = 8"), "a stale patch")],
            2: [({}, GOOD, "raise the bonus"), ({"salt": 5}, None, "seed stream again")]}
    loop = _loop(toy(generations=2), tmp_path / "run", Scripted(plan))
    assert loop.run_all() == "finished"
    dec = _decisions(loop)
    assert not dec["g1c0"][0] and not dec["g1c2"][0]  # only seed noise: never promoted
    assert "nothing to test" in dec["g1c1"][1]
    assert "eval.py: not in the editable allow-list" in dec["g1c3"][1]
    assert "does not apply" in dec["g1c4"][1]
    assert dec["g2c0"][0] == 1 and "paired t-test" in dec["g2c0"][1]
    assert "BONUS = 0.3" in loop.workload.repo.read(loop.workload.repo.champion(), "train.py")
    # research memory shows the refusals to the next researcher call, with their reasons
    mem = {t.id: t for t in loop.workload.researcher.briefs[-1].memory}
    assert mem["g1c3"].status == "refused" and "eval.py" in mem["g1c3"].error
    from successor.reporting.report import write_report
    md = (write_report(tmp_path / "run") / "report.md").read_text()
    assert "### g2c0" in md and "+BONUS = 0.3" in md and "### g1c3" in md
    assert ok_run(tmp_path / "run")
    _check_script_report(tmp_path / "run", md)


def _check_script_report(run_dir: Path, md: str) -> None:
    """The script report is self-contained too, with the acceleration section and a summary.md that states the
    store's numbers; every dashboard plot draws for a script run."""
    from test_report import check_acceleration, check_self_contained, read_summary, render_all

    from successor.reporting.status import status_dict

    out = run_dir / "report"
    pngs = check_self_contained((out / "report.html").read_text())
    assert set(pngs) == {"gate runs by generation", "acceleration", "lineage tree"}
    for name in ("metric", "acceleration", "lineage"):
        assert (out / f"{name}.png").read_bytes() in pngs.values()
    check_acceleration(md, run_dir)
    assert "## Lineage" in md
    st, facts = status_dict(run_dir), read_summary(run_dir)
    done = [g for g in st["generations"] if g["status"] == "done"]
    succ = [g for g in done if g["generation"] > 0]
    assert facts["promoted"].startswith(f"{sum(bool(g['promoted']) for g in succ)} of {len(succ)} successor")
    assert facts["metric by generation"] == " → ".join(f"{g['metric']:.4g}" for g in done)
    assert facts["final champion"].startswith(f"{st['champion'][:12]}: mean metric {st['metric']:.4g}")
    assert facts["guardrail"] == "not applicable to a script run"
    assert facts["human decisions"] == "0" and facts["sandbox violations"] == str(st["violations"])
    assert facts["audit log and artifacts"].startswith("verified: ok")
    plots = render_all(run_dir)
    assert plots["frontier"] != plots["accuracy_heatmap"]  # the metric by generation, not a panel
    assert len(plots["lineage"]) > 10_000


def test_the_gate_refuses_a_selected_change_that_is_only_seed_noise(toy, tmp_path):
    """Salt-only candidates: whichever wins its experiment seeds by luck goes to fresh gate seeds and fails."""
    plan = {g: [({"x": 3.0, "salt": 10 * g + i}, None, "seed stream") for i in range(5)] for g in (2, 3)}
    plan[1] = [({"x": 3.0}, None, "move x to the optimum")]
    loop = _loop(toy(generations=3), tmp_path / "run", Scripted(plan))
    assert loop.run_all() == "finished"
    dec = loop.store.q("SELECT generation, candidate_id, promoted, reason FROM gate_decisions WHERE role='successor' "
                       "AND generation>1")
    assert dec, "some salt candidate must have reached the gate"
    assert all(not d["promoted"] for d in dec)
    assert all("seed noise" in d["reason"] or "min_effect" in d["reason"] for d in dec)
    n = [json.loads(r["stats"])["n"] for r in loop.store.q("SELECT stats FROM gate_decisions WHERE role='successor' "
                                                             "AND generation>1")]
    assert set(n) <= {3, 6, 10}  # the adaptive looks, never past the cap


def test_the_harness_number_is_used_not_what_the_program_claims(toy, tmp_path):
    claim = _diff("BONUS = 0.0", "BONUS = 0.0; CLAIM = 9.99")
    loop = _loop(toy(generations=1), tmp_path / "run", Scripted({1: [({"x": 3.0}, claim, "claims 9.99")]}))
    loop.run_all()
    row = loop.store.one("SELECT metrics FROM experiments WHERE candidate_id='g1c0' AND kind='candidate'")
    m = json.loads(row["metrics"])
    assert m["reported"] == pytest.approx(9.99) and m["source"] == "harness" and m["metric"] < 1.1


@pytest.mark.parametrize("code, kind", [
    ("open('../holdout_answers.json').read()", "honeypot"),
    ("open('eval.py', 'a').write('# mine')", "job_edit"),
])
def test_crossing_the_sandbox_disqualifies_the_candidate(toy, tmp_path, code, kind):
    cheat = _diff("BONUS = 0.0", f"BONUS = 0.5\ntry:\n    {code}\nexcept OSError:\n    pass")
    loop = _loop(toy(generations=1), tmp_path / "run", Scripted({1: [({"x": 3.0}, cheat, "cheat")]}))
    loop.run_all()
    kinds = {r["kind"] for r in loop.store.q("SELECT kind FROM violations WHERE candidate_id='g1c0'")}
    assert kind in kinds
    promoted, reason = _decisions(loop)["g1c0"]
    assert not promoted and "violation" in reason and kind in reason


def test_a_researcher_out_of_budget_pauses_the_run_and_it_resumes(toy, tmp_path):
    plan = {1: ResearcherPaused("llm cost cap reached: $0.01 of $0.01")}
    loop = _loop(toy(generations=1), tmp_path / "run", Scripted(plan))
    state = loop.run_all()
    assert state.startswith("paused: the researcher paused: llm cost cap reached")
    assert loop.store.generation(0)["status"] == "done" and loop.store.generation(1)["status"] == "running"
    loop2 = _loop(toy(generations=1), tmp_path / "run", Scripted({1: [({"x": 2.0}, None, "after the raise")]}))
    assert loop2.run_all() == "finished"
    assert loop2.store.generation(1)["status"] == "done"


def test_knobs_reach_the_program_as_flags_env_and_a_config_file(toy, tmp_path):
    prog = tmp_path / "prog"
    (prog / "train.py").write_text(textwrap.dedent('''\
        import json, os, sys
        cfg = json.load(open("knobs.json"))
        x = float(sys.argv[sys.argv.index("--x") + 1]) + float(os.environ["SALT"]) + cfg["y"]
        json.dump({"score": x}, open("artifact.json", "w"))
        print(f"score={x}")
        '''))
    cfg = toy(generations=1, knobs={"x": {"type": "float", "default": 1.0, "low": 0.0, "high": 6.0},
                                    "salt": {"type": "int", "default": 2, "low": 0, "high": 9, "via": "env"},
                                    "y": {"type": "choice", "default": 0.5, "values": [0.5, 1.5], "via": "config"}},
              seed=None, gate={"seeds": 3, "min_effect": 0.01, "seed_ignored": "allow"})
    loop = _loop(cfg, tmp_path / "run", Scripted({}))
    assert loop.run_all() == "finished"
    stats = json.loads(loop.store.one("SELECT stats FROM gate_decisions WHERE generation=0")["stats"])
    assert stats["contender"] == [3.5] * 3  # 1 + 2 + 0.5, the same on every seed (it takes none)
    assert stats["verified_across_seeds"] is False  # seed: null and the opt-in: on the record as one seed


# -- the llm researcher through the loop ----------------------------------------------------------------------------
def test_an_llm_patch_is_promoted_and_its_cost_cap_pauses_the_run_not_crashes_it(toy, tmp_path, monkeypatch):
    from test_llm_researcher import Handler, answer, ok, prop  # the loopback OpenAI/Anthropic server
    import threading
    from http.server import ThreadingHTTPServer

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.replies, srv.requests, srv.lock = [], [], threading.Lock()
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        llm = {"provider": "openai", "model": "m", "base_url": f"http://127.0.0.1:{srv.server_address[1]}/v1",
               "api_key_env": "SUCCESSOR_NO_KEY", "price_in_per_mtok": 3.0, "price_out_per_mtok": 15.0}
        cfg = yaml.safe_load(Path(toy(generations=2)).read_text())
        cfg["researcher"] = {"name": "llm", "candidates": 1, "llm": llm}
        path = tmp_path / "llm.yaml"
        path.write_text(yaml.safe_dump(cfg))
        srv.replies.append(ok("openai", answer(prop({"x": 3.0}, GOOD, "the bonus and the optimum"))))
        rd = RunDir(tmp_path / "run", load_config(path))
        rd.set_policy(Policy.model_validate({"budgets": {"llm_cost_usd": 0.005}}))  # one call costs $0.0081
        loop = Driver(rd)
        state = loop.run_all()
        assert state.startswith("paused: the researcher paused: llm cost cap reached")
        assert len(srv.requests) == 1  # the cap stopped the second call before it was made
        prompt = json.dumps(srv.requests[0]["body"]["messages"])
        assert "BONUS = 0.0" in prompt and "salt" in prompt  # the source and the knob space
        dec = _decisions(loop)
        assert dec["g1c0"][0] == 1 and "BONUS = 0.3" in loop.workload.repo.read(loop.workload.repo.champion(), "train.py")
        calls = loop.store.q("SELECT * FROM llm_calls")
        assert [c["status"] for c in calls] == ["ok"] and calls[0]["cost_usd"] == pytest.approx(0.0081)
        assert Path(calls[0]["transcript"]).is_file()
        # a human raises the cap; the same command resumes where it paused
        rd.set_policy(Policy.model_validate({"budgets": {"llm_cost_usd": 1.0}}))
        srv.replies.append(ok("openai", answer(prop({"salt": 3}, None, "another seed stream"))))
        loop = Driver(RunDir(tmp_path / "run", load_config(path)))
        assert loop.run_all() == "finished"
        assert len(srv.requests) == 2 and loop.store.generation(2)["status"] == "done"
        second = json.dumps(srv.requests[1]["body"]["messages"])
        assert "g1c0" in second and "promoted" in second  # research memory reached the prompt
        from successor.reporting.report import write_report
        md = (write_report(tmp_path / "run") / "report.md").read_text()
        assert "## LLM calls" in md and "0.0081" in md and "+BONUS = 0.3" in md
    finally:
        srv.shutdown()
        srv.server_close()


def test_hidden_data_is_empty_to_a_candidate_and_read_by_the_evaluation(toy, tmp_path):
    """The user's held-out data: the sandbox puts an unreadable file in its place, and trying disqualifies."""
    secret = tmp_path / "heldout.txt"
    secret.write_text("0.25\n")
    (tmp_path / "prog" / "eval.py").write_text(EVAL.replace(
        "print(", "bonus = float(open(sys.argv[2]).read())\nprint(").replace("['score']", "['score'] + bonus"))
    peek = _diff("BONUS = 0.0", f"BONUS = 0.0\nSEEN = open({str(secret)!r}).read()\nprint('seen=' + repr(SEEN))")
    cfg = toy(generations=1, hidden=["heldout.txt"],
              evaluate={"command": ["python", "eval.py", "{artifact}", "{hidden}"],
                        "metric": {"regex": "score=([-0-9.]+)"}})
    loop = _loop(cfg, tmp_path / "run", Scripted({1: [({"x": 3.0}, peek, "peek at the held-out data")]}))
    assert loop.run_all() == "finished"
    first = json.loads(loop.store.one("SELECT stats FROM gate_decisions WHERE generation=0")["stats"])
    assert first["contender_mean"] == pytest.approx(0.1 + 0.25, abs=0.04)  # the evaluation read it
    exp = loop.store.one("SELECT id FROM experiments WHERE candidate_id='g1c0' LIMIT 1")["id"]
    log = (loop.run.root / "logs" / f"{exp}.log").read_text()
    assert "0.25" not in log and ("seen=''" in log or "Permission denied" in log)  # nothing of it reached them
    kinds = {r["kind"] for r in loop.store.q("SELECT kind FROM violations WHERE candidate_id='g1c0'")}
    assert "harness_data" in kinds and not _decisions(loop)["g1c0"][0]


def test_tinylm_refuses_a_script_researcher(tmp_path):
    (tmp_path / "c.yaml").write_text("researcher: {name: manager}\n")
    with pytest.raises(ConfigError, match="researcher manager drives the script workload only"):
        load_config(tmp_path / "c.yaml")


def test_the_cli_runs_a_script_config_and_shows_its_metric(toy, tmp_path):
    cfg = toy(generations=1, seeds=1, gate={"seeds": 2, "min_effect": 0.01})
    Path(cfg).write_text(Path(cfg).read_text().replace("candidates: 3", "candidates: 1"))
    r = subprocess.run([sys.executable, "-m", "successor", "run", str(cfg), "--run-dir", str(tmp_path / "run"),
                        "--quiet"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    s = subprocess.run([sys.executable, "-m", "successor", "status", str(tmp_path / "run"), "--json"],
                       capture_output=True, text=True)
    gens = json.loads(s.stdout)["generations"]
    assert len(gens) == 2 and 0.05 < gens[0]["metric"] < 0.2  # x = 0: score 0.1 plus seed noise
    assert "metric" in r.stdout and f"{gens[0]['metric']:.4g}" in r.stdout


def test_an_artifact_folder_with_a_link_inside_is_a_violation_and_never_copied(toy, tmp_path):
    """Red team: a directory artifact holding a link to the harness's files is not copied into the lineage (the
    copy once followed it), and crossing that line disqualifies the candidate."""
    plant = ("BONUS = 0.5\nimport atexit, os, subprocess\n@atexit.register\ndef plant():\n"
             "    os.remove('artifact.json')\n    os.mkdir('artifact.json')\n"
             "    open('artifact.json/score.json', 'w').write('{}')\n"
             "    subprocess.run(['ln', '-s', '/etc/passwd', 'artifact.json/leak'], check=True)")
    loop = _loop(toy(generations=1), tmp_path / "run", Scripted({1: [({"x": 3.0}, _diff("BONUS = 0.0", plant),
                                                                        "a linked artifact")]}))
    assert loop.run_all() == "finished"
    kinds = {r["kind"] for r in loop.store.q("SELECT kind FROM violations WHERE candidate_id='g1c0'")}
    assert "output_link" in kinds
    promoted, reason = _decisions(loop)["g1c0"]
    assert not promoted and "output_link" in reason
    arts = loop.run.root / "artifacts" / "script"
    assert not any(p.is_symlink() or p.name == "leak" for p in arts.rglob("*"))
    assert verify_run(loop.run.root)[0]
