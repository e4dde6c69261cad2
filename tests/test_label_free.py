"""Label-free mode (`task.dev_levels: human`): no labelled item past the human range anywhere the loop or a
candidate reads. The curator judges a longer level against the task's consistency check, the answers composed
from parts the gate certified (a second cut where the labels came through a composition), and labels nothing
where the task has no such check. Stand-in models here; the real loop's test shares the smallest run of
test_sealed_fresh.py (both opt-in modes at once: one run fewer in the suite)."""
from __future__ import annotations

from test_composing import ADD, Oracle, _problems, oracle_greedy  # noqa: F401  (the fixture)

from successor.config import CuratorConfig
from successor.workloads.tinylm.composing import composed, second_cut
from successor.workloads.tinylm.curator import curate_level


def _shared_error(probs, longest: int) -> dict[str, str]:
    """A champion wrong the same way directly and through its first cut's high part, on every other problem that
    composes: the first cut confirms the error, a second cut does not."""
    wrong = {}
    for i, p in enumerate(probs):
        comps = ADD.compositions(p, longest)
        if i % 2 or len(comps) < 2:
            continue
        c = comps[0]
        low, high = c.parts
        if c.combine([ADD.answer(low), ADD.answer(high)]) is None:
            continue
        bad_high = ("9" if ADD.answer(high)[0] != "9" else "8") + ADD.answer(high)[1:]
        wrong[high.prompt] = bad_high
        wrong[p.prompt] = ADD.answer(low)[:len(ADD.answer(low)) - 1] + bad_high
        assert not ADD.check(p, wrong[p.prompt])
    return wrong


def test_a_second_cut_answers_by_other_parts_than_the_first(oracle_greedy):
    probs = _problems(6, 200, seed=11)
    right = second_cut(ADD, probs, Oracle(), 4)
    assert all(y is None or ADD.check(p, y) for p, y in zip(probs, right))
    assert 0.1 * len(probs) < sum(y is not None for y in right) < len(probs)
    wrong = _shared_error(probs, 4)
    model = Oracle(wrong)
    first, second = composed(ADD, probs, model, 4), second_cut(ADD, probs, model, 4)
    hit = [i for i, p in enumerate(probs) if p.prompt in wrong]
    assert hit and all(first[i] == wrong[probs[i].prompt] for i in hit)  # the first cut shares the error
    assert all(second[i] is None or ADD.check(probs[i], second[i]) for i in hit)  # the second does not


def test_without_labels_a_shared_error_raises_the_alarm_through_a_second_cut(oracle_greedy):
    probs = _problems(6, 300, seed=12)
    cfg = CuratorConfig(compose=True, max_dev_noise=0.05)
    clean = curate_level(ADD, cfg, 6, probs, [], Oracle(), certified=4, label_free=True)
    assert clean.skipped is None and clean.judge == "second cut" and clean.method == "compose"
    assert clean.dev_passed > 20 and clean.dev_wrong == 0 and all(ADD.check(p, y) for p, y in clean.items)
    model = Oracle(_shared_error(probs, 4))
    blind = curate_level(ADD, cfg, 6, probs, [], model, certified=4)  # no dev, no reference: kept as they come
    assert blind.skipped is None and any(not ADD.check(p, y) for p, y in blind.items)
    seen = curate_level(ADD, cfg, 6, probs, [], model, certified=4, label_free=True)
    assert seen.skipped.startswith("alarm:") and "second cut" in seen.skipped and seen.items == []
    assert seen.dev_wrong > cfg.max_dev_noise * seen.dev_passed


def test_a_vote_whose_voters_share_errors_is_judged_by_the_composition(oracle_greedy):
    """The poisoned case: every offset gives the same wrong answer on 2 problems in 5, so the vote passes them.
    With no labels the composition from certified parts sees it; a length past twice the certified one has no
    check at all, and is not labelled."""
    probs = _problems(6, 200, seed=13)
    wrong = {p.prompt: ("1" if ADD.answer(p)[0] != "1" else "2") + ADD.answer(p)[1:]
             for i, p in enumerate(probs) if i % 5 < 2}
    cfg = CuratorConfig(filter="offset-vote", offsets=[0, 1, 2], agreement=1.0, max_dev_noise=0.05)
    cur = curate_level(ADD, cfg, 6, probs, [], Oracle(wrong), certified=3, label_free=True)
    assert cur.judge == "composition" and cur.method == "vote"
    assert cur.skipped.startswith("alarm:") and cur.items == [] and cur.dev_wrong >= 0.3 * cur.dev_passed
    fine = curate_level(ADD, cfg, 6, probs, [], Oracle(), certified=3, label_free=True)
    assert fine.skipped is None and len(fine.items) == len(probs) and fine.dev_passed <= 100
    far = curate_level(ADD, cfg, 7, _problems(7, 50), [], Oracle(), certified=3, label_free=True)
    assert far.items == [] and far.skipped.startswith("alarm: no label-free check reaches level 7")
    assert curate_level(ADD, cfg, 7, _problems(7, 50), [], Oracle(), certified=3).items  # with labels off: voted
    few = curate_level(ADD, cfg.model_copy(update={"min_kept": 30}), 6, probs[:40], [], Oracle(), certified=3,
                       label_free=True)  # 6 from parts of 3: one cut, about a quarter of 40 problems compose
    assert few.items == [] and few.skipped.startswith("alarm: no label-free check reaches level 6: the task "
                                                      "composes") and "min_kept=30" in few.skipped


