"""Issue 23, hostile inputs: harness tiers that cannot be derived from the public seed, bad files given to the
CLI (one line naming the file, exit 2, never a traceback or a hang), and script-workload patches judged by the
tree git builds from them, not by their headers."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_config
from typer.testing import CliRunner

from successor._cli import app
from successor.config import ConfigError, load_config
from successor.safeio import file_digest
from successor.workloads.tinylm.data import labelled, save_shard, shard_bytes, tier_rng
from successor.rundir import RunDir
from successor.workloads.script import program as program_mod
from successor.workloads.script.patch import PatchError
from successor.workloads.script.program import ProgramRepo

HARNESS = ("validation", "sealed", "guardrail")


# -- 1. harness tiers from a secret key ------------------------------------------------------------------------
@pytest.fixture
def no_shared_key(monkeypatch):
    """The tests' shared tier key (conftest) off: each run draws its own secret, as a real one does."""
    monkeypatch.delenv("SUCCESSOR_TIER_KEY", raising=False)


def _tiny(tmp_path: Path):
    return load_config(tiny_config(tmp_path / "tiny.yaml"), "smoke")


def _digests(rd: RunDir) -> dict[str, str]:
    return {name: t.digest for name, t in rd.tiers.items()}


def test_harness_tiers_come_from_a_secret_the_seed_does_not_give(tmp_path, no_shared_key):
    cfg = _tiny(tmp_path)
    a, b = RunDir(tmp_path / "a", cfg), RunDir(tmp_path / "b", cfg)
    da, db = _digests(a), _digests(b)
    assert set(da) == {"human", "dev", *HARNESS}
    assert da["human"] == db["human"] and da["dev"] == db["dev"]  # what candidates see: the seed's
    for name in HARNESS:
        assert da[name] != db[name], name
    # the red team's move: regenerate the sealed tier from the public seed and config. It is not the run's.
    t = cfg.task
    derived = labelled(a.task, list(range(1, t.eval_max_level + 1)), t.sealed_per_level, tier_rng(cfg.seed, "sealed"))
    assert shard_bytes(derived) != a.tiers["sealed"].path.read_bytes()
    assert file_digest(a.tiers["sealed"].path) == da["sealed"]
    # the key: in harness/, 32 bytes, mode 0600, and nowhere the store, config or audit log would show it
    key_path = a.root / "harness" / "tier.key"
    key = key_path.read_bytes()
    assert len(key) == 32 and stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key != (b.root / "harness" / "tier.key").read_bytes()
    a.audit.append("probe")  # the audit log exists as a file
    for f in ("config.yaml", "lineage.db", "audit.jsonl"):
        data = (a.root / f).read_bytes()
        assert key not in data and key.hex().encode() not in data, f
    # resumed, a run keeps its tiers (and its key)
    a.store.close()
    again = RunDir(tmp_path / "a", cfg)
    assert _digests(again) == da and key_path.read_bytes() == key
    # a run given the key when it is created (copied in) reproduces the other's harness tiers
    (tmp_path / "c" / "harness").mkdir(parents=True)
    shutil.copy2(key_path, tmp_path / "c" / "harness" / "tier.key")
    assert _digests(RunDir(tmp_path / "c", cfg)) == da
    assert _digests(RunDir(tmp_path / "d", cfg, tier_key=key)) == da  # or passed in
    with pytest.raises(ConfigError, match="already has its harness tiers"):
        RunDir(tmp_path / "b", cfg, tier_key=key)  # never once the tiers exist
    for rd in (again, b):
        rd.store.close()


def test_the_key_env_var_seeds_a_new_run_only(tmp_path, monkeypatch):
    cfg = _tiny(tmp_path)
    key = tmp_path / "shared.key"
    key.write_bytes(bytes(range(100, 132)))
    monkeypatch.setenv("SUCCESSOR_TIER_KEY", str(key))
    a = RunDir(tmp_path / "a", cfg)
    assert (a.root / "harness" / "tier.key").read_bytes() == key.read_bytes()
    assert _digests(RunDir(tmp_path / "b", cfg)) == _digests(a)
    key.write_bytes(b"short")
    with pytest.raises(ConfigError, match="SUCCESSOR_TIER_KEY.*32 bytes"):
        RunDir(tmp_path / "c", cfg)
    monkeypatch.delenv("SUCCESSOR_TIER_KEY")
    assert _digests(RunDir(tmp_path / "a", cfg)) == _digests(a)  # a run's own key wins on resume


