#!/usr/bin/env python3
"""Run each row op once on the GPU at a few shapes, for a profiler to look at (nothing is timed here):

    ncu --section SpeedOfLight --section WarpStateStats python3 scripts/kernel_probe.py --cols 1000,10000
"""
import argparse
import sys

import numpy as np

import gpunet
from gpunet import ops

ELEMENTS = 2**26  # as scripts/bench/ on a GPU: 256 MB of float32, past the L2 cache


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cols", default="1000,10000")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    dev = gpunet.device(args.device)
    for cols in (int(c) for c in args.cols.split(",")):
        rows = ELEMENTS // cols
        rng = np.random.default_rng(cols)
        x = dev.asarray((rng.standard_normal((rows, cols)) * 3).astype(np.float32))
        dy = dev.asarray(rng.standard_normal((rows, cols)).astype(np.float32))
        labels = dev.asarray(rng.integers(0, cols, rows))
        y = ops.softmax(x)
        ops.log_softmax(x)
        ops.softmax_backward(y, dy)
        ops.softmax_cross_entropy_with_grad(x, labels, check_labels=False)
        dev.synchronize()
        print(f"ran ({rows}, {cols})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
