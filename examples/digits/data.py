"""The fixed split both scripts share: 70% of scikit-learn's digits for training, 30% held out for eval.py.

train.py calls train_rows() only; eval.py calls heldout_rows() only. The split never changes (random_state=0).
"""
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def _split():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X.astype("float32"), y, test_size=0.3, random_state=0, stratify=y)


def train_rows():
    X_train, _, y_train, _ = _split()
    return X_train, y_train


def heldout_rows():
    _, X_test, _, y_test = _split()
    return X_test, y_test
