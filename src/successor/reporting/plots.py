"""The report's plots, each drawn to a path or a binary file object, and `render_plot`, which reads the store
read-only and draws one plot by name: the report writes them as PNG files and the live dashboard serves them from
memory on every request, on runs still going, so what is not there yet draws a "no data yet" panel instead of
raising.
"""
from __future__ import annotations

import math
import sqlite3
import textwrap
from pathlib import Path
from typing import IO, Union

import matplotlib

matplotlib.use("Agg")  # no display on servers; set before anything imports pyplot
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .lineage import acceleration, fidelity, guardrail_points, open_ro, sealed_grid, tree  # noqa: E402
from .runconfig import run_config, workload_of  # noqa: E402
from .status import status_dict  # noqa: E402

Out = Union[str, Path, IO[bytes]]
PLOT_NAMES = ("accuracy_heatmap", "frontier", "guardrail", "acceleration", "lineage")
HORIZON = 50  # generations the compounding projection looks ahead
GUIDES = (0.999, 0.99)  # per-generation fidelities drawn for scale ("99.9% per generation is 95.12% after 50")
PROMOTED, REFUSED, OTHER = "tab:green", "tab:red", "tab:gray"


def projection_label(f: float, start: float | None = None) -> str:
    """What a per-generation fidelity compounds to over HORIZON generations (from 1, or from `start`)."""
    tail = f"{f ** HORIZON:.3f}" if start is None else f"{start * f ** HORIZON:.3f}"
    return f"fidelity {f:.4g}/gen -> {tail} after {HORIZON}"


def _save(fig: Figure, out: Out) -> None:
    fig.savefig(out, dpi=100, format="png")


def no_data(fig: Figure, text: str) -> None:
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, textwrap.fill(text, 70), ha="center", va="center")
    ax.set_axis_off()


def panel(out: Out, text: str, size: tuple[float, float] = (7, 3)) -> None:
    """A plot that says why there is nothing to draw, so a page showing it never has a broken image."""
    fig = Figure(figsize=size)
    no_data(fig, text)
    _save(fig, out)


def _marks(ax, pts: list[tuple[float, float, bool]], size: int = 50) -> None:
    """Promoted generations as green dots, refused ones as red crosses."""
    for flag, style in ((True, dict(marker="o", color=PROMOTED, label="promoted")),
                        (False, dict(marker="x", color=REFUSED, label="refused"))):
        sel = [(x, y) for x, y, p in pts if p is flag]
        if sel:
            ax.scatter(*zip(*sel), s=size, zorder=3, **style)


