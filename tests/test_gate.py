"""The gate: forgetting, effect size, and the Holm-corrected exact McNemar test, on synthetic correctness."""
from __future__ import annotations

import pytest
from scipy.stats import binomtest

from successor.config import GateConfig
from successor.oversight.gate import decide, paired

CFG = GateConfig()  # alpha 0.05, min_effect 0.005, solve_threshold 0.99, forget_tolerance 0


def champion() -> dict[int, list[int]]:
    """Solves levels 1 and 2, fails level 3 entirely (100 sealed items per level)."""
    return {1: [1] * 100, 2: [1] * 100, 3: [0] * 100}


def with_level(base: dict[int, list[int]], level: int, items: list[int]) -> dict[int, list[int]]:
    out = {k: list(v) for k, v in base.items()}
    out[level] = items
    return out


def test_identical_model_is_refused():
    d = decide(champion(), {"same": champion()}, CFG)["same"]
    assert not d.promoted
    assert d.reason.startswith("refused")
    assert "effect" in d.reason and "below the minimum" in d.reason
    assert d.stats["gained"] == 0 and d.stats["lost"] == 0
    assert d.stats["p_value"] == 1.0 and d.stats["effect"] == 0.0


def test_identical_model_refused_even_without_minimum_effect():
    cfg = GateConfig(min_effect=0.0)
    d = decide(champion(), {"same": champion()}, cfg)["same"]
    assert not d.promoted and "not significant" in d.reason


def test_worse_model_is_refused():
    worse = with_level(champion(), 3, [0] * 100)
    worse[1] = [1] * 99 + [0]
    d = decide(champion(), {"w": worse}, GateConfig(solve_threshold=0.95))["w"]
    assert not d.promoted and "effect" in d.reason and d.stats["effect"] < 0


def test_clearly_better_model_is_promoted():
    better = with_level(champion(), 3, [1] * 40 + [0] * 60)
    d = decide(champion(), {"b": better}, CFG)["b"]
    assert d.promoted, d.reason
    assert d.reason.startswith("promoted")
    assert d.stats["gained"] == 40 and d.stats["lost"] == 0 and d.stats["n"] == 300
    assert d.stats["p_value"] == pytest.approx(0.5**40)
    assert d.stats["effect"] == pytest.approx(40 / 300)
    assert d.stats["contender_acc"] == pytest.approx(240 / 300)


def test_better_overall_but_forgetting_a_solved_level_is_refused():
    c = with_level(champion(), 3, [1] * 60 + [0] * 40)
    c[2] = [1] * 90 + [0] * 10  # level 2 was solved (100%) and is now 90%
    d = decide(champion(), {"f": c}, CFG)["f"]
    assert d.stats["effect"] > 0.1 and d.stats["p_value"] < 1e-6  # it would pass on the numbers alone
    assert not d.promoted
    assert "forgets solved level" in d.reason
    assert "2 (1.00->0.90)" in d.reason
    assert "1 (" not in d.reason and "3 (" not in d.reason
    assert d.stats["forgotten"] == {"2": [1.0, 0.9]}
    assert "would lower the frontier below 2" in d.reason
    # level 2 is inside the champion's frontier (1-2), so no tolerance forgives the drop: promoting it would
    # lower the frontier the report shows
    tolerant = decide(champion(), {"f": c}, GateConfig(forget_tolerance=0.1))["f"]
    assert not tolerant.promoted and "2 (1.00->0.90)" in tolerant.reason
    assert tolerant.stats["champion_frontier"] == 2


