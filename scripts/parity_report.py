#!/usr/bin/env python3
"""Run every op forward and backward on every available device and print, per op, the largest absolute and
relative difference from the CPU (NumPy) result, for a person to read.

    python scripts/parity_report.py            # cpu vs sim, and cpu vs cuda where a GPU is present
    python scripts/parity_report.py --devices cuda --dtypes float16,float32,float64
"""
import argparse
import sys
import time

import numpy as np

import gpunet
from gpunet import ops
from gpunet.devices import probe_cuda

SHAPES = [(1, 1), (3, 10), (5, 33), (3, 1000), (2, 1025), (2, 5000), (1, 20000)]


def cases(rng, rows, cols, dtype):
    x = (rng.standard_normal((rows, cols)) * 4).astype(dtype)
    dy = rng.standard_normal((rows, cols)).astype(dtype)
    labels = rng.integers(0, cols, rows)
    y = ops.softmax(x, device="cpu")
    logy = ops.log_softmax(x, device="cpu")
    probs = ops.softmax_cross_entropy(x, labels, device="cpu")[1]
    return {
        "softmax": lambda d: ops.softmax(d.asarray(x), device=d),
        "softmax_backward": lambda d: ops.softmax_backward(d.asarray(y), d.asarray(dy), device=d),
        "log_softmax": lambda d: ops.log_softmax(d.asarray(x), device=d),
        "log_softmax_backward": lambda d: ops.log_softmax_backward(d.asarray(logy), d.asarray(dy), device=d),
        "cross_entropy loss": lambda d: ops.softmax_cross_entropy(d.asarray(x), d.asarray(labels), reduction="none",
                                                                  device=d)[0],
        "cross_entropy probs": lambda d: ops.softmax_cross_entropy(d.asarray(x), d.asarray(labels), device=d)[1],
        "cross_entropy backward": lambda d: ops.softmax_cross_entropy_backward(d.asarray(probs), d.asarray(labels),
                                                                               device=d),
        "relu_backward": lambda d: ops.relu_backward(d.asarray(ops.relu(x, device="cpu")), d.asarray(dy), device=d),
        "tanh": lambda d: ops.tanh(d.asarray(x), device=d),
        "sigmoid": lambda d: ops.sigmoid(d.asarray(x), device=d),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--devices", default="sim,cuda", help="compared with the CPU, of those present")
    args = parser.parse_args()
    wanted = args.devices.split(",")
    devices = [d for d in ("sim", "cuda") if d in wanted and (d != "cuda" or probe_cuda(0)[0] is not None)]
    cpu = gpunet.device("cpu")
    print(f"reference: cpu (NumPy {np.__version__}); compared: {', '.join(devices)}; shapes {SHAPES}")
    print(f"{'pair':10} {'dtype':8} {'op':24} {'max abs err':>12} {'max rel err':>12} {'seconds':>8}")
    for name in devices:
        dev = gpunet.device(name)
        for dtype in args.dtypes.split(","):
            worst: dict = {}
            for rows, cols in SHAPES:
                rng = np.random.default_rng(rows * 1000 + cols)
                for op, run in cases(rng, rows, cols, dtype).items():
                    start = time.perf_counter()
                    got = dev.to_numpy(run(dev)).astype(np.float64)
                    seconds = time.perf_counter() - start
                    want = cpu.to_numpy(run(cpu)).astype(np.float64)
                    err = np.abs(got - want)
                    rel = err / np.maximum(np.abs(want), np.finfo(dtype).tiny)
                    a, r, s = worst.get(op, (0.0, 0.0, 0.0))
                    worst[op] = (max(a, float(err.max())), max(r, float(rel[np.abs(want) > 1e-30].max(initial=0))),
                                 s + seconds)
            for op, (a, r, s) in worst.items():
                print(f"cpu-{name:6} {dtype:8} {op:24} {a:12.3e} {r:12.3e} {s:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
