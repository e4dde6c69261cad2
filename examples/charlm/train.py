"""Train a tiny character-level GPT on some of the stdlib's source; write model.safetensors, print dev_bpc=.

The defaults are deliberately under-tuned (a cautious learning rate): there is room for the knobs to find.
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from data import VOCAB, spans, train_text
from model import CharGPT, bits_per_char

p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
p.add_argument("--n-embd", type=int, default=64, help="width; a multiple of 16 (heads of 16)")
p.add_argument("--n-layer", type=int, default=2)
p.add_argument("--context", type=int, default=64, help="characters the model sees")
p.add_argument("--batch-size", type=int, default=32)
p.add_argument("--steps", type=int, default=400)
p.add_argument("--warmup", type=int, default=30, help="linear warm-up steps, then cosine decay to lr/10")
p.add_argument("--weight-decay", type=float, default=0.01)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
p.add_argument("--out", default="model.safetensors")
args = p.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)

text = train_text()
cut = int(len(text) * 0.95)  # the last 5% of the training text is the program's own dev set
train_ids = torch.tensor(list(text[:cut]), dtype=torch.long)
dev_pieces = spans(text[cut:], 8, 1024)

model = CharGPT(VOCAB, args.n_embd, args.n_layer, args.n_embd // 16, args.context)
decay = [p_ for n, p_ in model.named_parameters() if p_.dim() >= 2]
no_decay = [p_ for n, p_ in model.named_parameters() if p_.dim() < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                         {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.99))
gen = torch.Generator().manual_seed(args.seed)


def lr_at(step):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


t0, running = time.time(), None
for step in range(args.steps):
    starts = torch.randint(0, len(train_ids) - args.context - 1, (args.batch_size,), generator=gen)
    x = torch.stack([train_ids[s:s + args.context] for s in starts.tolist()])
    y = torch.stack([train_ids[s + 1:s + args.context + 1] for s in starts.tolist()])
    for g in opt.param_groups:
        g["lr"] = lr_at(step)
    model.train()
    loss = F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
    if (step + 1) % max(1, args.steps // 5) == 0 or step + 1 == args.steps:
        print(f"step {step + 1}/{args.steps} loss {running:.4f} ({time.time() - t0:.1f}s)", flush=True)

print(f"train_loss={running:.4f}")
print(f"dev_bpc={bits_per_char(model, dev_pieces):.4f}")
# One metadata key: safetensors writes several in no fixed order, and the same seed should give the same bytes.
info = {"shape": model.shape, "knobs": vars(args)}
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out,
          metadata={"model": json.dumps(info, sort_keys=True)})
