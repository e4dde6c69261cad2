"""Self-improvement, condition by condition (Lee et al. 2025's ablations on our loop): filters, data policy,
schedule and injected label noise. Each condition is a run of the real loop (sandboxed experiments, gate and
all), forked from one shared generation 0 so that only the curator setting differs, and measured per generation.

    .venv/bin/python benchmarks/self_improvement.py                       # every condition; resumes
    .venv/bin/python benchmarks/self_improvement.py --only none,offset-vote --generations 6
    .venv/bin/python benchmarks/self_improvement.py --report              # tables and plots from what is there
    .venv/bin/python benchmarks/self_improvement.py --quick --root /tmp/si   # smoke test: tiny model, ~1 minute

Do not read the run directories (a `grep -r` over the repository, say) while a condition trains: every workspace
holds honeypots, the tripwire cannot tell who opened one, and the experiment is disqualified.

A killed run resumes where it stopped (the loop's own resume). `--generations N` pauses every condition after
generation N through its policy budget; a later call with a larger N goes on. Writes
benchmarks/results/self_improvement.json, benchmarks/results/self_improvement_*.png and the tables between the
markers in BENCHMARKS.md (`--quick` writes only under its --root).
"""
from __future__ import annotations

import argparse
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from fork_run import fork, run_to_end

from successor.config import CuratorConfig
from successor.oversight.policy import Budgets, Policy, save_policy
from successor.workloads.tinylm.curator import schedule_levels, with_relabel

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BEGIN, END = "<!-- self_improvement:begin -->", "<!-- self_improvement:end -->"
SOLVED = 0.99

# Generation 0 of each task, shared by its conditions. Every condition labels with Lee et al.'s standard schedule
# (+1 length a generation past the longest length trained on) unless it says otherwise; one candidate a
# generation (the incumbent recipe) keeps the loop's own search out of the comparison.
PROTOCOL_BEFORE_25 = {
    "curator": {"relabel": False, "policy": "accumulate", "voter_floor": 0.0, "rewrites": False,
                "accelerate_threshold": 0.99, "compose": False},
    "successor": {"steps": 250},
    "gate": {"effect_on": "tested", "min_effect": 0.01, "count_newly_solved": False}}
ADDITION = {
    "name": "self-improvement-addition",
    # dev labels at every length, as these conditions were measured (the default became label-free later)
    "task": {"eval_max_level": 20, "sealed_per_level": 200, "validation_per_level": 60, "guardrail_per_level": 30,
             "dev_levels": "all"},
    # the bootstrap these runs had (issue 25 later gave the default a curriculum, a longer schedule and a plateau
    # check): without it, a new run would start from another generation 0
    "bootstrap": {"steps": 3000, "schedule_steps": 3000, "curriculum_steps": 0, "offset_ramp_steps": 0,
                  "plateau_step": 0},
    "researcher": {"candidates": 1},
    # the protocol these conditions change, which was the default before issue 25 made commute-1k/accelerated
    # (plus compose) the default
    "curator": {"schedule": "standard", "levels_ahead": 1} | PROTOCOL_BEFORE_25["curator"],
    "successor": PROTOCOL_BEFORE_25["successor"], "gate": PROTOCOL_BEFORE_25["gate"],
    "loop": {"generations": 10}}
