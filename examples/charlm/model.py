"""A tiny GPT (nanoGPT-style): byte embeddings, learned positions, pre-norm blocks of causal self-attention and
an MLP. Shared by train.py and eval.py; the artifact is its state_dict in safetensors plus its shape in the
metadata, so eval.py rebuilds it without unpickling anything."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

SHAPE_KEYS = ("vocab", "n_embd", "n_layer", "n_head", "context")


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.ln1, self.ln2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.qkv, self.proj = nn.Linear(n_embd, 3 * n_embd), nn.Linear(n_embd, n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.ln2(x))


class CharGPT(nn.Module):
    def __init__(self, vocab: int, n_embd: int, n_layer: int, n_head: int, context: int):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd {n_embd} is not a multiple of n_head {n_head}")
        self.shape = dict(vocab=vocab, n_embd=n_embd, n_layer=n_layer, n_head=n_head, context=context)
        self.tok, self.pos = nn.Embedding(vocab, n_embd), nn.Embedding(context, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln, self.head = nn.LayerNorm(n_embd), nn.Linear(n_embd, vocab)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln(x))


@torch.no_grad()
def bits_per_char(model: CharGPT, pieces: list[bytes], batch: int = 64) -> float:
    """Mean bits per predicted byte over `pieces`: each piece's bytes after its first are predicted once, in
    consecutive blocks of the model's context (the same characters are scored whatever the context)."""
    model.eval()
    ctx, blocks = model.shape["context"], {}
    for piece in pieces:
        ids = torch.tensor(list(piece), dtype=torch.long)
        for i in range(0, len(ids) - 1, ctx):
            y = ids[i + 1:i + ctx + 1]
            blocks.setdefault(len(y), []).append((ids[i:i + len(y)], y))
    total, count = 0.0, 0
    for same_length in blocks.values():  # blocks of one length batch together
        for j in range(0, len(same_length), batch):
            x, y = (torch.stack(t) for t in zip(*same_length[j:j + batch]))
            total += F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum").item()
            count += y.numel()
    return total / count / math.log(2)
