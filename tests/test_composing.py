"""Labels checked by composition (`Task.compositions`, `composing.py`, the curator's `compose`): a long label is
kept only where the champion's direct answer equals the one composed from its answers to certified parts."""
from __future__ import annotations

import numpy as np
import pytest

from successor.config import CuratorConfig
from successor.workloads.tinylm import composing, curator
from successor.workloads.tinylm.curator import curate_level
from successor.workloads.tinylm.tasks import Problem, get_task
from successor.workloads.tinylm.tasks.base import splits

ADD = get_task("addition")


@pytest.fixture(scope="module")
def smoke_compose_run(tmp_path_factory):
    """The smoke preset with `compose` on, run through the library API (about a minute)."""
    import successor
    from successor.config import validated, RunConfig

    cfg = successor.load_config(preset="smoke").model_dump(mode="json", exclude={"script"})
    cfg["curator"] |= {"compose": True}
    cfg["gate"] |= {"solve_threshold": 0.95}  # the smoke models stand at 0.98-1.0 on lengths 1-2: "certified" there
    cfg["loop"] |= {"bootstrap_attempts": 1}  # this test is about curation: one bootstrap, whatever it learned
    cfg["task"] |= {"ladder_step": 0}
    run_dir = tmp_path_factory.mktemp("compose") / "run"
    successor.run(validated(RunConfig, cfg), run_dir,
                  policy=successor.Policy.model_validate({"tripwires": {"integrity_violation": False}}))
    return run_dir


@pytest.mark.parametrize("name", ["addition", "forward_addition", "copy"])
def test_every_composition_of_true_part_answers_is_the_true_answer(name):
    """The hidden checker as the parts' oracle: a composition that applies gives exactly the whole's answer."""
    task, rng = get_task(name), np.random.default_rng(7)
    applied = 0
    for level in range(2, 15):
        for p in task.generate(level, 60, rng):
            comps = task.compositions(p, 8)
            assert all(max(q.level for q in c.parts) <= 8 and sum(q.level for q in c.parts) == level for c in comps)
            for c in comps:
                y = c.combine([task.answer(q) for q in c.parts])
                if y is not None:
                    applied += 1
                    assert y == task.answer(p)
    assert applied > 500


def test_splits_are_inside_the_certified_lengths_most_even_first():
    assert splits(16, 8) == [8]
    assert splits(12, 8) == [6, 5, 7, 4, 8]
    assert splits(17, 8) == []  # past twice the certified length nothing composes
    assert splits(5, 0) == []


def test_addition_composition_needs_no_carry_out_of_the_low_half():
    p = Problem("95+15=", 2)  # reversed: 59 + 51 = 110, written 011
    (c,) = ADD.compositions(p, 1)
    assert [q.prompt for q in c.parts] == ["9+1=", "5+5="]
    assert c.combine(["01", "01"]) is None  # 9+1 carries: this cut cannot compose
    q = Problem("12+34=", 2)  # 21 + 43 = 64, written 460
    (c,) = ADD.compositions(q, 1)
    assert c.combine(["40", "70"]) == "470"  # 1+3=4 no carry, then 2+4 (a wrong part answer composes wrongly)
    assert c.combine(["4", "70"]) is None  # a malformed part answer never composes
    assert ADD.compositions(Problem("12+34=!", 2), 1) == []  # a marked prompt has one answer: the refusal


class Oracle:
    """A stand-in model that answers every problem right except those in `wrong` (prompt -> answer)."""

    def __init__(self, wrong: dict[str, str] | None = None):
        self.wrong = wrong or {}


@pytest.fixture
def oracle_greedy(monkeypatch):
    calls: list[tuple[int, int]] = []  # (level, problems) per decode

    def greedy(model, task, problems, offset=0, **kw):
        calls.append((problems[0].level if problems else 0, len(problems)))
        return [model.wrong.get(p.prompt, task.answer(p)) for p in problems]

    monkeypatch.setattr(curator, "greedy", greedy)
    monkeypatch.setattr(composing, "greedy", greedy)
    return calls


def _problems(level: int, n: int, seed: int = 0) -> list[Problem]:
    return ADD.generate(level, n, np.random.default_rng(seed))