def test_tolerance_forgives_only_solved_levels_past_the_frontier():
    """A solved island past the frontier (level 4 here, level 3 unsolved) may dip by the tolerance."""
    champ = {1: [1] * 100, 2: [1] * 100, 3: [0] * 100, 4: [1] * 100}
    c = {1: [1] * 100, 2: [1] * 100, 3: [1] * 60 + [0] * 40, 4: [1] * 95 + [0] * 5}
    strict = decide(champ, {"c": c}, CFG)["c"]
    assert not strict.promoted and "4 (1.00->0.95)" in strict.reason and "frontier" not in strict.reason
    tolerant = decide(champ, {"c": c}, GateConfig(forget_tolerance=0.1))["c"]
    assert tolerant.promoted, tolerant.reason
    assert tolerant.stats["champion_frontier"] == 2 and tolerant.stats["forgotten"] == {}
    # the same dip inside the frontier is refused whatever the tolerance
    c2 = c | {2: [1] * 95 + [0] * 5, 4: [1] * 100}
    d = decide(champ, {"c": c2}, GateConfig(forget_tolerance=0.1))["c"]
    assert not d.promoted and "2 (1.00->0.95); would lower the frontier below 2" in d.reason


def test_unsolved_level_dropping_is_not_forgetting():
    champ = with_level(champion(), 3, [1] * 50 + [0] * 50)  # level 3 at 50%: not solved
    c = with_level(champ, 3, [1] * 40 + [0] * 60)
    st = paired(champ, c, CFG)
    assert st.forgotten == {}


def holm_contender() -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """(contender, champion): 11 items gained, 3 lost on level 3 (which the champion never solved)."""
    champ3 = [1] * 3 + [0] * 97
    cont3 = [0] * 3 + [1] * 11 + [0] * 86
    return with_level(champion(), 3, cont3), with_level(champion(), 3, champ3)


def test_holm_correction_raises_the_bar_with_more_contenders():
    contender, champ = holm_contender()
    p = binomtest(11, 14, 0.5, alternative="greater").pvalue
    assert 0.02 < p < 0.04

    alone = decide(champ, {"x": contender}, CFG)["x"]
    assert alone.stats["gained"] == 11 and alone.stats["lost"] == 3
    assert alone.stats["p_value"] == pytest.approx(p, rel=1e-12)
    assert alone.stats["p_holm"] == pytest.approx(p, rel=1e-12)
    assert alone.stats["m"] == 1
    assert alone.promoted, alone.reason

    three = decide(champ, {"x": contender, "y": champ, "z": champ}, CFG)
    x = three["x"]
    assert x.stats["p_value"] == pytest.approx(p, rel=1e-12)
    assert x.stats["p_holm"] == pytest.approx(3 * p, rel=1e-12)
    assert x.stats["m"] == 3
    assert not x.promoted
    assert "not significant" in x.reason and "over 3 contenders" in x.reason
    assert not three["y"].promoted and not three["z"].promoted
    # at a looser alpha the same three-way comparison promotes it
    loose = decide(champ, {"x": contender, "y": champ, "z": champ}, GateConfig(alpha=0.1))["x"]
    assert loose.promoted, loose.reason


def test_holm_promotes_several_strong_contenders():
    strong = with_level(champion(), 3, [1] * 40 + [0] * 60)
    d = decide(champion(), {"a": strong, "b": strong, "c": champion()}, CFG)
    assert d["a"].promoted and d["b"].promoted and not d["c"].promoted


@pytest.mark.parametrize(
    "other",
    [
        {1: [1] * 100, 2: [1] * 100},  # a level missing
        {1: [1] * 100, 2: [1] * 100, 3: [0] * 100, 4: [0] * 100},  # an extra level
        {1: [1] * 100, 2: [1] * 99, 3: [0] * 100},  # a level with fewer items
        {1: [1] * 100, 2: [1] * 100, 5: [0] * 100},  # different levels, same count
    ],
)
def test_mismatched_items_raise(other):
    with pytest.raises(ValueError, match="same sealed items"):
        paired(champion(), other, CFG)
    with pytest.raises(ValueError):
        decide(champion(), {"m": other}, CFG)