def test_a_run_made_before_tier_keys_resumes_its_tiers_unchanged(tmp_path, no_shared_key):
    """A run directory from before: tiers made from the seed, their digests in the store, no key."""
    cfg = _tiny(tmp_path)
    old = RunDir(tmp_path / "old", cfg)
    t, every = cfg.task, list(range(1, cfg.task.eval_max_level + 1))
    legacy = {}
    for name, n in (("validation", t.validation_per_level), ("sealed", t.sealed_per_level)):
        legacy[name], _ = save_shard(labelled(old.task, every, n, tier_rng(cfg.seed, name)), old.root / "harness")
        old.store.set_meta(f"tier.{name}", legacy[name])
    old.store.x("DELETE FROM meta WHERE key IN ('tier.keyed', 'tier.guardrail')")  # the old store knew no key
    (old.root / "harness" / "tier.key").unlink()
    old.store.close()
    again = RunDir(tmp_path / "old", cfg)
    assert {k: again.tiers[k].digest for k in legacy} == legacy
    assert not (again.root / "harness" / "tier.key").exists()  # no key made up for tiers that exist
    again.store.close()
    # but a keyed run that lost its key says so, and does not quietly fall back to the seed
    keyed = RunDir(tmp_path / "keyed", cfg)
    keyed.store.close()
    (keyed.root / "harness" / "tier.key").unlink()
    with pytest.raises(ConfigError, match="tier.key: missing"):
        RunDir(tmp_path / "keyed", cfg)


# -- 2. bad files given to the CLI -----------------------------------------------------------------------------
runner = CliRunner()
RUN_DIR_COMMANDS = [
    ["run", "--run-dir", "{p}", "--quiet"],
    ["status", "{p}"],
    ["status", "{p}", "--json"],
    ["report", "{p}"],
    ["approve", "{p}", "--generation", "1"],
    ["reject", "{p}", "--generation", "1", "--reason", "no"],
    ["stop", "{p}"],
    ["dashboard", "{p}", "--exit-after", "0.1"],
    ["compare", "{p}", "{p}", "--out", "{out}"],
    ["audit", "verify", "{p}"],
]


def _one_line(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _invoke(args: list[str], **fmt) -> object:
    return runner.invoke(app, [a.format(**fmt) for a in args])


@pytest.mark.parametrize("kind", ["file", "link_to_file", "file_parent"])
@pytest.mark.parametrize("args", RUN_DIR_COMMANDS, ids=lambda a: "-".join(a[:2]).replace("{p}", ""))
def test_a_run_dir_that_is_not_a_directory_is_one_line(tmp_path, kind, args):
    target = tmp_path / "a-file"
    target.write_text("not a run\n")
    p = {"file": target, "link_to_file": tmp_path / "link", "file_parent": target / "run"}[kind]
    if kind == "link_to_file":
        p.symlink_to(target)
    _one_line(_invoke(args, p=p, out=tmp_path / "cmp"), str(p))
    assert target.read_text() == "not a run\n" and not (tmp_path / "cmp").exists()


@pytest.mark.parametrize("args", RUN_DIR_COMMANDS[:7], ids=lambda a: "-".join(a[:2]).replace("{p}", ""))
def test_a_run_dir_whose_store_is_not_sqlite_is_one_line(tmp_path, args):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "lineage.db").write_bytes(b"\x00\xffnot a database" * 10)
    _one_line(_invoke(args, p=tmp_path / "run", out=tmp_path / "cmp"), str(tmp_path / "run"))


