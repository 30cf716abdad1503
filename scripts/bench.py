#!/usr/bin/env python3
"""Side-by-side benchmark: gpunet's softmax family and MLP training against PyTorch (and a memory-copy roofline),
on every device present. Prints ratios measured in the same run and writes JSON.

    python scripts/bench.py                 # full run (a few minutes on 2 cores)
    python scripts/bench.py --quick         # smaller shapes, fewer repeats
    python scripts/bench.py --json out.json

(a) row ops: GB/s over the minimum bytes each op must move, as a fraction of a same-size copy on that device,
    and as a ratio to PyTorch's same op; (b) one training epoch of 60000 MNIST samples for 784-512-512-10 ReLU
    (batch 128 and 1024) and 784-100-10 tanh (batch 64), samples/s, gpunet against PyTorch, same network, same
    optimizer (SGD, momentum 0.9), same threads. On a GPU it also times naive CuPy, uses CUDA events after a
    warm-up, times a whole training step and counts gpunet's kernel launches in it.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import gpunet  # noqa: E402
from gpunet import nn, ops, optim  # noqa: E402
from gpunet.backend import probe_cuda  # noqa: E402
from gpunet.data import Batches, load_mnist  # noqa: E402

ROW_SHAPES = [(65536, 10), (16384, 100), (4096, 1000), (1024, 10000), (256, 100000)]
QUICK_SHAPES = [(16384, 10), (4096, 100), (1024, 1000), (256, 10000)]
MLPS = [("784-512-512-10 relu", [784, 512, 512, 10], "relu", 128),
        ("784-512-512-10 relu", [784, 512, 512, 10], "relu", 1024),
        ("784-100-10 tanh", [784, 100, 10], "tanh", 64)]


# ---- timing ------------------------------------------------------------------------------------------------------
def host_timer(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cuda_timer(cupy):
    def timer(fn, repeats):
        fn()
        cupy.cuda.Device().synchronize()
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        times = []
        for _ in range(repeats):
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
        return statistics.median(times)
    return timer


# ---- (a) row ops -----------------------------------------------------------------------------------------------
def row_op_cases(dev, x, dy, labels):
    """name -> (gpunet thunk, bytes it must move at least)."""
    y = ops.softmax(x, device=dev)
    logy = ops.log_softmax(x, device=dev)
    nbytes = x.size * x.dtype.itemsize

    def cross_entropy_step():
        _, probs = ops.softmax_cross_entropy(x, labels, device=dev)
        return ops.softmax_cross_entropy_backward(probs, labels, device=dev)
    return {
        "softmax fwd": (lambda: ops.softmax(x, device=dev), 2 * nbytes),
        "softmax bwd": (lambda: ops.softmax_backward(y, dy, device=dev), 3 * nbytes),
        "log_softmax fwd": (lambda: ops.log_softmax(x, device=dev), 2 * nbytes),
        "log_softmax bwd": (lambda: ops.log_softmax_backward(logy, dy, device=dev), 3 * nbytes),
        # loss and gradient w.r.t. the logits: a fused implementation reads x once and writes the gradient once
        "cross_entropy f+b": (cross_entropy_step, 2 * nbytes),
    }


def torch_cases(torch, device, x_np, dy_np, labels_np):
    x = torch.from_numpy(x_np).to(device)
    dy = torch.from_numpy(dy_np).to(device)
    labels = torch.from_numpy(labels_np).to(device)
    y = torch.softmax(x, 1)
    logy = torch.log_softmax(x, 1)
    xg = x.clone().requires_grad_(True)
    aten = torch.ops.aten
    return {
        "softmax fwd": lambda: torch.softmax(x, 1),
        "softmax bwd": lambda: aten._softmax_backward_data(dy, y, 1, x.dtype),
        "log_softmax fwd": lambda: torch.log_softmax(x, 1),
        "log_softmax bwd": lambda: aten._log_softmax_backward_data(dy, logy, 1, x.dtype),
        "cross_entropy f+b": lambda: torch.autograd.grad(torch.nn.functional.cross_entropy(xg, labels), xg),
    }


def naive_cupy_cases(cupy, x, dy, labels):
    def softmax(v):
        e = cupy.exp(v - v.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    y = softmax(x)
    return {"softmax fwd": lambda: softmax(x), "softmax bwd": lambda: y * (dy - (dy * y).sum(axis=1, keepdims=True))}


def bench_row_ops(devices, shapes, repeats, torch, results):
    print("\n(a) row ops, float32: GB/s over the minimum bytes; 'copy' = that over a same-size device copy")
    header = f"{'device':8} {'op':18} {'shape':>13} {'gpunet GB/s':>11} {'of copy':>8}"
    header += f" {'torch GB/s':>10} {'gpunet/torch':>12}" if torch else ""
    print(header)
    for dev, timer in devices:
        xp = dev.xp
        for rows, cols in shapes:
            rng = np.random.default_rng(rows + cols)
            x_np = (rng.standard_normal((rows, cols)) * 3).astype(np.float32)  # never time on zeros
            dy_np = rng.standard_normal((rows, cols)).astype(np.float32)
            labels_np = rng.integers(0, cols, rows)
            x, dy, labels = dev.asarray(x_np), dev.asarray(dy_np), dev.asarray(labels_np)
            dst = xp.empty_like(x)
            copy_s = timer(lambda: xp.copyto(dst, x), repeats)
            copy_gbs = 2 * x.nbytes / copy_s / 1e9
            torch_ops = None
            if torch is not None:
                torch_ops = torch_cases(torch, "cuda" if dev.name.startswith("cuda") else "cpu", x_np, dy_np,
                                        labels_np)
            for name, (run, nbytes) in row_op_cases(dev, x, dy, labels).items():
                seconds = timer(run, repeats)
                gbs = nbytes / seconds / 1e9
                row = {"device": dev.name, "op": name, "shape": [rows, cols], "gpunet_gbs": gbs,
                       "copy_gbs": copy_gbs, "fraction_of_copy": gbs / copy_gbs}
                line = f"{dev.name:8} {name:18} {str((rows, cols)):>13} {gbs:11.2f} {gbs / copy_gbs:8.0%}"
                if torch_ops is not None:
                    torch_s = timer(torch_ops[name], repeats)
                    row["torch_gbs"] = nbytes / torch_s / 1e9
                    row["gpunet_over_torch"] = torch_s / seconds
                    line += f" {row['torch_gbs']:10.2f} {row['gpunet_over_torch']:11.2f}x"
                if dev.name.startswith("cuda"):
                    naive = naive_cupy_cases(xp, x, dy, labels).get(name)
                    if naive is not None:
                        row["naive_cupy_over_gpunet"] = timer(naive, repeats) / seconds
                        line += f"  (naive CuPy {row['naive_cupy_over_gpunet']:.1f}x slower)"
                print(line)
                results["row_ops"].append(row)


# ---- (b) training ------------------------------------------------------------------------------------------------
def gpunet_epoch(dev, sizes, activation, batch, x, y, epochs_timed=1):
    model = nn.mlp(sizes, activation, seed=0, device=dev)
    loss_fn = nn.SoftmaxCrossEntropy(device=dev)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = Batches(x, y, batch, seed=0, device=dev)

    def epoch():
        for xb, yb in batches.epoch(0):
            loss_fn.forward(model.forward(xb), yb)
            model.backward(loss_fn.backward())
            opt.step()
        dev.synchronize()
    epoch()  # warm-up (first touches, kernel builds)
    start = time.perf_counter()
    for _ in range(epochs_timed):
        epoch()
    return len(x) * epochs_timed / (time.perf_counter() - start)


def torch_epoch(torch, device, sizes, activation, batch, x_np, y_np, epochs_timed=1):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU() if activation == "relu" else torch.nn.Tanh())
    model = torch.nn.Sequential(*layers).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def epoch():
        order = torch.randperm(len(x), device=device)
        for s in range(0, len(x), batch):
            idx = order[s:s + batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
    epoch()
    start = time.perf_counter()
    for _ in range(epochs_timed):
        epoch()
    return len(x) * epochs_timed / (time.perf_counter() - start)


def count_launches(dev, sizes, activation, batch, x, y):
    """gpunet's own kernel launches in one training step (matrix products go to cuBLAS through xp.matmul)."""
    counted = {"n": 0}
    original = dev.kernels.launch

    def counting(*args, **kwargs):
        counted["n"] += 1
        return original(*args, **kwargs)
    model = nn.mlp(sizes, activation, seed=0, device=dev)
    loss_fn = nn.SoftmaxCrossEntropy(device=dev)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    xb, yb = dev.asarray(x[:batch]), dev.asarray(y[:batch])
    dev.kernels.launch = counting
    try:
        loss_fn.forward(model.forward(xb), yb)
        model.backward(loss_fn.backward())
        opt.step()
    finally:
        dev.kernels.launch = original
    return counted["n"]


