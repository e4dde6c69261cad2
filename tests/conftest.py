"""Shared fixtures: one real smoke run per test session, shared by the xdist workers, for tests that read it."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

from successor.config import CuratorConfig

# Every run the tests make (in-process or through the CLI) takes one fixed tier key (successor.rundir.RunDir): runs
# share their harness tiers, as runs of one seed did before tier keys, so lineages compare across runs and
# outcomes do not change from session to session. tests/test_redteam_inputs.py unsets it to test the secret.
_KEY_FILE = Path(tempfile.mkdtemp(prefix="successor-tests-")) / "tier.key"
_KEY_FILE.write_bytes(bytes(range(32)))
os.environ.setdefault("SUCCESSOR_TIER_KEY", str(_KEY_FILE))


# One torch thread in the test processes and the runs they start (experiments get theirs from the config): five
# xdist workers on 2 cores, each with a harness evaluating at two OpenMP threads beside its experiments,
# oversubscribed the cores (the suite's user CPU fell from 16.8 to 6.7 minutes with one). Set before anything
# imports torch (this file is loaded first).
os.environ.setdefault("OMP_NUM_THREADS", "1")


# The modules whose tests run whole loops, slowest first (`make test --durations`). Under `--dist loadfile
# --no-loadscope-reorder` xdist hands modules to its workers in collection order; by default it orders them by
# their count of tests, which put these one-to-six-test modules last, where each became the suite's tail.
SLOW_FIRST = ("test_ray_executor.py", "test_e2e.py", "test_scale.py", "test_resume.py", "test_bootstrap_restart.py",
              "test_ladder.py", "test_composing.py", "test_dashboard.py", "test_api.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: a module keeps its order


@pytest.fixture(scope="session")
def smoke_result(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory, worker_id: str):
    """The shared smoke run as the library API returned it, in-process, with its plain progress lines:
    (RunResult over this worker's copy, the progress text). The smoke run is made once per test session
    (`smoke_run`): its maker keeps what `successor.run` returned beside it, so the API tests read that call's own
    result, not a second run of the same config."""
    import dataclasses
    import json

    import successor

    base = _shared(tmp_path_factory, worker_id) / "smoke-shared"
    fields = json.loads((base / "result.json").read_text())
    result = successor.RunResult(run_dir=smoke_run, **fields)
    assert {f.name for f in dataclasses.fields(result)} == {"run_dir", *fields}
    return result, (base / "progress.log").read_text()


def _smoke(run_dir: Path):
    import successor

    with open(run_dir.parent / "progress.log", "w") as stream:
        # Not waiting for a human: a violation here must fail the tests that read this run, not hang the session.
        return successor.run(successor.load_config(preset="smoke"), run_dir,
                             policy=successor.Policy.model_validate({"tripwires": {"integrity_violation": False}}),
                             progress=successor.PlainProgress(stream, total_generations=3))


def _shared(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The folder every xdist worker of this session sees (each worker's base folder sits in it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if worker_id != "master" else base


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A finished smoke run's directory, a copy of this worker's own (treat it as read-only all the same). The
    smoke run is made once per test session: the first xdist worker to need it runs it under a file lock, and
    every worker copies it, so each can write reports into its own copy without racing the others."""
    import dataclasses
    import json
    import shutil

    from filelock import FileLock

    shared = _shared(tmp_path_factory, worker_id)
    base = shared / "smoke-shared"
    made = base / "run"
    with FileLock(str(shared / "smoke-shared.lock")):
        if not (base / "finished").exists():
            shutil.rmtree(base, ignore_errors=True)
            made.mkdir(parents=True)
            result = _smoke(made)
            assert result.finished
            fields = {k: v for k, v in dataclasses.asdict(result).items() if k != "run_dir"}
            (base / "result.json").write_text(json.dumps(fields))
            (base / "finished").touch()
    copy = tmp_path_factory.mktemp("smoke") / "run"
    shutil.copytree(made, copy, symlinks=True)
    return copy


TINY = {
    "task": {"human_levels": [1, 2], "human_per_level": 400, "eval_max_level": 4, "dev_per_level": 30,
             "validation_per_level": 30, "sealed_per_level": 60},
    # 400 steps: at 200 an AVX-512 machine's bootstrap scored 0.11 at length 1 (an AVX2 one passed the gate),
    # and every test that needs a generation 1 ran a second bootstrap instead.
    "bootstrap": {"steps": 400},
    "successor": {"steps": 30},
    "researcher": {"candidates": 1},
    # the curator protocol these tiny lineages were measured with (smoke's, the curator's own defaults), not the
    # default preset's: composition, relabelling and two-form votes cost a tiny run more than it tests
    "curator": {"problems": 60, "min_kept": 5, "levels_ahead": 1,
                **CuratorConfig().model_dump(include={"schedule", "relabel", "policy", "voter_floor", "rewrites",
                                                      "accelerate_threshold", "compose"})},
    "loop": {"generations": 1, "experiment_timeout_s": 300, "threads": 1, "experiment_budget": 1.0},
}


def tiny_config(path: Path, **loop) -> Path:
    """A config file for the smallest real run (smoke preset, smaller still): seconds per experiment."""
    import yaml

    cfg = {k: dict(v) for k, v in TINY.items()}
    cfg["loop"].update(loop)
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """The machine is shared; one torch thread keeps model tests fast and bit-reproducible."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def operands(prompt: str, op: str) -> tuple[str, str]:
    """The two operands of `a<op>b=`, after checking the prompt has that shape."""
    assert prompt.endswith("=") and prompt.count(op) == 1 and prompt.count("=") == 1
    a, b = prompt[:-1].split(op)
    return a, b


def wait_for(pred, timeout: float = 300.0, what: str = "condition"):
    """Poll `pred` until it returns something true (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def recipe_proposals(researcher, incumbent, history, tried, n, rng) -> list:
    """A tinylm researcher's proposals through the one researcher protocol (propose(Brief)), each as a record of
    (recipe, rationale, patch) for the tests to read."""
    from types import SimpleNamespace

    from successor.researchers.tinylm_search import recipe_brief
    from successor.workloads.tinylm.recipe import Recipe

    return [SimpleNamespace(recipe=Recipe(**p.knobs), rationale=p.rationale, patch=p.diff)
            for p in researcher.propose(recipe_brief(0, incumbent, history, tried, n, rng))]