def test_the_accelerated_schedule_reads_how_often_direct_answers_equal_composed_ones(oracle_greedy):
    """Label-free, dev ends at the human range, so the schedule's acceleration past the training length reads the
    champion's consistency instead: right through length 10, wrong on every direct answer from 11 on (its parts
    are right), it reaches 9-10 at 1.0, stops at 11, and the schedule labels 9-11."""
    from types import SimpleNamespace

    from successor.config import load_config
    from successor.workloads.tinylm.curation import consistent_reach
    from successor.workloads.tinylm.schedule import schedule_levels

    cfg = load_config()
    wl = SimpleNamespace(cfg=cfg, task=ADD, run=SimpleNamespace(last_level=lambda: 14))

    class Short(Oracle):  # wrong on every problem longer than 10 digits, right on its parts
        def __init__(self):
            super().__init__()
            self.wrong = type("Wrong", (dict,), {"get": lambda d, prompt, right: right if len(prompt.split("+")[0])
                                                 <= 10 else "9" * len(right)})()

    reach = consistent_reach(wl, 1, Short(), certified=6, trained_to=8)
    assert reach == {9: 1.0, 10: 1.0, 11: 0.0}
    assert schedule_levels(cfg.curator, reach, 8, 8, 14) == [9, 10, 11]
    assert consistent_reach(wl, 1, Short(), certified=0, trained_to=8) == {}  # nothing certified: no reach


def test_every_kept_label_is_checked_against_two_agreeing_compositions(oracle_greedy):
    """A vote whose voters share an error on one problem in eight past the first 250: the judge before the vote
    (its first 100 composable problems) sees none, but the check of every kept label against two compositions
    that agree (cuts from parts of 2-4 digits, all right) does, and keeps nothing. A clean champion passes it
    with every judged label right; `max_kept_noise: 1` turns it off."""
    probs = _problems(6, 400, seed=14)
    wrong = {p.prompt: ("1" if ADD.answer(p)[0] != "1" else "2") + ADD.answer(p)[1:]
             for i, p in enumerate(probs) if i >= 250 and i % 8 == 0}
    cfg = CuratorConfig(filter="offset-vote", offsets=[0, 1, 2], agreement=1.0, max_dev_noise=0.05)
    seen = curate_level(ADD, cfg, 6, probs, [], Oracle(wrong), certified=4, label_free=True)
    assert seen.dev_wrong == 0 and seen.dev_passed >= 50  # the judge before the vote saw nothing wrong
    assert seen.items == [] and seen.skipped.startswith("alarm:") and "max_kept_noise=0.01" in seen.skipped
    assert seen.checked > 150 and seen.checked_wrong > 0.01 * seen.checked
    off = curate_level(ADD, cfg.model_copy(update={"max_kept_noise": 1.0}), 6, probs, [], Oracle(wrong),
                       certified=4, label_free=True)
    assert off.skipped is None and sum(not ADD.check(p, y) for p, y in off.items) == len(wrong)
    clean = curate_level(ADD, cfg, 6, probs, [], Oracle(), certified=4, label_free=True)
    assert clean.skipped is None and len(clean.items) == len(probs)
    assert clean.checked > 150 and clean.checked_wrong == 0
    # with labels (dev mode) the check does not run: dev judges
    assert curate_level(ADD, cfg, 6, probs, [], Oracle(wrong), certified=4).checked == 0


def test_agreeing_cuts_judge_only_where_two_routes_give_the_same_answer(oracle_greedy):
    """Through-parts labels (skip 1) are judged by the second and third cuts; a level with one cut has none."""
    from successor.workloads.tinylm.composing import agreeing_cuts, cuts

    probs = _problems(7, 200, seed=15)
    every = cuts(ADD, probs, Oracle(), 5, 3)
    assert all(len(c) <= 3 and all(ADD.check(p, y) for y in c) for p, c in zip(probs, every))
    two = agreeing_cuts(ADD, probs, Oracle(), 5, 0)
    after_first = agreeing_cuts(ADD, probs, Oracle(), 5, 1)
    assert [y is not None for y in two] == [len(c) >= 2 for c in every]
    assert [y is not None for y in after_first] == [len(c) >= 3 for c in every]
    assert sum(y is not None for y in after_first) < sum(y is not None for y in two)
    assert all(y is None for y in agreeing_cuts(ADD, _problems(6, 50), Oracle(), 3, 0))  # 6 from 3: one cut


def test_lengths_labelled_by_compose_are_not_checked_again(oracle_greedy):
    """A length the champion trained on is labelled by its direct answers where the first cut agrees: two routes
    already, so the kept-label check leaves it (and its cost) out; a new length voted and confirmed is checked."""
    probs = _problems(6, 200, seed=16)
    cfg = CuratorConfig(compose=True, max_dev_noise=0.05)
    trained = curate_level(ADD, cfg, 6, probs, [], Oracle(), certified=4, trained_to=6, label_free=True)
    assert trained.method == "compose" and trained.skipped is None and trained.checked == 0
    new = curate_level(ADD, cfg, 6, probs, [], Oracle(), certified=4, trained_to=5, label_free=True)
    assert new.method == "vote+compose" and new.skipped is None and new.checked > 20 and new.checked_wrong == 0
