"""`gate.sealed: fresh`: each generation's evaluate and gate grade a sample of the sealed levels drawn for that
generation once its candidates are trained, committed to in the audit log before anything grades it, and drawn
again from the tier key by `audit verify`. Through the real loop on the smallest smoke run, which also runs in
label-free mode (`task.dev_levels: human`, test_label_free.py)."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml
from conftest import TINY

import successor
from successor.config import ConfigError
from successor.oversight.policy import Policy
from successor.workloads.tinylm import sealed_fresh
from successor.workloads.tinylm.data import load_shard

NO_INTEGRITY_WAIT = {"tripwires": {"integrity_violation": False}}


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "audit.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fresh")
    cfg = {k: dict(v) for k, v in TINY.items()} | {"gate": {"sealed": "fresh"}}
    # label-free mode rides along (test_label_free.py's loop test): one tiny run fewer in the suite
    cfg["task"] |= {"dev_levels": "human", "ladder_step": 2, "ladder_margin": 2}
    (root / "fresh.yaml").write_text(yaml.safe_dump(cfg))
    result = successor.run(successor.load_config(root / "fresh.yaml", "smoke"), root / "run",
                           policy=Policy.model_validate(NO_INTEGRITY_WAIT))
    assert result.finished
    return root / "run"


def test_each_generation_is_gated_on_its_own_sample_committed_before_any_grading(fresh_run):
    records = _records(fresh_run)
    drawn = [r for r in records if r["event"] == sealed_fresh.EVENT]
    assert [r["data"]["generation"] for r in drawn] == [0, 1]
    digests = [r["data"]["sealed_digest"] for r in drawn]
    assert len(set(digests)) == 2, "every generation draws its own sample"
    db = sqlite3.connect(f"file:{fresh_run / 'lineage.db'}?mode=ro", uri=True)
    try:
        fixed = db.execute("SELECT value FROM meta WHERE key='tier.sealed'").fetchone()[0]
        for r in drawn:
            g, digest = r["data"]["generation"], r["data"]["sealed_digest"]
            assert digest != fixed
            items = load_shard(fresh_run / "harness" / f"{digest}.jsonl")
            # every level the sealed tier holds at that generation (the ladder's too), sealed_per_level each
            grown = db.execute("SELECT MAX(hi) FROM tier_parts WHERE tier='sealed' AND generation<=?",
                               (g,)).fetchone()[0]
            last = grown or TINY["task"]["eval_max_level"]
            assert sorted({p.level for p, _ in items}) == list(range(1, last + 1))
            assert len(items) == TINY["task"]["sealed_per_level"] * last
            assert r["data"]["levels"] == [1, last]
            # committed before anything graded it, and graded after: the evaluations name it
            graded = [x["seq"] for x in records if x["event"] == "evaluation.saved"
                      and x["data"]["tier_digest"] == digest]
            assert graded and min(graded) > r["seq"]
            # the sample was drawn after the generation's candidates were trained: after its train stage's event
            train = next(x["seq"] for x in records if x["event"] == "stage.train" and x["data"]["generation"] == g)
            assert r["seq"] > train
            gate = json.loads(db.execute("SELECT result FROM stages WHERE generation=? AND name='gate'",
                                         (g,)).fetchone()[0])
            assert gate["sealed_digest"] == digest
            # the store's gradings of this generation's contenders are on its sample
            models = {m for (m,) in db.execute("SELECT model FROM evaluations WHERE tier='sealed' AND tier_digest=?",
                                                (digest,))}
            ev = json.loads(db.execute("SELECT result FROM stages WHERE generation=? AND name='evaluate'",
                                       (g,)).fetchone()[0])
            assert {v["model"] for v in ev.values()} <= models
        champ = db.execute("SELECT champion_model FROM generations WHERE idx=0").fetchone()[0]
        graded_on = {d for (d,) in db.execute("SELECT tier_digest FROM evaluations WHERE model=? AND tier='sealed'",
                                              (champ,))}
        assert set(digests) <= graded_on, "generation 1 graded its champion again, on generation 1's sample"
        # the report's heatmap reads each generation's champion on the sample its gate graded
        from successor.reporting.lineage import sealed_grid

        db.row_factory = sqlite3.Row
        levels, gens, grid = sealed_grid(db)
        for i, (g, digest) in enumerate(zip(gens, digests)):
            model = db.execute("SELECT champion_model FROM generations WHERE idx=?", (g,)).fetchone()[0]
            want = {r["level"]: r["correct"] / r["n"] for r in db.execute(
                "SELECT level, n, correct FROM evaluations WHERE model=? AND tier='sealed' AND tier_digest=?",
                (model, digest))}
            assert want and {lvl: grid[levels.index(lvl), i] for lvl in want} == want
    finally:
        db.close()
    ok, lines = successor.verify(fresh_run)
    assert ok, lines


def test_verify_draws_each_sample_again_and_refuses_one_chosen_or_graded_early(fresh_run):
    records = _records(fresh_run)
    assert sealed_fresh.problems(fresh_run, records) == []
    drawn = [r for r in records if r["event"] == sealed_fresh.EVENT]
    # generation 1 claiming generation 0's sample: not what the key draws for generation 1
    swapped = [dict(r, data=dict(r["data"], generation=1)) if r is drawn[0] else r for r in records]
    (line,) = sealed_fresh.problems(fresh_run, [r for r in swapped if r is not drawn[1]])
    assert "generation 1" in line and "drawn again from the tier key" in line
    # a grading of the sample before its event
    early = {"event": "evaluation.saved", "seq": 0, "data": {"tier_digest": drawn[1]["data"]["sealed_digest"]}}
    (line,) = sealed_fresh.problems(fresh_run, [early] + records)
    assert "graded at seq 0, before it was drawn" in line
    # no tier key: said, not passed
    bare = fresh_run.parent / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_bytes((fresh_run / "config.yaml").read_bytes())
    lines = sealed_fresh.problems(bare, records)
    assert len(lines) == 2 and all("cannot be drawn again" in x for x in lines)


def test_fresh_is_off_by_default_and_a_script_run_refuses_it(tmp_path):
    cfg = successor.load_config(None, "smoke")
    assert cfg.gate.sealed == "fixed"
    example = Path(__file__).resolve().parents[1] / "examples" / "digits"
    raw = yaml.safe_load((example / "quick.yaml").read_text())
    raw["script"]["program"] = str(example)
    script = tmp_path / "s.yaml"
    script.write_text(yaml.safe_dump(raw | {"gate": {"sealed": "fresh"}}))
    script.write_text(yaml.safe_dump(raw))
    assert successor.load_config(script).gate.sealed == "fixed"  # the example loads as it is
    script.write_text(yaml.safe_dump(raw | {"gate": {"sealed": "fresh"}}))
    with pytest.raises((ConfigError, ValueError), match="gate.sealed is for tinylm"):
        successor.load_config(script)


def test_the_loop_reads_no_label_past_the_human_range(fresh_run):
    db = sqlite3.connect(f"file:{fresh_run / 'lineage.db'}?mode=ro", uri=True)
    try:
        dev = db.execute("SELECT value FROM meta WHERE key='tier.dev'").fetchone()[0]
        grown = db.execute("SELECT tier, hi FROM tier_parts").fetchall()
        curate = [json.loads(r[0]) for r in db.execute("SELECT result FROM stages WHERE name='curate'")]
    finally:
        db.close()
    human_top = TINY["task"]["human_levels"][1]
    items = load_shard(fresh_run / "artifacts" / "data" / f"{dev}.jsonl")
    assert items and {p.level for p, _ in items} == set(range(1, human_top + 1))
    assert grown and "dev" not in {t for t, _ in grown}  # the ladder grew the harness tiers, not dev
    assert max(hi for _, hi in grown) > TINY["task"]["eval_max_level"]
    levels = [lv for c in curate for lv in c.get("levels", [])]
    assert levels and all(c["label_free"] for c in curate if "label_free" in c)
    for lv in levels:  # no curated level was judged on labels
        assert lv["level"] > human_top and lv["judge"] in ("composition", "second cut")
        assert lv["skipped"] is None or lv["skipped"].startswith(("alarm:", "only"))
        assert 0 <= lv["kept_checked_wrong"] <= lv["kept_checked"] <= lv["labelled"]  # the kept-label check
        assert lv["method"] != "compose" or lv["kept_checked"] == 0  # two routes already agree there
    ok, lines = successor.verify(fresh_run)
    assert ok, lines
