"""`successor audit ...`: offline checks of a run directory (mounted on the main app by cli.py), the key that
anchors a run's audit chain, and a human's acknowledgement of a loss the log recorded.

Exit codes: 0 everything verified (or done), 1 at least one problem (one line each on stdout), 2 bad input (not
a run directory, a bad key, a refused acknowledgement).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Verify a run: audit chain, signed head, store, artifact digests, provenance statements.")


def _error(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


def _run_dir(run_dir: Path) -> None:
    from ..oversight.verify import is_run_dir

    if not is_run_dir(run_dir):
        _error(f"{run_dir} is not a run directory (no lineage.db)")


@app.command("verify")
def verify_cmd(run_dir: Path = typer.Argument(..., help="run directory"),
               key: Optional[Path] = typer.Option(None, "--key", help="the public key (keygen's PATH.pub) the "
                                                  "run's head must be signed with")) -> None:
    """Recompute the audit chain, every artifact's digest, every provenance statement and the store against the
    chain; with --key, the signed head too. Exit 1 on any problem."""
    from ..oversight.verify import verify_run

    _run_dir(run_dir)
    if key is not None:
        from ..oversight.audit_sign import load_public

        try:
            load_public(key)
        except ValueError as e:
            _error(str(e))
    ok, lines = verify_run(run_dir, key)
    for line in lines:
        typer.echo(line)
    if not ok:
        typer.echo(f"FAILED: {len(lines)} problem{'s' if len(lines) != 1 else ''}", err=True)
        raise typer.Exit(1)


@app.command("keygen")
def keygen_cmd(out: Path = typer.Option(..., "--out", help="private key file to write (PATH.pub gets the public "
                                        "key); keep it outside the run directory")) -> None:
    """Make an Ed25519 key pair for `successor run --audit-key` (or SUCCESSOR_AUDIT_KEY)."""
    from ..oversight.audit_sign import keygen

    try:
        private, public = keygen(out)
    except (ValueError, OSError) as e:
        _error(str(e))
    typer.echo(f"wrote {private} (private, mode 0600) and {public}; verify with: successor audit verify RUN_DIR "
               f"--key {public}")


def _signer(key: Optional[Path]):
    if key is None:
        return None
    from ..oversight.audit_sign import Signer

    try:
        return Signer(key)
    except ValueError as e:
        _error(str(e))


@app.command("ack")
def ack_cmd(run_dir: Path = typer.Argument(..., help="run directory"),
            seq: int = typer.Option(..., "--seq", help="the seq of the audit.torn_tail_dropped or "
                                    "audit.head_mismatch record"),
            who: str = typer.Option(..., "--who", help="your name, as recorded"),
            note: Optional[str] = typer.Option(None, "--note", help="what you checked"),
            key: Optional[Path] = typer.Option(None, "--key", help="private key: sign the new head")) -> None:
    """Acknowledge a loss the audit log recorded (a torn last line cut, or the log cut / its head lost), after
    looking at it: `verify` fails on such a record until it is acknowledged."""
    from ..oversight.audit import ACK, NOTES, AuditLog, read_records

    _run_dir(run_dir)
    if not who.strip():
        _error("--who needs a name to record")
    log = run_dir / "audit.jsonl"
    records = read_records(log)
    target = next((r for r in records if r.get("seq") == seq), None)
    if target is None or target.get("event") not in NOTES:
        _error(f"seq {seq} is not an {' or '.join(NOTES)} record")
    if any(r.get("event") == ACK and (r.get("data") or {}).get("seq") == seq for r in records):
        _error(f"seq {seq} is already acknowledged")
    AuditLog(log, signer=_signer(key)).append(ACK, seq=seq, acknowledged=target["event"], who=who, note=note)
    typer.echo(f"seq {seq} ({target['event']}) acknowledged by {who}")


@app.command("sign")
def sign_cmd(run_dir: Path = typer.Argument(..., help="run directory"),
             key: Path = typer.Option(..., "--key", help="private key")) -> None:
    """Anchor the log as it is now (after checking it): records appended without the key, e.g. by `successor
    approve`, become covered by the signature. Appends an `audit.signed` record and signs it."""
    from ..oversight.audit import AuditLog, verify

    _run_dir(run_dir)
    signer = _signer(key)
    ok, msg = verify(run_dir / "audit.jsonl")
    if not ok:
        _error(f"not signing a log that does not verify: {msg}")
    rec = AuditLog(run_dir / "audit.jsonl", signer=signer).append("audit.signed", audit_key=signer.fingerprint)
    typer.echo(f"signed the head at seq {rec['seq']} with key {signer.fingerprint[:16]}")
