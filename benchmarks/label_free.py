"""Label-free mode against dev labels (issue 26): runs of the same protocol with `task.dev_levels: human` and with
the default `all`, side by side, and what the label-free alarm did at every generation.

For each run: the >=99% sealed frontier by generation, promotions, the kept labels' true noise (hidden checker, read
afterwards; the loop never sees it), lengths lost, experiment CPU and stage wall time; then every level a
generation wanted, with what judged it (`dev`, `composition`, `second cut`), whether it was curated or stopped by
the alarm, its kept labels' true noise, and the champion's sealed accuracy there (the truth a reader needs to tell
a false alarm from a right one).

    .venv/bin/python benchmarks/label_free.py free=/tmp/lfb/free/run-s0 dev=/tmp/lfb/dev/run-s0 [--upto 2]
    .venv/bin/python benchmarks/label_free.py ... --write NAME     # the tables into BENCHMARKS.md under NAME

Runs are made with `benchmarks/default_demo.py --set task.dev_levels=human ...` (see BENCHMARKS.md for each
table's commands). Reading a finished run only.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import yaml
from markdown import table, write_section
from self_improvement import Condition, measure, sealed_acc, summary

HERE = Path(__file__).resolve().parent


def _pct(x) -> str:
    return "–" if x is None else f"{x:.2%}"


def levels(run: Path, upto: int | None) -> list[dict]:
    """Every level a generation's curate stage looked at: judge, outcome, kept, true noise, champion's sealed acc."""
    db = sqlite3.connect(f"file:{run / 'lineage.db'}?mode=ro", uri=True)
    try:
        out = []
        for g, res in db.execute("SELECT generation, result FROM stages WHERE name='curate' AND status='done' "
                                 "ORDER BY generation"):
            if upto is not None and g > upto:
                break
            cur = json.loads(res or "{}")
            champ = db.execute("SELECT champion_model FROM generations WHERE idx=?", (g - 1,)).fetchone()
            acc = sealed_acc(db, champ[0] if champ else None)
            for lv in cur.get("levels", []):
                out.append({"generation": g, "level": lv["level"], "judge": lv.get("judge", "dev"),
                            "method": lv.get("method"), "skipped": lv.get("skipped"), "kept": lv.get("kept", 0),
                            "dev_passed": lv.get("dev_passed"), "dev_wrong": lv.get("dev_wrong"),
                            "checked": lv.get("kept_checked"), "checked_wrong": lv.get("kept_checked_wrong"),
                            "noise": lv.get("true_noise_hidden"), "champion_sealed": acc.get(lv["level"])})
        return out
    finally:
        db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
    ap.add_argument("--upto", type=int, help="generations 0..UPTO of each run only (the summary table)")
    ap.add_argument("--write", metavar="NAME", help="write the tables into BENCHMARKS.md between NAME's markers")
    ap.add_argument("--title", default="Label-free mode against dev labels (issue 26)",
                    help="the section's title, where it is new")
    a = ap.parse_args()
    rows, detail, alarms = [], [], []
    for spec in a.runs:
        label, run = spec.split("=", 1)
        run = Path(run)
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        gens = measure(run, cfg)
        short = gens[:None if a.upto is None else a.upto + 1]
        s = summary(Condition(label, "default"), short, cfg["task"]["human_levels"][1])
        lv = levels(run, None)
        curated_gens = {x["generation"] for x in lv}
        alarmed = {x["generation"] for x in lv if (x["skipped"] or "").startswith("alarm")}
        rows.append([label, cfg["seed"], cfg["task"].get("dev_levels", "all"), " → ".join(map(str, s["frontier"])),
                     f"{s['promoted']}/{s['generations']}", _pct(s["mean_noise"]), _pct(s["max_noise"]),
                     s["lost_lengths"], f"{s['cpu_s']:.0f}", f"{s['wall_s'] / 60:.1f}",
                     f"{len(alarmed)} of {len(curated_gens)}"])
        for x in lv:
            detail.append([label, x["generation"], x["level"], x["judge"], x["method"],
                           "curated" if not x["skipped"] else x["skipped"][:90], x["kept"],
                           f"{x['dev_wrong']}/{x['dev_passed']}",
                           "–" if x["checked"] is None else f"{x['checked_wrong']}/{x['checked']}", _pct(x["noise"]),
                           "–" if x["champion_sealed"] is None else f"{x['champion_sealed']:.3f}"])
        alarms.append({"label": label, "run": str(run), "summary": s, "levels": lv,
                       "generations": [g["frontier"] for g in gens]})
    head = table(["run", "seed", "dev levels", "frontier by generation", "promoted", "noise mean", "noise max",
                  "lengths lost", "experiments CPU-s", "stages min", "generations with an alarm"], rows)
    body = table(["run", "gen", "level", "judge", "method", "outcome", "kept", "judge: wrong/passed",
                  "kept check: wrong/judged", "true noise", "champion sealed"], detail)
    text = f"{head}\n\nEvery level the curate stage looked at:\n\n{body}"
    print(text)
    if a.write:
        write_section(HERE.parent / "BENCHMARKS.md", a.write, a.title, text)
        (HERE / "results" / f"{a.write}.json").write_text(json.dumps(alarms, indent=1))


if __name__ == "__main__":
    main()