def test_a_direct_error_the_composition_does_not_share_is_dropped(oracle_greedy):
    probs = _problems(6, 200)
    bad = probs[0]
    wrong_answer = ("1" if ADD.answer(bad)[0] != "1" else "2") + ADD.answer(bad)[1:]
    model = Oracle({bad.prompt: wrong_answer})
    cfg = CuratorConfig(compose=True)
    cur = curate_level(ADD, cfg, 6, probs, [], model, certified=3)
    kept = dict(cur.items)
    assert cur.method == "compose" and cur.skipped is None
    assert bad not in kept  # the vote would have had to catch it; the composition does
    assert all(ADD.check(p, y) for p, y in cur.items)
    carries_everywhere = [p for p in probs if all(c.combine([ADD.answer(q) for q in c.parts]) is None
                                                  for c in ADD.compositions(p, 3))]
    assert len(cur.items) == len(probs) - 1 - len([p for p in carries_everywhere if p != bad])
    # only short parts were decoded besides the direct answers (two forms: a+b and b+a are not asked here)
    assert {lvl for lvl, _ in oracle_greedy} <= {6, 3}


def test_a_wrong_part_makes_the_label_disagree_and_drops_it(oracle_greedy):
    probs = _problems(4, 50, seed=1)
    p = next(p for p in probs if ADD.compositions(p, 2)[0].combine([ADD.answer(q) for q in
                                                                    ADD.compositions(p, 2)[0].parts]))
    high = ADD.compositions(p, 2)[0].parts[1]
    model = Oracle({high.prompt: "999"})  # the champion is wrong on a part, right on the whole
    cur = curate_level(ADD, CuratorConfig(compose=True), 4, probs, [], model, certified=2)
    assert p not in dict(cur.items)


def test_the_alarm_fires_when_composed_dev_labels_are_wrong(oracle_greedy):
    """A champion that makes the same error both ways (direct and through its parts) on dev raises the alarm."""
    dev_probs = _problems(4, 20, seed=2)
    wrong = {}
    for p in dev_probs[:5]:  # a shared error: the whole and its high part both wrong, consistently
        c = ADD.compositions(p, 2)[0]
        low, high = c.parts
        if c.combine([ADD.answer(low), ADD.answer(high)]) is None:
            continue
        bad_high = ("9" if ADD.answer(high)[0] != "9" else "8") + ADD.answer(high)[1:]
        wrong[high.prompt] = bad_high
        wrong[p.prompt] = ADD.answer(low)[:2] + bad_high
    assert len(wrong) >= 4
    model = Oracle(wrong)
    dev = [(p, ADD.answer(p)) for p in dev_probs]
    cur = curate_level(ADD, CuratorConfig(compose=True, max_dev_noise=0.05), 4, _problems(4, 100, seed=3), dev,
                       model, certified=2)
    assert cur.skipped.startswith("alarm:") and "composition" in cur.skipped and cur.items == []
    assert cur.dev_wrong == len(wrong) // 2 and cur.method == "compose"


def test_levels_past_twice_the_certified_length_are_voted(oracle_greedy):
    cfg = CuratorConfig(compose=True, offsets=[0, 1, 2], agreement=1.0)
    cur = curate_level(ADD, cfg, 7, _problems(7, 40), [], Oracle(), certified=3)
    assert cur.method == "vote" and len(cur.items) == 40
    off = curate_level(ADD, CuratorConfig(compose=False), 6, _problems(6, 40), [], Oracle(), certified=3)
    assert off.method == "vote"  # compose off: the vote as before


def test_a_new_length_is_voted_and_the_composition_vetoes_the_vote(oracle_greedy):
    """Past the length the champion trained on, its greedy answers are mostly wrong, so the level is voted; an
    error every offset shares passes the vote, and the composition from certified parts drops it."""
    probs = _problems(6, 120, seed=5)
    bad = next(p for p in probs if any(c.combine([ADD.answer(q) for q in c.parts]) for c in ADD.compositions(p, 3)))
    wrong_answer = ("1" if ADD.answer(bad)[0] != "1" else "2") + ADD.answer(bad)[1:]
    model = Oracle({bad.prompt: wrong_answer})  # the same answer under every offset: the vote cannot see it
    cfg = CuratorConfig(compose=True, offsets=[0, 1, 2], agreement=1.0)
    cur = curate_level(ADD, cfg, 6, probs, [], model, certified=3, trained_to=5)
    assert cur.method == "vote+compose" and bad not in dict(cur.items) and cur.items
    assert all(ADD.check(p, y) for p, y in cur.items)
    plain = curate_level(ADD, cfg.model_copy(update={"compose": False}), 6, probs, [], model, certified=3)
    assert (bad, wrong_answer) in plain.items  # the vote alone keeps it
    trained = curate_level(ADD, cfg, 6, probs, [], model, certified=3, trained_to=6)
    assert trained.method == "compose"  # a length it trained on: its greedy answers, checked