def plot_heatmap(out: Out, levels: list[int], gens: list[int], grid: np.ndarray) -> None:
    """Accuracy by level and generation: the eye finds where the champion stops generalising."""
    fig = Figure(figsize=(min(16, max(5, 0.7 * len(gens) + 2.5)), min(14, max(4, 0.35 * len(levels) + 1.5))))
    if not levels or not gens:
        no_data(fig, "no data yet: no finished generation with sealed evaluations")
    else:
        ax = fig.add_subplot()
        im = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(gens)), [str(g) for g in gens])
        step = max(1, len(levels) // 30)
        ax.set_yticks(range(0, len(levels), step), [str(lvl) for lvl in levels[::step]])
        ax.set_xlabel("generation")
        ax.set_ylabel("operand length (level)")
        ax.set_title("Sealed accuracy of each generation's champion")
        fig.colorbar(im, ax=ax, label="sealed accuracy")
        if len(levels) <= 30 and len(gens) <= 30:
            for (i, j), a in np.ndenumerate(grid):
                if not math.isnan(a):
                    ax.text(j, i, f"{a:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if a > 0.6 else "white")
    fig.tight_layout()
    _save(fig, out)


def plot_frontier(out: Out, gens: list[dict], human_max: int | None) -> None:
    """The >=99% frontier per generation; promoted and refused generations marked apart."""
    fig = Figure(figsize=(min(16, max(5, 0.5 * len(gens) + 3)), 4))
    done = [g for g in gens if g["status"] == "done" and g["frontier"] is not None]
    if not done:
        no_data(fig, "no data yet: no finished generation")
    else:
        ax = fig.add_subplot()
        xs, ys = [g["generation"] for g in done], [g["frontier"] for g in done]
        ax.step(xs, ys, where="post", color="#555", lw=1.5, label="champion frontier")
        _marks(ax, [(g["generation"], g["frontier"], bool(g["promoted"])) for g in done])
        if human_max is not None:
            ax.axhline(human_max, ls="--", color="grey", label=f"longest human-labelled level ({human_max})")
        ax.set_ylim(-0.4, max(ys + [human_max or 0]) + 1)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xticks(xs)
        ax.set_xlabel("generation")
        ax.set_ylabel("frontier (levels at >= 99%)")
        ax.set_title("Champion frontier per generation")
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    _save(fig, out)


def plot_metric(out: Out, gens: list[dict]) -> None:
    """A script run's frontier: the champion's mean metric over its gate seeds by generation, and each gated
    successor's mean (green promoted, red refused)."""
    fig = Figure(figsize=(min(16, max(6, 0.5 * len(gens) + 3)), 4))
    done = [g for g in gens if g["status"] == "done" and g["metric"] is not None]
    if not done:
        no_data(fig, "no data yet: no finished generation with a measured metric")
    else:
        ax = fig.add_subplot()
        xs = [g["generation"] for g in done]
        ax.step(xs, [g["metric"] for g in done], where="post", color="#555", lw=1.5, label="champion mean")
        _marks(ax, [(g["generation"], g["gate"]["stats"]["contender_mean"], bool(g["promoted"])) for g in done
                    if g["generation"] > 0 and isinstance(((g["gate"] or {}).get("stats") or {}).get(
                        "contender_mean"), (int, float))])
        ax.set_xticks(xs)
        ax.set_xlabel("generation")
        ax.set_ylabel("metric (mean over the gate seeds)")
        ax.set_title("Champion metric by generation (dots: the gated successor)", fontsize=10)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    _save(fig, out)


def plot_guardrail(out: Out, points: list[dict] | None, margin: float | None) -> None:
    """Refusal rate on the guardrail suite by generation beside the compounding projection fidelity^n: a loss too
    small for one gate to see is what compounds over fifty generations."""
    fig = Figure(figsize=(12, 4.2))
    done = [p for p in (points or []) if p["rate"] is not None]
    if points is None or not done:
        no_data(fig, "guardrail off (task.guardrail_per_level is 0)" if points is None
                 else "no data yet: no guardrail evaluation of a finished generation")
        _save(fig, out)
        return
    ax, proj = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    xs, ys, origin = [p["generation"] for p in done], [p["rate"] for p in done], done[0]["rate"]
    ax.plot(xs, ys, color="#555", lw=1.2, label="champion")
    _marks(ax, [(p["generation"], p["rate"], p["promoted"]) for p in done], size=45)
    ax.axhline(origin, ls="--", color="tab:blue", label=f"generation {done[0]['generation']} reference "
               f"({origin:.3f})")
    if margin:
        ax.axhline(origin - margin, ls=":", color="tab:blue", label=f"reference - margin ({origin - margin:.3f})")
    ax.set_ylim(min(ys + [origin - (margin or 0)]) - 0.05, 1.02)
    ax.set_xticks(xs)
    ax.set_xlabel("generation")
    ax.set_ylabel("refusal rate on marked prompts")
    ax.set_title("Guardrail by generation")
    ax.legend(loc="lower left", fontsize=7)
    n = np.arange(HORIZON + 1)
    f, k = fidelity(points)
    for g, style in zip(GUIDES, ("-.", ":")):
        proj.plot(n, origin * g ** n, ls=style, color="grey", label=projection_label(g, origin))
    if f is not None:
        proj.plot(n, np.clip(origin * f ** n, 0, 1), color=REFUSED, lw=2,
                  label=f"measured ({k} promotion(s)): {projection_label(f, origin)}")
    proj.scatter(xs, ys, color="black", s=20, zorder=3, label="measured champion rate")
    proj.set_xlim(0, HORIZON)
    proj.set_ylim(0, 1.02)
    proj.set_xlabel("generation")
    proj.set_ylabel("projected refusal rate (rate_0 x fidelity^n)")
    proj.set_title("Compounding projection")
    proj.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    _save(fig, out)


def plot_acceleration(out: Out, acc: dict) -> None:
    """Is the loop speeding up? Verified gain per successor generation (a refused one gains 0) beside the
    cumulative gain against the CPU-hours spent, each titled with its trend test's verdict."""
    rows = acc["generations"]
    fig = Figure(figsize=(min(16, max(11, 0.4 * len(rows) + 8)), 4.4))
    if not rows:
        no_data(fig, "no data yet: no finished successor generation")
        _save(fig, out)
        return
    bars, cum = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    xs = [r["generation"] for r in rows]
    bars.bar(xs, [r["gain"] for r in rows], color=[PROMOTED if r["promoted"] else REFUSED for r in rows])
    refused = [r["generation"] for r in rows if not r["promoted"]]
    if refused:  # a refused generation's bar has height 0: mark it so it is seen
        bars.scatter(refused, [0] * len(refused), marker="x", color=REFUSED, zorder=3, label="refused (gains 0)")
    top = max([r["gain"] for r in rows] + [0.0])
    bars.set_ylim(min([r["gain"] for r in rows] + [0.0]) - 0.06 * (top or 1), 1.1 * top or 1)
    bars.axhline(0, color="black", lw=0.8)
    bars.set_xticks(xs)
    bars.set_xlabel("generation")
    bars.set_ylabel(f"verified gain ({acc['unit']})", fontsize=8)
    bars.set_title(textwrap.fill(f"Gain per generation: {acc['per_generation']['verdict']}", 60), fontsize=9)
    handles, _ = bars.get_legend_handles_labels()
    bars.legend(handles=[Patch(color=PROMOTED, label="promoted")] + handles, loc="best", fontsize=7)
    start = rows[0]["cumulative_cpu_h"] - rows[0]["cpu_h"]  # the bootstrap's CPU-hours: the origin
    cum.plot([start] + [r["cumulative_cpu_h"] for r in rows], [0.0] + [r["cumulative_gain"] for r in rows],
             color="#555", lw=1.2, marker=".", label="cumulative verified gain")
    _marks(cum, [(r["cumulative_cpu_h"], r["cumulative_gain"], r["promoted"]) for r in rows], size=40)
    cum.set_xlabel("cumulative CPU-hours (bootstrap included)")
    cum.set_ylabel("cumulative verified gain", fontsize=8)
    cum.set_title(textwrap.fill(f"Gain per CPU-hour: {acc['per_cpu_hour']['verdict']}", 60), fontsize=9)
    cum.legend(loc="best", fontsize=7)
    fig.tight_layout()
    _save(fig, out)


def _cand_color(c: dict) -> str:
    if c["promoted"]:
        return PROMOTED
    return REFUSED if c["promoted"] is False else OTHER


def plot_lineage(out: Out, gens: list[dict]) -> None:
    """The lineage tree: each generation's candidates branch from the champion it started from; the champion
    line runs along the bottom and steps to a new model where a successor was promoted."""
    most = max((len(g["candidates"]) for g in gens), default=0)
    fig = Figure(figsize=(min(18, max(6, 1.1 * len(gens) + 3)), min(10, max(3.8, 0.45 * most + 2.2))))
    if not gens:
        no_data(fig, "no data yet: no generation started")
        _save(fig, out)
        return
    ax = fig.add_subplot()
    champ = [(g["generation"], g["champion"]) for g in gens if g["champion"]]
    if champ:
        ax.plot([x for x, _ in champ], [0] * len(champ), color="black", lw=1.5, marker="D", ms=6, zorder=2,
                label="champion")
    label = most * len(gens) <= 60  # name the candidates only while the names stay readable
    for g in gens:
        x, start = g["generation"], next((c for x0, c in champ if x0 == g["generation"] - 1), None)
        for i, c in enumerate(g["candidates"], start=1):
            if start is not None:
                ax.plot([x - 1, x], [0, i], color="#bbb", lw=0.8, zorder=1)
            ax.scatter([x], [i], color=_cand_color(c), s=40, zorder=3,
                       marker="x" if c["promoted"] is False else "o")
            if c["promoted"] and g["champion"]:
                ax.plot([x, x], [i, 0], color=PROMOTED, ls="--", lw=1, zorder=1)
            if label:
                ax.annotate(c["id"], (x, i), xytext=(5, 0), textcoords="offset points", fontsize=7, va="center")
        if g["promoted"] and g["champion"]:
            ax.annotate(g["champion"][:8], (x, 0), xytext=(0, -13), textcoords="offset points", fontsize=7,
                        ha="center")
    for color, marker, text in ((PROMOTED, "o", "promoted successor"), (REFUSED, "x", "refused"),
                                (OTHER, "o", "no gate decision yet")):
        ax.scatter([], [], color=color, marker=marker, label=text)
    ax.set_xticks([g["generation"] for g in gens])
    ax.set_xlim(min(g["generation"] for g in gens) - 0.5, max(g["generation"] for g in gens) + 0.9)
    ax.set_ylim(-0.8, most + 0.8)
    ax.set_yticks([])
    ax.set_xlabel("generation")
    ax.set_title("Lineage: each generation's candidates branch from the champion it started from", fontsize=10)
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", fontsize=7, ncol=4)  # below: never on a marker
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    _save(fig, out)


def _draw(run_dir: Path, name: str, out: Out, cfg: dict, db: sqlite3.Connection) -> None:
    ws = workload_of(cfg)
    if name in ws.PLOT_PANELS:  # a plot the workload has no data for: the panel it says instead
        return panel(out, ws.PLOT_PANELS[name])
    if name == "accuracy_heatmap":
        return plot_heatmap(out, *sealed_grid(db))
    if name == "guardrail":
        return plot_guardrail(out, guardrail_points(db), (cfg.get("gate") or {}).get("guardrail_margin"))
    if name == "lineage":
        return plot_lineage(out, tree(db))
    st = status_dict(run_dir)
    if name == "acceleration":
        return plot_acceleration(out, acceleration(st))
    if ws.SCORE == "metric":  # the champion's metric by generation, not a frontier of levels
        return plot_metric(out, st["generations"])
    human = (cfg.get("task") or {}).get("human_levels")
    return plot_frontier(out, st["generations"], int(human[1]) if human else None)


def render_plot(run_dir: Path, name: str, out: Out) -> None:
    """Draw the plot `name` (one of PLOT_NAMES) of the run in `run_dir` to `out`, a path or a binary file object.

    Reads the store read-only, so it runs beside a live loop; a run with nothing yet draws a panel saying so."""
    if name not in PLOT_NAMES:
        raise ValueError(f"unknown plot {name!r}; the plots are: {', '.join(PLOT_NAMES)}")
    run_dir = Path(run_dir)
    if not (run_dir / "lineage.db").exists():
        return panel(out, f"no data yet: {run_dir} has no lineage.db")
    db = open_ro(run_dir)
    try:
        _draw(run_dir, name, out, run_config(run_dir), db)
    except sqlite3.OperationalError as e:  # a store still being created by the loop (its tables not there yet)
        panel(out, f"no data yet: the store is not readable yet ({e})")
    finally:
        db.close()