BAD_FILES = {
    "list": (b"[]\n", "must hold a mapping"),
    "scalar": (b"3\n", "must hold a mapping"),
    "null": (b"null\n", "must hold a mapping"),
    "empty": (b"", "must hold a mapping"),
    "comments_only": (b"# nothing here\n", "must hold a mapping"),
    "nul_bytes": (b"approval: manual\n\x00\x00", "binary"),
    "not_utf8": (b"approval: \xff\xfe manual\n", "not UTF-8"),
    "deep": (b"[" * 5000, "nested too deeply"),
    "huge": (b"name: " + b"x" * (300 << 10) + b"\n", "larger than 256 KiB"),
    "alias_bomb": (b"a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                   b"c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                   b"e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n", "aliases"),
}


def _make(path: Path, case: str) -> Path:
    if case == "directory":
        path.mkdir()
    elif case == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(BAD_FILES[case][0])
    return path


NEEDLE = {"directory": "is a directory", "fifo": "not a regular file"}


@pytest.mark.parametrize("case", [*BAD_FILES, "directory", "fifo"])
def test_a_bad_policy_or_config_file_is_one_line_naming_it(tmp_path, case):
    needle = NEEDLE.get(case) or BAD_FILES[case][1]
    run_dir = tmp_path / "run"
    pol = _make(tmp_path / "policy.yaml", case)
    line = _one_line(runner.invoke(app, ["run", "--preset", "smoke", "--policy", str(pol), "--run-dir",
                                         str(run_dir), "--quiet"]), "policy:", str(pol), needle)
    assert line.startswith("error: policy:")
    assert not run_dir.exists()  # refused before the run directory is made
    cfg = _make(tmp_path / "config.yaml", case)
    _one_line(runner.invoke(app, ["run", str(cfg), "--run-dir", str(run_dir), "--quiet"]), "config:", str(cfg),
              needle)
    _one_line(runner.invoke(app, ["config", "--check", str(cfg)]), str(cfg), needle)
    assert not run_dir.exists()


def test_a_fifo_config_never_hangs_the_real_cli(tmp_path):
    fifo = _make(tmp_path / "c.yaml", "fifo")
    r = subprocess.run([sys.executable, "-m", "successor", "config", "--check", str(fifo)],
                       capture_output=True, text=True, timeout=60)  # `run` reads it the same way (above)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == [f"error: config: {fifo} is not a regular file (a FIFO, socket or "
                                             "device)"]


@pytest.mark.parametrize("case", ["list", "nul_bytes", "fifo"])
def test_a_run_dirs_own_policy_or_config_gone_bad_is_one_line(tmp_path, case):
    """A run directory's policy.yaml or config.yaml, edited badly between resumes."""
    cfg_path = tiny_config(tmp_path / "tiny.yaml")
    rd = RunDir(tmp_path / "run", load_config(cfg_path, "smoke"))
    rd.store.close()
    for name in ("policy.yaml", "config.yaml"):
        target = tmp_path / "run" / name
        saved = target.read_bytes() if target.exists() else None
        target.unlink(missing_ok=True)
        _make(target, case)
        r = runner.invoke(app, ["run", str(cfg_path), "--preset", "smoke", "--run-dir", str(tmp_path / "run"),
                                "--quiet"])
        _one_line(r, str(target))
        target.unlink()
        if saved is not None:
            target.write_bytes(saved)


def test_a_report_folder_that_is_a_file_is_one_line(tmp_path):
    rd = RunDir(tmp_path / "run", load_config(tiny_config(tmp_path / "tiny.yaml"), "smoke"))
    rd.store.close()
    (tmp_path / "run" / "report").write_text("in the way\n")
    _one_line(runner.invoke(app, ["report", str(tmp_path / "run")]), str(tmp_path / "run" / "report"))


# -- 3. script patches judged by the tree git builds ---------------------------------------------------------------
EDITABLE = ["train.py"]
HONEST = "--- a/train.py\n+++ b/train.py\n@@ -1,2 +1,2 @@\n-lr = 0.1\n+lr = 0.2\n print(lr)\n"
DELETE_TRAIN = ("diff --git a/train.py b/train.py\ndeleted file mode 100644\n--- a/train.py\n+++ /dev/null\n"
                "@@ -1,2 +0,0 @@\n-lr = 0.1\n-print(lr)\n")
