"""Shared fixtures: one real smoke run per test session, for tests that only read a finished run."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

# Every run the tests make (in-process or through the CLI) takes one fixed tier key (successor.rundir.RunDir): runs
# share their harness tiers, as runs of one seed did before tier keys, so lineages compare across runs and
# outcomes do not change from session to session. tests/test_redteam_inputs.py unsets it to test the secret.
_KEY_FILE = Path(tempfile.mkdtemp(prefix="successor-tests-")) / "tier.key"
_KEY_FILE.write_bytes(bytes(range(32)))
os.environ.setdefault("SUCCESSOR_TIER_KEY", str(_KEY_FILE))


@pytest.fixture(scope="session")
def smoke_result(tmp_path_factory: pytest.TempPathFactory):
    """Run the smoke preset once (about a minute) through the library API, in-process, with the plain progress
    lines written to a file: (RunResult, the progress text). Treat the run as read-only."""
    import successor

    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    log = run_dir.parent / "progress.log"
    with open(log, "w") as stream:
        # Not waiting for a human: a violation here must fail the tests that read this run, not hang the session.
        result = successor.run(successor.load_config(preset="smoke"), run_dir,
                               policy=successor.Policy.model_validate({"tripwires": {"integrity_violation": False}}),
                               progress=successor.PlainProgress(stream, total_generations=3))
    return result, log.read_text()


@pytest.fixture(scope="session")
def smoke_run(smoke_result) -> Path:
    """The smoke run's directory (see smoke_result)."""
    return smoke_result[0].run_dir


TINY = {
    "task": {"human_levels": [1, 2], "human_per_level": 400, "eval_max_level": 4, "dev_per_level": 30,
             "validation_per_level": 30, "sealed_per_level": 60},
    # 400 steps: at 200 an AVX-512 machine's bootstrap scored 0.11 at length 1 (an AVX2 one passed the gate),
    # and every test that needs a generation 1 ran a second bootstrap instead.
    "bootstrap": {"steps": 400},
    "successor": {"steps": 30},
    "researcher": {"candidates": 1},
    "curator": {"problems": 60, "min_kept": 5, "levels_ahead": 1},
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
