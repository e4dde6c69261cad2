"""Config validation through the CLI (exit 2, one line naming the field, nothing written) and the audit log."""
from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from successor.oversight import audit as audit_mod
from successor.oversight.audit import AuditLog, verify
from successor._cli import app
from successor.config import ConfigError, RunConfig, load_config, preset_names

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


BAD_CONFIGS = {
    "bad_value": ("gate:\n  alpha: 2\n", "gate.alpha"),
    "unknown_field": ("curator:\n  filterr: length\n", "curator.filterr"),
    "unknown_top_field": ("gates:\n  alpha: 0.1\n", "gates"),
    "bad_literal": ("curator:\n  filter: fancy\n", "curator.filter"),
    "bad_recipe": ("successor:\n  lr: -1\n", "successor.lr"),
    "bad_type": ("loop:\n  generations: many\n", "loop.generations"),
    "invalid_yaml": ("gate: [1,\n  alpha: 2\n", "not valid YAML"),
    "not_a_mapping": ("- 1\n- 2\n", "must hold a mapping"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_exits_2_with_one_line_and_writes_nothing(tmp_path, case):
    text, needle = BAD_CONFIGS[case]
    cfg = tmp_path / f"{case}.yaml"
    cfg.write_text(text)
    run_dir = tmp_path / "a-rather-long-run-directory-name-so-that-a-wrapped-message-would-show" / "run"
    line = one_error_line(invoke("run", cfg, "--run-dir", run_dir, "--quiet"))
    assert needle in line
    if case in ("invalid_yaml", "not_a_mapping"):
        assert str(cfg) in line  # names the file
    assert not run_dir.exists() and not run_dir.parent.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [cfg.name]
    # `config --check` reports the same line
    assert one_error_line(invoke("config", "--check", cfg)) == line


def test_missing_file(tmp_path):
    missing = tmp_path / "no" / "such" / "config-file-with-a-long-name-to-exceed-eighty-columns.yaml"
    run_dir = tmp_path / "run"
    line = one_error_line(invoke("run", missing, "--run-dir", run_dir))
    assert "file not found" in line and str(missing) in line
    assert not run_dir.exists()


def test_unknown_preset(tmp_path):
    run_dir = tmp_path / "run"
    line = one_error_line(invoke("run", "--preset", "nonesuch", "--run-dir", run_dir))
    assert line.startswith("error: preset:") and "'nonesuch'" in line and "default" in line and "smoke" in line
    assert not run_dir.exists()
    assert one_error_line(invoke("config", "--preset", "nonesuch")).startswith("error: preset:")


def test_schema_is_json_with_top_level_properties():
    r = invoke("config", "--schema")
    assert r.exit_code == 0, r.output
    schema = json.loads(r.stdout)
    props = set(schema["properties"])
    assert {"name", "seed", "workload", "task", "bootstrap", "successor", "researcher", "curator", "gate",
            "loop"} <= props
    assert schema.get("additionalProperties") is False


def test_presets_load():
    assert {"default", "smoke"} <= set(preset_names())
    default = load_config(preset="default")
    smoke = load_config(preset="smoke")
    assert isinstance(default, RunConfig) and isinstance(smoke, RunConfig)
    assert default.name == "default" and default.curator.filter == "offset-vote"
    assert default.task.human_levels[1] < default.task.eval_max_level  # room to grow past the human data
    assert smoke.name == "smoke" and smoke.bootstrap.n_layer <= default.bootstrap.n_layer
    assert smoke.loop.threads == 1 and smoke.loop.generations >= 2
    assert load_config() == default  # the default preset is the default
    r = invoke("config", "--preset", "smoke")
    assert r.exit_code == 0 and json.loads(r.stdout)["task"]["eval_max_level"] == smoke.task.eval_max_level


def test_bootstrap_seed_follows_the_run_seed_unless_named(tmp_path):
    """Another `seed` is another run from generation 0 on: the default bootstrap does not pin its own seed."""
    (tmp_path / "a.yaml").write_text("seed: 3\n")
    (tmp_path / "b.yaml").write_text("seed: 3\nbootstrap: {seed: 7}\n")
    assert load_config(tmp_path / "a.yaml").bootstrap.seed == 3
    assert load_config(tmp_path / "b.yaml").bootstrap.seed == 7
    assert load_config().bootstrap.seed == 0 and load_config(preset="smoke").bootstrap.seed == 1710807516
    assert load_config(tmp_path / "a.yaml", preset="smoke").bootstrap.seed == 1710807516  # the preset named it


def test_default_protocol_is_the_measured_best(tmp_path):
    """The demo runs the protocol BENCHMARKS.md measured (issue 25); smoke keeps the one its lineages had."""
    d, s = load_config(), load_config(preset="smoke")
    assert (d.curator.relabel, d.curator.policy, d.curator.rewrites, d.curator.compose, d.curator.schedule) == (
        True, "replace", True, True, "accelerated")
    assert (d.gate.effect_on, d.gate.min_effect, d.gate.count_newly_solved) == ("unsolved", 0.02, True)
    assert (d.successor.steps, d.task.sealed_per_level, d.researcher.candidates) == (750, 1000, 1)
    assert (s.curator.relabel, s.curator.rewrites, s.curator.compose, s.gate.effect_on) == (
        False, False, False, "tested")


def test_config_file_overlays_preset(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("gate:\n  alpha: 0.01\ncurator:\n  filter: length\n")
    cfg = load_config(f, "smoke")
    assert cfg.gate.alpha == 0.01 and cfg.curator.filter == "length"
    assert cfg.gate.min_effect == 0.005 and cfg.curator.min_kept == 5  # the rest of the preset stays
    assert cfg.task.human_levels == load_config(None, "smoke").task.human_levels
    r = invoke("config", "--check", f, "--preset", "smoke")
    assert r.exit_code == 0 and json.loads(r.stdout)["gate"]["alpha"] == 0.01


def test_run_dir_with_a_different_config_is_refused(tmp_path, monkeypatch):
    import successor.driver

    def never(self):  # if the refusal were missing, fail instead of training
        raise AssertionError("the loop must not start")

    monkeypatch.setattr(successor.driver.Driver, "run_all", never)
    run_dir = tmp_path / "existing-run-directory-with-a-long-name-so-the-message-exceeds-eighty-columns"
    run_dir.mkdir()
    held = yaml.safe_dump(load_config(preset="smoke").model_dump(mode="json"), sort_keys=False)
    (run_dir / "config.yaml").write_text(held)
    line = one_error_line(invoke("run", "--preset", "default", "--run-dir", run_dir, "--quiet"))
    assert line.startswith("error: run-dir:") and "different config" in line and str(run_dir) in line
    assert "task" in line  # names the sections that differ
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]
    assert (run_dir / "config.yaml").read_text() == held


def test_rundir_accepts_same_config_and_refuses_another(tmp_path):
    from successor.rundir import RunDir

    smoke = load_config(preset="smoke")
    first = RunDir(tmp_path / "r", smoke)
    tiers = {k: t.digest for k, t in first.tiers.items()}
    again = RunDir(tmp_path / "r", load_config(preset="smoke"))  # same config: resumes, same tiers
    assert {k: t.digest for k, t in again.tiers.items()} == tiers
    first.store.close()
    again.store.close()
    other = smoke.model_copy(update={"seed": 1})
    with pytest.raises(ConfigError, match="seed"):
        RunDir(tmp_path / "r", other)


# -- the audit log -------------------------------------------------------------------------------------------


def filled(tmp_path, n=5):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for i in range(n):
        log.append("event.test", i=i, note=f"n{i}")
    return path


def lines(path):
    return path.read_text().splitlines()


def verify_after(path, ls):
    """Write the tampered lines back and verify the log."""
    path.write_text("\n".join(ls) + "\n")
    return verify(path)


def verify_after_edit(path, index, field, value, rehash=False):
    """Change one data field of record `index`, optionally recompute its own hash, then verify the log."""
    ls = lines(path)
    rec = json.loads(ls[index])
    rec["data"][field] = value
    if rehash:
        rec["hash"] = audit_mod._hash(rec)
    ls[index] = json.dumps(rec, sort_keys=True)
    return verify_after(path, ls)


def test_appended_chain_verifies(tmp_path):
    path = filled(tmp_path)
    ok, msg = verify(path)
    assert ok, msg
    assert msg.startswith("5 events")
    recs = [json.loads(ln) for ln in lines(path)]
    assert [r["seq"] for r in recs] == list(range(5))
    assert recs[0]["prev"] == audit_mod.GENESIS
    assert all(b["prev"] == a["hash"] for a, b in zip(recs, recs[1:]))
    # reopening continues the same chain
    log = AuditLog(path)
    rec = log.append("event.more")
    assert rec["seq"] == 5 and rec["prev"] == recs[-1]["hash"]
    assert verify(path) == (True, "6 events, chain intact")


def test_editing_data_breaks_verify(tmp_path):
    ok, msg = verify_after_edit(filled(tmp_path), 2, "i", 99)
    assert not ok and msg.startswith("line 3") and "hash mismatch" in msg


def test_editing_data_and_rehashing_still_breaks_verify(tmp_path):
    ok, msg = verify_after_edit(filled(tmp_path), 1, "note", "forged", rehash=True)
    assert not ok and msg.startswith("line 3") and "chain broken" in msg


def test_deleting_a_middle_line_breaks_verify(tmp_path):
    path = filled(tmp_path)
    ls = lines(path)
    del ls[2]
    ok, msg = verify_after(path, ls)
    assert not ok and msg.startswith("line 3") and "chain broken" in msg


def test_reordering_lines_breaks_verify(tmp_path):
    path = filled(tmp_path)
    ls = lines(path)
    ls[1], ls[3] = ls[3], ls[1]
    ok, msg = verify_after(path, ls)
    assert not ok and msg.startswith("line 2") and "chain broken" in msg


def test_a_run_written_before_a_field_existed_resumes(tmp_path):
    """A config.yaml without a field added later (its default keeps the old behaviour) is the same config."""
    from successor.rundir import RunDir

    smoke = load_config(preset="smoke")
    RunDir(tmp_path / "r", smoke)
    stored = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    del stored["curator"]["relabel"], stored["gate"]["effect_on"]
    (tmp_path / "r" / "config.yaml").write_text(yaml.safe_dump(stored, sort_keys=False))
    RunDir(tmp_path / "r", smoke)  # resumes
    with pytest.raises(ConfigError, match="sections differ: gate"):
        RunDir(tmp_path / "r", smoke.model_copy(update={"gate": smoke.gate.model_copy(update={"effect_on":
                                                                                              "unsolved"})}))


def test_long_preset_is_the_default_protocol_with_more_generations(tmp_path):
    """`--preset long` is the hour-long run: the same protocol as the demo, only more generations (and its name)."""
    d, long = load_config(), load_config(preset="long")
    assert long.name == "long" and long.loop.generations > d.loop.generations
    same = {"name", "loop"}
    assert long.model_dump(exclude=same) == d.model_dump(exclude=same)
    assert long.loop.model_dump(exclude={"generations"}) == d.loop.model_dump(exclude={"generations"})
    (tmp_path / "s.yaml").write_text("seed: 4\n")
    assert load_config(tmp_path / "s.yaml", preset="long").bootstrap.seed == 4  # the seed follows here too
    r = invoke("config", "--preset", "long")
    assert r.exit_code == 0 and json.loads(r.stdout)["loop"]["generations"] == long.loop.generations


def test_the_default_is_label_free_and_smoke_keeps_its_measured_dev_labels():
    assert load_config().task.dev_levels == "human" and load_config(preset="long").task.dev_levels == "human"
    assert load_config(preset="smoke").task.dev_levels == "all"
    from successor.config import TaskConfig
    assert TaskConfig().dev_levels == "all"  # the section's own default, which the unit tests use