BASES: dict[str, tuple[str, dict]] = {
    "addition": ("default", ADDITION),
    # The same generation 0 with five times the sealed items a length (the tier is drawn at generation 0, so a
    # new base): on 200 items a length going 0.975 -> 0.99 is 3 gained and 0 lost (p = 0.125), which no test can
    # confirm, and the commute condition's frontier held at 13 on it; on 1,000 it is about 15 and 0 (p ~ 3e-5).
    "addition-1k": ("default", ADDITION | {
        "name": "self-improvement-addition-1k",
        "task": ADDITION["task"] | {"eval_max_level": 18, "sealed_per_level": 1000}}),
    # Copy generalises a little past its training length (measured: trained on 1-8 with offsets 0-5, 1.00 up to
    # length 10, 0.89 at 11, 0.12 at 14): the regime where the accelerated schedule has lengths to take early.
    # The vote uses the offsets it was trained with; past them its positions were never seen.
    "copy": ("default", {
        "name": "self-improvement-copy",
        "task": {"name": "copy", "eval_max_level": 20, "sealed_per_level": 200, "validation_per_level": 60,
                 "guardrail_per_level": 30, "dev_levels": "all"},
        "bootstrap": {"steps": 1000, "schedule_steps": 1000, "max_offset": 5, "guardrail_from": 700,
                      "curriculum_steps": 0, "offset_ramp_steps": 0, "plateau_step": 0},
        "successor": {"max_offset": 5} | PROTOCOL_BEFORE_25["successor"], "gate": PROTOCOL_BEFORE_25["gate"],
        "researcher": {"candidates": 1},
        "curator": {"schedule": "standard", "levels_ahead": 1, "offsets": [0, 1, 2, 3, 4, 5]}
        | PROTOCOL_BEFORE_25["curator"],
        "loop": {"generations": 10}}),
}
QUICK_BASES: dict[str, tuple[str, dict]] = {
    "addition": ("smoke", {"name": "self-improvement-quick", "task": {"eval_max_level": 4},
                           "successor": {"steps": 100}, "researcher": {"candidates": 1},
                           "curator": {"schedule": "standard", "levels_ahead": 1},
                           "loop": {"generations": 1, "experiment_budget": 0.2}}),
}


@dataclass
class Condition:
    name: str
    base: str
    changes: dict = field(default_factory=dict)
    note: str = ""


# The gate's effect measured on the tested lengths past the champion's frontier, at least +0.02 there. Under the
# null (benchmarks/gate_null.py --effect-on unsolved, 12 seed retrains of runs/demo2's generation-2 job, where the
# unsolved lengths sit at 0.23-0.82 and seeds differ by up to 0.12) 25.8% of seed pairs pass at 0.02 and 0.8% at
# 0.05; a successor that takes a length from 0.98 to 1.00 gains only 0.02 there, so the lineage needs 0.02.
UNSOLVED = {"gate.effect_on": "unsolved", "gate.min_effect": 0.02}

COMMUTE = {"curator.relabel": True, "curator.policy": "replace", "curator.voter_floor": 0.5, "curator.rewrites": True,
           "curator.accelerate_threshold": 0.9, "successor.steps": 750, **UNSOLVED}
# loop.threads 1: the two commute-1k conditions ran side by side on the two cores
COMMUTE_1K = COMMUTE | {"gate.count_newly_solved": True, "loop.threads": 1}

