"""AdamW as torch.optim.AdamW computes it, without the Optimizer class around it.

Why: torch's Optimizer wraps `add_param_group`, `zero_grad` and `step` so that they import `torch._dynamo` on
first use, 1.3-1.6 CPU-s of imports (2 cores, torch 2.13 CPU) in every training subprocess, which never compiles
anything. That was half the fixed start of a sandboxed experiment. This class keeps torch's own update (the
functional `torch.optim.adam.adam`, on CPU its single-tensor path, with `decoupled_weight_decay`) and only the
bookkeeping is ours: the same parameters and hyperparameters give bit-identical weights
(tests/test_model.py). It holds what the trainer uses: parameter groups with their own weight decay, a settable
`lr` per group, `zero_grad` and `step`.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.adam import adam


class AdamW:
    """Decoupled weight decay Adam over parameter groups ({"params": [...], "weight_decay": w})."""

    def __init__(self, groups: Iterable[dict], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.param_groups = [{"lr": lr, "betas": betas, "eps": eps, "weight_decay": 1e-2, **g,
                              "params": list(g["params"])} for g in groups]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p not in self.state:  # as torch initialises it: a CPU float step count, zero moments
                    self.state[p] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p),
                                     "exp_avg_sq": torch.zeros_like(p)}
            states = [self.state[p] for p in params]
            beta1, beta2 = group["betas"]
            adam(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                 [s["exp_avg_sq"] for s in states], [], [s["step"] for s in states],
                 foreach=False, capturable=False, differentiable=False, fused=None, grad_scale=None,
                 found_inf=None, has_complex=False, decoupled_weight_decay=True, amsgrad=False, beta1=beta1,
                 beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"],
                 maximize=False)
