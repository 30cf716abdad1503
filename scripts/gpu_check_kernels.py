#!/usr/bin/env python3
"""The GPU check's kernel program (scripts/gpu_check.py runs it, and runs it again under compute-sanitizer):

1. every kernel of every module in ``kernels/`` compiles and loads on the device, in every dtype;
2. every op of scripts/parity_report.py runs on the device at its shapes, and each output has the CPU's NaN and
   inf pattern (the largest differences are printed; the per-value judgement is tests/ops/test_parity.py's);
3. a training step with each optimizer (SGD with momentum, Adam, AdamW), so that their kernels launch too.

    python scripts/gpu_check_kernels.py --device cuda [--dtypes float32] [--max-cols 1000] [--no-pool]

``--no-pool`` turns CuPy's memory pools off first, so that compute-sanitizer's memcheck sees every allocation's
own bounds (inside a pooled block an overrun lands in memory the pool owns, and memcheck cannot see it).
Exit status 1 if anything failed to compile or load, raised, or disagreed in its NaN/inf pattern.
"""
import argparse
import sys
import time

import numpy as np

import gpunet
from gpunet import nn, optim
from gpunet.cuda.source import DTYPES, modules, signatures

from parity_report import SHAPES, cases  # beside this file: scripts/ is sys.path[0]


def pools_off(dev) -> str:
    """CuPy allocates and frees straight through the driver from now on (the stand-in has no pools)."""
    cuda = getattr(dev.cupy, "cuda", None)
    if not hasattr(cuda, "set_allocator"):
        return "no memory pool to turn off (a simulated GPU)"
    cuda.set_allocator(None)
    cuda.set_pinned_memory_allocator(None)
    return "CuPy's device and pinned memory pools are off"


def compile_everything(dev, dtypes) -> list:
    """Load every kernel of every module in each dtype; the (module, dtype, error) that failed."""
    failed, count, start = [], 0, time.perf_counter()
    for module in modules():
        for dtype in dtypes:
            for kernel in signatures(module):
                try:
                    dev.launcher.kernel(module, kernel, dtype)
                    count += 1
                except Exception as exc:  # noqa: BLE001 - each failure is named, and the others still tried
                    failed.append(f"{module}.cu {kernel} {dtype}: {type(exc).__name__}: {exc}")
    print(f"compiled and loaded {count} kernels ({len(modules())} modules x {len(dtypes)} dtypes) in "
          f"{time.perf_counter() - start:.1f} s; {len(failed)} failed")
    return count, failed


def same_pattern(got, want) -> bool:
    return bool(np.array_equal(np.isnan(got), np.isnan(want)) and
                np.array_equal(np.where(np.isinf(got), got, 0), np.where(np.isinf(want), want, 0)))


def run_ops(dev, dtypes, max_cols) -> list:
    """parity_report's cases on ``dev`` against the CPU: what raised or has another NaN/inf pattern."""
    cpu, failed = gpunet.device("cpu"), []
    shapes = [s for s in SHAPES if s[1] <= max_cols]
    print(f"{'dtype':8} {'op':24} {'max abs err':>12} {'max rel err':>12}   shapes {shapes}")
    for dtype in dtypes:
        worst: dict = {}
        for rows, cols in shapes:
            rng = np.random.default_rng(rows * 1000 + cols)
            for op, run in cases(rng, rows, cols, dtype).items():
                try:
                    got = dev.to_numpy(run(dev)).astype(np.float64)
                except Exception as exc:  # noqa: BLE001
                    failed.append(f"{op} {dtype} ({rows}, {cols}): {type(exc).__name__}: {exc}")
                    continue
                want = cpu.to_numpy(run(cpu)).astype(np.float64)
                if not same_pattern(got, want):
                    failed.append(f"{op} {dtype} ({rows}, {cols}): NaN/inf pattern differs from the CPU's")
                finite = np.isfinite(want) & np.isfinite(got)
                err = np.abs(got - want)[finite]
                rel = err / np.maximum(np.abs(want[finite]), np.finfo(dtype).tiny)
                a, r = worst.get(op, (0.0, 0.0))
                worst[op] = (max(a, float(err.max(initial=0))), max(r, float(rel.max(initial=0))))
        for op, (a, r) in worst.items():
            print(f"{dtype:8} {op:24} {a:12.3e} {r:12.3e}")
    return failed


def train_steps(dev) -> list:
    """Two steps of a small MLP with each optimizer on ``dev`` and on the CPU: the weights must be finite."""
    failed = []
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 20)).astype(np.float32), rng.integers(0, 10, 64)
    makers = {"sgd": lambda p: optim.SGD(p, lr=0.1, momentum=0.9), "adam": lambda p: optim.Adam(p, lr=1e-2),
              "adamw": lambda p: optim.AdamW(p, lr=1e-2)}
    for name, make in makers.items():
        weights = {}
        for d in (dev, gpunet.device("cpu")):
            model = nn.mlp([20, 32, 10], "relu", seed=1, device=d)
            loss, opt = nn.SoftmaxCrossEntropy(device=d), make(model.parameters())
            xb, yb = d.asarray(x), d.asarray(y)
            for _ in range(2):
                loss.forward(model.forward(xb), yb)
                model.backward(loss.backward())
                opt.step()
            weights[d.name] = {k: d.to_numpy(v) for k, v in model.state_dict().items()}
        ours, cpu = weights[dev.name], weights["cpu"]
        worst = max(float(np.max(np.abs(ours[k] - cpu[k]) / np.maximum(np.abs(cpu[k]), 1e-30))) for k in cpu)
        finite = all(np.isfinite(v).all() for v in ours.values())
        print(f"train step {name:6} weights finite: {finite}; largest relative difference from the CPU {worst:.2e}")
        if not finite:
            failed.append(f"training step with {name}: non-finite weights on {dev.name}")
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help="default: every dtype the kernels support")
    parser.add_argument("--max-cols", type=int, default=max(c for _, c in SHAPES), help="widest row to run")
    parser.add_argument("--no-pool", action="store_true", help="CuPy's memory pools off (for memcheck)")
    args = parser.parse_args()
    dev, dtypes = gpunet.device(args.device), args.dtypes.split(",")
    gpunet.set_default_device(dev)
    print(f"device {dev.name}: {dev.describe()}")
    if args.no_pool:
        print(pools_off(dev))
    loaded, failed = compile_everything(dev, dtypes)
    failed += run_ops(dev, dtypes, args.max_cols) + train_steps(dev)
    dev.synchronize()
    for line in failed:
        print(f"FAILED {line}")
    print(f"kernels: {loaded} loaded in {','.join(dtypes)}; "
          f"{'every op ran with the CPU NaN/inf pattern' if not failed else f'{len(failed)} FAILURES'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