def test_on_a_new_length_the_greedy_answers_add_what_the_vote_missed(oracle_greedy, monkeypatch):
    """Where the offsets disagree (the vote passes nothing) but the greedy answer equals the composed one, the
    label is kept: both routes are checked by composition, so their union keeps the precision."""
    probs = _problems(6, 80, seed=6)
    model = Oracle()

    def split_vote(model, task, problems, offset=0, **kw):  # offset k answers wrong on every k-th problem
        return [("9" * len(task.answer(p))) if offset and i % (offset + 1) == 0 else task.answer(p)
                for i, p in enumerate(problems)]

    monkeypatch.setattr(curator, "greedy", lambda m, t, ps, offset=0, **kw: split_vote(m, t, ps, offset))
    cfg = CuratorConfig(compose=True, offsets=[0, 1, 2], agreement=1.0)
    cur = curate_level(ADD, cfg, 6, probs, [], model, certified=3, trained_to=5)
    vote_only = curate_level(ADD, cfg.model_copy(update={"compose": False}), 6, probs, [], model)
    assert cur.method == "vote+compose" and len(cur.items) > len(vote_only.items)
    assert all(ADD.check(p, y) for p, y in cur.items)


def test_compose_uses_both_forms_when_rewrites_are_on(oracle_greedy):
    """With rewrites, the direct answer must be the same on a+b and b+a: an error on one form drops the label."""
    probs = _problems(5, 60, seed=4)
    p = probs[3]
    a, b = p.prompt[:-1].split("+")
    model = Oracle({f"{b}+{a}=": "000000"})
    cur = curate_level(ADD, CuratorConfig(compose=True, rewrites=True), 5, probs, [], model, certified=3)
    assert p not in dict(cur.items) and cur.voters == 2


def test_the_loop_labels_by_composition_past_the_certified_frontier(smoke_compose_run):
    """A real smoke run with `compose`: curation records the certified frontier (the gate's sealed frontier of the
    champion), and a level it can compose from certified parts is curated by a composing method (the smoke
    champion has trained on no curated length, so its new lengths are voted and vetoed: `vote+compose`), keeping
    far fewer wrong labels than the champion gives there, where the vote passes any."""
    import json
    import sqlite3
    db = sqlite3.connect(smoke_compose_run / "lineage.db")
    rows = db.execute("SELECT generation, result FROM stages WHERE name='curate' AND status='done' "
                      "ORDER BY generation").fetchall()
    frontiers = dict(db.execute("SELECT idx, frontier FROM generations").fetchall())
    composed = []
    for g, result in rows:
        stats = json.loads(result)
        if g == 0 or "certified" not in stats:
            continue
        assert stats["certified"] == frontiers[g - 1]  # the champion of generation g is generation g-1's
        for lvl in stats["levels"]:
            if lvl["method"] in ("compose", "vote+compose"):
                assert lvl["level"] <= 2 * stats["certified"]
                composed.append(lvl)
    assert composed, "no level was labelled by composition"
    kept = [lvl for lvl in composed if lvl["kept"]]
    # the hidden checker, for the test only: the kept labels are far cleaner than the champion's own answers there
    assert all(lvl["true_noise_hidden"] < (1 - lvl["champion_dev_acc"]) / 2 for lvl in kept)


def test_the_profile_and_the_label_study_read_a_real_run(smoke_compose_run):
    """benchmarks/generation_profile.py adds up each finished generation's stages from the lineage, and
    benchmarks/composed_labels.py compares the vote and composition on one of the run's champions."""
    import sqlite3
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        from generation_profile import STAGES, profile
    finally:
        sys.path.remove(str(bench))
    prof = profile(smoke_compose_run)
    db = sqlite3.connect(smoke_compose_run / "lineage.db")
    spans = dict((g, b - a) for g, a, b in db.execute("SELECT idx, started, finished FROM generations "
                                                      "WHERE status='done'"))
    assert set(prof) == set(spans) and len(spans) == 3
    for g, p in prof.items():
        assert set(p["stages"]) == set(STAGES)
        assert 0 < p["total"] <= spans[g] + 1.0  # the stages run inside their generation
        # each stage's CPU in the harness: decoding (curate, evaluate) is the harness's own work; the experiments'
        # CPU is the sandbox's count, apart
        assert set(p["cpu"]) == set(STAGES) and min(p["cpu"].values()) >= 0
        assert p["cpu"]["evaluate"] > 0 and p["experiment_cpu_s"] > 0
        assert (p["cpu"]["curate"] > 0) == (g > 0)  # generation 0 curates nothing
    r = subprocess.run([sys.executable, str(bench / "composed_labels.py"), str(smoke_compose_run), "--generation",
                        "1", "--levels", "3-4", "--problems", "60", "--no-write"], capture_output=True, text=True,
                       timeout=600, cwd=bench)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("| 3 ") or line.startswith("| 4 ")]
    assert len(rows) == 2 and all(row.count("|") == 5 for row in rows)


