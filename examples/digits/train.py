"""Train a small MLP on the digits training rows; write model.safetensors and print dev_accuracy=.

The defaults are deliberately modest (16 hidden units, 100 epochs at Adam's default rate): room for the knobs.
"""
import argparse
import json
import os
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one BLAS thread unless the caller says otherwise

import numpy as np
from safetensors.numpy import save_file
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

from data import train_rows

p = argparse.ArgumentParser()
p.add_argument("--hidden", type=int, default=16, help="units in each hidden layer")
p.add_argument("--layers", type=int, default=1, help="hidden layers")
p.add_argument("--activation", default="relu", choices=["relu", "tanh", "logistic"])
p.add_argument("--alpha", type=float, default=1e-4, help="L2 penalty")
p.add_argument("--lr", type=float, default=1e-3, help="Adam's initial learning rate")
p.add_argument("--max-iter", type=int, default=100, help="epochs")
p.add_argument("--scale", default="minmax", choices=["minmax", "standard"])
p.add_argument("--seed", type=int, default=0)
p.add_argument("--out", default="model.safetensors")
args = p.parse_args()

X, y = train_rows()
# A dev split carved from the training rows only (fixed), for the program's own report.
X_fit, X_dev, y_fit, y_dev = train_test_split(X, y, test_size=0.2, random_state=1, stratify=y)

if args.scale == "standard":
    mean, scale = X_fit.mean(0), X_fit.std(0)
    scale[scale == 0] = 1.0
else:  # pixels are 0..16
    mean, scale = np.zeros(X.shape[1], np.float32), np.full(X.shape[1], 16.0, np.float32)


def prep(A):
    return (A - mean) / scale


clf = MLPClassifier(hidden_layer_sizes=(args.hidden,) * args.layers, activation=args.activation,
                    alpha=args.alpha, learning_rate_init=args.lr, max_iter=args.max_iter,
                    random_state=args.seed)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    clf.fit(prep(X_fit), y_fit)

print(f"train_accuracy={clf.score(prep(X_fit), y_fit):.4f}")
print(f"dev_accuracy={clf.score(prep(X_dev), y_dev):.4f}")

tensors = {"mean": mean.astype(np.float32), "scale": scale.astype(np.float32),
           "classes": clf.classes_.astype(np.int64)}
for i, (W, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
    tensors[f"W{i}"] = np.ascontiguousarray(W, dtype=np.float32)
    tensors[f"b{i}"] = np.ascontiguousarray(b, dtype=np.float32)
# One metadata key: safetensors writes several in no fixed order, and the same seed should give the same bytes.
info = {"activation": args.activation, "n_layers": len(clf.coefs_), "knobs": vars(args)}
save_file(tensors, args.out, metadata={"model": json.dumps(info, sort_keys=True)})
