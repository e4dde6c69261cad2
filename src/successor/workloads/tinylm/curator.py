"""The curator: models label new, harder problems for their successor; filters keep labels worth trusting.

A *voter* is one model decoding under one position offset. Every filter is a vote over voters:
- `none`: the champion alone, every label kept;
- `length`: the champion alone, labels kept if well formed (right length, digits only);
- `offset-vote`: the champion under several offsets must agree (a majority vote that costs one model);
- `majority`: the champion and the generation's candidates (k models, each trained with its own seed) must agree;
- `verifier`: the champion alone, labels kept if the hidden checker accepts them. It is the upper bound a perfect
  filter would reach, for studies only: it reads the truth, so every report marks it.

Which levels a generation labels is the schedule (`schedule.py`: `schedule_levels`, and with `relabel` every curated
level below them again, `with_relabel`); `inject_noise` there corrupts kept labels for ablations.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

from ...config import CuratorConfig
from .composing import checked, composable, composed
from .curated import Curation
from .schedule import inject_noise, schedule_levels, with_relabel  # noqa: F401  (the curator's public names)
from .decode import greedy
from .judging import MIN_JUDGED, check_kept, noisier_than, reference
from .model import TinyLM
from .tasks import Problem, Task


def well_formed(task: Task, problem: Problem, label: str) -> bool:
    return len(label) == task.answer_length(problem.level) and label.isdigit()


def vote(answers: list[list[str]], agreement: float) -> list[str | None]:
    """Per problem, the most common answer if at least `agreement` of the voters gave it, else None.

    With agreement > 0.5 a tie can never pass, since two answers cannot both hold a strict majority.
    """
    if not answers:
        raise ValueError("a vote needs at least one voter")
    k = len(answers)
    if len({len(a) for a in answers}) != 1:
        raise ValueError("every voter must answer every problem")
    out: list[str | None] = []
    for column in zip(*answers):
        label, count = Counter(column).most_common(1)[0]
        out.append(label if count / k >= agreement - 1e-12 else None)
    return out


def voters(cfg: CuratorConfig, champion: TinyLM, others: list[TinyLM]) -> list[tuple[TinyLM, int]]:
    if cfg.filter in ("none", "length", "verifier"):
        return [(champion, 0)]
    if cfg.filter == "offset-vote":
        return [(champion, off) for off in cfg.offsets]
    models = [champion, *others][: cfg.voters]
    if len(models) < 2:
        raise ValueError("a majority filter needs at least two models")
    return [(m, 0) for m in models]


def answers(task: Task, cfg: CuratorConfig, problems: list[Problem], champion: TinyLM,
            others: list[TinyLM] = (), pool: list[tuple[TinyLM, int]] | None = None) -> list[list[str]]:
    """Every voter's answers to the problems, one list per voter (`pool`: these voters instead of the config's)."""
    pool = voters(cfg, champion, list(others)) if pool is None else pool
    return [greedy(model, task, problems, offset=off) for model, off in pool]


def strong_voters(held: list[list[str]], truth: list[str], floor: float) -> list[int]:
    """The voters (indices into `held`, their dev answers) whose accuracy on the level's dev items is at least
    `floor` times the best voter's. Past the training length some offsets break down at one length and not the
    next (measured: relabel's generation-9 champion at length 16 was 0.82-0.95 right under ten offsets and
    0.01-0.21 under six), and a vote that must carry the broken ones passes nothing. Dev is the visible tier,
    already used to calibrate the vote; floor 0 keeps every voter."""
    acc = [sum(a == y for a, y in zip(ans, truth)) / len(truth) for ans in held]
    return [i for i, a in enumerate(acc) if a >= floor * max(acc) - 1e-12]


def forms(task: Task, cfg: CuratorConfig, problems: list[Problem]) -> list[list[Problem]]:
    """The problems as given, then (with `rewrites`) each rewrite the task has for them: one aligned list per
    form. Every voter answers every form, and a label must win the vote in each (`agreed`)."""
    if not cfg.rewrites or not problems:
        return [problems]
    alts = [task.rewrites(p) for p in problems]
    return [problems] + [[a[k] for a in alts] for k in range(min(len(a) for a in alts))]


def agreed(labels: list[list[str | None]]) -> list[str | None]:
    """Per problem, the label every form's vote passed with; None where one failed or two differ. Measured on
    relabel-long's generation-4 champion at length 10 (benchmarks/label_filters.py): its 16 offsets agreed on 8
    of its 12 errors in 1,000 problems, and the vote on b+a caught 5 of those 8."""
    return [ys[0] if ys[0] is not None and all(y == ys[0] for y in ys) else None for ys in zip(*labels)]


def pruned_vote(task: Task, cfg: CuratorConfig, problems: list[Problem], agreement: float, champion: TinyLM,
                others: list[TinyLM] = (), pool: list[tuple[TinyLM, int]] | None = None) -> list[str | None]:
    """The same labels as `vote(answers(...), agreement)`, decoding less: voters answer one after another, and a
    problem is dropped as soon as its leading answer, even with every remaining voter behind it, could no longer
    reach `agreement`, and settled as soon as its leading answer has reached it (more than half the voters: no
    other answer can catch up). Past the frontier most problems fail after a few voters, inside it most pass
    after `agreement` of them, so a relabelled ladder of solved lengths costs `agreement` of a full vote."""
    pool = voters(cfg, champion, list(others)) if pool is None else pool
    need = math.ceil(agreement * len(pool) - 1e-9)
    counts: list[Counter] = [Counter() for _ in problems]
    alive = list(range(len(problems)))
    out: list[str | None] = [None] * len(problems)
    for done, (model, off) in enumerate(pool, start=1):
        for i, a in zip(alive, greedy(model, task, [problems[i] for i in alive], offset=off)):
            counts[i][a] += 1
        left, still = len(pool) - done, []
        for i in alive:
            y, c = counts[i].most_common(1)[0]
            if c >= need and 2 * need > len(pool):
                out[i] = y
            elif c + left >= need:
                still.append(i)
        alive = still
        if not alive:
            break
    for i in alive:
        y, c = counts[i].most_common(1)[0]
        out[i] = y if c >= need else None
    return out


def label(
    task: Task,
    cfg: CuratorConfig,
    problems: list[Problem],
    champion: TinyLM,
    others: list[TinyLM] = (),
) -> tuple[list[tuple[Problem, str]], float]:
    """Label problems with the configured filter; returns the kept (problem, label) pairs and the pass rate."""
    by_form = [answers(task, cfg, f, champion, others) for f in forms(task, cfg, problems)]
    return _kept(task, cfg, problems, by_form, thresholds(cfg, len(by_form[0]))[0])


def verified(task: Task, problems: list[Problem], labels: list[str | None]) -> list[str | None]:
    """The `verifier` filter: the labels the hidden checker accepts. Studies only (the upper bound)."""
    return [y if y is not None and task.check(p, y) else None for p, y in zip(problems, labels)]


def _kept(task, cfg, problems, by_form: list[list[list[str]]], agreement: float,
          confirm: Callable[[list[str | None]], list[str | None]] | None = None):
    """The kept (problem, label) pairs and the pass rate; `by_form`: every voter's answers to each form;
    `confirm`: what of the vote's labels a further check keeps (`_confirmed_by_parts`)."""
    labels = agreed([vote(votes, agreement) for votes in by_form])
    return _filtered(task, cfg, problems, labels if confirm is None else confirm(labels))


