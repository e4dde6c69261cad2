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


def test_a_finished_run_extended_by_its_generation_count_alone(smoke_result, tmp_path):
    """`--generations` on a finished run goes on from where it ended; the change is audited, every other change
    is still refused."""
    import json
    import shutil

    import yaml
    from typer.testing import CliRunner

    from successor._cli import app
    from successor.rundir import RunDir

    result, _ = smoke_result
    copy = tmp_path / "copy"
    shutil.copytree(result.run_dir, copy, symlinks=True)
    db = sqlite3.connect(copy / "lineage.db")
    before = db.execute("SELECT id, generation, status FROM experiments ORDER BY id").fetchall()
    db.close()
    other = successor.load_config(preset="smoke")
    other = other.model_copy(update={"loop": other.loop.model_copy(update={"generations": 5}),
                                     "gate": other.gate.model_copy(update={"alpha": 0.2})})
    with pytest.raises(ConfigError, match="gate"):
        RunDir(copy, other)
    assert yaml.safe_load((copy / "config.yaml").read_text())["loop"]["generations"] == 2

    r = CliRunner().invoke(app, ["run", "--preset", "smoke", "--run-dir", str(copy), "--generations", "3",
                                 "--quiet"])
    assert r.exit_code == 0, (r.output, r.exception)
    db = sqlite3.connect(copy / "lineage.db")
    gens = db.execute("SELECT idx, status FROM generations ORDER BY idx").fetchall()
    assert gens == [(0, "done"), (1, "done"), (2, "done"), (3, "done")]
    after = db.execute("SELECT id, generation, status FROM experiments ORDER BY id").fetchall()
    assert set(before) < set(after) and {g for _, g, _ in set(after) - set(before)} == {3}
    assert yaml.safe_load((copy / "config.yaml").read_text())["loop"]["generations"] == 3
    events = [json.loads(line) for line in (copy / "audit.jsonl").read_text().splitlines()]
    extended = [e["data"] for e in events if e["event"] == "run.extended"]
    assert extended == [{"generations_before": 2, "generations": 3}]
    assert [e["event"] for e in events].count("run.finished") == 2
    ok, lines = successor.verify(copy)
    assert ok, lines