HOSTILE = {
    "symlink": ("diff --git a/evil b/evil\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/evil\n"
                "@@ -0,0 +1 @@\n+/etc/passwd\n\\ No newline at end of file\n"),
    "doubled_header": ("diff --git a/train.py b/train.py b/train.py\nnew file mode 100644\n--- /dev/null\n"
                       "+++ b/train.py b/train.py\n@@ -0,0 +1 @@\n+x = 1\n"),
    "doubled_header_edit": ("diff --git a/train.py b/train.py b/train.py\n--- a/train.py b/train.py\n"
                            "+++ b/train.py b/train.py\n@@ -1,2 +1,2 @@\n-lr = 0.1\n+lr = 0.2\n print(lr)\n"),
    "rename_to_data": ("diff --git a/train.py b/data.py\nsimilarity index 100%\nrename from train.py\n"
                       "rename to data.py\n"),
    "data_under_train_header": ("diff --git a/train.py b/train.py\n--- a/data.py\t\n+++ b/data.py\t\n@@ -1 +1 @@\n"
                                "-DATA = [1, 2, 3]\n+DATA = [9, 9, 9]\n"),
    "gitlink": ("diff --git a/sub b/sub\nnew file mode 160000\nindex 0000000..1234567\n--- /dev/null\n+++ b/sub\n"
                "@@ -0,0 +1 @@\n+Subproject commit 1234567890123456789012345678901234567890\n"),
    "mode_to_symlink": "diff --git a/train.py b/train.py\nold mode 100644\nnew mode 120000\n",
    # the kinds git does apply to an editable path: a typechange to a symlink or a submodule
    "train_becomes_symlink": DELETE_TRAIN + ("diff --git a/train.py b/train.py\nnew file mode 120000\n--- /dev/null\n"
                                             "+++ b/train.py\n@@ -0,0 +1 @@\n+data.py\n\\ No newline at end of file\n"),
    "train_becomes_gitlink": DELETE_TRAIN + ("diff --git a/train.py b/train.py\nnew file mode 160000\n--- /dev/null\n"
                                             "+++ b/train.py\n@@ -0,0 +1 @@\n"
                                             "+Subproject commit 1234567890123456789012345678901234567890\n"),
}


@pytest.fixture
def repo(tmp_path):
    prog = tmp_path / "prog"
    prog.mkdir()
    (prog / "train.py").write_text("lr = 0.1\nprint(lr)\n")
    (prog / "data.py").write_text("DATA = [1, 2, 3]\n")
    r = ProgramRepo(tmp_path / "program.git", "t")
    return r, r.init(prog)


def _refs(r: ProgramRepo) -> list[str]:
    return r.git("for-each-ref", "--format=%(refname)", "refs/successor/candidates/").split()