def _filtered(task, cfg, problems, labels: list[str | None]) -> tuple[list[tuple[Problem, str]], float]:
    kept = [(p, y) for p, y in zip(problems, labels) if y is not None]
    if cfg.filter != "none":
        kept = [(p, y) for p, y in kept if well_formed(task, p, y)]
    return kept, (len(kept) / len(problems) if problems else 0.0)


def thresholds(cfg: CuratorConfig, n_voters: int) -> list[float]:
    """The agreements a vote of n voters can be held to, from the configured minimum up to unanimity."""
    if cfg.filter in ("none", "length", "verifier"):
        return [1.0]
    least = math.ceil(cfg.agreement * n_voters - 1e-9)
    return [c / n_voters for c in range(least, n_voters + 1)]


def curate_level(
    task: Task,
    cfg: CuratorConfig,
    level: int,
    problems: list[Problem],
    dev: list[tuple[Problem, str]],
    champion: TinyLM,
    others: list[TinyLM] = (),
    certified: int = 0,
    trained_to: int | None = None,
    label_free: bool = False,
    n_reference: int = 100,
) -> Curation:
    """Label one level (`_label_level`); in label-free mode a level judged without dev has its kept labels
    checked once more, each against two agreeing compositions (`judging.check_kept`)."""
    cur = _label_level(task, cfg, level, problems, dev, champion, others, certified, trained_to, label_free,
                       n_reference)
    if label_free and cur.judge != "dev":
        cur = check_kept(task, cfg, cur, champion, certified)
    return cur


