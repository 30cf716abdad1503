#!/usr/bin/env python3
"""The CPU row kernels of this checkout against those of another commit, side by side in one process: each
entry point called directly into a preallocated output (no Python around it), the two builds alternating over
the rounds; prints the speed ratio this/other per op and width (above 1: this checkout is faster).

    python scripts/compare_cpu_kernels.py --against HEAD~3
    python scripts/compare_cpu_kernels.py --against 1f492e0 --rounds 7 --threads 2

Why in one process: the machine drifts by 10-50% within minutes, so two runs minutes apart cannot tell a 10%
change from the noise; calls alternating within seconds can.
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gpunet import cpu_kernels

ROOT = Path(__file__).resolve().parents[1]
SHAPES = [(16384, 100), (4096, 1000), (2048, 4000), (1024, 10000), (256, 100000)]
OPS = ["softmax_forward", "log_softmax_forward", "softmax_backward", "log_softmax_backward"]


def kernels_at(ref: str, folder: Path):
    """The CPU kernels of commit ``ref``, built from its sources in ``folder``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "gpunet/cpu_kernels"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return cpu_kernels.build(cpu_kernels.chosen_isa(), folder / "gpunet" / "cpu_kernels")


def median_time(fn, calls: int) -> float:
    fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="a commit (or any git ref) to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=11, help="calls timed per round (their median counts)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes", type=lambda v: [tuple(int(n) for n in s.split("x")) for s in v.split(",")],
                        default=SHAPES, help="rows x cols, comma-separated (default: the bench's widths)")
    args = parser.parse_args()
    this = cpu_kernels.build(cpu_kernels.chosen_isa())
    with tempfile.TemporaryDirectory() as tmp:
        other = kernels_at(args.against, Path(tmp))
    print(f"CPU kernels ({cpu_kernels.chosen_isa()}, {args.threads} threads), this checkout / {args.against}: "
          f"speed ratio, median of {args.rounds} alternating rounds")
    print(f"{'C':>7} {'rows':>6}  " + "  ".join(f"{op:>22}" for op in OPS))
    for rows, cols in args.shapes:
        rng = np.random.default_rng(0)
        x = (rng.standard_normal((rows, cols)) * 3).astype(np.float32)
        dy = rng.standard_normal((rows, cols)).astype(np.float32)
        y, out = np.empty_like(x), np.empty_like(x)
        this.function("softmax_forward", np.float32)(x, y, rows, cols, args.threads)
        cells = []
        for op in OPS:
            inputs = (x,) if op.endswith("forward") else (y, dy)
            ours, theirs = this.function(op, np.float32), other.function(op, np.float32)
            a, b = [], []
            for r in range(args.rounds):
                for fn, times in ((ours, a), (theirs, b)) if r % 2 == 0 else ((theirs, b), (ours, a)):
                    times.append(median_time(lambda: fn(*inputs, out, rows, cols, args.threads), args.calls))
            cells.append(f"{statistics.median(b) / statistics.median(a):21.2f}x")
        print(f"{cols:7d} {rows:6d}  " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