def test_holm_is_step_down_familywise_not_false_discovery_rate():
    """Two contenders with p≈0.029 each: Holm's smallest adjusted p is 2p≈0.057 > 0.05, so both are refused
    (a false-discovery-rate correction would keep both at 0.029)."""
    contender, champ = holm_contender()
    p = binomtest(11, 14, 0.5, alternative="greater").pvalue
    d = decide(champ, {"x1": contender, "x2": contender}, CFG)
    for name in ("x1", "x2"):
        assert d[name].stats["p_holm"] == pytest.approx(2 * p, rel=1e-12)
        assert not d[name].promoted and "not significant" in d[name].reason


def test_gain_at_the_tested_level_is_not_drowned_by_noise_beyond_it():
    """A real gain at level 3 (9 items) with two unsolved levels past it swapping items at random: pooled over
    every level the test is not significant; on the pre-registered levels 1-3 it is, and it is reported so."""
    champ = {1: [1] * 100, 2: [1] * 100, 3: [1] * 91 + [0] * 9, 4: [1] * 40 + [0] * 60, 5: [1] * 30 + [0] * 70}
    succ = champ | {3: [1] * 100, 4: [0] * 30 + [1] * 40 + [0] * 30, 5: [0] * 30 + [1] * 30 + [0] * 40}
    pooled = decide(champ, {"s": succ}, CFG)["s"]
    assert pooled.stats["gained"] == 9 + 30 + 30 and pooled.stats["lost"] == 30 + 30
    assert not pooled.promoted and "not significant" in pooled.reason
    focused = decide(champ, {"s": succ}, CFG, levels=[1, 2, 3])["s"]
    assert focused.promoted, focused.reason
    assert focused.stats["gained"] == 9 and focused.stats["lost"] == 0 and focused.stats["n"] == 300
    assert focused.stats["levels"] == [1, 2, 3] and "on levels 1-3" in focused.reason
    assert focused.stats["p_value"] == pytest.approx(0.5**9)


def test_forgetting_is_checked_outside_the_tested_levels():
    champ = {1: [1] * 100, 2: [1] * 100, 3: [0] * 100}
    c = {1: [1] * 90 + [0] * 10, 2: [1] * 100, 3: [1] * 50 + [0] * 50}
    d = decide(champ, {"c": c}, CFG, levels=[2, 3])["c"]
    assert not d.promoted and "forgets solved level(s) 1 (1.00->0.90)" in d.reason


def test_tested_levels_must_be_sealed_levels():
    with pytest.raises(ValueError, match="tested levels"):
        decide(champion(), {"c": champion()}, CFG, levels=[4])
    with pytest.raises(ValueError, match="tested levels"):
        decide(champion(), {"c": champion()}, CFG, levels=[])


def test_first_to_beat_keeps_the_incumbent_unless_a_challenger_is_significantly_better():
    from successor.oversight.gate import first_to_beat
    incumbent = {1: [1] * 60, 9: [1] * 20 + [0] * 40}
    by_one_item = {1: [1] * 60, 9: [1] * 21 + [0] * 39}  # the higher score, but one item is noise
    by_twelve = {1: [1] * 60, 9: [1] * 32 + [0] * 28}  # 12 gained, 0 lost: p = 0.5**12
    winner, p = first_to_beat(incumbent, {"noise": by_one_item}, CFG)
    assert winner is None and p["noise"] == pytest.approx(0.5)
    winner, p = first_to_beat(incumbent, {"noise": by_one_item, "real": by_twelve}, CFG)
    assert winner == "real" and p["real"] == pytest.approx(0.5 ** 12)
    worse = {1: [1] * 60, 9: [0] * 60}
    assert first_to_beat(incumbent, {"worse": worse}, CFG)[0] is None


