"""What seeds cannot be allowed to fake: a program whose runs ignore the harness's seed, a patch that only moves a
seed, and a gate that stops adding seeds while its test is still undecided.

- A program that seeds itself (or `seed: null`) repeats one run on every "seed": the paired test then sees zero
  spread, and a gain is one seed's luck. `ignores_seed` reads that from the runs (identical metrics or identical
  artifacts); the gate detects it at generation 0, before any candidate is judged.
- A patch whose only change is a seed value, or a constant that feeds one (`seed = 1234` -> `seed = 99`,
  `torch.manual_seed(3)` -> `(4)`), is a new draw of the noise, not an improvement: `seed_only_change` compares
  the trees git built, token by token (comments and spacing ignored), and names the lines.
- `adaptive_gate_runs` adds paired seeds while the test is undecided, up to the cap (ScriptGateConfig.looks);
  `judge` is the gate's reading of the runs, after each look and at the gate stage alike.
"""
from __future__ import annotations

import io
import re
import tokenize

import numpy as np

from ...oversight.gate import Decision, flat, seed_test
from .measure import metric_name
from .patch import PatchError

# a name that sets a random stream's seed: seed, SEED, manual_seed, random_seed (not "seeds", a count), or a
# generator built from one
SEED_NAME = re.compile(r"(?<![a-z])seed(?!s)|^(?:default_rng|RandomState|Random|PRNGKey|Generator|PCG64|"
                       r"set_random_state)$", re.I)
_NUMBER = re.compile(r"\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+")
_WORDS = re.compile(r"\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+|\w+|[^\w\s]")
_IDENT = re.compile(r"[A-Za-z_]\w*")
SEED_IGNORED_HELP = ("the gate cannot verify any gain across seeds. Pass the harness's seed to the program "
                     "(script.seed: {via: flag, name: --seed}, or env/config) and use it for every random stream; "
                     "or, to run it anyway with each gain judged on one seed, set script.gate.seed_ignored: allow "
                     "(in a new --run-dir)")


class SeedOnlyPatch(PatchError):
    """A patch refused because its only change is a seed's value."""


def same_artifacts(models: list) -> bool:
    """Every run left an artifact, and all of them are the same bytes."""
    return bool(models) and all(models) and len(set(models)) == 1


def ignores_seed(metrics: list, models: list) -> bool:
    """True where several runs on different seeds gave one result: identical metrics, or identical artifacts."""
    if len(metrics) < 2 or any(m is None for m in metrics):
        return False
    return flat(metrics) or same_artifacts(models)


def judge(sc, champ: dict, runs: dict) -> Decision:
    """The gate's reading of the paired runs so far (the champion's and the successor's): which side ignores its
    seed, then `seed_test` at alpha split over the gate's planned looks."""
    gc = sc.gate
    ignored = (ignores_seed(champ["metrics"], champ["models"]), ignores_seed(runs["metrics"], runs["models"]))
    return seed_test(champ["metrics"], runs["metrics"], gc.test, gc.alpha, gc.min_effect, sc.direction,
                     gc.seed_ignored, ignored, len(gc.looks()))


def _tokens(source: str) -> list[tuple[int, str, bool]]:
    """(line, text, is a number) for every token that carries meaning: comments and spacing dropped."""
    try:
        out = []
        for t in tokenize.generate_tokens(io.StringIO(source).readline):
            if t.type in (tokenize.COMMENT, tokenize.NL, tokenize.ENDMARKER):
                continue
            out.append((t.start[0], t.string, t.type == tokenize.NUMBER))
        return out
    except (tokenize.TokenError, SyntaxError, IndentationError):  # not Python: words, numbers and marks
        return [(i, w, bool(_NUMBER.fullmatch(w))) for i, line in enumerate(source.splitlines(), 1)
                for w in _WORDS.findall(line.split("#", 1)[0])]


def _reads(tokens: list[tuple[int, str, bool]], name: str) -> bool:
    """`name` is read by a seed-setting call or argument (`manual_seed(S)`, `default_rng(seed=S)`), and by
    nothing else: a constant that also sets a learning rate is more than a seed."""
    uses = [i for i, (_, t, _) in enumerate(tokens) if t == name and not (
        i + 1 < len(tokens) and tokens[i + 1][1] == "=")]  # its assignments are not reads
    return bool(uses) and all(i >= 2 and (tokens[i - 1][1] in ("(", "=", ",") and SEED_NAME.search(tokens[i - 2][1])
                                          or _call_of(tokens, i)) for i in uses)


def _call_of(tokens: list[tuple[int, str, bool]], i: int) -> bool:
    """The token at i is inside the parentheses of a seed-setting call (on its own line)."""
    depth, line = 0, tokens[i][0]
    for j in range(i - 1, -1, -1):
        lj, t, _ = tokens[j]
        if lj != line:
            return False
        depth += {")": 1, "(": -1}.get(t, 0)
        if depth < 0:
            return j > 0 and bool(SEED_NAME.search(tokens[j - 1][1]))
    return False