def bench_training(devices, torch, epochs_timed, results):
    x, y, _, _ = load_mnist()
    print(f"\n(b) training, one epoch of {len(x)} MNIST samples after a warm-up epoch, SGD momentum 0.9, samples/s")
    print(f"{'device':8} {'network':22} {'batch':>5} {'gpunet':>9} {'torch':>9} {'gpunet/torch':>12}")
    for dev, _ in devices:
        for name, sizes, activation, batch in MLPS:
            ours = gpunet_epoch(dev, sizes, activation, batch, x, y, epochs_timed)
            row = {"device": dev.name, "network": name, "batch": batch, "gpunet_samples_s": ours}
            line = f"{dev.name:8} {name:22} {batch:5d} {ours:9.0f}"
            if torch is not None:
                theirs = torch_epoch(torch, "cuda" if dev.name.startswith("cuda") else "cpu", sizes, activation, batch,
                                     x, y, epochs_timed)
                row.update(torch_samples_s=theirs, gpunet_over_torch=ours / theirs)
                line += f" {theirs:9.0f} {ours / theirs:11.2f}x"
            if dev.kernels is not None:
                row["kernel_launches_per_step"] = count_launches(dev, sizes, activation, batch, x, y)
                line += f"  ({row['kernel_launches_per_step']} gpunet kernel launches per step)"
            print(line)
            results["training"].append(row)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="bench.json")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
        print("PyTorch not installed: gpunet alone (pip install torch for the side-by-side columns)")
    devices = [(gpunet.device("cpu"), host_timer)]
    cupy, reason = probe_cuda(0)
    if cupy is not None:
        devices.append((gpunet.device("cuda"), cuda_timer(cupy)))
    else:
        print(f"no GPU: {reason}")
    results = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                           "cpus": os.cpu_count(), "numpy": np.__version__,
                           "torch": getattr(torch, "__version__", None), "date": time.strftime("%Y-%m-%d")},
               "row_ops": [], "training": []}
    print(f"gpunet bench, {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, NumPy {np.__version__}, torch {results['machine']['torch']}")
    bench_row_ops(devices, QUICK_SHAPES if args.quick else ROW_SHAPES, 5 if args.quick else 15, torch, results)
    if not args.skip_training:
        bench_training(devices, torch, 1, results)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
