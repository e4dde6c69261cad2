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


def _sequences(task: Task, scheme: str, problems: list[Problem], labels: list[str],
               offsets: np.ndarray) -> list[tuple[list[int], list[int], list[int]]]:
    """Each example's (inputs, positions, targets), shifted by one; targets before the answer are IGNORE."""
    out = []
    for prob, label, off in zip(problems, labels, offsets):
        toks = encode(prob.prompt + label)
        pos = position_ids(task, scheme, prob.level, len(toks), int(off), prob.marked)
        start = len(prob.prompt)  # targets before the first answer token are prompt, not graded
        out.append((toks[:-1], pos[:-1], [IGNORE] * (start - 1) + toks[start:]))
    return out


def _fill(seqs: list[tuple[list[int], list[int], list[int]]], rows: list[list[int]], T: int):
    """Rows of the examples `rows` names (indices into `seqs`), concatenated and right-padded to T: (inputs,
    positions, targets, segments), where a token's segment is its example's index and -1 marks padding."""
    B = len(rows)
    idx = torch.full((B, T), PAD_ID, dtype=torch.long)
    pos = torch.zeros((B, T), dtype=torch.long)
    tgt = torch.full((B, T), IGNORE, dtype=torch.long)
    seg = torch.full((B, T), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        o = 0
        for i in row:
            s, p, t = seqs[i]
            n = len(s)
            idx[b, o:o + n], pos[b, o:o + n], tgt[b, o:o + n] = torch.tensor(s), torch.tensor(p), torch.tensor(t)
            seg[b, o:o + n] = i
            o += n
    return idx, pos, tgt, seg


def training_batch(
    task: Task,
    scheme: str,
    problems: list[Problem],
    labels: list[str],
    offsets: np.ndarray,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (inputs, positions, targets), one example a row; loss falls on answer tokens only."""
    seqs = _sequences(task, scheme, problems, labels, offsets)
    idx, pos, tgt, _ = _fill(seqs, [[i] for i in range(len(seqs))], max(len(x[0]) for x in seqs))
    return idx, pos, tgt


def packed_batch(
    task: Task,
    scheme: str,
    problems: list[Problem],
    labels: list[str],
    offsets: np.ndarray,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The examples packed end to end into rows as long as the longest one (first fit, longest first), with
    each token's segment: the model attends only within a segment (`TinyLM.forward(segments=...)`), so every
    example's logits are those of its own padded row up to rounding, and far fewer padding tokens are computed.
    A successor's batch mixes human sums (~17 tokens) with curated ones (up to ~80): padded, about half its
    tokens were padding. Segments are numbered in the input order, so a loss can average per example."""
    seqs = _sequences(task, scheme, problems, labels, offsets)
    T = max(len(x[0]) for x in seqs)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i][0]))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = len(seqs[i][0])
        b = next((b for b, r in enumerate(room) if r >= n), None)
        if b is None:
            rows.append([i])
            room.append(T - n)
        else:
            rows[b].append(i)
            room[b] -= n
    return _fill(seqs, rows, T)
