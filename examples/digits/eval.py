"""Score a model.safetensors on the held-out digits: a numpy forward pass, no pickle. Prints accuracy=."""
import json
import sys

import numpy as np
from safetensors import safe_open

from data import heldout_rows

ACTIVATIONS = {"relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh,
               "logistic": lambda z: 1.0 / (1.0 + np.exp(-z))}

with safe_open(sys.argv[1], framework="numpy") as f:
    info = json.loads((f.metadata() or {})["model"])
    t = {k: f.get_tensor(k) for k in f.keys()}
act = ACTIVATIONS[info["activation"]]
n = int(info["n_layers"])

X, y = heldout_rows()
h = (X - t["mean"]) / t["scale"]
for i in range(n):
    h = h @ t[f"W{i}"] + t[f"b{i}"]
    if i < n - 1:
        h = act(h)
pred = t["classes"][h.argmax(1)]
print(f"accuracy={(pred == y).mean():.4f}")
