"""Estimated FLOPs of training a TinyLM, computed by the harness from the recipe and the data, never from what
a candidate reports. The count is the usual one for transformers (Kaplan et al. 2020; PaLM, Chowdhery et al.
2022, appendix B): per token, a forward pass costs 2 FLOPs per matmul weight plus the attention scores, and
training costs three forward passes (the backward pass is two). Layer norms, GELUs, softmax and the optimizer
are left out: on this model they are a few per cent of the matmuls.
"""
from __future__ import annotations

import json
from pathlib import Path

from .model import ModelConfig


def matmul_params(cfg: ModelConfig) -> int:
    """Weights that take part in a matmul per token: the blocks' linear layers and the (tied) output head.
    Embedding look-ups are gathers, not matmuls."""
    c, f = cfg.n_embd, cfg.ffn_mult
    per_block = 3 * c * c + c * c + 2 * f * c * c
    return cfg.n_layer * per_block + c * cfg.vocab_size


def forward_flops_per_token(cfg: ModelConfig, context: float) -> float:
    """One token's forward pass with `context` tokens before it on average (attention: QK^T and AV)."""
    return 2.0 * matmul_params(cfg) + 4.0 * cfg.n_layer * cfg.n_embd * context


def train_flops(cfg: ModelConfig, tokens: float, seq_len: float) -> float:
    """Training on `tokens` tokens in sequences of `seq_len` (causal: a token attends to half of it on average,
    but the fused kernel computes the full square, so the whole length counts)."""
    return 3.0 * forward_flops_per_token(cfg, seq_len) * tokens


def model_config(recipe, parent: ModelConfig | None = None, vocab_size: int | None = None) -> ModelConfig:
    """The architecture a job trains: the parent's when it fine-tunes one, else the recipe's."""
    if parent is not None and recipe.init == "parent":
        return parent
    from .tasks import VOCAB_SIZE

    return ModelConfig(vocab_size=vocab_size or VOCAB_SIZE, n_layer=recipe.n_layer, n_embd=recipe.n_embd,
                       n_head=recipe.n_head, ffn_mult=recipe.ffn_mult, dropout=recipe.dropout,
                       position=recipe.position)


_LONGEST: dict[str, int] = {}  # shard path -> its longest input sequence; shards are named by their digest


def longest_input(path: str) -> int:
    """Tokens in the longest training input of a shard (prompt plus label, less the last token)."""
    if path not in _LONGEST:
        from .data import load_shard

        _LONGEST[path] = max((len(p.prompt) + len(y) - 1 for p, y in load_shard(Path(path))), default=0)
    return _LONGEST[path]


def job_flops(job: dict) -> float:
    """What a tinylm job's training computes: `steps` batches of `batch_size` rows, right-padded to the longest
    input the mixture draws from (a batch of 64 from even shares of 8 lengths holds the longest one but for
    (7/8)^64 of the time), and the model computes the padded rows in full."""
    from .recipe import Recipe

    recipe = Recipe(**job["recipe"])
    share = {"newest": recipe.mix_newest, "human": recipe.mix_human,
             "older": max(0.0, 1.0 - recipe.mix_newest - recipe.mix_human)}
    paths = [p for name, ps in job["data"].items() if share.get(name, 0.0) > 0 for p in ps]
    seq = max((longest_input(p) for p in paths), default=0)
    parent = None
    if job.get("parent"):
        parent = ModelConfig(**json.loads((Path(job["parent"]) / "config.json").read_text())["model"])
    return train_flops(model_config(recipe, parent), recipe.steps * recipe.batch_size * seq, seq)
