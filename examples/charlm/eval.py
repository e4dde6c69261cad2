"""Score a model.safetensors on held-out stdlib modules the training program never reads. Prints bpc=.

The artifact is data: tensors plus the model's shape as JSON in the metadata; nothing is unpickled."""
import json
import os
import sys

import torch
from safetensors import safe_open

from data import VOCAB, heldout_spans
from model import SHAPE_KEYS, CharGPT, bits_per_char

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
with safe_open(sys.argv[1], framework="pt") as f:
    info = json.loads((f.metadata() or {})["model"])
    state = {k: f.get_tensor(k) for k in f.keys()}
shape = {k: int(info["shape"][k]) for k in SHAPE_KEYS}
if shape["vocab"] != VOCAB:
    sys.exit(f"the artifact's vocabulary is {shape['vocab']}, not {VOCAB}")
model = CharGPT(**shape)
model.load_state_dict(state, strict=True)
print(f"bpc={bits_per_char(model, heldout_spans()):.4f}")
