"""The policy's budgets against what the run has used: checked before every generation and every experiment."""
from __future__ import annotations

import time
from pathlib import Path

from .oversight.policy import Policy
from .store import Store


class Paused(Exception):
    """The run stopped at a safe point and waits for a human: a budget is spent (raise it in the policy)."""


class Budgets:
    def __init__(self, store: Store, policy: Policy, policy_path: Path):
        self.store, self.policy, self.policy_path = store, policy, policy_path
        self._t0 = time.monotonic()

    def wall_s(self) -> float:
        """The loop's running time, summed over sessions (the wall-clock budget counts it)."""
        return float(self.store.get_meta("wall_s") or 0.0) + time.monotonic() - self._t0

    def save_wall(self) -> None:
        self.store.set_meta("wall_s", str(self.wall_s()))
        self._t0 = time.monotonic()

    def check(self) -> None:
        """Raise Paused if a budget is spent."""
        b = self.policy.budgets
        used = self.store.compute()
        done = self.store.one("SELECT COUNT(*) AS n FROM generations WHERE status='done'")["n"]
        spent = [(b.generations, done, "generations"), (b.experiments, used["attempts"], "experiments"),
                 (b.cpu_s, used["cpu_s"], "CPU-seconds"), (b.wall_clock_s, self.wall_s(), "wall-clock seconds"),
                 (b.flops, used["flops"] or 0.0, "FLOPs")]
        for limit, value, what in spent:
            if limit is not None and value >= limit:
                raise Paused(f"budget spent: {value:.4g} of {limit:.4g} {what} (raise budgets in "
                             f"{self.policy_path} and re-run to go on)")
