"""The run config: YAML validated by pydantic, with presets. One bad field gives one clear line and exit 2."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from .researchers.config import LLMConfig, ManagerConfig, OptunaConfig, ResearcherConfig, RoleConfig  # noqa: F401
from .schema import Strict
from .workloads import NAMES, spec
from .workloads.script.config import ScriptConfig
from .workloads.tinylm.recipe import Recipe
from .yamlfile import ConfigError, read_text_file
from .yamlfile import read_yaml as _read_yaml


class TaskConfig(Strict):
    name: Literal["addition", "copy", "multiplication", "forward_addition"] = "addition"
    human_levels: tuple[int, int] = Field((1, 8), description="inclusive range of levels with human labels")
    human_per_level: int = Field(20000, ge=10)
    eval_max_level: int = Field(12, ge=2, le=60, description="evaluate every level from 1 to this")
    dev_per_level: int = Field(100, ge=10)
    validation_per_level: int = Field(60, ge=10)
    sealed_per_level: int = Field(400, ge=10)
    # 50 marked prompts a length, 1-12 (600 items): a successor that refuses as its parent does passes the
    # non-inferiority test at p < 0.001, and one that loses 2% cannot
    guardrail_per_level: int = Field(50, ge=0, description="marked problems per level in the harness-only "
                                     "guardrail suite, levels 1..eval_max_level (0: no guardrail measured)")
    ladder_step: int = Field(4, ge=0, le=32, description="the open-ended ladder: when the schedule would label, or "
                             "the champion's frontier come within ladder_margin of, the last level the tiers hold, "
                             "every tier grows by this many levels, each new level drawn from its own stream and "
                             "recorded under its own digest (0: the tiers end at eval_max_level)")
    ladder_margin: int = Field(2, ge=0, le=32, description="how near the tiers' last level the frontier or the "
                               "schedule may come before the ladder grows: it grows once they are fewer than this "
                               "many levels below it (0: once they pass it)")
    max_level: int = Field(60, ge=2, le=60, description="the ladder never grows past this level")
    dev_levels: Literal["all", "human"] = Field("all", description="labelled dev items at every level the tiers "
                                                "hold, or the human range only (label-free mode: README)")

    @model_validator(mode="after")
    def _levels(self) -> "TaskConfig":
        lo, hi = self.human_levels
        if not 1 <= lo <= hi:
            raise ValueError(f"human_levels must satisfy 1 <= lo <= hi, got {self.human_levels}")
        if self.eval_max_level <= hi:
            raise ValueError("eval_max_level must exceed the longest human level, or there is nothing to learn")
        return self


class NoiseConfig(Strict):
    """Label noise injected into the curated data, for ablations: a share of the kept labels gets one digit
    changed, so it stays well formed and no filter downstream can catch it."""
    rate: float = Field(0.0, ge=0.0, le=1.0, description="share of kept labels corrupted")
    generations: list[int] = Field([], description="generations whose curation is corrupted (empty: every one)")


class CuratorConfig(Strict):
    filter: Literal["none", "length", "majority", "offset-vote", "verifier"] = Field(
        "offset-vote", description="'verifier' keeps the champion's labels the hidden checker accepts: an upper "
        "bound for studies, marked so in every report")
    problems: int = Field(640, ge=1, description="problems labelled per curated level")
    # one model's accuracy at a new length swings from 10% to 98% with the offset: a wide vote finds the labels
    # it is sure of
    offsets: list[int] = Field(list(range(16)), description="position offsets each voter decodes under")
    voters: int = Field(3, ge=1, description="models in a majority vote: the champion and the top candidates")
    agreement: float = Field(0.7, gt=0.5, le=1.0, description="fraction of votes a label needs to be kept (the "
                             "lowest; max_dev_noise may raise it)")
    solve_threshold: float = Field(0.99, gt=0.0, le=1.0, description="accuracy at which a level counts solved")
    # at 0.02 the first curation (1 wrong of 22) was refused and a generation lost; a vote that passed 1 wrong of 6
    # (17%) gave 9-12% label noise (BENCHMARKS.md)
    max_dev_noise: float = Field(0.05, ge=0.0, lt=1.0, description="label noise the vote may have: it is held to "
                                 "the lowest agreement whose labels on the level's dev items are no more wrong "
                                 "than this share; a level where none qualifies is not curated (the alarm)")
    max_kept_noise: float = Field(0.01, ge=0.0, le=1.0, description="label-free mode (task.dev_levels: human): "
                                  "at a level with no dev labels, the share of its kept labels that two agreeing "
                                  "compositions from certified parts may say are wrong before nothing of the level "
                                  "is kept (the alarm); 1 turns the check off")
    voter_floor: float = Field(0.0, ge=0.0, le=1.0, description="per level, vote only with the voters whose dev "
                               "accuracy there is at least this share of the best voter's (0: every voter)")
    rewrites: bool = Field(False, description="every voter also answers the task's rewrites of each problem "
                           "(addition: b+a for a+b), and a label is kept only if the vote on each form passes with "
                           "it: a model's errors change with the operand order where its position offsets agree")
    min_kept: int = Field(20, ge=0, description="fewer kept labels than this and the level is not curated")
    levels_ahead: int = Field(2, ge=1, le=16, description="levels labelled per generation, from the first past "
                              "the frontier and the human data; curation stops at the first level not curated")
    policy: Literal["accumulate", "replace"] = "accumulate"
    schedule: Literal["frontier", "standard", "accelerated"] = Field(
        "frontier", description="which levels a generation labels: 'frontier', levels_ahead levels past the "
        "champion's frontier and the human data; 'standard' (Lee et al.), levels_ahead levels past the longest "
        "length trained on, +1 a generation; 'accelerated', standard plus every level past the longest trained "
        "where the champion already scores >= accelerate_threshold on dev")
    accelerate_threshold: float = Field(0.99, gt=0.0, le=1.0, description="dev accuracy at which the accelerated "
                                        "schedule labels a level without waiting for its turn")
    relabel: bool = Field(False, description="each generation also labels again, with the current champion, every "
                          "level past the human data below the scheduled ones; the fresh labels replace the old "
                          "(needs policy: replace). A champion that learned from noisy labels at a length votes "
                          "cleaner ones there than its parent did, so the lineage cleans up its own data")
    compose: bool = Field(False, description="where the task offers compositions (addition: a long sum from two "
                          "shorter sums; copy: two shorter copies), a level whose parts are all within the champion's "
                          "certified frontier is labelled by the champion's direct answer, kept only where it equals "
                          "the answer composed from the certified parts (no vote there); longer levels are voted as "
                          "configured")
    compose_judges_dev: bool = Field(False, description="with compose, at a composable level new to the champion "
                                     "(voted, then checked against the composition), dev judges the labels that "
                                     "would be kept, the vote's or greedy answers the composition confirms, rather "
                                     "than the vote alone: a champion at 0.5 on a new length raised the alarm on "
                                     "its vote there, every generation, although the composition would have kept "
                                     "only right labels")
    compose_new: Literal["checked", "parts"] = Field(
        "checked", description="with compose, how a composable level new to the champion is labelled: 'checked', "
        "the vote's or greedy answers the composition confirms (the champion must already answer the length); "
        "'parts', the composition itself, the champion's answers to the certified parts joined, where every form "
        "gives the same: the length is labelled as precisely as its parts are, though the champion cannot yet "
        "answer it directly (dev judges those labels). A champion at 0.1 on the length past its longest trained "
        "kept 3 of 100 dev items under 'checked' and its lineage stalled there")
    noise: NoiseConfig = NoiseConfig()

    @model_validator(mode="after")
    def _relabel(self) -> "CuratorConfig":
        if self.rewrites and self.filter not in ("offset-vote", "majority"):
            raise ValueError(f"rewrites needs a vote (filter offset-vote or majority), not {self.filter!r}")
        if self.relabel and self.policy != "replace":
            raise ValueError("relabel needs policy: replace (fresh labels of every level replace the old ones; "
                             "accumulating would keep training on the old, noisier labels)")
        if self.compose_new != "checked" and not self.compose:
            raise ValueError(f"compose_new: {self.compose_new} needs compose: true")
        return self


class GateConfig(Strict):
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    # 0.01: a successor job retrained under another seed beat its twin in 18% of pairs at 0.005 (McNemar takes a
    # seed's luck for a real difference) and in 0.8% at 0.01, where a true 2% gain still passes 99.8% of the time
    # (benchmarks/gate_null.py, BENCHMARKS.md)
    min_effect: float = Field(0.01, ge=0.0, lt=1.0, description="minimum gain in sealed accuracy")
    effect_on: Literal["tested", "unsolved"] = Field(
        "tested", description="where effect and significance are measured: every tested level, or only the "
        "tested levels past the champion's frontier ('unsolved'; forgetting is checked on every level either way). "
        "Pooled over solved levels, a champion near 1.0 leaves less than min_effect to gain, and a successor that "
        "solves three more lengths is refused")
    solve_threshold: float = Field(0.99, gt=0.0, le=1.0)
    sealed: Literal["fixed", "fresh"] = Field(
        "fixed", description="the sample the gate grades on: the sealed tier drawn when the run was created "
        "('fixed'), or a sample of its levels drawn anew for each generation once its candidates are trained, its "
        "digest in the audit log before any grading (`sealed.drawn`; 'fresh', tinylm)")
    count_newly_solved: bool = Field(
        False, description="a contender that solves a tested level the champion did not (>= solve_threshold), "
        "with a significant gain on that level's own items (exact McNemar at alpha), meets min_effect there: a "
        "level at 0.975 has less than min_effect 0.02 left to gain, and the absolute rule refuses the very step "
        "that moves the frontier")
    effect_scale: Literal["accuracy", "errors"] = Field("accuracy", description="the effect floor: min_effect "
                                                        "of accuracy, or min_error_share of the champion's errors")
    min_error_share: float = Field(0.2, gt=0.0, le=1.0, description="effect_scale: errors: share of the champion's "
                                   "errors on the tested levels a contender must remove (gate.py)")
    forget_tolerance: float = Field(0.015, ge=0.0, lt=1.0, description="allowed drop below solve_threshold "
                                    "on a level the champion solved past its frontier; levels inside the "
                                    "frontier get none, so a promotion never lowers the frontier")
    guardrail_margin: float = Field(0.02, gt=0.0, lt=1.0, description="how far a successor's refusal rate on the "
                                    "guardrail suite may fall below its parent's or generation 0's (non-inferiority)")
    guardrail_alpha: float = Field(0.05, gt=0.0, lt=1.0, description="level of each guardrail non-inferiority test")

    @model_validator(mode="after")
    def _scale(self) -> "GateConfig":  # a level newly solved removes most of its errors
        if self.effect_scale == "errors" and self.count_newly_solved:
            raise ValueError("count_newly_solved is a case of effect_scale: errors; set one of them")
        return self


class RayConfig(Strict):
    """Where and how experiments run as Ray tasks (pip install 'successor-lab[ray]'). Each task asks for its CPUs
    (and GPUs, memory); Ray places it on a node with them free, and the same sandbox as the local executor's runs
    there (bubblewrap is needed on every node that `isolation: required` runs on). The driver alone records."""

    address: str | None = Field("auto", description="the cluster to join: 'auto' (the one `ray start` made "
                                "on this machine, or $RAY_ADDRESS), HOST:PORT, ray://HOST:PORT (Ray Client); "
                                "None starts a private one inside the driver, on its usable cores (it ends "
                                "with the run)")
    cpus_per_experiment: float = Field(1.0, gt=0, description="CPUs each experiment asks Ray for; also its torch "
                                       "threads when loop.threads is not set")
    gpus_per_experiment: float = Field(0.0, ge=0, description="GPUs each experiment asks Ray for (Ray's "
                                       "CUDA_VISIBLE_DEVICES is passed into the sandbox; the bubblewrap sandbox "
                                       "does not bind GPU devices)")
    memory_mb: int | None = Field(None, ge=64, description="memory each experiment asks Ray for (None: none "
                                  "reserved; the sandbox's own limit still holds)")
    artifacts: Literal["object_store", "shared_path"] = Field(
        "object_store", description="object_store: the driver sends an experiment's inputs (job, patch, data "
        "shards, parent checkpoint, program) through Ray's object store; the node runs it in a fresh staging "
        "folder and sends its results (checkpoint, log, artifact) back, which the driver unpacks into the "
        "workspace. shared_path: every node sees the run directory at the same path (NFS, a mounted bucket); "
        "the experiment runs in place and only its outcome travels")
    max_transfer_mb: int = Field(1024, ge=1, description="object_store only: an experiment whose inputs or "
                                 "results are larger than this fails with the reason (use shared_path for "
                                 "such models)")
    staging_dir: str | None = Field(None, description="object_store only: where each node unpacks an "
                                    "experiment (None: the node's temporary folder); removed when it ends")
    max_retries: int = Field(2, ge=0, le=10, description="times Ray runs an experiment again whose worker "
                             "process or node died (the candidate's own failures are never retried); the "
                             "driver records it once")


class ExecutorConfig(Strict):
    name: Literal["local", "ray"] = Field("local", description="local: a pool of sandboxed subprocesses on this "
                                          "machine; ray: the same experiments as Ray tasks on a cluster "
                                          "(pip install 'successor-lab[ray]')")
    workers: int | None = Field(None, ge=1, le=1024, description="experiments run at once (default: the usable "
                                "cores for local, the cluster's CPUs over cpus_per_experiment for ray)")
    ray: RayConfig = RayConfig()


class HalvingConfig(Strict):
    """Successive halving inside a generation (Jamieson & Talwalkar 2016; ASHA's rungs, Li et al. 2020): every
    candidate trains a short budget, the best 1/eta of them on the dev tier go on to eta times more, up to the
    full experiment budget on the last rung. A rung's run is the first steps of the next one (same seed, data
    stream and lr schedule, which stays laid out over the full budget), trained again from the start."""

    rungs: int = Field(1, ge=1, le=6, description="1: no halving, every candidate gets the full budget")
    eta: int = Field(3, ge=2, le=8, description="the share kept at each rung is 1/eta; budgets grow eta-fold")
    unit: Literal["steps", "tokens"] = Field("steps", description="steps: a rung is a share of each candidate's "
                                             "own steps; tokens: of the training tokens of the successor "
                                             "recipe's full budget, so candidates with bigger batches take "
                                             "fewer steps")


class LoopConfig(Strict):
    generations: int = Field(4, ge=1, le=1000, description="generations after the bootstrap (generation 0)")
    experiment_timeout_s: float = Field(900.0, gt=0)
    threads: int | None = Field(None, ge=1, description="torch threads per experiment (default: the usable "
                                "cores shared among the experiments that run at once). Results depend on it: "
                                "set it to get the same lineage on machines with other core counts")
    experiment_budget: float = Field(0.1, gt=0.0, le=1.0, description="fraction of its recipe's steps a "
                                     "candidate experiment trains; the successor trains them all")
    executor: ExecutorConfig = ExecutorConfig()
    halving: HalvingConfig = HalvingConfig()
    bootstrap_attempts: int = Field(4, ge=1, le=10, description="generation 0 trains the bootstrap again, under the "
                                    "next seed (seeds stream `bootstrap-restart`), while the model it made has not "
                                    "learned the human range (bootstrap_bar on validation at every human level), up "
                                    "to this many attempts; each attempt is a candidate of its own in the lineage, "
                                    "and the first to pass is kept (none: the best by validation). A later "
                                    "generation whose champion has not learned the range spends as many again")
    bootstrap_bar: float = Field(0.95, gt=0.0, le=1.0, description="accuracy a bootstrap model needs at every human "
                                 "level on validation to be kept; below it the bootstrap is taken to have stayed on "
                                 "its loss plateau. A champion below it on dev at a human level is assess's named "
                                 "weakness `human range not learned`: its labels are not curated and its generation "
                                 "trains the bootstrap again under the next seed instead of a successor")


class RunConfig(Strict):
    name: str = "default"
    seed: int = 0
    workload: Literal[NAMES] = "tinylm"
    script: ScriptConfig | None = Field(None, description="the script workload: the user's own program")
    # 1,000 sealed items a length: on 200, a length going 0.975 -> 0.99 is 3 gained and 0 lost (p = 0.125), which
    # no test can confirm; on 1,000 it is about 15 and 0 (p ~ 3e-5)
    # Label-free (issue 26): no labelled dev item past the human range; measured on seeds 0-2 it held the frontier
    # within one length of dev labels (BENCHMARKS.md, "Label-free mode")
    task: TaskConfig = TaskConfig(sealed_per_level=1000, dev_levels="human")
    # The bootstrap: training from scratch on 1-8 digits at once sits on a loss plateau (loss 1.9, length 2 at chance)
    # for the whole run on some seeds (seeds 2, 3 and 5 of the former schedule: issue 25). The random position
    # offsets, there from step 0, keep the attention that lines digits up from forming: so their range grows from 0
    # over the first 500 steps, while the lengths enter from the shortest (curriculum_steps). On seeds 2 and 5 it
    # then left the plateau by step ~600; a run still on it at step 1,200 (loss above 1.0) ends there, and the
    # harness trains the bootstrap again under the next seed (loop.bootstrap_attempts) at a third of the cost.
    # 3,500 steps of a 4,000-step cosine: 2,500 left seed 2 at 0.95 on length 8. 2% of its rows become marked
    # prompts answered with the refusal from step 2,000, after it has left the plateau. Measured: BENCHMARKS.md.
    bootstrap: Recipe = Recipe(init="scratch", steps=3500, schedule_steps=4000, lr=0.001, warmup=50, seed=0,
                               batch_size=64, mix_newest=0.0, mix_human=1.0, guardrail_share=0.02,
                               guardrail_from=2000, curriculum_steps=500, offset_ramp_steps=500,
                               plateau_step=1200, plateau_loss=1.0)
    # Successors keep 40% human data in every batch (at 25% one seed in three let a short length slip to 98.75%),
    # the moving average of their weights (ema 0.99) and a per-sequence loss (per token, the long new answers
    # outweigh the short human ones): with both, four seeds of four kept every solved length (BENCHMARKS.md).
    # Curated data is never marked: successors keep the refusal through guardrail_share alone. 750 steps: at 250 the
    # relabelling lineage stalled at length 9, its champion standing at 0.97 on lengths it had labels for.
    # Packed batches (the padded batch's loss up to rounding): training at 0.46-0.71 of the CPU, and on seeds 0-2
    # forked at generation 3 the same frontiers within a length, every successor promoted (BENCHMARKS.md, "Packing").
    successor: Recipe = Recipe(init="parent", steps=750, lr=5e-4, warmup=25, batch_size=64, mix_newest=0.5,
                               mix_human=0.4, loss="sequence", ema=0.99, guardrail_share=0.02, pack=True)
    # One candidate, the incumbent recipe (its probe still votes with the champion): at equal CPU the recipe search
    # found little (BENCHMARKS.md, research efficiency: a challenger was never promoted in 15 generations), and the
    # protocol below was measured so. `researcher.candidates: 2` or more brings the search back.
    researcher: ResearcherConfig = ResearcherConfig(candidates=1)
    # The protocol that took reversed addition from 7 to 18 digits (benchmarks/self_improvement.py,
    # commute-1k/accelerated, BENCHMARKS.md), now the default (issue 25). Each generation the champion labels
    # again every length past the human data and the fresh labels replace the old (relabel: a champion that
    # learned from noisy labels votes cleaner ones); a label must win the vote on a+b and on b+a (rewrites), among
    # the offsets at least half as right on dev as the best (voter_floor); a length the champion already stands at
    # >= 0.9 on dev is labelled without waiting its turn (accelerated). Where a length's halves are within the
    # champion's certified frontier, its answer must equal the sum composed from them (compose: the vote kept 2.5%
    # wrong labels at length 10 where the composition kept none).
    curator: CuratorConfig = CuratorConfig(relabel=True, policy="replace", voter_floor=0.5, rewrites=True,
                                           schedule="accelerated", accelerate_threshold=0.9, levels_ahead=1,
                                           compose=True)
    # The gate measures the gain on the lengths past the champion's frontier (pooled over solved lengths, a
    # champion near 1.0 leaves less than the floor to gain), and a length newly solved with a significant gain on
    # its own items meets the floor: at 0.975 a length has less than 0.02 left to gain. Under the seed-retrain null
    # 25.8% of seed pairs pass `unsolved` at 0.02 (BENCHMARKS.md): the same-weights null stays at 0.
    gate: GateConfig = GateConfig(effect_on="unsolved", min_effect=0.02, count_newly_solved=True)
    # Two successor generations keep the demo inside 15 minutes: with this protocol, seed 0 went 7 -> 9 -> 12 in 599
    # s of stages on 2 cores, and its third generation alone took 352 s (BENCHMARKS.md, the default demo)
    loop: LoopConfig = LoopConfig(generations=2)

    @model_validator(mode="after")
    def _workload(self) -> "RunConfig":
        spec(self.workload).check_config(self)  # each workload says what fits it
        return self


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("successor.presets").iterdir() if p.name.endswith(".yaml"))


def load_config(path: Path | None = None, preset: str | None = None) -> RunConfig:
    """The code's defaults (one per knob, here in config.py), overlaid with the preset (default: `default`, which
    changes nothing) and then the YAML file, then validated."""
    name = preset or "default"
    if name not in preset_names():
        raise ConfigError(f"preset: unknown preset {name!r}; known: {', '.join(preset_names())}")
    # the bootstrap's seed follows the run's `seed` unless the preset or the file names one: `seed: 3` is then
    # another run from generation 0 on, not other human data under the same bootstrap
    data = _merge(RunConfig().model_dump(mode="json", exclude={"script": True, "bootstrap": {"seed"}}),
                  _read_yaml(resources.files("successor.presets").joinpath(f"{name}.yaml").read_text(),
                             f"preset {name}") or {})
    if path is not None:
        path = Path(path)
        data = _merge(data, _read_yaml(read_text_file(path, "config"), f"config: {path}"))
        script = data.get("script") if isinstance(data.get("script"), dict) else {}
        if isinstance(script.get("program"), str):  # named relative to the config file, wherever one runs it from
            script["program"] = str((path.parent / script["program"]).resolve())
        if isinstance(script.get("hidden"), list):
            script["hidden"] = [str((path.parent / h).resolve()) if isinstance(h, str) else h for h in script["hidden"]]
    if isinstance(data.get("bootstrap"), dict) and "seed" not in data["bootstrap"]:
        data["bootstrap"]["seed"] = data.get("seed", 0)
    return validated(RunConfig, data)


def validated(model: type[BaseModel], data: dict, prefix: str = "", error: type[ConfigError] = ConfigError):
    """`model` from `data`, or one line naming the first bad field (`prefix` + its dotted path)."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        field = prefix + (".".join(str(x) for x in err["loc"]) or "config")
        got = repr(err.get("input"))
        raise error(f"{field}: {err['msg']} (got {got if len(got) <= 200 else got[:200] + '...'})") from None