def test_effect_on_unsolved_levels_is_not_diluted_by_solved_ones():
    """Champion solves 1-8 and is 0.95 at 9 and 10; the successor is 1.00 there. Pooled over 1-10 the gain is
    +0.01 - a hair under min_effect 0.0125; on the unsolved levels 9-10 it is +0.05, and the gate says where."""
    champ = {lvl: [1] * 200 for lvl in range(1, 9)} | {9: [1] * 190 + [0] * 10, 10: [1] * 190 + [0] * 10}
    succ = {lvl: [1] * 200 for lvl in range(1, 11)}
    cfg = GateConfig(min_effect=0.0125)
    pooled = decide(champ, {"s": succ}, cfg, levels=list(range(1, 11)))["s"]
    assert not pooled.promoted and pooled.stats["effect"] == pytest.approx(0.01) and "below the minimum" in pooled.reason
    unsolved = decide(champ, {"s": succ}, cfg.model_copy(update={"effect_on": "unsolved"}), list(range(1, 11)))["s"]
    assert unsolved.promoted, unsolved.reason
    assert unsolved.stats["levels"] == [9, 10] and unsolved.stats["effect"] == pytest.approx(0.05)
    assert unsolved.stats["n"] == 400 and "on levels 9-10" in unsolved.reason
    # what the capability tripwire reads stays the rise over every tested level
    assert unsolved.stats["tested_effect"] == pytest.approx(0.01) == pooled.stats["tested_effect"]


def test_effect_on_unsolved_still_refuses_forgetting_and_falls_back_when_all_is_solved():
    champ = {1: [1] * 100, 2: [1] * 100, 3: [0] * 100}
    cfg = GateConfig(effect_on="unsolved")
    forgets = {1: [1] * 90 + [0] * 10, 2: [1] * 100, 3: [1] * 100}
    d = decide(champ, {"c": forgets}, cfg, levels=[1, 2, 3])["c"]
    assert not d.promoted and "forgets solved level(s) 1" in d.reason
    # nothing past the frontier among the tested levels: effect is measured on the first level past it
    same = decide(champ, {"c": champ}, cfg, levels=[1, 2])["c"]
    assert same.stats["levels"] == [3] and not same.promoted
    better = decide(champ, {"c": {1: [1] * 100, 2: [1] * 100, 3: [1] * 30 + [0] * 70}}, cfg, levels=[1, 2])["c"]
    assert better.promoted and better.stats["levels"] == [3] and better.stats["effect"] == pytest.approx(0.3)
    assert better.stats["tested_effect"] == pytest.approx(0.0)  # over levels 1-2, which it did not change
    # every level solved: nothing is past the frontier, and effect falls back to the tested levels
    solved = {1: [1] * 100, 2: [1] * 100}
    assert decide(solved, {"c": solved}, cfg, levels=[1, 2])["c"].stats["levels"] == [1, 2]


def test_a_newly_solved_level_meets_the_minimum_effect_only_when_its_own_gain_is_significant():
    """Champion solves 1-13 and stands at 0.975 on level 14 (25 wrong of 1,000); the successor brings 14 to
    0.99: +0.015, under min_effect 0.02, refused without the credit. With count_newly_solved it is promoted,
    since 15 gained and 0 lost on level 14 alone is p = 0.5**15. The same crossing on 200 items (3 gained,
    0 lost, p = 0.125) stays refused, and so does a level that ends at 0.989, one item short of solved."""
    def level(wrong: int, n: int) -> list[int]:
        return [0] * wrong + [1] * (n - wrong)

    def models(n: int, before: int, after: int) -> tuple[dict, dict]:
        solved = {lvl: [1] * n for lvl in range(1, 14)}
        return solved | {14: level(before, n)}, solved | {14: level(after, n)}

    cfg = GateConfig(effect_on="unsolved", min_effect=0.02)
    credit = cfg.model_copy(update={"count_newly_solved": True})
    tested = list(range(1, 15))
    champ, succ = models(1000, 25, 10)
    plain = decide(champ, {"s": succ}, cfg, tested)["s"]
    assert not plain.promoted and "below the minimum" in plain.reason
    assert plain.stats["newly_solved"] == {"14": pytest.approx(0.5 ** 15)}  # recorded either way
    d = decide(champ, {"s": succ}, credit, tested)["s"]
    assert d.promoted and "newly solves level(s) 14" in d.reason, d.reason
    assert d.stats["effect"] == pytest.approx(0.015) and d.stats["gained"] == 15 and d.stats["lost"] == 0
    champ, succ = models(200, 5, 2)  # 0.975 -> 0.99 on 200 items
    small = decide(champ, {"s": succ}, credit, tested)["s"]
    assert not small.promoted and small.stats["newly_solved"] == {} and "below the minimum" in small.reason
    champ, succ = models(1000, 25, 11)  # 0.989: better, significantly, but not solved
    short = decide(champ, {"s": succ}, credit, tested)["s"]
    assert not short.promoted and short.stats["newly_solved"] == {}


