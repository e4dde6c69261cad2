"""Anchor a run's audit chain outside the run: an Ed25519 signature over its head, made with a key the run
directory does not hold.

Why: a hash chain only shows the log is self-consistent. Whoever can write the run directory can rewrite every
record, recompute every hash and write a matching `audit.head`. A signature by a key kept elsewhere cannot be
recomputed: `verify --key PUB` then knows every record up to the signed one is the one the key holder wrote.

`audit.sig` (next to the log) is JSON: the key's fingerprint (sha256 of the raw public key), the chain's id (the
first record's hash), the signed seq and hash, and the signature over exactly those. The process holding the
private key re-signs after each of its appends; records appended by a process without it (`successor approve`,
`stop`, `audit ack`) stay after the signed head until the key holder appends or signs again.

Limit: a rollback to exactly the last signed head (dropping the unsigned records after it, with the head file
rewritten) is not detected: the signature only says which head the key holder last saw.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

DOMAIN = b"successor-audit-head-v1\n"  # a signature made here means nothing anywhere else
MAX_KEY_BYTES = 16 << 10
MAX_SIG_BYTES = 64 << 10


def sig_path(log: Path) -> Path:
    return Path(log).with_suffix(".sig")


def fingerprint(pub: Ed25519PublicKey) -> str:
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def message(chain: str, fp: str, seq: int, digest: str) -> bytes:
    body = {"chain": chain, "fingerprint": fp, "hash": digest, "seq": seq}
    return DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def keygen(out: Path) -> tuple[Path, Path]:
    """Write a new private key to `out` (PEM, mode 0600) and its public key to `out.pub`; refuses to overwrite
    either (ValueError)."""
    out = Path(out)
    pub_path = out.with_name(out.name + ".pub")
    for p in (out, pub_path):
        if os.path.lexists(p):
            raise ValueError(f"{p} exists; not overwriting a key")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    for p, data, mode in ((out, private, 0o600), (pub_path, public, 0o644)):
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    return out, pub_path


def _read_key_file(path: Path) -> bytes:
    path = Path(path)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO or link is not a key
    try:
        st = os.fstat(fd)
        if not (st.st_mode & 0o170000 == 0o100000):
            raise ValueError(f"{path}: not a regular file")
        return os.read(fd, MAX_KEY_BYTES)
    finally:
        os.close(fd)


def load_private(path: Path) -> Ed25519PrivateKey:
    """The signing key; refused when others can read it (as ssh does)."""
    path = Path(path)
    try:
        if os.stat(path).st_mode & 0o077:
            raise ValueError(f"{path}: the private key is readable by others (chmod 600 it)")
        key = serialization.load_pem_private_key(_read_key_file(path), password=None)
    except (OSError, TypeError) as e:
        raise ValueError(f"{path}: cannot read the private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    """The checking key: a public key PEM (`keygen`'s .pub), or the private key it belongs to."""
    try:
        data = _read_key_file(path)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the key ({e})") from None
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError):
            raise ValueError(f"{path}: not a PEM public or private key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 key")
    return key


class Signer:
    """Signs an audit log's head into `audit.sig` (AuditLog calls it under its lock after every append)."""

    def __init__(self, key_path: Path):
        self.key = load_private(key_path)
        self.fingerprint = fingerprint(self.key.public_key())

    def sign_head(self, log: Path, chain: str, seq: int, digest: str) -> None:
        sig = self.key.sign(message(chain, self.fingerprint, seq, digest))
        body = {"chain": chain, "fingerprint": self.fingerprint, "hash": digest, "seq": seq,
                "signature": base64.b64encode(sig).decode()}
        path = sig_path(log)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(body, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def check(log: Path, pub: Ed25519PublicKey, records: list[dict]) -> tuple[list[str], str]:
    """(problems, summary) for the chain `records` (already verified as a chain) against `audit.sig` and `pub`."""
    path, fp = sig_path(log), fingerprint(pub)
    try:
        raw = path.read_bytes()[:MAX_SIG_BYTES] if path.is_file() and not path.is_symlink() else None
        body = json.loads(raw) if raw is not None else None
    except (OSError, ValueError):
        return [f"{path.name}: unreadable"], ""
    if body is None:
        return [f"{path.name}: missing, so nothing anchors the chain to key {fp[:16]}"], ""
    if not isinstance(body, dict) or not isinstance(body.get("seq"), int) or not all(
            isinstance(body.get(k), str) for k in ("chain", "fingerprint", "hash", "signature")):
        return [f"{path.name}: malformed"], ""
    if body["fingerprint"] != fp:
        return [f"{path.name}: signed by key {body['fingerprint'][:16]}, not by the key given ({fp[:16]})"], ""
    try:
        pub.verify(base64.b64decode(body["signature"], validate=True),
                   message(body["chain"], body["fingerprint"], body["seq"], body["hash"]))
    except (InvalidSignature, ValueError):
        return [f"{path.name}: the signature is not valid for key {fp[:16]} (the signed head was altered)"], ""
    seq = body["seq"]
    if not records or records[0].get("hash") != body["chain"]:
        return [f"{path.name}: signed chain {body['chain'][:12]}, but this log's first record is "
                f"{(records[0].get('hash') or '?')[:12] if records else 'missing'} (the log was rewritten)"], ""
    if not (0 <= seq < len(records)) or records[seq].get("hash") != body["hash"]:
        return [f"{path.name}: the signed head (seq {seq}, {body['hash'][:12]}) is not in the log (the log was "
                f"rewritten or cut)"], ""
    after = records[seq + 1:]
    if after:
        names = ", ".join(sorted({str(r.get("event")) for r in after}))
        return [f"audit.jsonl: {len(after)} record{'s' if len(after) != 1 else ''} after the signed head (seq "
                f"{seq}) were appended without the key (seq {seq + 1}-{after[-1].get('seq')}: {names}); nothing "
                f"anchors them (the key holder signs them on its next append, or: successor audit sign)"], ""
    return [], f"head signed at seq {seq} by key {fp[:16]}"
