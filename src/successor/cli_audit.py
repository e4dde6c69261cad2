"""`successor audit ...`: offline checks of a run directory (mounted on the main app by cli.py).

Exit codes: 0 everything verified, 1 at least one problem (one line each on stdout), 2 not a run directory.
"""
from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Verify a run: audit chain, artifact digests, provenance statements.")


@app.command("verify")
def verify_cmd(run_dir: Path = typer.Argument(..., help="run directory")) -> None:
    """Recompute the audit chain, every artifact's digest and every provenance statement; exit 1 on any problem."""
    from .verify import is_run_dir, verify_run

    if not is_run_dir(run_dir):
        typer.echo(f"error: {run_dir} is not a run directory (no lineage.db)", err=True)
        raise typer.Exit(2)
    ok, lines = verify_run(run_dir)
    for line in lines:
        typer.echo(line)
    if not ok:
        typer.echo(f"FAILED: {len(lines)} problem{'s' if len(lines) != 1 else ''}", err=True)
        raise typer.Exit(1)
