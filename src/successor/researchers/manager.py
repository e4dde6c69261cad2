"""The `manager` researcher: a team of roles and a critic, so compute goes to what has worked and never to a
known dead end.

The explorer (bold changes) and the exploiter (refinements of the champion) share the generation's budget in
proportion to their yield so far, (promotions + 1) / (proposals + 2): a Laplace estimate, so a role with no
history starts at 1/2 and one bad generation does not starve it. The critic then checks every proposal against
research memory before it costs compute, and an llm critic, when configured, reviews the survivors.
"""
from __future__ import annotations

import math
from dataclasses import replace

from ..config import ManagerConfig
from .base import Brief, Proposal, Researcher, ResearcherPaused, Trial
from .evolution import safe_key

DEAD_ENDS = ("failed", "refused", "violation")  # a diff that ended so is not run again, whatever the knobs


def role_yield(memory: list[Trial], role: str) -> tuple[float, int, int]:
    past = [t for t in memory if t.role == role]
    wins = sum(bool(t.promoted) for t in past)
    return (wins + 1) / (len(past) + 2), wins, len(past)


def split(n: int, weights: dict[str, float]) -> dict[str, int]:
    """`n` shared in proportion to `weights` by largest remainder (ties: the roles' order), then every role
    given at least one when n covers them all (taken from the largest share, ties: the later role). With
    fewer than there are roles, the best-weighted roles get one each."""
    names = list(weights)
    total = sum(weights.values()) or 1.0
    quota = {r: n * w / total for r, w in weights.items()}
    shares = {r: math.floor(q) for r, q in quota.items()}
    for r in sorted(names, key=lambda r: (-(quota[r] - shares[r]), names.index(r)))[: n - sum(shares.values())]:
        shares[r] += 1
    if n >= len(names):
        for r in names:
            if shares[r] == 0:
                donor = max(names, key=lambda d: (shares[d], names.index(d)))
                shares[donor] -= 1
                shares[r] += 1
    return shares


def describe(t: Trial) -> str:
    why = t.error or t.gate_reason or (f"metric {t.metric:.4g}" if t.metric is not None else "")
    why = " ".join(why.split())
    return f"{t.id} ({t.status}{': ' + why[:120] if why else ''})"


class Manager:
    name = "manager"

    def __init__(self, cfg: ManagerConfig, roles: dict[str, Researcher], critic: Researcher | None = None):
        if not roles:
            raise ValueError("the manager needs at least one role")
        self.cfg, self.roles, self.critic = cfg, roles, critic
        self.last_notes: list[str] = []

    def propose(self, brief: Brief) -> list[Proposal]:
        """brief.n proposals (fewer if the roles cannot find that many new ones), each tagged with its role."""
        self.last_notes = notes = []
        kept: list[Proposal] = []
        held: set[str] = set()  # keys of every proposal seen this generation, kept or dropped
        yields = {r: role_yield(brief.memory, r) for r in self.roles}
        shares = split(brief.n, {r: y for r, (y, _, _) in yields.items()})
        notes.append("budget: " + ", ".join(f"{r} {shares[r]} (yield {y:.2f} = ({w}+1)/({p}+2))"
                                            for r, (y, w, p) in yields.items()))
        paused: set[str] = set()
        batch = self._ask(brief, shares, held, paused)
        kept += self._review(brief, batch, held, kept)
        short = brief.n - len(kept)
        live = {r: yields[r][0] for r in self.roles if r not in paused}
        if short > 0 and live:
            refill = split(short, live)
            notes.append(f"refill: {short} short; asked " + ", ".join(f"{r} {k}" for r, k in refill.items()))
            kept += self._review(brief, self._ask(brief, refill, held, paused), held, kept)
        if not kept and paused and len(paused) == len(self.roles):
            raise ResearcherPaused("every role of the manager is paused: " + ", ".join(sorted(paused)))
        return kept[: brief.n]

    def _ask(self, brief: Brief, shares: dict[str, int], held: set[str], paused: set[str]) -> list[Proposal]:
        out: list[Proposal] = []
        for role, k in shares.items():
            if k <= 0 or role in paused:
                continue
            sub = replace(brief, n=k, extra={**brief.extra, "role": role, "exclude": sorted(held)})
            try:
                props = self.roles[role].propose(sub)
            except ResearcherPaused as e:
                paused.add(role)
                self.last_notes.append(f"{role} paused: {e}")
                continue
            for p in props[:k]:
                held.add(safe_key(brief.space, p.knobs, p.diff))  # the next role is told not to propose it
                p.role = role
                p.researcher = p.researcher or getattr(self.roles[role], "name", None)
                out.append(p)
        return out

    def _review(self, brief: Brief, batch: list[Proposal], held: set[str], kept: list[Proposal]) -> list[Proposal]:
        """Memory checks (duplicates of a past trial or within the batch, a dead end's diff), then the critic."""
        space, notes = brief.space, self.last_notes
        past = {safe_key(space, t.knobs, t.diff): t for t in brief.memory}
        dead = {safe_key(space, {}, t.diff): t for t in brief.memory if t.diff and t.status in DEAD_ENDS}
        batch_keys = {safe_key(space, p.knobs, p.diff): p for p in kept}
        survivors: list[Proposal] = []
        for p in batch:
            key = safe_key(space, p.knobs, p.diff)
            why = None
            if key in past:
                why = f"duplicate of {describe(past[key])}"
            elif key in batch_keys:
                why = f"duplicate within the batch (the {batch_keys[key].role}'s)"
            elif p.diff and safe_key(space, {}, p.diff) in dead:
                why = f"known dead end: its diff is that of {describe(dead[safe_key(space, {}, p.diff)])}"
            held.add(key)
            if why:
                notes.append(f"dropped {p.role} proposal: {why}")
                continue
            batch_keys[key] = p
            survivors.append(p)
        if self.critic is None or not survivors:
            return survivors
        try:
            verdicts = self.critic.review(brief, survivors)  # type: ignore[attr-defined]
        except Exception as e:  # paused or down: the memory checks stand; the audit log says the review was skipped
            notes.append(f"critic review skipped ({type(e).__name__}: {e}); kept the memory-checked proposals")
            return survivors
        out = []
        for p, (keep, reason) in zip(survivors, verdicts):
            if keep:
                out.append(p)
            else:
                notes.append(f"dropped {p.role} proposal: critic: {reason}")
        return out + survivors[len(verdicts):]  # any the critic gave no verdict on are kept
