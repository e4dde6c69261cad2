"""Turn labelled problems into token, position and target tensors; the one place sequences are laid out."""
from __future__ import annotations

import numpy as np
import torch

from .tasks import PAD_ID, Problem, Task, encode

IGNORE = -100


def position_ids(task: Task, scheme: str, level: int, length: int, offset: int = 0,
                 marked: bool = False) -> list[int]:
    """Position ids for a prompt+answer sequence of `length` tokens under a position scheme (a marked sequence
    carries the marker before the prompt and the one refusal token as its answer)."""
    if scheme in ("digit_index", "digit_rope"):
        ids = task.position_ids(level, offset, marked)
        if len(ids) != length:
            raise ValueError(f"task gave {len(ids)} positions for a sequence of {length} tokens")
        return ids
    if scheme in ("learned", "rope"):
        return [offset + i for i in range(length)]
    if scheme == "none":
        return [0] * length
    raise ValueError(f"unknown position scheme {scheme!r}")


def training_batch(
    task: Task,
    scheme: str,
    problems: list[Problem],
    labels: list[str],
    offsets: np.ndarray,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (inputs, positions, targets); loss falls on answer tokens only."""
    seqs, poss, starts = [], [], []
    for prob, label, off in zip(problems, labels, offsets):
        toks = encode(prob.prompt + label)
        seqs.append(toks)
        poss.append(position_ids(task, scheme, prob.level, len(toks), int(off), prob.marked))
        starts.append(len(prob.prompt))
    T = max(len(s) for s in seqs) - 1
    B = len(seqs)
    idx = torch.full((B, T), PAD_ID, dtype=torch.long)
    pos = torch.zeros((B, T), dtype=torch.long)
    tgt = torch.full((B, T), IGNORE, dtype=torch.long)
    for b, (s, p, start) in enumerate(zip(seqs, poss, starts)):
        n = len(s) - 1
        idx[b, :n] = torch.tensor(s[:-1])
        pos[b, :n] = torch.tensor(p[:-1])
        t = torch.tensor(s[1:])
        t[: start - 1] = IGNORE  # targets before the first answer token are prompt, not graded
        tgt[b, :n] = t
    return idx, pos, tgt
