"""Batched greedy decoding, with a KV cache (fast path) and by full re-encoding (the reference)."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from .model import TinyLM
from .sequences import position_ids
from .tasks import Problem, Task, decode, encode


# inside `decoded_once`: (id(model), offset, problem) -> answer, and the models it holds (so no id is reused)
_MEMO: ContextVar[tuple[dict, list] | None] = ContextVar("decoded_once", default=None)


@contextmanager
def decoded_once() -> Iterator[None]:
    """Within the block, a model's greedy answer to a problem under an offset is decoded once. The curate stage
    asks for the same answers several times (the schedule's reach, the judge's cuts, the labeller's greedy and
    composed answers, the check of kept labels, the vote's offset 0), and no weight changes inside it. Nested
    blocks share the outer memo."""
    if _MEMO.get() is not None:
        yield
        return
    token = _MEMO.set(({}, []))
    try:
        yield
    finally:
        _MEMO.reset(token)


@torch.no_grad()
def greedy_same_level(
    model: TinyLM, task: Task, problems: list[Problem], offset: int = 0, use_cache: bool = True
) -> list[str]:
    """Decode answers for problems that share one level and mark (so prompts have equal length and need no
    padding). A marked problem gets one answer token: it is right only if that token is the refusal, and a
    digit there is already wrong, so decoding further would only cost time."""
    level, marked = problems[0].level, problems[0].marked
    assert all(p.level == level and p.marked == marked for p in problems), "one level and mark per call"
    A = task.answer_length(level, marked)
    prompt = torch.tensor([encode(p.prompt) for p in problems], dtype=torch.long)
    B, P = prompt.shape
    pos_full = torch.tensor(position_ids(task, model.cfg.position, level, P + A, offset, marked), dtype=torch.long)
    pos_full = pos_full.unsqueeze(0).expand(B, -1)
    was_training = model.training
    model.eval()
    seq = prompt
    if use_cache:
        logits, cache = model(prompt, pos_full[:, :P])
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        out = [nxt]
        for i in range(1, A):
            logits, cache = model(nxt, pos_full[:, P + i - 1 : P + i], cache)
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            out.append(nxt)
        answer = torch.cat(out, dim=1)
    else:
        for _ in range(A):
            logits, _ = model(seq, pos_full[:, : seq.shape[1]])
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        answer = seq[:, P:]
    model.train(was_training)
    return [decode(row.tolist()) for row in answer]


def greedy(
    model: TinyLM,
    task: Task,
    problems: list[Problem],
    offset: int = 0,
    batch_size: int = 512,
    use_cache: bool = True,
) -> list[str]:
    """Decode any mix of levels and marks: groups by both, batches, and returns answers in the input order.
    Inside `decoded_once`, only the answers not decoded before."""
    memo = _MEMO.get()
    if memo is not None:
        seen, held = memo
        if not any(m is model for m in held):
            held.append(model)
        todo = list(dict.fromkeys(p for p in problems if (id(model), offset, p) not in seen))
        if todo:
            fresh = _decode(model, task, todo, offset, batch_size, use_cache)
            seen.update(((id(model), offset, p), a) for p, a in zip(todo, fresh))
        return [seen[(id(model), offset, p)] for p in problems]
    return _decode(model, task, problems, offset, batch_size, use_cache)


def _decode(model: TinyLM, task: Task, problems: list[Problem], offset: int, batch_size: int,
            use_cache: bool) -> list[str]:
    """`greedy` without the memo: every answer decoded."""
    by_level: dict[tuple[int, bool], list[int]] = defaultdict(list)
    for i, p in enumerate(problems):
        by_level[(p.level, p.marked)].append(i)
    answers: list[str] = [""] * len(problems)
    for idxs in by_level.values():
        for s in range(0, len(idxs), batch_size):
            chunk = idxs[s : s + batch_size]
            outs = greedy_same_level(model, task, [problems[i] for i in chunk], offset, use_cache)
            for i, a in zip(chunk, outs):
                answers[i] = a
    return answers
