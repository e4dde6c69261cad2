"""The `successor` command: run, status, report, config."""
from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from ..config import ConfigError, RunConfig, load_config
from .audit import app as audit_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Successor: verified successor models.")
app.add_typer(audit_app, name="audit")
err = Console(stderr=True)


def _fail(msg: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {escape(msg)}", highlight=False, soft_wrap=True)  # one line, never wrapped
    raise typer.Exit(code)


SQLITE_MAGIC = b"SQLite format 3\x00"


def _existing_run(run_dir: Path) -> None:
    """One line and exit 2 unless `run_dir` is a directory holding a run (its lineage.db an SQLite file)."""
    if not run_dir.is_dir():  # a file, a link to one, nothing at all
        _fail(f"{run_dir} is not a run directory ({'not a directory' if run_dir.exists() else 'not found'})")
    db = run_dir / "lineage.db"
    if not db.exists():
        _fail(f"{run_dir} is not a run directory (no lineage.db)")
    try:
        with open(db, "rb") as f:  # a directory raises here; a FIFO is never a regular file
            head = f.read(len(SQLITE_MAGIC)) if db.is_file() else b""
    except OSError as e:
        _fail(f"{run_dir} is not a run directory (lineage.db: {e.strerror})")
    if head != SQLITE_MAGIC:
        _fail(f"{run_dir} is not a run directory (lineage.db is not an SQLite database)")


class LiveView:
    """The rich display: generation, stage, experiments done of N, and an ETA from finished generations."""

    def __init__(self, total_generations: int, done_before: int):
        self.total, self.done = total_generations, done_before
        self.gen, self.stage_name, self.exp = 0, "starting", (0, 0)
        self.t0, self.done_here = time.time(), 0
        self.last: list[str] = []
        self.live: Live | None = None

    def render(self) -> Table:
        t = Table(title="successor run", show_header=False, min_width=60)
        remaining = self.total - self.done
        eta = "-"
        if self.done_here:
            eta = f"{(time.time() - self.t0) / self.done_here * remaining:.0f}s"
        t.add_row("generation", f"{self.gen} ({self.done}/{self.total} done)")
        t.add_row("stage", self.stage_name)
        t.add_row("experiments", f"{self.exp[0]}/{self.exp[1]}")
        t.add_row("elapsed / ETA", f"{time.time() - self.t0:.0f}s / {eta}")
        for line in self.last[-4:]:
            t.add_row("", line)
        return t

    def _refresh(self) -> None:
        if self.live:
            self.live.update(self.render())

    def stage(self, generation: int, name: str) -> None:
        self.gen, self.stage_name = generation, name
        self._refresh()

    def experiments(self, done: int, total: int) -> None:
        self.exp = (done, total)
        self._refresh()

    def generation_done(self, generation: int, promoted: bool, frontier: int) -> None:
        self.done += 1
        self.done_here += 1
        self.last.append(f"gen {generation}: {'promoted' if promoted else 'refused'}, frontier {frontier}")
        self._refresh()


@app.command()
def run(
    config: Optional[Path] = typer.Argument(None, help="YAML run config (overlays the preset)"),
    run_dir: Path = typer.Option(..., "--run-dir", help="run directory; re-running resumes it"),
    preset: str = typer.Option("default", "--preset", help="preset to start from"),
    policy: Optional[Path] = typer.Option(None, "--policy", help="policy YAML (isolation, budgets, approval, "
                                          "tripwires); copied into the run directory, where it can be edited"),
    quiet: bool = typer.Option(False, "--quiet", help="no live display"),
    generations: Optional[int] = typer.Option(None, "--generations", min=1, max=1000,
                                              help="loop.generations; on a run directory that exists, the one "
                                              "change its config may take: a finished run goes on to this many "
                                              "(recorded in the audit log as run.extended)"),
    audit_key: Optional[Path] = typer.Option(None, "--audit-key", envvar="SUCCESSOR_AUDIT_KEY",
                                             help="private key (successor audit keygen) that signs the audit "
                                             "log's head after every append; keep it outside the run directory"),
) -> None:
    """Run (or resume) the generation loop. Exit 0: finished; 3: paused on a budget or stopped (re-run to go
    on); 2: bad input or the policy's isolation cannot be had. On a terminal a live view; elsewhere (a log file,
    CI, nohup) one plain line per stage and per finished generation; --quiet: nothing until the summary."""
    from ..api import drive, open_run
    from ..oversight.policy import load_policy
    from ..oversight.sandbox import IsolationError
    from ..progress import PlainProgress, Progress

    live = not quiet and sys.stderr.isatty()
    try:
        cfg = load_config(config, preset)
        if generations is not None:
            cfg = cfg.model_copy(update={"loop": cfg.loop.model_copy(update={"generations": generations})})
        pol = load_policy(policy) if policy is not None else None
        total = cfg.loop.generations + 1
        view = LiveView(total, 0) if live else Progress() if quiet else PlainProgress(sys.stderr, total)
        driver = open_run(cfg, run_dir, policy=pol, progress=view, audit_key=audit_key)
    except (ConfigError, IsolationError, ValueError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"run-dir: {run_dir}: {e.strerror or e}" + (f" ({e.filename})" if e.filename else ""))
    except sqlite3.DatabaseError as e:
        _fail(f"run-dir: {run_dir}: its lineage.db is not a usable SQLite database ({e})")
    if live:
        view.done = len(driver.store.q("SELECT idx FROM generations WHERE status='done'"))
        with Live(view.render(), console=err, refresh_per_second=2) as screen:
            view.live = screen
            result = drive(driver)
    else:
        result = drive(driver)
    if result.state == "stopped":
        err.print(f"stopped by `successor stop`; re-run the same command to resume {run_dir}")
        raise typer.Exit(3)
    _print_summary(run_dir)
    if not result.finished:
        err.print(f"{result.state}: {result.reason}")
        raise typer.Exit(3)


def _print_summary(run_dir: Path) -> None:
    from ..reporting.status import UPPER_BOUND, status_dict

    s = status_dict(run_dir)
    script = any(g["metric"] is not None for g in s["generations"])  # a script run: a metric, not a frontier
    t = Table(title=f"lineage of {run_dir}")
    for col in ("gen", "champion", "promoted", "metric" if script else "frontier", "CPU-s", "FLOPs", "reason"):
        t.add_column(col)
    for g in s["generations"]:
        c = g["compute"]
        t.add_row(str(g["generation"]), (g["champion"] or "-")[:12], "yes" if g["promoted"] else "no",
                  (f"{g['metric']:.4g}" if g["metric"] is not None else "-") if script else str(g["frontier"]),
                  f"{c['cpu_s']:.0f}", f"{c['flops']:.2e}" if c["flops"] else "-",
                  (g["gate"] or {}).get("reason", "-"))
    Console().print(t)
    c = s["compute"]
    Console().print(f"compute: {c['experiments']} experiments ({c['attempts']} attempts), {c['cpu_s']:.0f} "
                    f"CPU-s, {c['wall_s']:.0f} s in sandboxes" + (f", {c['flops']:.3g} FLOPs (estimated)"
                                                                  if c["flops"] else ""), highlight=False)
    if s["upper_bound"]:
        Console().print(UPPER_BOUND, style="bold", highlight=False)
    if s["waiting_for_approval"]:
        w = s["waiting_for_approval"]
        Console().print(f"waiting for approval of generation {w['generation']}: {'; '.join(w['reasons'])} "
                        f"(successor approve|reject {run_dir} --generation {w['generation']})", highlight=False)
    if s["violations"]:
        Console().print(f"{s['violations']} sandbox violation(s) recorded; see the report's Oversight section",
                        highlight=False)


@app.command()
def status(
    run_dir: Path = typer.Argument(..., help="run directory"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Each generation: champion, promoted or not, the gate's statistics and the >=99% frontier."""
    from ..reporting.status import status_dict

    _existing_run(run_dir)
    if as_json:
        print(json.dumps(status_dict(run_dir), indent=2))
    else:
        _print_summary(run_dir)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="run directory")) -> None:
    """Write DIR/report/: a self-contained report.html, report.md, summary.md (one screen) and the PNG plots."""
    from ..reporting.report import write_report

    _existing_run(run_dir)
    try:
        out = write_report(run_dir)
    except OSError as e:  # DIR/report is a file, a full disk, no permission
        _fail(f"report: cannot write {e.filename or run_dir / 'report'} ({e.strerror or e})")
    Console().print(f"report written in {out}: report.html (self-contained, shareable), report.md, summary.md")


def _run_dir(run_dir: Path):
    from ..store import Store

    _existing_run(run_dir)
    return Store(run_dir / "lineage.db")


def _decide(run_dir: Path, generation: int, decision: str, who: str, note: Optional[str]) -> None:
    from ..oversight.actions import decide

    _run_dir(run_dir).close()
    try:
        Console().print(decide(run_dir, generation, decision, who, note))
    except ValueError as e:
        _fail(str(e))


@app.command()
def approve(
    run_dir: Path = typer.Argument(..., help="run directory"),
    generation: int = typer.Option(..., "--generation", help="the generation whose promotion waits"),
    who: str = typer.Option(os.environ.get("USER", "human"), "--who", help="name recorded as the approver"),
    note: Optional[str] = typer.Option(None, "--note", help="why"),
) -> None:
    """Approve a promotion that a tripwire or `approval: manual` paused."""
    _decide(run_dir, generation, "approved", who, note)


@app.command()
def reject(
    run_dir: Path = typer.Argument(..., help="run directory"),
    generation: int = typer.Option(..., "--generation", help="the generation whose promotion waits"),
    reason: str = typer.Option(..., "--reason", help="why (recorded in the lineage and the audit log)"),
    who: str = typer.Option(os.environ.get("USER", "human"), "--who", help="name recorded as the approver"),
) -> None:
    """Reject a paused promotion: the champion stays, the generation's curated data is not kept."""
    _decide(run_dir, generation, "rejected", who, reason)


@app.command()
def stop(run_dir: Path = typer.Argument(..., help="run directory")) -> None:
    """The kill switch: the run stops at once, its experiments are killed, and re-running resumes it."""
    from ..oversight.stop import stop_run

    _run_dir(run_dir)
    Console().print(stop_run(run_dir))


@app.command()
def dashboard(
    run_dir: Path = typer.Argument(..., help="run directory (a live run or a finished one)"),
    port: int = typer.Option(8765, "--port", help="port on 127.0.0.1; 0 picks a free one"),
    exit_after: Optional[float] = typer.Option(None, "--exit-after", help="stop serving after this many seconds"),
) -> None:
    """Serve the live dashboard on 127.0.0.1. Reading is open; approve, reject and stop need the token it
    prints (the URL it prints carries it)."""
    from ..reporting.dashboard import serve

    if not run_dir.is_dir():
        _fail(f"{run_dir} is not a directory")
    if not 0 <= port <= 65535:
        _fail(f"--port must be 0-65535, not {port}")
    try:
        serve(run_dir, port=port, exit_after=exit_after)
    except OSError as e:
        _fail(f"cannot listen on 127.0.0.1:{port}: {e.strerror or e}")


@app.command("config")
def config_cmd(
    schema: bool = typer.Option(False, "--schema", help="print the JSON schema of the run config"),
    preset: Optional[str] = typer.Option(None, "--preset", help="print a preset, resolved"),
    check: Optional[Path] = typer.Option(None, "--check", help="validate a config file"),
) -> None:
    """Show the config schema, a resolved preset, or validate a config file."""
    if schema:
        print(json.dumps(RunConfig.model_json_schema(), indent=2))
        return
    try:
        cfg = load_config(check, preset)
    except ConfigError as e:
        _fail(str(e))
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))


@app.command()
def compare(
    run_dirs: list[Path] = typer.Argument(..., help="two or more run directories"),
    out: Path = typer.Option(Path("compare"), "--out", help="folder for compare.html, compare.md and the plots"),
    label: Optional[list[str]] = typer.Option(None, "--label", help="a name per run, in order (default: dir names)"),
) -> None:
    """Overlay several runs (frontier, verified gain per CPU-hour, guardrail) on one self-contained page."""
    from ..reporting.compare import write_comparison

    try:
        folder = write_comparison(run_dirs, out, label or None)
    except ValueError as e:
        _fail(str(e))
    Console().print(f"wrote {folder / 'compare.html'} and {folder / 'compare.md'}", highlight=False, soft_wrap=True)


def main() -> None:
    """`python -m successor` and the `successor` command."""
    app()
