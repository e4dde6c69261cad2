"""A small decoder-only transformer in the spirit of nanoGPT: one readable file, no framework magic.

Positions are explicit inputs, so the same model serves five schemes:
- `learned`: a learned embedding of the absolute index in the sequence (classic GPT);
- `digit_index`: a learned embedding of the task's own position ids (each digit's index inside its number,
  Abacus-style, McLeish et al. 2024);
- `rope`: rotary embeddings of the sequence index;
- `digit_rope`: rotary embeddings of the task's digit-index ids, so a query finds the operand digits that
  share its index at relative distance 0, at any length;
- `none`: no position signal at all (NoPE; causal attention alone).
A KV cache makes greedy decoding O(T) per token instead of re-encoding the whole prefix.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelConfig:
    vocab_size: int
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    ffn_mult: int = 4
    dropout: float = 0.0
    position: str = "digit_index"  # learned | digit_index | rope | digit_rope | none
    max_positions: int = 128

    def to_dict(self) -> dict:
        return asdict(self)


KVCache = list[tuple[torch.Tensor, torch.Tensor]]
ROTARY = {"rope", "digit_rope"}
LEARNED = {"learned", "digit_index"}


def rotary_angles(pos: torch.Tensor, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """(B, 1, T, head_dim/2) rotation angles for position ids `pos` (B, T)."""
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    return (pos.float().unsqueeze(-1) * inv).unsqueeze(1)


def rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., 0::2], x[..., 1::2]
    cos, sin = angles.cos(), angles.sin()
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, rot: torch.Tensor | None, past: tuple[torch.Tensor, torch.Tensor] | None = None,
                mask: torch.Tensor | None = None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if rot is not None:  # rotary: attention scores then depend on position *differences* only
            q, k = rotate(q, rot), rotate(k, rot)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        # With a cache and a single new token, every cached key is in the past, so no mask is needed.
        causal = past is None or T > 1
        if past is not None and T > 1:
            raise ValueError("cached decoding feeds one token at a time")
        drop = self.dropout if self.training else 0.0
        if mask is not None:  # packed rows: causal within each example only
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=drop)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y), (k, v)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.n_embd, cfg.ffn_mult * cfg.n_embd),
            nn.GELU(),
            nn.Linear(cfg.ffn_mult * cfg.n_embd, cfg.n_embd),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x, rot=None, past=None, mask=None):
        a, kv = self.attn(self.ln1(x), rot, past, mask)
        x = x + a
        x = x + self.mlp(self.ln2(x))
        return x, kv


class TinyLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        if cfg.position not in ROTARY | LEARNED | {"none"}:
            raise ValueError(f"unknown position scheme {cfg.position!r}")
        self.pos = nn.Embedding(cfg.max_positions, cfg.n_embd) if cfg.position in LEARNED else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # weight tying, as in GPT-2
        self.apply(self._init)
        for name, p in self.named_parameters():  # scaled init of residual projections (GPT-2)
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, pos: torch.Tensor, past: KVCache | None = None,
                segments: torch.Tensor | None = None):
        """Logits for every position, and the updated KV cache. `pos` holds the position ids of `idx`. With
        `segments` (B, T) (packed rows, `sequences.packed_batch`), a token attends only to earlier tokens of its
        own segment."""
        mask = None
        if segments is not None:
            if past is not None:
                raise ValueError("packed rows are for training, not cached decoding")
            T = idx.size(1)
            causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
            mask = ((segments.unsqueeze(2) == segments.unsqueeze(1)) & causal).unsqueeze(1)
        x = self.tok(idx)
        if self.pos is not None:
            if int(pos.max()) >= self.cfg.max_positions:
                raise ValueError(f"position {int(pos.max())} exceeds max_positions={self.cfg.max_positions}")
            x = x + self.pos(pos)
        x = self.drop(x)
        rot = rotary_angles(pos, self.cfg.n_embd // self.cfg.n_head) if self.cfg.position in ROTARY else None
        cache: KVCache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, rot, None if past is None else past[i], mask)
            cache.append(kv)
        return self.head(self.ln_f(x)), cache