def _label_level(task, cfg, level, problems, dev, champion, others, certified, trained_to, label_free,
                 n_reference) -> Curation:
    """Label one level, holding the vote to the lowest agreement whose labels on the level's dev items do not
    show noise above `max_dev_noise`. Where every agreement does, the vote is confident where the models are
    wrong (the alarm of error accumulation, DESIGN.md) and the level is not curated. Dev is decoded first, so
    a level that raises the alarm costs a tenth of one that is labelled.

    With `compose`, a level the task can compose from parts within the champion's `certified` frontier, and
    that the champion has trained on (at most `trained_to`; None: every level), is not voted on: its labels are
    the champion's direct answers that equal the composed ones (`composing.py`), and dev raises the same alarm.
    A composable level past `trained_to` is new to the champion, whose greedy answers there may be mostly wrong:
    it is also voted as configured, and a label is kept where the vote's or the greedy answer equals the composed
    one (both are checked, so their union keeps the precision and gains coverage). Dev items are the visible
    tier; the hidden checker is never called here.

    `label_free` (`task.dev_levels: human`): a level with no labelled dev item is judged, in place of dev, on
    `n_reference` of its own problems against the task's consistency check (`reference`); where the task has
    none at this length, nothing is labelled.
    """
    compose = cfg.compose and cfg.filter in ("offset-vote", "majority") and composable(task, level, problems,
                                                                                       certified)
    judge = "dev"
    if label_free and not dev:
        dev, judge = reference(task, level, problems, champion, certified, compose, n_reference)
        if len(dev) < max(cfg.min_kept, 1):  # a handful of checked items cannot tell a clean vote from a dirty one
            why = (f"the task composes {len(dev)} of its {len(problems)} problems by the {judge} from parts within "
                   f"the certified {certified} (min_kept={cfg.min_kept})")
            return Curation(level, [], len(problems), None, f"alarm: no label-free check reaches level {level}: {why}",
                            judge=judge, method="vote+compose" if compose else "vote")
    if compose and (trained_to is None or level <= trained_to):
        return _curate_composed(task, cfg, level, problems, dev, champion, certified, composed_labels, "compose",
                                judge)
    if compose and cfg.compose_new == "parts":
        return _curate_composed(task, cfg, level, problems, dev, champion, certified, parts_labels, "parts", judge)
    pool = voters(cfg, champion, list(others))
    chosen, passed, wrong, confirm = None, 0, 0, None
    # 'none' trusts the champion by definition; 'verifier' needs no calibration, it reads the truth
    calibrate = cfg.filter not in ("none", "verifier") and bool(dev)
    if not calibrate:
        chosen = thresholds(cfg, len(pool))[0]
    else:
        dev_problems, truth = [p for p, _ in dev], dict(dev)
        held = [answers(task, cfg, f, champion, others, pool) for f in forms(task, cfg, dev_problems)]
        if cfg.voter_floor > 0:  # judged on the problems as given; a voter kept answers every form
            keep = strong_voters(held[0], [y for _, y in dev], cfg.voter_floor)
            pool, held = [pool[i] for i in keep], [[h[i] for i in keep] for h in held]
        confirm = (_confirmed_by_parts(task, cfg, dev_problems, champion, certified)[0]
                   if compose and cfg.compose_judges_dev else None)
        for t in thresholds(cfg, len(pool)):
            dev_kept, _ = _kept(task, cfg, dev_problems, held, t, confirm)
            passed, wrong = len(dev_kept), sum(truth[p] != y for p, y in dev_kept)
            if passed and not noisier_than(wrong, passed, cfg.max_dev_noise):
                chosen = t
                break
    stop = _dev_stop(cfg, level, len(problems), len(dev), passed, wrong, chosen is None, calibrate,
                     "the vote" if confirm is None else "the vote or greedy answer the composition confirms",
                     judge=judge)
    if stop:  # the new problems are not even decoded: nothing the vote says at this level is kept
        return Curation(level, [], len(problems), None, stop, chosen, passed, wrong, len(pool),
                        "vote+compose" if compose else "vote", judge)
    def voted(some: list[Problem]) -> list[str | None]:
        labels = agreed([pruned_vote(task, cfg, f, chosen, champion, others, pool) for f in forms(task, cfg, some)])
        return verified(task, some, labels) if cfg.filter == "verifier" else labels

    # a new composable length: the vote's or the greedy labels, where the composition from certified parts agrees
    labels = _confirmed_vote(task, cfg, problems, champion, certified, voted) if compose else voted(problems)
    return _curation(task, cfg, level, problems, labels, chosen, passed, wrong, len(pool),
                     "vote+compose" if compose else "vote", judge)