@pytest.mark.parametrize("headers_checked", [True, False], ids=["friendly-check", "tree-check-alone"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_patch_is_refused_with_a_reason_and_no_ref(repo, monkeypatch, name, headers_checked):
    r, first = repo
    if not headers_checked:  # the headers' check fooled: what git builds must still be refused
        monkeypatch.setattr(program_mod, "check_diff", lambda diff, editable: [])
    with pytest.raises(PatchError) as e:
        r.candidate("g1c0", first, HOSTILE[name], EDITABLE, "hostile")
    reason = str(e.value)
    assert reason.startswith(("patch refused: ", "patch does not apply: ")) and len(reason) > 20
    if not headers_checked and name in ("doubled_header", "data_under_train_header", "train_becomes_symlink",
                                        "train_becomes_gitlink", "symlink", "gitlink"):
        assert reason.startswith("patch refused: ")  # git applied it; the tree check refused it
    assert _refs(r) == [] and r.champion() == first
    c = r.candidate("g1c1", first, HONEST, EDITABLE, "honest")  # and the repository is none the worse
    assert "lr = 0.2" in r.read(c, "train.py") and _refs(r) == ["refs/successor/candidates/g1c1"]


def test_tree_check_names_the_path_and_kind(repo, monkeypatch):
    r, first = repo
    monkeypatch.setattr(program_mod, "check_diff", lambda diff, editable: [])
    with pytest.raises(PatchError, match=r"train\.py b/train\.py: not in the editable allow-list"):
        r.candidate("a", first, HOSTILE["doubled_header"], EDITABLE, "m")
    with pytest.raises(PatchError, match=r"train\.py: a symlink, not a regular file"):
        r.candidate("b", first, HOSTILE["train_becomes_symlink"], EDITABLE, "m")
    with pytest.raises(PatchError, match=r"train\.py: a submodule \(gitlink\)"):
        r.candidate("c", first, HOSTILE["train_becomes_gitlink"], EDITABLE, "m")
    with pytest.raises(PatchError, match=r"\.gitattributes: one of git's own files"):
        r.candidate("d", first, "--- /dev/null\n+++ b/.gitattributes\n@@ -0,0 +1 @@\n+data.py export-ignore\n",
                    ["*"], "m")


def _forge(r: ProgramRepo, parent: str, cid: str) -> str:
    """A candidate commit made behind the checks' back (as an older harness could have): train.py a symlink."""
    blob = r.git("hash-object", "-w", "--stdin", stdin=b"/etc/passwd").strip()
    data = r.git("rev-parse", f"{parent}:data.py").strip()
    tree = r.git("mktree", stdin=f"120000 blob {blob}\ttrain.py\n100644 blob {data}\tdata.py\n".encode()).strip()
    commit = r.git("commit-tree", tree, "-p", parent, "-m", "forged").strip()
    r.git("update-ref", f"refs/successor/candidates/{cid}", commit)
    return commit


def test_a_resumed_candidate_commit_is_checked_again_and_export_refuses_links(repo, tmp_path):
    r, first = repo
    forged = _forge(r, first, "g1c0")
    with pytest.raises(PatchError, match="train.py: a symlink"):
        r.candidate("g1c0", first, HONEST, EDITABLE, "resumed")
    assert _refs(r) == []  # refused now, so no ref names it
    dest = tmp_path / "out"
    with pytest.raises(PatchError, match="export refused: 'train.py'.*a symlink"):
        r.export(forged, dest)
    assert not dest.exists()
    good = r.candidate("g1c1", first, HONEST, EDITABLE, "honest")
    assert r.candidate("g1c1", first, HONEST, EDITABLE, "honest") == good  # a clean resumed one is kept
    r.export(good, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["data.py", "train.py"]
    assert all(p.is_file() and not p.is_symlink() for p in dest.iterdir())


def test_the_script_loop_records_a_hostile_patch_as_refused_and_goes_on(tmp_path):
    """One tiny script generation: the symlink patch is refused with its reason, the honest one is tried."""
    from test_script_workload import CONFIG, EVAL, GOOD, TRAIN, Scripted, _loop

    prog = tmp_path / "prog"
    prog.mkdir()
    (prog / "train.py").write_text(TRAIN)
    (prog / "eval.py").write_text(EVAL)
    (tmp_path / "successor.yaml").write_text(CONFIG.replace("GENS", "1").replace("candidates: 3", "candidates: 2"))
    link = ("diff --git a/train.py b/train.py\ndeleted file mode 100644\n--- a/train.py\n+++ /dev/null\n"
            f"@@ -1,{len(TRAIN.splitlines())} +0,0 @@\n" + "".join(f"-{ln}\n" for ln in TRAIN.splitlines())
            + "diff --git a/train.py b/train.py\nnew file mode 120000\n--- /dev/null\n+++ b/train.py\n"
            "@@ -0,0 +1 @@\n+eval.py\n\\ No newline at end of file\n")
    plan = {1: [({}, link, "train.py becomes a link"), ({}, GOOD, "raise the bonus")]}
    loop = _loop(tmp_path / "successor.yaml", tmp_path / "run", Scripted(plan))
    assert loop.run_all() == "finished"
    rows = {r["candidate_id"]: r for r in loop.store.q("SELECT * FROM script_candidates WHERE candidate_id LIKE 'g1%'")}
    assert rows["g1c0"]["git_commit"] is None and "symlink" in rows["g1c0"]["refused"]
    assert rows["g1c1"]["git_commit"] and rows["g1c1"]["refused"] is None
    assert loop.store.one("SELECT status FROM generations WHERE idx=1")["status"] == "done"
