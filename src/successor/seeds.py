"""One way to derive randomness from a run's seed: a named stream per purpose.

Every draw the harness, a workload or a researcher makes comes from `rng(seed, purpose, *extra)` (a numpy
Generator) or `integer(seed, purpose, *extra)` (an int seed for a library such as Optuna), where `extra` names the
draw within its purpose (the generation, the level). Streams of different purposes never overlap, and a purpose's
id never changes: a run resumed or re-run with the same seed draws the same numbers, so its lineage repeats.
A new purpose takes a new id; never renumber one.

Harness-only tiers (validation, sealed, guardrail) take the same ids from the run's secret tier key instead of its
seed (`rng(key_int, ...)`, workloads/tinylm/data.secret_rng), so the public seed does not reproduce them.
"""
from __future__ import annotations

import numpy as np

STREAMS = {
    # tinylm tiers and curation (public ones from the seed; harness-only ones from the tier key)
    "human": 1, "dev": 2, "validation": 3, "sealed": 4, "curate": 5, "guardrail-train": 6, "guardrail": 7,
    # the researcher's proposals: tinylm recipes and their training seeds, the script workload's brief.
    # It shares 7 with the guardrail tier, which is drawn with no extra word (runs made before tier keys drew it
    # from the seed): [seed, 7] and [seed, 7, generation, ...] are different streams. Kept so lineages repeat.
    "propose": 7,
    # the script workload's run seeds, drawn by the harness per generation
    "script-experiment": 11, "script-gate": 13,
    # Optuna samplers' integer seeds: each generation's study, and each researcher role's stream
    "optuna": 20, "optuna-role": 21, "optuna-independent": 22,
    # inside the trainer: the guardrail examples it mixes in (a stream apart from its main one)
    "trainer-guardrail": 0x6A5D,
    # a bootstrap that stayed on its loss plateau trains again under the next seed: attempt k's seed is drawn from
    # (bootstrap.seed, this id, k); attempt 1 keeps the configured seed (workloads/tinylm/bootstrap.py)
    "bootstrap-restart": 0xB007,
    # gate.sealed: fresh: generation g's own sealed sample, from the tier key with g (workloads/tinylm/sealed_fresh)
    "sealed-fresh": 0x5EA1,
}


def rng(seed: int, purpose: str, *extra: int) -> np.random.Generator:
    """The Generator of one purpose's draw: numpy's SeedSequence over (seed, stream id, *extra)."""
    return np.random.default_rng([seed, STREAMS[purpose], *extra])


def integer(seed: int, purpose: str, *extra: int) -> int:
    """An int seed in [0, 2^31 - 1) for a library that takes one, from the same streams."""
    state = np.random.SeedSequence([seed, STREAMS[purpose], *extra]).generate_state(1)[0]
    return int(state % (2**31 - 1))
