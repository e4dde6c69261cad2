"""Reading a run's number, and the harness's own evaluation of an artifact.

The evaluation runs the user's evaluation command from the harness's pristine copy of the program (a candidate
can edit only its own workspace's copy), in a sandbox of its own: no network, a read-only root, the artifact
bound read-only, a scratch folder to write in. The artifact is data a candidate produced; the evaluation reads
it, nothing of the candidate's runs.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ... import safeio
from ...oversight.policy import Policy
from ...oversight.sandbox import preexec, wrap
from ...safeio import file_digest
from .config import EvaluateConfig, MetricConfig


class MetricError(ValueError):
    """The run's number is missing or not a finite number."""


def read_metric(cfg: MetricConfig, output: str, cwd: Path) -> float:
    if cfg.regex is not None:
        found = re.findall(cfg.regex, output)
        if not found:
            raise MetricError(f"no line of the output matches the metric regex {cfg.regex!r}")
        raw = found[-1][0] if isinstance(found[-1], tuple) else found[-1]
    else:
        try:  # a file the candidate wrote: no link followed, no FIFO opened, at most 1 MiB
            raw = json.loads(safeio.read_bytes(cwd, cfg.json_file, 1 << 20))
            for part in cfg.key.split("."):
                raw = raw[part]
        except safeio.HostileFile as e:
            if str(e).endswith(": missing"):
                raise MetricError(f"the metric file {cfg.json_file} was not written") from None
            raise MetricError(f"the metric file {cfg.json_file}: {e}") from None
        except (ValueError, KeyError, TypeError, IndexError):
            raise MetricError(f"the metric file {cfg.json_file} has no number at {cfg.key!r}") from None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise MetricError(f"the metric {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise MetricError(f"the metric is {value}")
    return value


def python_argv(command: list[str]) -> list[str]:
    """'python' in a command means the harness's own interpreter (the environment Successor runs in)."""
    return [sys.executable, *command[1:]] if command and command[0] in ("python", "python3") else list(command)


@dataclass
class Evaluation:
    metric: float | None
    error: str | None
    seconds: float


def evaluate_artifact(cfg: EvaluateConfig, pristine: Path, artifact: Path, scratch: Path, run_root: Path,
                      isolation: str, policy: Policy, hidden: list[str] = ()) -> Evaluation:
    """Run the evaluation command on `artifact`; its output is kept in `scratch`/eval.txt. It sees the paths
    hidden from candidates (`{hidden}` in the command is the first; $SUCCESSOR_HIDDEN lists them all)."""
    shutil.rmtree(scratch, ignore_errors=True)
    work = scratch / "program"
    shutil.copytree(pristine, work)
    argv = python_argv([a.replace("{artifact}", str(artifact)).replace("{hidden}", hidden[0] if hidden else "")
                        for a in cfg.command])
    # The hidden data is bound for the evaluation alone, with the policy's readable paths; nothing else of
    # the host beyond the system trees and the Python environment.
    cmd = wrap(isolation, argv, scratch, run_root, [artifact], [], work,
               host_readable=[Path(p) for p in [*policy.sandbox.readable_paths, *hidden]])
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(scratch), "TMPDIR": str(scratch), "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "SUCCESSOR_HIDDEN": os.pathsep.join(hidden)}
    t0 = time.monotonic()
    log = scratch / "eval.txt"
    try:
        with open(log, "wb") as out:
            r = subprocess.run(cmd, cwd=work, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env=env, timeout=cfg.timeout_s, start_new_session=True,
                               preexec_fn=preexec(policy.sandbox, []))
    except subprocess.TimeoutExpired:
        return Evaluation(None, f"the evaluation took over {cfg.timeout_s:.0f}s", time.monotonic() - t0)
    text = log.read_text(errors="replace")
    seconds = time.monotonic() - t0
    if r.returncode != 0:
        tail = text.strip().splitlines()[-1:] or [f"exit code {r.returncode}"]
        return Evaluation(None, f"the evaluation failed (exit code {r.returncode}): {tail[0][:300]}", seconds)
    try:
        return Evaluation(read_metric(cfg.metric, text, work), None, seconds)
    except MetricError as e:
        return Evaluation(None, f"the evaluation printed no metric: {e}", seconds)


def program_command(sc, knobs: dict, seed: int) -> tuple[list[str], dict, dict]:
    """One run's argv, environment and config-file contents: each knob and the seed passed as the config says."""
    argv, env, files = python_argv(sc.command), {}, {}
    passed = [(k.via, k.name or (f"--{n}" if k.via == "flag" else n.upper() if k.via == "env" else n), knobs[n])
              for n, k in sc.knobs.items()]
    passed += [(sc.seed.via, sc.seed.name, seed)] if sc.seed is not None else []
    for via, name, value in passed:
        if via == "flag":
            argv += [name, str(value)]
        elif via == "env":
            env[name] = str(value)
        else:
            files[name] = value
    return argv, env, files


def artifact_digest(path: Path) -> str:
    """An artifact's digest (safeio.copy_tree computes the same while it copies); a link or special file in it
    raises safeio.LinkInOutput."""
    path = Path(path)
    if path.is_file() and not path.is_symlink():
        return file_digest(path)
    if path.is_symlink() or not path.is_dir():
        raise safeio.LinkInOutput(f"{path.name}: not a regular file or folder")
    digests = []
    for rel, st in safeio.entries(path):
        if stat.S_ISDIR(st.st_mode):
            continue
        if not stat.S_ISREG(st.st_mode):
            raise safeio.LinkInOutput(f"{path.name}/{rel}: {safeio._kind(st.st_mode)}, not a regular file")
        digests.append((PurePosixPath(rel).parts, rel, hashlib.sha256(safeio.read_bytes(path, rel, 1 << 40)).hexdigest()))
    h = hashlib.sha256()
    for _, rel, digest in sorted(digests):
        h.update(rel.encode() + b"\0" + digest.encode())
    return h.hexdigest()


def metric_name(sc) -> str:
    m = (sc.evaluate.metric if sc.evaluate else sc.metric)
    word = re.match(r"\^?([A-Za-z_][\w.-]*)", m.regex or "")
    return m.key or (word.group(1) if word else "metric")