CONDITIONS = [
    Condition("offset-vote", "addition", {}, "the champion under 16 position offsets must agree (>=70%, calibrated "
              "on dev)"),
    # The champion relabels every curated length each generation: a champion that trained on a length votes
    # cleaner labels there than its parent did (benchmarks/offset_vote.py on offset-vote's champions, 1,000
    # problems of length 9, 80% of 16 offsets: generation 4 keeps 954 labels, 0.4% wrong; generation 0, 118, 5.9%).
    Condition("relabel", "addition", {"curator.relabel": True, "curator.policy": "replace"},
              "offset-vote; every curated length labelled again by the current champion, fresh labels replace old"),
    # The vote with only the offsets that are at least half as right on the level's dev items as the best one:
    # relabel stalled at length 16, where six of its 16 offsets were 0.01-0.21 right and the others 0.82-0.95.
    # Stopped after 7 generations: from generation 5 on its successors were better and refused, at +0.005 to
    # +0.009 of sealed accuracy pooled over lengths 1-12 where the champion was at 0.989 (the gate's min_effect is
    # 0.01). The conditions below measure the gate's effect on the lengths past the champion's frontier.
    Condition("relabel-voters-pooled", "addition", {"curator.relabel": True, "curator.policy": "replace",
                                                    "curator.voter_floor": 0.5},
              "relabel; per length, only the offsets at least half as right on dev as the best one vote; the "
              "gate's effect pooled over every tested length (stopped after 7 generations)"),
    Condition("relabel-voters", "addition", {"curator.relabel": True, "curator.policy": "replace",
                                             "curator.voter_floor": 0.5, **UNSOLVED},
              "relabel; per length, only the offsets at least half as right on dev as the best one vote; the "
              "gate measures +0.02 on the lengths past the champion's frontier"),
    # The verifier's labels are all right, yet its frontier lagged the trained length by 2-4: a 250-step successor
    # brings a new length to 0.84-0.93, not 0.99, so the frontier cannot grow a length a generation whatever the
    # filter. Three times the steps (the curated lengths' rows seen three times as often), same data.
    Condition("relabel-long", "addition", {"curator.relabel": True, "curator.policy": "replace",
                                           "curator.voter_floor": 0.5, "curator.accelerate_threshold": 0.9,
                                           "successor.steps": 750, **UNSOLVED},
              "relabel-voters with 750-step successors (250 elsewhere; stopped after 6 generations)"),
    # relabel-long stalled at 9 from generation 2: the champion's labels at lengths it stood at 0.97 on were
    # 1-3% wrong and the offsets agreed on those errors (8 of 12 unanimous at length 10, generation 4), so each
    # successor learned them back; at length 12 unanimous dev labels were 5 of 88 wrong and the alarm stopped
    # the curation. The vote on b+a caught 5 of the 8 (benchmarks/label_filters.py).
    Condition("commute", "addition", COMMUTE, "relabel-long, and a label must also win the vote on the commuted "
              "problem (b+a)"),
    Condition("commute/accelerated", "addition", COMMUTE | {"curator.schedule": "accelerated"},
              "commute, accelerated: also labels every length past the trained ones where the champion scores "
              ">=90% on dev (stopped after 7 generations)"),
    # commute held at 13 while its successors took length 14 from 0.975 to 0.99: +0.015 on 200 sealed items, 3
    # gained and 0 lost, under min_effect and not significant. The same settings on the base with 1,000 sealed
    # items a length, and a level the successor newly solves, significantly on its own items, meets min_effect.
    Condition("commute-1k", "addition-1k", COMMUTE_1K,
              "commute on 1,000 sealed items a length; a newly solved level, significant on its own items, meets "
              "the minimum effect"),
    Condition("commute-1k/accelerated", "addition-1k", COMMUTE_1K | {"curator.schedule": "accelerated"},
              "commute-1k, accelerated: also labels every length past the trained ones where the champion scores "
              ">=90% on dev (stopped after 9 generations: its frontier reached 18, the sealed tier's last length)"),
    Condition("none", "addition", {"curator.filter": "none"}, "every label the champion gives is kept"),
    Condition("length", "addition", {"curator.filter": "length"},
              "labels of the right length and digits only (stopped after 3 generations: every one raised the alarm)"),
    Condition("verifier", "addition", {"curator.filter": "verifier"}, "UPPER BOUND: the hidden checker filters"),
    Condition("majority", "addition", {"curator.filter": "majority", "curator.voters": 3, "curator.agreement": 0.7,
                                       "researcher.candidates": 2, "loop.experiment_budget": 1.0},
              "the champion and 2 full-length candidates (own seeds) must agree"),
    Condition("strict-vote", "addition", {"curator.agreement": 1.0},
              "offset-vote held to unanimity: all 16 offsets must agree"),
    Condition("replace", "addition", {"curator.policy": "replace"}, "offset-vote; only the newest curated data"),
    Condition("accelerated", "addition", {"curator.schedule": "accelerated"},
              "offset-vote; also labels every length the champion already solves (>=99% on dev)"),
    Condition("noise-10", "addition", {"curator.noise": {"rate": 0.1, "generations": [2]}},
              "offset-vote; 10% of kept labels corrupted at generation 2"),
    Condition("noise-30", "addition", {"curator.noise": {"rate": 0.3, "generations": [2]}},
              "offset-vote; 30% of kept labels corrupted at generation 2"),
    Condition("copy/standard", "copy", {}, "string copy, offset-vote (offsets 0-5), standard schedule"),
    Condition("copy/accelerated", "copy", {"curator.schedule": "accelerated"},
              "string copy, offset-vote, accelerated schedule"),
    Condition("copy/relabel", "copy", {"curator.relabel": True, "curator.policy": "replace",
                                       "curator.voter_floor": 0.5, **UNSOLVED},
              "string copy, relabel-voters, standard schedule (stopped after 7 generations)"),
    # Offsets 0-2 here: with 0-5, the vote at a length past the training data decodes at positions the model
    # never saw (it trained with offsets 0-5 on shorter strings), so five of six offsets rarely agree.
    Condition("copy/ahead3-vote", "copy", {"curator.schedule": "frontier", "curator.levels_ahead": 3,
                                           "curator.offsets": [0, 1, 2]},
              "string copy, offset-vote (offsets 0-2), three lengths past the frontier each generation"),
    Condition("copy/ahead3-none", "copy", {"curator.schedule": "frontier", "curator.levels_ahead": 3,
                                           "curator.filter": "none"},
              "string copy, no filter, three lengths past the frontier each generation"),
]
QUICK = [Condition("none", "addition", {"curator.filter": "none"}),
         # the verifier's labels are all right, so after injection exactly the corrupted ones are wrong
         Condition("verifier-noise", "addition", {"curator.filter": "verifier",
                                                  "curator.noise": {"rate": 0.3, "generations": [1]}})]


