"""The `script` workload's config: the user's own program, its knobs, how its metric is read, and the gate's
noise handling. Twenty lines of YAML point Successor at a `train.py` (see README)."""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from ...researchers.base import Dim, Space
from ...schema import Strict


class KnobConfig(Strict):
    """One typed knob; the program receives it as a CLI flag, an environment variable or a key of a generated
    JSON config file."""

    type: Literal["float", "int", "choice"]
    default: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    values: list | None = Field(None, description="the choices (type choice)")
    via: Literal["flag", "env", "config"] = "flag"
    name: str | None = Field(None, description="the flag (default --NAME), variable (default NAME in capitals) "
                             "or config key (default NAME)")

    @model_validator(mode="after")
    def _bounds(self) -> "KnobConfig":
        if self.type == "choice":
            if not self.values:
                raise ValueError("a choice knob needs values")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError("a float or int knob needs low < high")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scaled knob needs low > 0")
        return self


class SeedConfig(Strict):
    """How the harness's seed reaches the program. `seed: null` passes none: for a program that seeds itself
    (its runs then repeat one another, which the gate detects; see ScriptGateConfig.seed_ignored)."""

    via: Literal["flag", "env", "config"] = "flag"
    name: str = "--seed"


class MetricConfig(Strict):
    """Where a run's number is: the first group of the last match of `regex` in its output, or `key` (dotted)
    in the JSON file `json` (relative to its workspace)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    regex: str | None = None
    json_file: str | None = Field(None, alias="json")
    key: str | None = None

    @model_validator(mode="after")
    def _one(self) -> "MetricConfig":
        if (self.regex is None) == (self.json_file is None):
            raise ValueError("give exactly one of regex or json")
        if self.regex is not None:
            try:
                if re.compile(self.regex).groups < 1:
                    raise ValueError("the metric regex needs a group around the number")
            except re.error as e:
                raise ValueError(f"the metric regex does not compile: {e}") from None
        if self.json_file is not None and not self.key:
            raise ValueError("a json metric needs key")
        return self


class EvaluateConfig(Strict):
    """A command the harness runs itself, from its own pristine copy of the program, in a sandbox of its own, on
    the artifact a candidate produced ('{artifact}' in the command is replaced by its path). The number it
    prints is the one the gate uses; without it, the gate can only use what the program reports about itself."""

    command: list[str] = Field(..., min_length=1)
    metric: MetricConfig
    timeout_s: float = Field(300.0, gt=0)


class ScriptGateConfig(Strict):
    seeds: int = Field(5, ge=2, le=100, description="runs of champion and successor each, on fresh seeds "
                       "the harness draws for the generation")
    test: Literal["paired", "welch"] = Field("paired", description="paired: champion and successor run on the "
                                             "same seeds (a paired t-test on the differences); welch: unpaired")
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    min_effect: float = Field(0.0, ge=0.0, description="the smallest gain worth promoting, in the metric's units; "
                              "the test is that the gain exceeds it")
    max_seeds: int = Field(10, ge=2, le=100, description="while the paired test is undecided (a gain above "
                           "min_effect, not yet significant), the gate doubles its seeds up to this cap; alpha is "
                           "split evenly over the planned looks (Bonferroni), so the extra looks do not raise the "
                           "false-promotion rate. Equal to seeds (or below it, by default): one look, as before")
    seed_ignored: Literal["refuse", "allow"] = Field("refuse", description="a program whose runs do not depend on "
                                                     "the seed (identical metrics or artifacts on every gate seed) "
                                                     "gives the gate one seed, not many: refuse stops the run at "
                                                     "generation 0 and refuses such a successor; allow runs it, "
                                                     "promotes on the gain alone and reports 'one seed, not "
                                                     "verified across seeds'")

    @model_validator(mode="after")
    def _cap(self) -> "ScriptGateConfig":
        if "max_seeds" in self.model_fields_set and self.max_seeds < self.seeds:
            raise ValueError(f"gate.max_seeds ({self.max_seeds}) is below gate.seeds ({self.seeds}): the cap on "
                             "the seeds the gate may add must be at least the seeds it starts with")
        return self

    def looks(self) -> list[int]:
        """The seed counts at which the paired test is read: seeds, doubling, up to the cap (Welch: one look)."""
        cap = max(self.seeds, self.max_seeds) if self.test == "paired" else self.seeds
        out = [self.seeds]
        while out[-1] < cap:
            out.append(min(2 * out[-1], cap))
        return out


class ScriptConfig(Strict):
    program: str = Field(..., description="the program's directory (relative to the config file)")
    command: list[str] = Field(..., min_length=1, description="argv run in the program's directory; "
                               "'python' means the harness's own interpreter")
    editable: list[str] = Field(..., min_length=1, description="glob patterns of the files a code patch may "
                                "change; everything else is read-only")
    knobs: dict[str, KnobConfig] = {}
    config_file: str = Field("knobs.json", description="where knobs passed 'via: config' are written")
    seed: SeedConfig | None = SeedConfig()
    metric: MetricConfig
    direction: Literal["maximize", "minimize"] = "maximize"
    artifact: str | None = Field(None, description="the file or folder the program writes (relative to its "
                                 "directory), handed to evaluate and kept for the champion")
    evaluate: EvaluateConfig | None = None
    hidden: list[str] = Field([], description="files or folders (relative to the config file) the candidate's "
                              "sandbox must not see: your held-out data. The harness's evaluation still reads "
                              "them; a candidate that tries is disqualified. Needs the bubblewrap sandbox")
    seeds: int = Field(2, ge=1, le=100, description="seeds each candidate experiment runs")
    gate: ScriptGateConfig = ScriptGateConfig()
    patches: bool = Field(True, description="researchers may propose code patches to the editable files")

    @model_validator(mode="after")
    def _check(self) -> "ScriptConfig":
        if self.evaluate is not None and self.artifact is None:
            raise ValueError("evaluate needs artifact: the file the program writes and the evaluation reads")
        for name, k in self.knobs.items():
            self.space().dims[name].check(k.default)
        return self

    def space(self) -> Space:
        return Space({n: Dim(n, k.type, k.default, k.low, k.high, k.log, tuple(k.values or ())) for n, k in
                      self.knobs.items()})
