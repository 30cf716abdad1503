#!/usr/bin/env python3
"""Where the host time of a training step goes: cProfile over many steps of gpunet's MLP on one device.

    python scripts/profile_step.py --device cuda --batch 128 [--steps 300] [--top 25]

On a GPU a small network's step is bound by the host (Python and launch calls), not by the GPU: this prints the
functions with the most own time per step, and the step's wall time.
"""
import argparse
import cProfile
import pstats
import sys
import time

import numpy as np

import gpunet
from gpunet import nn, optim


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="784,512,512,10")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    dev = gpunet.device(args.device)
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(0)
    xb = dev.asarray(rng.standard_normal((args.batch, sizes[0])).astype(np.float32))
    yb = dev.asarray(rng.integers(0, sizes[-1], args.batch))
    model = nn.mlp(sizes, "relu", seed=0, dtype="float32", device=dev)
    loss_fn = nn.SoftmaxCrossEntropy(check_labels=False, device=dev)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def steps(n):
        for _ in range(n):
            loss_fn.forward(model.forward(xb), yb)
            model.backward(loss_fn.backward())
            opt.step()
        dev.synchronize()
    steps(20)  # warm-up: kernel builds, memory pool
    start = time.perf_counter()
    steps(args.steps)
    wall = (time.perf_counter() - start) / args.steps
    profile = cProfile.Profile()
    profile.enable()
    steps(args.steps)
    profile.disable()
    print(f"{dev.name}: {sizes} batch {args.batch}: {wall * 1e6:.0f} us per step (without the profiler)")
    pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
