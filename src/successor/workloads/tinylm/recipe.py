"""The tinylm recipe: every knob a researcher may turn, typed and bounded, and the space evolution searches."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Recipe(BaseModel):
    """How one model is trained. Architecture fields only apply when training from scratch."""

    model_config = ConfigDict(extra="forbid")

    n_layer: int = Field(4, ge=1, le=12)
    n_embd: int = Field(128, ge=16, le=1024)
    n_head: int = Field(4, ge=1, le=16)
    ffn_mult: int = Field(4, ge=1, le=8)
    position: Literal["digit_index", "digit_rope", "learned", "rope", "none"] = "digit_index"
    max_offset: int = Field(20, ge=0, le=64, description="random position offset range used in training")
    dropout: float = Field(0.0, ge=0.0, le=0.5)
    lr: float = Field(1e-3, gt=0.0, le=0.1)
    schedule: Literal["cosine", "constant", "linear"] = "cosine"
    warmup: int = Field(50, ge=0)
    batch_size: int = Field(64, ge=1, le=4096)
    steps: int = Field(3000, ge=1)
    schedule_steps: int | None = Field(None, ge=1, description="the step count the lr schedule is laid out over "
                                       "(None: steps); training may stop before its end, as nanoGPT's "
                                       "lr_decay_iters allows")
    weight_decay: float = Field(0.1, ge=0.0, le=1.0)
    init: Literal["parent", "scratch"] = "parent"
    seed: int = 0
    mix_newest: float = Field(0.5, ge=0.0, le=1.0, description="batch share of the newest curated data")
    mix_human: float = Field(0.25, ge=0.0, le=1.0, description="batch share of human data; the rest is older")
    loss: Literal["token", "sequence"] = Field("token", description="how answer tokens are averaged: over the "
                                               "batch, or within each example first (every example weighs the same)")
    ema: float = Field(0.0, ge=0.0, lt=1.0, description="decay of an exponential moving average of the weights, "
                       "which becomes the trained model (0: the last step's weights)")
    guardrail_share: float = Field(0.0, ge=0.0, lt=1.0, description="share of batch rows turned into their "
                                   "marked twin (answer: the refusal), drawn from a random stream of its own")
    curriculum_steps: int = Field(0, ge=0, description="the levels enter the batch from the shortest: the two "
                                  "shortest from step 0, the others one by one in equal shares of these steps, "
                                  "every level after them (0: every level from step 0)")
    offset_ramp_steps: int = Field(0, ge=0, description="the random position offset's range grows from 0 to "
                                   "max_offset over these steps (0: the whole range from step 0)")
    plateau_step: int = Field(0, ge=0, description="at this step, a training loss (mean of the last 50 steps) "
                              "above plateau_loss ends the run early: it is still on its loss plateau, and the "
                              "harness, grading the model on validation, trains the bootstrap again under the next "
                              "seed sooner (0: never)")
    plateau_loss: float = Field(1.0, gt=0.0, description="see plateau_step")
    guardrail_from: int = Field(0, ge=0, description="the step marking starts at: a bootstrap's batches stay "
                                "exactly as without the guardrail until it has left its loss plateau")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="the forward pass's float type in training: "
                                               "bf16 runs it under torch.autocast (faster where the CPU has bf16 "
                                               "instructions); the weights, the optimizer and the checkpoint stay "
                                               "fp32, and the harness always decodes in fp32")
    length_buckets: int = Field(1, ge=1, le=16, description="a batch runs as up to this many groups of rows of "
                                "similar length, each padded to its own longest row: the same loss up to rounding, "
                                "fewer padded tokens (1: one group, padded to the batch's longest)")
    pack: bool = Field(False, description="a batch runs as rows of examples packed end to end, each attending only "
                       "to itself: the same loss up to rounding, in one pass over few padded tokens (not with "
                       "length_buckets > 1)")

    @model_validator(mode="after")
    def _check(self) -> "Recipe":
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.mix_newest + self.mix_human > 1.0 + 1e-9:
            raise ValueError("mix_newest + mix_human must be <= 1")
        if self.curriculum_steps and self.curriculum_steps >= self.steps:
            raise ValueError(f"curriculum_steps ({self.curriculum_steps}) must be < steps ({self.steps}): the "
                             "longest levels enter the batch only at its end")
        if self.offset_ramp_steps and self.offset_ramp_steps >= self.steps:
            raise ValueError(f"offset_ramp_steps ({self.offset_ramp_steps}) must be < steps ({self.steps}): the "
                             "widest offsets are drawn only at its end")
        if self.plateau_step and self.plateau_step >= self.steps:
            raise ValueError(f"plateau_step ({self.plateau_step}) must be < steps ({self.steps})")
        if self.pack and self.length_buckets > 1:
            raise ValueError("pack and length_buckets > 1 are two layouts of one batch: choose one")
        if self.schedule_steps is not None and self.schedule_steps < self.steps:
            raise ValueError(f"schedule_steps ({self.schedule_steps}) must be >= steps ({self.steps})")
        return self


# How a batch is computed, not what is learned: these follow the run's config (`successor:`), never the recipe
# that made the champion, so a run resumed or forked under another layout runs that layout.
LAYOUT_FIELDS = ("pack", "length_buckets", "precision")


# The evolution researcher mutates these fields among these values (ordered, so a mutation is a neighbour step).
SEARCH_SPACE: dict[str, list] = {
    "lr": [1e-4, 2e-4, 3e-4, 5e-4, 7e-4, 1e-3, 1.5e-3, 2e-3, 3e-3],
    "steps": [100, 150, 200, 300, 400, 600, 800, 1200],
    "weight_decay": [0.0, 0.01, 0.05, 0.1, 0.2],
    "warmup": [0, 10, 25, 50, 100],
    "schedule": ["cosine", "constant", "linear"],
    "max_offset": [0, 5, 10, 20, 30],
    "mix_newest": [0.25, 0.4, 0.5, 0.6, 0.75],
    "mix_human": [0.1, 0.2, 0.25, 0.3, 0.4, 0.5],
    "batch_size": [32, 48, 64, 96, 128],
    "ema": [0.0, 0.95, 0.98, 0.99, 0.995],
    "loss": ["token", "sequence"],
}