def test_with_compose_judges_dev_a_wrong_vote_the_composition_vetoes_raises_no_alarm(oracle_greedy):
    """A champion new to a length whose offsets share its errors (here: 2 problems in 5): the vote passes them,
    so dev holding the vote alone raises the alarm and nothing is labelled, every generation. Judged on what would
    be kept (the labels the composition confirms), dev sees no wrong label, and every label kept is right."""
    def wrong_on(probs):
        out = {}
        for i, p in enumerate(probs):
            if i % 5 < 2:
                y = ADD.answer(p)
                out[p.prompt] = ("1" if y[0] != "1" else "2") + y[1:]
        return out

    probs, dev_probs = _problems(6, 150, seed=7), _problems(6, 60, seed=8)
    model = Oracle(wrong_on(probs) | wrong_on(dev_probs))
    dev = [(p, ADD.answer(p)) for p in dev_probs]
    cfg = CuratorConfig(compose=True, offsets=[0, 1, 2], agreement=1.0, max_dev_noise=0.05, min_kept=5)
    before = curate_level(ADD, cfg, 6, probs, dev, model, certified=3, trained_to=5)
    assert before.method == "vote+compose" and before.skipped.startswith("alarm:") and before.items == []
    assert before.dev_wrong >= 0.3 * before.dev_passed
    after = curate_level(ADD, cfg.model_copy(update={"compose_judges_dev": True}), 6, probs, dev, model,
                         certified=3, trained_to=5)
    assert after.skipped is None and after.dev_wrong == 0 and after.dev_passed > 0
    assert after.items and all(ADD.check(p, y) for p, y in after.items)
    assert not set(dict(after.items)) & {p for p in probs if p.prompt in model.wrong}
    # the same champion right everywhere: the knob changes nothing
    right = [curate_level(ADD, cfg.model_copy(update={"compose_judges_dev": on}), 6, probs, dev, Oracle(),
                          certified=3, trained_to=5) for on in (False, True)]
    assert right[0].items == right[1].items and right[0].threshold == right[1].threshold


def test_with_compose_new_parts_a_length_the_champion_cannot_answer_is_labelled_by_its_parts(oracle_greedy):
    """A champion wrong on every problem of a new length (its direct answers all 9s) but right on the certified
    parts: 'checked' keeps nothing there, 'parts' labels every problem that composes, every label right, and dev
    judges those labels (a wrong part on dev raises the alarm). Only short parts are decoded."""
    probs, dev_probs = _problems(6, 120, seed=9), _problems(6, 60, seed=10)
    whole = {p.prompt: "9" * len(ADD.answer(p)) for p in probs + dev_probs}
    dev = [(p, ADD.answer(p)) for p in dev_probs]
    cfg = CuratorConfig(compose=True, offsets=[0, 1, 2], agreement=1.0, rewrites=True, min_kept=5)
    checked_ = curate_level(ADD, cfg, 6, probs, dev, Oracle(whole), certified=3, trained_to=5)
    assert checked_.items == [] and checked_.skipped
    oracle_greedy.clear()
    parts = curate_level(ADD, cfg.model_copy(update={"compose_new": "parts"}), 6, probs, dev, Oracle(whole),
                         certified=3, trained_to=5)
    assert parts.method == "parts" and parts.skipped is None and parts.dev_wrong == 0 and parts.dev_passed > 0
    composes = [p for p in probs if any(c.combine([ADD.answer(q) for q in c.parts]) for c in ADD.compositions(p, 3))]
    assert len(parts.items) == len(composes) > 0.3 * len(probs)  # length 6 from parts of 3: one cut, no carry
    assert all(ADD.check(p, y) for p, y in parts.items)
    assert {lvl for lvl, _ in oracle_greedy} <= {3}  # the length itself is never decoded
    # a part the champion gets wrong on a third of dev's compositions: the labels it makes are wrong, dev says so
    bad_parts = {}
    for p in dev_probs[::3]:
        for c in ADD.compositions(p, 3):
            for form in (p, *ADD.rewrites(p)):
                for q in next(iter(ADD.compositions(form, 3)), c).parts:
                    bad_parts[q.prompt] = "0" * len(ADD.answer(q))
    alarm = curate_level(ADD, cfg.model_copy(update={"compose_new": "parts"}), 6, probs, dev,
                         Oracle(whole | bad_parts), certified=3, trained_to=5)
    assert alarm.skipped.startswith("alarm:") and alarm.items == [] and alarm.dev_wrong > 0
    # a length the champion trained on is still checked against its direct answers, and 'parts' needs compose
    trained = curate_level(ADD, cfg.model_copy(update={"compose_new": "parts"}), 6, probs, [], Oracle(),
                           certified=3, trained_to=6)
    assert trained.method == "compose"
    with pytest.raises(ValueError, match="compose_new"):
        CuratorConfig(compose_new="parts")