def _confirmed_by_parts(task: Task, cfg: CuratorConfig, problems: list[Problem], champion: TinyLM,
                        certified: int) -> tuple[Callable[[list[str | None]], list[str | None]], list[int]]:
    """What a new composable level keeps of the vote's labels: each one the composition confirms, and where it
    confirms none, the champion's greedy answer if the composition confirms that (their union keeps the
    precision and gains coverage). Decodes the composition and the greedy answers once. Also returns where the
    vote can change a label: a composition exists and the greedy answer is not confirmed (elsewhere the label is
    the composed answer, or nothing, whatever the vote says)."""
    by_parts = composed(task, problems, champion, certified)
    greedy_ok = checked(greedy_labels(task, cfg, problems, champion), by_parts)
    open_ = [i for i, (c, y) in enumerate(zip(by_parts, greedy_ok)) if c is not None and y is None]
    return (lambda labels: [v if v is not None else y for v, y in zip(checked(labels, by_parts), greedy_ok)],
            open_)


def _confirmed_vote(task: Task, cfg: CuratorConfig, problems: list[Problem], champion: TinyLM, certified: int,
                    voted: Callable[[list[Problem]], list[str | None]]) -> list[str | None]:
    """`_confirmed_by_parts` of the vote's labels, voting only where it can change a label: the same labels, for a
    vote over a few problems in ten past the champion's training length (where its greedy answers are mostly
    right) rather than all of them."""
    confirm, open_ = _confirmed_by_parts(task, cfg, problems, champion, certified)
    labels: list[str | None] = [None] * len(problems)
    for i, v in zip(open_, voted([problems[i] for i in open_]) if open_ else []):
        labels[i] = v
    return confirm(labels)


def greedy_labels(task: Task, cfg: CuratorConfig, problems: list[Problem], champion: TinyLM) -> list[str | None]:
    """The champion's greedy answers, where every form gives the same."""
    return agreed([greedy(champion, task, f) for f in forms(task, cfg, problems)])


def composed_labels(task: Task, cfg: CuratorConfig, problems: list[Problem], champion: TinyLM,
                    certified: int) -> list[str | None]:
    """The champion's greedy answers (every form must give the same), kept where they equal the composed ones."""
    return checked(greedy_labels(task, cfg, problems, champion), composed(task, problems, champion, certified))


def parts_labels(task: Task, cfg: CuratorConfig, problems: list[Problem], champion: TinyLM,
                 certified: int) -> list[str | None]:
    """The composed answers themselves (the champion's answers to certified parts, joined), where every form
    gives the same: labels for a length the champion cannot answer directly yet (`compose_new: parts`)."""
    return agreed([composed(task, f, champion, certified) for f in forms(task, cfg, problems)])