def _sets_seed(tokens: list[tuple[int, str, bool]], i: int) -> bool:
    """The number at i is a seed: a seed call's argument (`manual_seed(3)`, `default_rng(seed=3)`), a seed's
    assignment (`SEED = 3`, `seed: 3`), or a constant assigned to a name a seed call reads (`S = 3` ...
    `random.seed(S)`)."""
    if i < 2:
        return False
    prev, name = tokens[i - 1][1], tokens[i - 2][1]
    if prev in ("=", ":") and SEED_NAME.search(name.strip("'\"")):
        return True
    if prev == "=" and i >= 4 and tokens[i - 3][1] == ":" and SEED_NAME.search(tokens[i - 4][1]):
        return True  # an annotated one: `seed: int = 3`
    if prev == "(" and SEED_NAME.search(name) or _call_of(tokens, i):
        return True
    return prev == "=" and bool(_IDENT.fullmatch(name)) and _reads(tokens, name)


def seed_only_change(before: dict[str, str], after: dict[str, str]) -> str | None:
    """Why a change is only a new seed (the lines it moved), or None where it changes anything else. `before` and
    `after`: the changed files' text in the parent's tree and the candidate's (a file added or removed: None)."""
    moved = []
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if old is None or new is None:
            return None
        a, b = _tokens(old), _tokens(new)
        if len(a) != len(b):
            return None
        lines = new.splitlines()
        for i, ((_, ta, na), (lb, tb, nb)) in enumerate(zip(a, b)):
            if ta == tb:
                continue
            if not (na and nb and _sets_seed(b, i)):
                return None
            line = lines[lb - 1] if 0 < lb <= len(lines) else ""
            moved.append(f"{path}:{lb} {ta} -> {tb} (`{line.strip()[:80]}`)")
    if not moved:
        return None
    return ("a seed-only patch: its only change is a seed value " + "; ".join(dict.fromkeys(moved)) +
            ". A new seed is a new draw of the noise, not an improvement: the gate judges programs on the seeds "
            "the harness draws")


def adaptive_gate_runs(wl, g: int, groups: list, seeds: list[int], looks: list[int]) -> tuple[dict, dict, list]:
    """Run successor and champion (`groups`, the successor's first) on the first look's seeds, then, while the
    paired test is undecided (a gain above min_effect, not significant at alpha / len(looks)) and a run did not
    fail, on the next look's fresh seeds too. Returns the successor's runs, the champion's, and the seeds used."""
    used: list[int] = []
    runs = champ = None
    for n in looks:
        new = seeds[len(used):n]
        got = wl.run_seeds(g, [(cid, commit, knobs, new, kind) for cid, commit, knobs, _, kind in groups])
        runs, champ = (got[0], got[1]) if runs is None else (_join(runs, got[0]), _join(champ, got[1]))
        used += new
        if runs["status"] != "done" or champ["status"] != "done" or n == looks[-1]:
            break
        d = judge(wl.sc, champ, runs)
        if d.stats["verdict"] != "noise":
            break
        wl.audit.append("gate.more_seeds", generation=g, seeds=n, next=looks[looks.index(n) + 1],
                        p_value=d.stats["p_value"], gain=d.stats["gain"])
    return runs, champ, used


def _join(a: dict, b: dict) -> dict:
    bad = a if a["status"] != "done" else b
    return {"experiments": a["experiments"] + b["experiments"], "metrics": a["metrics"] + b["metrics"],
            "status": bad["status"], "error": bad["error"], "models": a["models"] + b["models"]}


def refuse_seed_only(repo, parent: str, commit: str) -> None:
    """Raise PatchError where the commit's tree differs from its parent's only in a seed's value: the trees git
    built are compared, not the diff's text."""
    changed = [f for f in repo.git("diff", "--name-only", "--no-renames", parent, commit).splitlines() if f]
    files = set(repo.files(parent)), set(repo.files(commit))
    why = seed_only_change({f: repo.read(parent, f) if f in files[0] else None for f in changed},
                           {f: repo.read(commit, f) if f in files[1] else None for f in changed})
    if why:
        raise SeedOnlyPatch(why)


def first_champion(sc, audit, g: int, runs: dict) -> tuple[bool, str, dict]:
    """Generation 0's decision: the program as given, measured on several seeds for the first time. A program
    whose runs do not depend on the seed is said so here, before any candidate is judged (an audit event
    `script.seed_ignored`): with `gate.seed_ignored: refuse` the decision is a refusal whose `stop` ends the run
    with what to set; with `allow`, the run goes on, on the record as one seed, not verified across seeds."""
    vals, models, n = runs["metrics"], runs["models"], len(runs["metrics"])
    stats = {"contender": vals, "contender_mean": float(np.mean(vals)), "n": n}
    reason = (f"promoted: generation 0, the program as given, is the first champion ({metric_name(sc)} "
              f"{np.mean(vals):.4g} over {n} seeds)")
    if not ignores_seed(vals, models):
        return True, reason, stats | {"seed_ignored": {"contender": False}, "verified_across_seeds": True}
    same = "metrics" + (" and artifacts" if same_artifacts(models) else "")
    what = f"the program ignores its seed: its {n} runs on different seeds gave identical {same}"
    audit.append("script.seed_ignored", generation=g, role="program as given", runs=n, identical=same,
                 policy=sc.gate.seed_ignored, seed=sc.seed.model_dump() if sc.seed else None)
    stats |= {"seed_ignored": {"contender": True}, "verified_across_seeds": False}
    if sc.gate.seed_ignored == "allow":
        return True, f"{reason}; one seed, not verified across seeds ({what}; script.gate.seed_ignored: allow)", stats
    return False, f"refused: {what}; {SEED_IGNORED_HELP}", stats | {"stop": True}
