"""Independent float64 references, written differently from the library (loops and logaddexp, no max trick)."""
from __future__ import annotations

import math

import numpy as np


def softmax_ref(x):
    x = np.asarray(x, dtype=np.float64)
    lse = np.logaddexp.reduce(x, axis=-1, keepdims=True)
    return np.exp(x - lse)


def log_softmax_ref(x):
    x = np.asarray(x, dtype=np.float64)
    return x - np.logaddexp.reduce(x, axis=-1, keepdims=True)


def cross_entropy_rows_ref(logits, labels, ignore_index=-100):
    out = []
    for row, label in zip(np.asarray(logits, dtype=np.float64), labels):
        if label == ignore_index:
            out.append(0.0)
            continue
        m = max(row)
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        out.append(lse - row[label])
    return np.array(out)
