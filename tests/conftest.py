"""Shared fixtures: one real smoke run per test session, for tests that only read a finished run."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the smoke preset once (about a minute) and return its run directory. Treat it as read-only."""
    from successor.config import load_config
    from successor.loop import Loop
    from successor.run import RunDir

    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    rundir = RunDir(run_dir, load_config(None, "smoke"))
    try:
        Loop(rundir).run_all()
    finally:
        rundir.store.close()
    return run_dir