def generations_done(run: Path) -> int:
    if not (run / "lineage.db").exists():
        return 0
    db = sqlite3.connect(f"file:{run / 'lineage.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM generations WHERE status='done'").fetchone()[0]
    finally:
        db.close()


def ensure_base(root: Path, name: str, bases: dict) -> Path:
    """Generation 0 of a task, trained once (the loop pauses after it on a one-generation budget)."""
    run = root / f"base-{name}"
    if generations_done(run) >= 1:
        return run
    preset, config = bases[name]
    root.mkdir(parents=True, exist_ok=True)
    (root / f"base-{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    save_policy(Policy(budgets=Budgets(generations=1)), root / f"base-{name}.policy.yaml")
    print(f"[{name}] generation 0 ...", flush=True)
    run_to_end(root / f"base-{name}.yaml", run, preset, root / f"base-{name}.policy.yaml")
    if generations_done(run) < 1:
        raise SystemExit(f"{run}: generation 0 did not finish; see `successor status {run}`")
    return run


def run_dir(root: Path, cond: Condition) -> Path:
    return root / cond.name.replace("/", "-")


def run_condition(root: Path, cond: Condition, bases: dict, generations: int | None) -> Path:
    base = ensure_base(root, cond.base, bases)
    run = run_dir(root, cond)
    if not run.exists():
        fork(base, run, cond.changes)
    # budgets count finished generations, the bootstrap included; none: run to the config's end
    save_policy(Policy(budgets=Budgets(generations=generations + 1 if generations else None)), run / "policy.yaml")
    print(f"[{cond.name}] generations {generations_done(run) - 1} done, running ...", flush=True)
    rc = run_to_end(run / "fork.yaml", run)
    if rc not in (0, 3):
        raise SystemExit(f"[{cond.name}] successor run exited {rc}")
    return run


# -- measurement ---------------------------------------------------------------------------------------------
def sealed_acc(db: sqlite3.Connection, model: str | None) -> dict[int, float]:
    if model is None:
        return {}
    rows = db.execute("SELECT level, n, correct FROM evaluations WHERE model=? AND tier='sealed'", (model,))
    return {lvl: c / n for lvl, n, c in rows}


def last_level(db: sqlite3.Connection, g: int, first: int) -> int:
    """The last level the sealed tier held in generation g: eval_max_level (`first`), or the ladder's growth up to
    g (it grows as a generation opens, before anything reads it)."""
    try:
        row = db.execute("SELECT MAX(hi) FROM tier_parts WHERE tier='sealed' AND generation<=?", (g,)).fetchone()
    except sqlite3.Error:  # a lineage made before the ladder
        return first
    return max(first, row[0] or first)


def measure(run: Path, cfg: dict) -> list[dict]:
    """Per finished generation: what was labelled and how wrong it truly was, the champion after it, the compute,
    and the levels the accelerated schedule would have labelled from the same champion (where they equal the
    standard schedule's at every generation, an accelerated run is the same run). `cfg`: the run's config."""
    accelerated = CuratorConfig(**(cfg["curator"] | {"schedule": "accelerated"}))
    human_top, last = cfg["task"]["human_levels"][1], cfg["task"]["eval_max_level"]
    trained = human_top
    db = sqlite3.connect(f"file:{run / 'lineage.db'}?mode=ro", uri=True)
    try:
        out, parent_acc = [], {}
        for g, promoted, champ, front in db.execute(
                "SELECT idx, promoted, champion_model, frontier FROM generations "
                "WHERE status='done' ORDER BY idx").fetchall():
            cur = json.loads((db.execute("SELECT result FROM stages WHERE generation=? AND name='curate'",
                                         (g,)).fetchone() or ["{}"])[0])
            cpu = db.execute("SELECT COALESCE(SUM(cpu_s), 0) FROM experiments WHERE generation=?", (g,)).fetchone()[0]
            # wall time of the stages, not start to end: a run that was down between two stages did no work then,
            # nor while a tripwire held the promotion for a human
            wall = db.execute("SELECT COALESCE(SUM(finished - started), 0) FROM stages WHERE generation=? AND "
                              "status='done'", (g,)).fetchone()[0]
            wall -= db.execute("SELECT COALESCE(SUM(decided - requested), 0) FROM approvals WHERE generation=? AND "
                               "decided IS NOT NULL", (g,)).fetchone()[0]
            assess = json.loads((db.execute("SELECT result FROM stages WHERE generation=? AND name='assess'",
                                            (g,)).fetchone() or ["{}"])[0])
            dev = {int(k): v for k, v in (assess.get("dev_acc") or {}).items()}
            would = with_relabel(accelerated, schedule_levels(accelerated, dev, 0, trained, last_level(db, g, last)),
                                 human_top) if g else []
            acc = sealed_acc(db, champ)
            lost = sorted(lvl for lvl, a in parent_acc.items() if a >= SOLVED and acc.get(lvl, 0.0) < SOLVED)
            out.append({"generation": g, "promoted": bool(promoted), "frontier": front,
                        "acc": {str(k): round(v, 4) for k, v in sorted(acc.items())},
                        "labelled": cur.get("curated", []), "wanted": cur.get("wanted", []),
                        "kept": cur.get("kept", 0), "injected": cur.get("injected", 0),
                        "noise": cur.get("true_noise_hidden"), "skipped": cur.get("skipped"),
                        "noise_by_level": {str(lv["level"]): lv["true_noise_hidden"] for lv in cur.get("levels", [])
                                           if not lv.get("skipped")},
                        "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
                        "lost": lost if promoted and g > 0 else [], "accelerated_would": would})
            parent_acc = acc
            if promoted and cur.get("curated"):
                trained = max(trained, *cur["curated"])
        return out
    finally:
        db.close()


def summary(cond: Condition, gens: list[dict], human_top: int) -> dict:
    fronts = [g["frontier"] or 0 for g in gens]
    streak = best = 0
    for a, b in zip(fronts, fronts[1:]):
        streak = streak + 1 if b >= a + 1 else 0
        best = max(best, streak)
    noise = [g["noise"] for g in gens if g["noise"] is not None]
    return {"condition": cond.name, "note": cond.note, "generations": len(gens) - 1,
            "frontier": fronts, "final_frontier": fronts[-1] if fronts else None,
            "ratio_to_human": round(fronts[-1] / human_top, 2) if fronts else None,
            "longest_plus_one_streak": best, "promoted": sum(g["promoted"] for g in gens[1:]),
            "max_noise": max(noise) if noise else None,
            "mean_noise": round(sum(noise) / len(noise), 4) if noise else None,
            "cpu_s": round(sum(g["cpu_s"] for g in gens), 0), "wall_s": round(sum(g["wall_s"] for g in gens), 0),
            "lost_lengths": sum(len(g["lost"]) for g in gens),
            "accelerated_differs_at": [g["generation"] for g in gens[1:] if g["wanted"]
                                       and g["accelerated_would"] != g["wanted"]]}


# -- writing -------------------------------------------------------------------------------------------------
def _pct(x) -> str:
    return "–" if x is None else f"{x:.1%}"


def _levels(levels: list[int]) -> str:
    """'9-13' for a run of lengths, '9, 11' otherwise."""
    if len(levels) > 2 and levels == list(range(levels[0], levels[-1] + 1)):
        return f"{levels[0]}-{levels[-1]}"
    return ", ".join(map(str, levels))


def tables(results: list[dict]) -> str:
    lines = ["| condition | generations | ≥99% frontier by generation | final / human | longest +1 streak | "
             "promoted | kept-label noise mean / max | lost solved lengths | experiment CPU-s | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s = r["summary"]
        lines.append(f"| {s['condition']} | {s['generations']} | {' → '.join(map(str, s['frontier']))} | "
                     f"{s['ratio_to_human']}× | {s['longest_plus_one_streak']} | {s['promoted']} | "
                     f"{_pct(s['mean_noise'])} / {_pct(s['max_noise'])} | {s['lost_lengths']} | {s['cpu_s']:.0f} | "
                     f"{s['wall_s']:.0f} |")
    for r in results:
        s = r["summary"]
        sched = r["config"].get("schedule")
        extra = ""
        if sched == "standard":
            extra = (f" The accelerated schedule, from the same champions, would have labelled other lengths at "
                     f"generation(s) {', '.join(map(str, s['accelerated_differs_at']))}." if s["accelerated_differs_at"]
                     else " From the same champions the accelerated schedule labels the same lengths at every "
                     f"generation (none scored >={r['config'].get('accelerate_threshold', 0.99):.0%} on dev past its "
                     "training length), so an accelerated run is this run.")
        lines += ["", f"**{s['condition']}**: {s['note']}.{extra}", "",
                  "| gen | labelled | kept (injected) | kept-label noise† | promoted | frontier | sealed acc at "
                  "frontier+1, +2 | CPU-s | wall s |", "|---|---|---|---|---|---|---|---|---|"]
        for g in r["generations"]:
            f = g["frontier"] or 0
            nxt = " / ".join(f"{g['acc'].get(str(f + i), 0):.2f}" for i in (1, 2))
            what = _levels(g["labelled"]) or ("–" if g["generation"] == 0 else f"none: {g['skipped']}")
            newest = g.get("noise_by_level", {}).get(str(max(g["labelled"]))) if g["labelled"] else None
            noise = _pct(g["noise"]) + (f" ({_pct(newest)})" if len(g["labelled"]) > 1 else "")
            lines.append(f"| {g['generation']} | {what} | {g['kept']} ({g['injected']}) | {noise} | "
                         f"{'yes' if g['promoted'] else 'no'} | {f} | {nxt} | {g['cpu_s']:.0f} | {g['wall_s']:.0f} |")
    lines += ["", "† measured with the hidden checker after the filter (and after any injected noise); the loop "
              "never reads it. Where a generation labelled several lengths, the newest length's in brackets."]
    return "\n".join(lines)


def plots(results: list[dict], prefix: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
    for i, r in enumerate(results):  # one colour per condition in both panels
        gens, name, colour = r["generations"], r["summary"]["condition"], f"C{i % 10}"
        style = "--" if i >= 10 else "-"
        xs = [g["generation"] for g in gens]
        axes[0].plot(xs, [g["frontier"] or 0 for g in gens], style, marker="o", color=colour, label=name)
        pts = [(g["generation"], g["noise"]) for g in gens if g["noise"] is not None]
        if pts:
            axes[1].plot(*zip(*pts), style, marker="o", color=colour, label=name)
    axes[0].set(xlabel="generation", ylabel="≥99% frontier (sealed)", title="frontier")
    axes[1].set(xlabel="generation", ylabel="share of kept labels that are wrong", title="kept-label noise (hidden)")
    # one legend for both panels (the colours are shared), outside them: inside, 20-odd names hide the lines
    axes[1].legend(*axes[0].get_legend_handles_labels(), fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    paths.append(prefix.with_name(prefix.name + "_frontier_noise.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    n = len(results)
    fig, axes = plt.subplots((n + 2) // 3, 3, figsize=(13, 3.2 * ((n + 2) // 3)), squeeze=False)
    for ax, r in zip(axes.flat, results):
        gens = r["generations"]
        top = max((int(k) for g in gens for k in g["acc"]), default=1)
        grid = [[g["acc"].get(str(lvl), 0.0) for g in gens] for lvl in range(1, top + 1)]
        ax.imshow(grid, origin="lower", aspect="auto", vmin=0, vmax=1, cmap="viridis",
                  extent=(-0.5, len(gens) - 0.5, 0.5, top + 0.5))
        ax.set(title=r["summary"]["condition"], xlabel="generation", ylabel="length")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    paths.append(prefix.with_name(prefix.name + "_accuracy.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def write_benchmarks_md(text: str, path: Path) -> None:
    doc = path.read_text()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip() + "\n\n## Self-improvement conditions (issue 4)\n\n" + block + "\n"
    path.write_text(doc)


def collect(root: Path, conds: list[Condition], earlier: list[dict] | None = None) -> list[dict]:
    """Every condition's measurements, from its run directory; where that is gone (the runs stay on the machine
    that made them, and only results/ is committed), the `earlier` results of the same condition are kept."""
    out, before = [], {r["summary"]["condition"]: r for r in earlier or []}
    for c in conds:
        run = run_dir(root, c)
        if generations_done(run) < 1:
            if c.name in before:
                out.append(before[c.name])
            continue
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        gens = measure(run, cfg)
        human_top = cfg["task"]["human_levels"][1]
        out.append({"summary": summary(c, gens, human_top), "generations": gens, "config": cfg["curator"]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny model, two conditions, one generation each")
    ap.add_argument("--only", default="", help="comma-separated condition names")
    ap.add_argument("--generations", type=int, default=None, help="pause each condition after this generation")
    ap.add_argument("--root", type=Path, default=None, help="where the runs live")
    ap.add_argument("--report", action="store_true", help="only collect, tabulate and plot what is there")
    a = ap.parse_args()
    conds, bases = (QUICK, QUICK_BASES) if a.quick else (CONDITIONS, BASES)
    root = a.root or (RESULTS / ("self_improvement_quick" if a.quick else "self_improvement"))
    known = {c.name for c in conds}
    only = [x for x in a.only.split(",") if x]
    if unknown := [x for x in only if x not in known]:
        raise SystemExit(f"unknown condition(s) {unknown}; known: {sorted(known)}")
    chosen = [c for c in conds if not only or c.name in only]
    if not a.report:
        for c in chosen:
            run_condition(root, c, bases, a.generations)
    out = root if a.quick else RESULTS
    saved = out / "self_improvement.json"
    results = collect(root, conds, json.loads(saved.read_text()) if saved.exists() else None)
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(results, indent=1))
    plots(results, out / "self_improvement")
    text = tables(results)
    print(text)
    if not a.quick:
        write_benchmarks_md(text, HERE.parent / "BENCHMARKS.md")


if __name__ == "__main__":
    main()