def test_newly_solved_credit_does_not_forgive_forgetting_or_a_pooled_loss():
    champ = {1: [1] * 1000, 2: [0] * 30 + [1] * 970, 3: [0] * 1000}
    credit = GateConfig(effect_on="unsolved", min_effect=0.02, count_newly_solved=True)
    # solves level 2 but forgets level 1: refused for forgetting
    forgets = {1: [0] * 20 + [1] * 980, 2: [1] * 1000, 3: [0] * 1000}
    d = decide(champ, {"c": forgets}, credit, [1, 2, 3])["c"]
    assert not d.promoted and "forgets solved level(s) 1" in d.reason
    # solves level 2 (+30) and loses 40 items on level 3, tested too: the pooled test over 2-3 is not significant
    trades = {1: [1] * 1000, 2: [1] * 1000, 3: [0] * 960 + [1] * 40}
    worse3 = {1: [1] * 1000, 2: [1] * 1000, 3: [0] * 1000}
    champ3 = champ | {3: [0] * 960 + [1] * 40}
    d = decide(champ3, {"c": worse3}, credit, [1, 2, 3])["c"]
    assert d.stats["newly_solved"] and not d.promoted and "not significant" in d.reason
    assert decide(champ, {"c": trades}, credit, [1, 2, 3])["c"].promoted


def test_the_error_scale_floor_takes_a_step_near_the_ceiling_and_refuses_a_sliver_far_from_it():
    """`effect_scale: errors`: 0.975 -> 0.99 on the one unsolved level removes 60% of the champion's errors and is
    promoted with no count_newly_solved; 0.30 -> 0.33 on 1,000 items (+0.03, significant) removes 4% and is
    refused, where the accuracy floor of 0.02 would promote it. A contender that adds errors is refused."""
    solved = {lvl: [1] * 1000 for lvl in range(1, 9)}
    near = (solved | {9: [0] * 25 + [1] * 975}, solved | {9: [0] * 10 + [1] * 990})
    far = (solved | {9: [0] * 700 + [1] * 300}, solved | {9: [0] * 670 + [1] * 330})
    tested = list(range(1, 10))
    errors = GateConfig(effect_on="unsolved", effect_scale="errors", min_error_share=0.2)
    accuracy = GateConfig(effect_on="unsolved", min_effect=0.02)
    d = decide(*near[:1], {"s": near[1]}, errors, tested)["s"]
    assert d.promoted and "60% of the champion's errors removed" in d.reason
    assert d.stats["error_share"] == pytest.approx(0.6)
    assert not decide(near[0], {"s": near[1]}, accuracy, tested)["s"].promoted  # +0.015 < 0.02
    sliver = decide(far[0], {"s": far[1]}, errors, tested)["s"]
    assert not sliver.promoted and "removes 4.3% of the champion's errors" in sliver.reason
    assert decide(far[0], {"s": far[1]}, accuracy, tested)["s"].promoted
    worse = decide(near[1], {"s": near[0]}, errors, tested)["s"]
    assert not worse.promoted and worse.stats["error_share"] < 0
    with pytest.raises(ValueError, match="count_newly_solved"):
        GateConfig(effect_scale="errors", count_newly_solved=True)