def _curate_composed(task, cfg, level, problems, dev, champion, certified, labeller, method,
                     judge: str = "dev") -> Curation:
    """A composable level labelled by `labeller` (no vote), held to the same dev alarm as a vote."""
    n_forms, passed, wrong = len(forms(task, cfg, problems[:1])), 0, 0
    if dev:
        dev_problems, truth = [p for p, _ in dev], dict(dev)
        dev_kept, _ = _filtered(task, cfg, dev_problems, labeller(task, cfg, dev_problems, champion, certified))
        passed, wrong = len(dev_kept), sum(truth[p] != y for p, y in dev_kept)
    bad = bool(dev) and (not passed or noisier_than(wrong, passed, cfg.max_dev_noise))
    stop = _dev_stop(cfg, level, len(problems), len(dev), passed, wrong, bad, bool(dev), "composition",
                     "where the direct and the composed answers agree" if method == "compose" else
                     "where every form composes the same", judge)
    if stop:
        return Curation(level, [], len(problems), None, stop, None, passed, wrong, n_forms, method, judge)
    labels = labeller(task, cfg, problems, champion, certified)
    return _curation(task, cfg, level, problems, labels, None, passed, wrong, n_forms, method, judge)


def _dev_stop(cfg, level: int, n: int, n_dev: int, passed: int, wrong: int, alarm: bool, calibrated: bool,
              what: str = "the vote", strictest: str = "when every voter agrees", judge: str = "dev") -> str | None:
    """Why dev (or its label-free stand-in, `judge`) says not to label this level (the alarm, or too few labels to
    expect), or None."""
    if alarm:
        why = (f"{what} passes no {judge} item of level {level}" if not passed else
               f"{wrong} of {passed} labels {what} passes on {judge} are wrong, even {strictest} "
               f"(more than max_dev_noise={cfg.max_dev_noise:g})")
        return f"alarm: {why}"
    if calibrated and passed * n < cfg.min_kept * n_dev:
        return (f"only {passed} of {n_dev} {judge} items pass {what}: too few of {n} problems would "
                f"(min_kept={cfg.min_kept})")
    if calibrated and passed < MIN_JUDGED:
        return f"only {passed} {judge} items pass {what}: too few to judge its labels by (at least {MIN_JUDGED})"
    return None


def _curation(task, cfg, level, problems, labels, threshold, passed, wrong, n_voters, method="vote",
              judge="dev") -> Curation:
    kept, rate = _filtered(task, cfg, problems, labels)
    skipped = None
    if len(kept) < cfg.min_kept:
        skipped = f"only {len(kept)} labels passed the filter (min_kept={cfg.min_kept})"
    return Curation(level, [] if skipped else kept, len(problems), rate, skipped, threshold, passed, wrong, n_voters,
                    method, judge)


def curate_ahead(
    task: Task,
    cfg: CuratorConfig,
    first: int,
    last: int,
    problems: Callable[[int], list[Problem]],
    dev: list[tuple[Problem, str]],
    champion: TinyLM,
    others: list[TinyLM] = (),
    certified: int = 0,
) -> list[Curation]:
    """Curate up to `cfg.levels_ahead` levels from `first` (never past `last`); see `curate_levels`."""
    return curate_levels(task, cfg, list(range(first, min(first + cfg.levels_ahead, last + 1))), problems, dev,
                         champion, others, certified)


def curate_levels(
    task: Task,
    cfg: CuratorConfig,
    levels: list[int],
    problems: Callable[[int], list[Problem]],
    dev: list[tuple[Problem, str]],
    champion: TinyLM,
    others: list[TinyLM] = (),
    certified: int = 0,
    trained_to: int | None = None,
    label_free: bool = False,
    n_reference: int = 100,
) -> list[Curation]:
    """Curate the levels in order, stopping after the first that is not curated: past a length the vote cannot
    label cleanly, it would label worse. `certified`: the champion's gate-certified frontier, `trained_to` the
    longest length it trained on (both for `compose`)."""
    out: list[Curation] = []
    for level in levels:
        held = [(p, y) for p, y in dev if p.level == level]
        out.append(curate_level(task, cfg, level, problems(level), held, champion, others, certified, trained_to,
                                label_free, n_reference))
        if out[-1].skipped:
            break
    return out
