"""Which of a champion's labels are wrong, and which signals find them: the offset vote, the vote on the
commuted problem (b+a for a+b), and the model's own confidence (the least probability it gave a token of its
greedy answer). Prints kept labels and their true noise (hidden checker) per filter.

    .venv/bin/python benchmarks/label_filters.py benchmarks/results/self_improvement/relabel-long \
        --generation 4 --level 10

A champion that trained on a length and stands at 0.97 there makes errors its position offsets agree on (the vote
keeps them); this asks whether another signal separates them. Exploratory: nothing is written.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from lineage_models import champion_of

from successor.workloads.tinylm.curator import vote
from successor.workloads.tinylm.data import labelled, tier_rng
from successor.workloads.tinylm.decode import greedy
from successor.workloads.tinylm.sequences import position_ids
from successor.workloads.tinylm.tasks import Problem, encode, get_task


@torch.no_grad()
def confidence(model, task, problems: list[Problem], answers: list[str], offset: int = 0) -> np.ndarray:
    """The least softmax probability the model gives a token of `answers` (teacher-forced), per problem."""
    out = []
    for s in range(0, len(problems), 256):
        ps, ans = problems[s:s + 256], answers[s:s + 256]
        seq = torch.tensor([encode(p.prompt + a) for p, a in zip(ps, ans)], dtype=torch.long)
        level, P = ps[0].level, len(encode(ps[0].prompt))
        pos = torch.tensor(position_ids(task, model.cfg.position, level, seq.shape[1], offset), dtype=torch.long)
        model.eval()
        logits, _ = model(seq[:, :-1], pos[:-1].unsqueeze(0).expand(len(ps), -1))
        prob = torch.softmax(logits[:, P - 1:], -1).gather(-1, seq[:, P:].unsqueeze(-1)).squeeze(-1)
        out.append(prob.min(dim=1).values.numpy())
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--generation", type=int, default=0)
    ap.add_argument("--level", type=int, default=10)
    ap.add_argument("--problems", type=int, default=1000)
    ap.add_argument("--offsets", type=int, default=16)
    a = ap.parse_args()
    torch.set_num_threads(1)
    _, model = champion_of(a.run_dir, a.generation)
    task = get_task("addition")
    items = labelled(task, [a.level], a.problems, tier_rng(54321, "curate"))
    problems = [p for p, _ in items]
    truth = [y for _, y in items]
    swapped = [task.rewrites(p)[0] for p in problems]  # b+a for a+b
    offs = range(a.offsets)
    ans = [greedy(model, task, problems, offset=o) for o in offs]
    ans_sw = [greedy(model, task, swapped, offset=o) for o in offs]
    print(f"generation {a.generation}, length {a.level}: offset-0 accuracy "
          f"{np.mean([x == y for x, y in zip(ans[0], truth)]):.3f}, per offset "
          + " ".join(f"{np.mean([x == y for x, y in zip(an, truth)]):.2f}" for an in ans))
    conf = confidence(model, task, problems, ans[0])

    def report(name: str, labels: list[str | None]) -> None:
        kept = [(lab, y) for lab, y in zip(labels, truth) if lab is not None]
        wrong = sum(lab != y for lab, y in kept)
        print(f"{name:48s} kept {len(kept):5d}  wrong {wrong:4d}  noise {wrong / max(1, len(kept)):.4f}")

    report("greedy, offset 0", ans[0])
    for need in (0.75, 1.0):
        v = vote(ans, need)
        report(f"offset vote >= {need}", v)
        vs = vote(ans_sw, need)
        report(f"offset vote >= {need}, b+a agrees", [x if x is not None and x == y else None for x, y in zip(v, vs)])
        both = vote(ans + ans_sw, need)
        report(f"one vote over a+b and b+a, >= {need}", both)
    v = vote(ans, 0.75)
    for t in (0.5, 0.8, 0.9, 0.95, 0.99):
        report(f"offset vote >= 0.75, confidence >= {t}", [x if x is not None and c >= t and x == ans[0][i] else None
                                                         for i, (x, c) in enumerate(zip(v, conf))])
    wrong0 = np.array([x != y for x, y in zip(ans[0], truth)])
    if wrong0.any():
        print(f"confidence of offset-0 answers: right median {np.median(conf[~wrong0]):.3f}, "
              f"wrong median {np.median(conf[wrong0]):.3f}")


if __name__ == "__main__":
    main()
