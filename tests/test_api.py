"""The library API: a whole smoke run through `successor.run(...)` in-process, its result against its lineage,
and the plain progress lines a run prints where there is no terminal."""
from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

import successor
from successor.config import ConfigError


def test_a_smoke_run_through_the_api_returns_its_lineage(smoke_result):
    result, _ = smoke_result
    assert result.finished and result.state == "finished" and result.reason is None
    db = sqlite3.connect(result.run_dir / "lineage.db")
    gens = db.execute("SELECT idx, status, promoted, champion_model, frontier FROM generations ORDER BY idx").fetchall()
    assert [g[0] for g in gens] == [0, 1, 2] and all(g[1] == "done" for g in gens)
    assert result.generations == 3 and result.promoted == sum(g[2] for g in gens) >= 1
    assert result.champion == gens[-1][3] and result.frontier == gens[-1][4]
    # the champion is a model the lineage holds, with its checkpoint, and the run verifies
    path = db.execute("SELECT path FROM models WHERE digest=?", (result.champion,)).fetchone()[0]
    # (the lineage keeps absolute paths, and this is a copy of the session's shared run: compare the tail)
    assert Path(path).parts[-3:] == ("artifacts", "models", result.champion)
    assert (result.run_dir / "artifacts" / "models" / result.champion).is_dir()
    assert result.status()["champion"] == result.champion
    ok, lines = successor.verify(result.run_dir)
    assert ok, lines


def test_the_plain_progress_says_every_stage_and_every_generation(smoke_result):
    _, text = smoke_result
    stages = re.findall(r"generation (\d+): (\w+)$", text, re.M)
    for g in (0, 1, 2):
        assert [s for gg, s in stages if int(gg) == g] == ["assess", "propose", "implement", "experiment",
                                                            "interpret", "select", "curate", "train", "evaluate",
                                                            "gate", "promote"]
    done = re.findall(r"generation (\d+) of 2 done: (promoted|champion kept), frontier (\d+)$", text, re.M)
    assert [int(g) for g, _, _ in done] == [0, 1, 2]


def test_a_second_call_on_a_finished_run_does_nothing_again(smoke_result, tmp_path):
    import shutil

    result, _ = smoke_result
    copy = tmp_path / "copy"
    shutil.copytree(result.run_dir, copy, symlinks=True)
    before = sqlite3.connect(copy / "lineage.db").execute("SELECT COUNT(*) FROM experiments").fetchone()[0]
    again = successor.run(successor.load_config(preset="smoke"), copy)
    assert again.finished and again.champion == result.champion
    assert sqlite3.connect(copy / "lineage.db").execute("SELECT COUNT(*) FROM experiments").fetchone()[0] == before


def test_bad_input_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError):
        successor.run(tmp_path / "missing.yaml", tmp_path / "run")
    assert not (tmp_path / "run").exists()
