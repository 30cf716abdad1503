#!/usr/bin/env python3
"""Side-by-side benchmark: gpunet's softmax family and MLP training against PyTorch (and a memory-copy roofline),
on every device present. Prints ratios measured in the same run and writes JSON.

    python scripts/bench.py                 # full run (a few minutes on 2 cores)
    python scripts/bench.py --quick         # smaller shapes, fewer repeats
    python scripts/bench.py --json out.json
    python scripts/bench.py --nproc 2       # data parallelism: 1 process against 2 MPI ranks (75 s on 2 cores)

(a) row ops: GB/s over the minimum bytes each op must move, as a fraction of a same-size copy on that device,
    and as a ratio to PyTorch's same op; (b) one training epoch of 60000 MNIST samples for 784-512-512-10 ReLU
    (batch 128 and 1024) and 784-100-10 tanh (batch 64), samples/s, gpunet against PyTorch, same network, same
    optimizer (SGD, momentum 0.9), same threads. On a GPU it also times naive CuPy, uses CUDA events after a
    warm-up, times a whole training step and counts gpunet's kernel launches in it.
(c) with --nproc N, only data parallelism on the CPU: 784-512-512-10 ReLU with Adam at global batches 128 and
    1024, one process on all host threads against N ranks of ``mpiexec -n N python -m mpi4py`` with cores // N
    threads each (the environment ``gpunet train --nproc N`` gives its ranks), samples/s over a fixed number of
    steps after a warm-up, and the allreduce's seconds per step and share of a step as DataParallel records them.
"""
import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import gpunet
from gpunet import nn, ops, optim
from gpunet.devices import probe_cuda
from gpunet.data import Batches, load_mnist
from gpunet.devices.host import host_blas
from gpunet.info import collect as machine_info, step_products

ROW_SHAPES = [(65536, 10), (16384, 100), (4096, 1000), (1024, 10000), (256, 100000)]
QUICK_SHAPES = [(16384, 10), (4096, 100), (1024, 1000), (256, 10000)]
# On a GPU the same widths with more rows, 2**26 elements (256 MB float32) each: past any L2 cache (50 MB on an
# H100), so that repeated runs over one buffer measure device memory, not the cache.
GPU_ELEMENTS = 2**26
STEP_REPEATS = 50
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


def event_timer(new_event, elapsed_seconds, synchronize, inner=10):
    """GPU timing with CUDA events after a warm-up (CuPy's or PyTorch's events alike). Each sample spans
    ``inner`` calls queued back to back, so the host's launch time overlaps the GPU's work as in a real loop,
    instead of the GPU idling between a start event and a launch that the host has not yet made."""
    def timer(fn, repeats):
        fn()
        synchronize()
        start, stop = new_event(), new_event()
        times = []
        for _ in range(repeats):
            start.record()
            for _ in range(inner):
                fn()
            stop.record()
            stop.synchronize()
            times.append(elapsed_seconds(start, stop) / inner)
        return statistics.median(times)
    return timer


def cuda_timer(cupy):
    return event_timer(cupy.cuda.Event, lambda a, b: cupy.cuda.get_elapsed_time(a, b) / 1e3,
                       lambda: cupy.cuda.Device().synchronize())


def torch_cuda_timer(torch):
    return event_timer(lambda: torch.cuda.Event(enable_timing=True), lambda a, b: a.elapsed_time(b) / 1e3,
                       torch.cuda.synchronize)


# ---- (a) row ops -----------------------------------------------------------------------------------------------
def row_op_cases(dev, x, dy, labels):
    """name -> (a thunk returning a new array, a thunk writing into a preallocated one), for gpunet (the bytes
    each must move at least are MIN_BYTES per element)."""
    y = ops.softmax(x, device=dev)
    logy = ops.log_softmax(x, device=dev)
    out = dev.xp.empty_like(x)
    return {
        "softmax fwd": (lambda: ops.softmax(x, device=dev), lambda: ops.softmax(x, device=dev, out=out)),
        "softmax bwd": (lambda: ops.softmax_backward(y, dy, device=dev),
                        lambda: ops.softmax_backward(y, dy, device=dev, out=out)),
        "log_softmax fwd": (lambda: ops.log_softmax(x, device=dev), lambda: ops.log_softmax(x, device=dev, out=out)),
        "log_softmax bwd": (lambda: ops.log_softmax_backward(logy, dy, device=dev),
                            lambda: ops.log_softmax_backward(logy, dy, device=dev, out=out)),
        # loss and gradient w.r.t. the logits in one pass, as the training layer runs it (labels checked up front)
        "cross_entropy f+b": (
            lambda: ops.softmax_cross_entropy_with_grad(x, labels, check_labels=False, device=dev),
            lambda: ops.softmax_cross_entropy_with_grad(x, labels, check_labels=False, device=dev, out=out)),
    }


def torch_cases(torch, device, x_np, dy_np, labels_np):
    """The same for PyTorch: its public ops return new tensors, ATen's ``.out`` forms write a given one
    (cross-entropy through autograd has none)."""
    x = torch.from_numpy(x_np).to(device)
    dy = torch.from_numpy(dy_np).to(device)
    labels = torch.from_numpy(labels_np).to(device)
    y = torch.softmax(x, 1)
    logy = torch.log_softmax(x, 1)
    xg = x.clone().requires_grad_(True)
    out = torch.empty_like(x)
    aten = torch.ops.aten
    return {
        "softmax fwd": (lambda: torch.softmax(x, 1), lambda: aten._softmax.out(x, 1, False, out=out)),
        "softmax bwd": (lambda: aten._softmax_backward_data(dy, y, 1, x.dtype),
                        lambda: aten._softmax_backward_data.out(dy, y, 1, x.dtype, grad_input=out)),
        "log_softmax fwd": (lambda: torch.log_softmax(x, 1), lambda: aten._log_softmax.out(x, 1, False, out=out)),
        "log_softmax bwd": (lambda: aten._log_softmax_backward_data(dy, logy, 1, x.dtype),
                            lambda: aten._log_softmax_backward_data.out(dy, logy, 1, x.dtype, out=out)),
        "cross_entropy f+b": (lambda: torch.autograd.grad(torch.nn.functional.cross_entropy(xg, labels), xg), None),
    }


def naive_cupy_cases(cupy, x, dy, labels):
    def softmax(v):
        e = cupy.exp(v - v.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    y = softmax(x)
    return {"softmax fwd": (lambda: softmax(x), None),
            "softmax bwd": (lambda: y * (dy - (dy * y).sum(axis=1, keepdims=True)), None)}


def rows_worker(framework, device_name, shapes, repeats):
    """Time every row op of one framework on one device, into a new array and into a preallocated one; returns
    rows of {op, shape, seconds, out_seconds (None without an out form), copy_seconds, new_copy_seconds}."""
    out = []
    if framework == "torch":
        import torch
        timer = host_timer if device_name == "cpu" else torch_cuda_timer(torch)
    else:
        dev = gpunet.device(device_name)
        timer = host_timer if device_name == "cpu" else cuda_timer(dev.xp)
    if device_name != "cpu":
        shapes = [(max(rows, GPU_ELEMENTS // cols), cols) for rows, cols in shapes]
    for rows, cols in shapes:
        rng = np.random.default_rng(rows + cols)
        x_np = (rng.standard_normal((rows, cols)) * 3).astype(np.float32)  # never time on zeros
        dy_np = rng.standard_normal((rows, cols)).astype(np.float32)
        labels_np = rng.integers(0, cols, rows)
        if framework == "torch":
            target = "cpu" if device_name == "cpu" else "cuda"
            cases = torch_cases(torch, target, x_np, dy_np, labels_np)
            src = torch.from_numpy(x_np).to(target)
            dst = torch.empty_like(src)
            copy_s = timer(lambda: dst.copy_(src), repeats)
            new_copy_s = timer(lambda: src.clone(), repeats)
        else:
            xp = dev.xp
            x, dy, labels = dev.asarray(x_np), dev.asarray(dy_np), dev.asarray(labels_np)
            dst = xp.empty_like(x)
            copy_s = timer(lambda: xp.copyto(dst, x), repeats)
            # An op that returns a new array is compared with this copy: on a CPU, past the last-level cache, the
            # fresh pages' faults and zeroing cost as much as the op's own traffic, and no op that returns a new
            # array can beat this rate (on a GPU the memory pool hands back a block it had: about the same).
            new_copy_s = timer(lambda: x.copy(), repeats)
            if framework == "cupy-naive":
                cases = naive_cupy_cases(xp, x, dy, labels)
            else:
                cases = row_op_cases(dev, x, dy, labels)
        for name, (new_fn, out_fn) in cases.items():
            out.append({"op": name, "shape": [rows, cols], "seconds": timer(new_fn, repeats),
                        "out_seconds": None if out_fn is None else timer(out_fn, repeats),
                        "copy_seconds": copy_s, "new_copy_seconds": new_copy_s,
                        "bytes": MIN_BYTES[name] * rows * cols * 4})
    return out


MIN_BYTES = {"softmax fwd": 2, "softmax bwd": 3, "log_softmax fwd": 2, "log_softmax bwd": 3,
             "cross_entropy f+b": 2}


def print_row_ops(device_name, ours, others, results):
    """``others``: framework -> rows of the same ops and shapes. Like is compared with like: an op returning a
    new array with a copy into a new array and with the other framework's op returning one; an op writing a
    preallocated array (``out=``) with a copy into an existing array and with the other's ``.out`` form."""
    print(f"\n(a) row ops on {device_name}, float32: GB/s over the minimum bytes each op must move, median over the "
          "rounds' medians. 'new': each op returns a new array, 'of copy' = over a copy into a new array; 'out': "
          "each writes a preallocated array, 'of copy' = over a copy into an existing array")
    columns = list(others)
    print(f"{'':32} {'--- new ---':>19}" + "".join(f" {'':>9}" for _ in columns) + f" {'--- out ---':>19}")
    print(f"{'op':18} {'shape':>13} {'gpunet GB/s':>11} {'of copy':>7}"
          + "".join(f" {'/' + c:>9}" for c in columns) + f" {'gpunet GB/s':>11} {'of copy':>7}"
          + "".join(f" {'/' + c:>9}" for c in columns))
    index = {name: {(r["op"], tuple(r["shape"])): r for r in rows} for name, rows in others.items()}

    def ratio(seconds, other_seconds):
        return None if seconds is None or other_seconds is None else other_seconds / seconds

    def fmt(value, width, spec, unit=""):
        return f"{'-':>{width + len(unit)}}" if value is None else f"{value:{width}{spec}}{unit}"
    for r in ours:
        copy_gbs = 2 * r["bytes"] / MIN_BYTES[r["op"]] / r["copy_seconds"] / 1e9
        new_copy_gbs = 2 * r["bytes"] / MIN_BYTES[r["op"]] / r["new_copy_seconds"] / 1e9
        gbs = r["bytes"] / r["seconds"] / 1e9
        out_gbs = None if r.get("out_seconds") is None else r["bytes"] / r["out_seconds"] / 1e9
        row = {"device": device_name, "op": r["op"], "shape": r["shape"], "gpunet_gbs": gbs,
               "new_copy_gbs": new_copy_gbs, "fraction_of_new_copy": gbs / new_copy_gbs,
               "gpunet_out_gbs": out_gbs, "copy_gbs": copy_gbs,
               "fraction_of_copy": None if out_gbs is None else out_gbs / copy_gbs}
        new_part, out_part = "", ""
        for c in columns:
            other = index[c].get((r["op"], tuple(r["shape"])))
            row[f"{c}_gbs"] = None if other is None else other["bytes"] / other["seconds"] / 1e9
            row[f"gpunet_over_{c}"] = ratio(r["seconds"], None if other is None else other["seconds"])
            row[f"gpunet_out_over_{c}_out"] = ratio(r.get("out_seconds"),
                                                    None if other is None else other.get("out_seconds"))
            new_part += f" {fmt(row[f'gpunet_over_{c}'], 8, '.2f', 'x')}"
            out_part += f" {fmt(row[f'gpunet_out_over_{c}_out'], 8, '.2f', 'x')}"
        print(f"{r['op']:18} {str(tuple(r['shape'])):>13} {gbs:11.2f} {gbs / new_copy_gbs:7.0%}{new_part}"
              f" {fmt(out_gbs, 11, '.2f')} {fmt(row['fraction_of_copy'], 7, '.0%')}{out_part}")
        results["row_ops"].append(row)


# ---- (b) training ------------------------------------------------------------------------------------------------
def gpunet_trainer(dev, sizes, activation):
    """One SGD step of gpunet's MLP as a function of a batch already on ``dev``."""
    model = nn.mlp(sizes, activation, seed=0, device=dev)
    loss_fn = nn.SoftmaxCrossEntropy(device=dev)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(xb, yb):
        loss_fn.forward(model.forward(xb), yb)
        model.backward(loss_fn.backward())
        opt.step()
    return step


def gpunet_epoch(dev, step, batch, x, y, epochs_timed=1):
    batches = Batches(x, y, batch, seed=0, device=dev)

    def epoch():
        for xb, yb in batches.epoch(0):
            step(xb, yb)
        dev.synchronize()
    epoch()  # warm-up (first touches, kernel builds)
    start = time.perf_counter()
    for _ in range(epochs_timed):
        epoch()
    return len(x) * epochs_timed / (time.perf_counter() - start)


def torch_trainer(torch, device, sizes, activation):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU() if activation == "relu" else torch.nn.Tanh())
    model = torch.nn.Sequential(*layers).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xb), yb).backward()
        opt.step()
    return step


def torch_epoch(torch, device, step, batch, x, y, epochs_timed=1):
    def epoch():
        order = torch.randperm(len(x), device=device)
        for s in range(0, len(x), batch):
            idx = order[s:s + batch]
            step(x[idx], y[idx])
        if device == "cuda":
            torch.cuda.synchronize()
    epoch()
    start = time.perf_counter()
    for _ in range(epochs_timed):
        epoch()
    return len(x) * epochs_timed / (time.perf_counter() - start)


def matrix_products(dev, sizes, batch, dtype="float32"):
    """The matrix products of one training step of an MLP of ``sizes`` (``gpunet.info.step_products``: per
    layer ``y = x W``, ``dW = x^T dy`` and ``dx = dy W^T`` for every layer but the first) through the device's
    own matrix product (on the CPU, the BLAS gpunet chose), into preallocated outputs. What no implementation of
    that step can skip: its time bounds the samples/s of any framework whose BLAS runs at this one's rate."""
    pairs = [(dev.asarray(a), dev.asarray(b)) for a, b in step_products(sizes, batch, dtype)]
    outs = [dev.xp.empty((a.shape[0], b.shape[1]), dtype=a.dtype) for a, b in pairs]

    def products():
        for (a, b), out in zip(pairs, outs):
            dev.matmul(a, b, out=out)
    return products


def products_and_update(dev, sizes, batch):
    """``matrix_products`` followed by the optimizer's update over the network's parameters (SGD momentum 0.9,
    as the trainers), as in a step: the update re-reads every weight, gradient and velocity after the products
    have pushed them out of the cache. A tighter bound for a design that updates in a pass of its own (gpunet's,
    and PyTorch's with the same traffic); only folding the update into the products would beat it."""
    products = matrix_products(dev, sizes, batch)
    params = nn.mlp(sizes, "relu", seed=0, device=dev).parameters()
    for p in params:
        p.grad[...] = 1e-3
    opt = optim.SGD(params, lr=1e-6, momentum=0.9)

    def step():
        products()
        opt.step()
    return step


def count_gpunet_launches(dev, step, xb, yb):
    """gpunet's own kernel launches in one training step (not CuPy's elementwise ops or cuBLAS)."""
    counted = {"n": 0}
    original = dev.launcher.launch

    def counting(*args, **kwargs):
        counted["n"] += 1
        return original(*args, **kwargs)
    dev.launcher.launch = counting
    try:
        step(xb, yb)
    finally:
        del dev.launcher.launch
    return counted["n"]


def count_cuda_kernels(step, synchronize):
    """Every kernel and copy the GPU ran in one step, whoever launched it (CuPy, cuBLAS, gpunet), as CUPTI sees
    them through PyTorch's profiler; None without a CUDA PyTorch."""
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile
        if not torch.cuda.is_available():
            return None
        synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            synchronize()
        return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    except Exception as exc:  # a profiler that cannot start must not cost the whole bench
        print(f"kernel count unavailable: {exc}", file=sys.stderr)
        return None


def train_worker(framework, device_name, networks=None):
    """Train ``MLPS`` (those at indices ``networks``, all by default) for an epoch each."""
    x, y, _, _ = load_mnist()
    out = []
    for name, sizes, activation, batch in (MLPS if networks is None else [MLPS[i] for i in networks]):
        row = {"network": name, "batch": batch}
        if framework == "torch":
            import torch
            target = "cpu" if device_name == "cpu" else "cuda"
            xt, yt = torch.from_numpy(x).to(target), torch.from_numpy(y).to(target)
            step = torch_trainer(torch, target, sizes, activation)
            row["samples_s"] = torch_epoch(torch, target, step, batch, xt, yt)
            if target == "cuda":
                xb, yb = xt[:batch], yt[:batch]
                row["step_s"] = torch_cuda_timer(torch)(lambda: step(xb, yb), STEP_REPEATS)
                row["cuda_kernels_per_step"] = count_cuda_kernels(lambda: step(xb, yb), torch.cuda.synchronize)
        else:
            dev = gpunet.device(device_name)
            step = gpunet_trainer(dev, sizes, activation)
            row["samples_s"] = gpunet_epoch(dev, step, batch, x, y)
            timer = cuda_timer(dev.xp) if device_name.startswith("cuda") else host_timer
            row["products_s"] = timer(matrix_products(dev, sizes, batch), STEP_REPEATS)
            row["products_update_s"] = timer(products_and_update(dev, sizes, batch), STEP_REPEATS)
            if device_name == "cpu":
                row["blas"] = host_blas().choice()[1]
            if hasattr(dev, "launcher"):  # a device with CUDA kernels (sim, cuda)
                xb, yb = dev.asarray(x[:batch]), dev.asarray(y[:batch])
                row["kernel_launches_per_step"] = count_gpunet_launches(dev, step, xb, yb)
                if device_name.startswith("cuda"):
                    row["step_s"] = cuda_timer(dev.xp)(lambda: step(xb, yb), STEP_REPEATS)
                    row["cuda_kernels_per_step"] = count_cuda_kernels(lambda: step(xb, yb), dev.synchronize)
        out.append(row)
    return out


def median_rows(runs):
    """Row-op timings of several rounds: each (op, shape)'s median seconds and copy seconds; None if a round
    failed."""
    if not runs or any(r is None for r in runs):
        return None
    rows = []
    for i, first in enumerate(runs[0]):
        out_seconds = [r[i].get("out_seconds") for r in runs]
        rows.append(dict(first, seconds=statistics.median(r[i]["seconds"] for r in runs),
                         out_seconds=None if None in out_seconds else statistics.median(out_seconds),
                         copy_seconds=statistics.median(r[i]["copy_seconds"] for r in runs),
                         new_copy_seconds=statistics.median(r[i]["new_copy_seconds"] for r in runs)))
    return rows


def median_runs(runs, keys=("samples_s", "step_s", "products_s", "products_update_s")):
    """One row per network (or batch) from several rounds of a worker: the median of each of ``keys`` over the
    rounds that have it, every round's samples/s kept under ``samples_s_rounds``; None if any round failed."""
    if not runs or any(r is None for r in runs):
        return None
    rows = []
    for i, first in enumerate(runs[0]):
        row = dict(first)
        row["samples_s_rounds"] = [r[i]["samples_s"] for r in runs]
        for key in keys:
            values = [r[i][key] for r in runs if r[i].get(key) is not None]
            if values:
                row[key] = statistics.median(values)
        rows.append(row)
    return rows


def products_bound_columns(ours_row, theirs_row, row):
    """The matrix-product bound of a training row (see ``matrix_products``) and the two ratios to it, then the
    bound with the update (``products_and_update``) and the same two ratios, added to the JSON ``row``; dashes
    where a figure is missing."""
    line = ""
    for key, name in (("products_s", "bound"), ("products_update_s", "update_bound")):
        if not ours_row.get(key):
            line += f" {'-':>9} {'-':>12} {'-':>11}"
            continue
        bound = ours_row["batch"] / ours_row[key]
        row.update({f"products_{name}_samples_s" if name == "bound" else f"{name}_samples_s": bound,
                    f"gpunet_over_{name}": ours_row["samples_s"] / bound})
        line += f" {bound:9.0f} {row[f'gpunet_over_{name}']:11.0%} "
        if theirs_row:
            row[f"{name}_over_torch"] = bound / theirs_row["samples_s"]
            line += f" {row[f'{name}_over_torch']:10.2f}x"
        else:
            line += f" {'-':>11}"
    return line


def print_training(device_name, ours, theirs, results):
    if ours is None:
        print(f"\n(b) training on {device_name}: the gpunet worker failed")
        return
    print(f"\n(b) training on {device_name}: one epoch of 60000 MNIST samples after a warm-up epoch, SGD momentum "
          f"0.9, samples/s, median of {len(ours[0]['samples_s_rounds'])} rounds alternating the frameworks; "
          "'rounds' gives each round's ratio; 'bound': the samples/s if a step took only its matrix products on "
          "this device's BLAS (timed alone, median of the rounds); '+update': the products and then the "
          "optimizer's update, as in a step"
          + ("; one step on a fixed batch timed with CUDA events (median of "
             f"{STEP_REPEATS}), and the kernels it runs" if device_name != "cpu" else ""))
    print(f"{'network':22} {'batch':>5} {'gpunet':>9} {'torch':>9} {'gpunet/torch':>12} {'bound':>9} "
          f"{'gpunet/bound':>12} {'bound/torch':>11} {'+update':>9} {'gpunet/+upd':>12} {'+upd/torch':>11}"
          + ("   step ms: gpunet  torch   kernels: gpunet-own all  torch-all" if device_name != "cpu" else ""))
    for i, r in enumerate(ours):
        row = {"device": device_name, **{k: v for k, v in r.items() if k != "samples_s"},
               "gpunet_samples_s": r["samples_s"]}
        theirs_row = theirs[i] if theirs else {}
        line = f"{r['network']:22} {r['batch']:5d} {r['samples_s']:9.0f}"
        if theirs_row:
            per_round = [a / b for a, b in zip(r["samples_s_rounds"], theirs_row["samples_s_rounds"])]
            row.update(torch_samples_s=theirs_row["samples_s"], gpunet_over_torch=r["samples_s"] / theirs_row["samples_s"],
                       torch_samples_s_rounds=theirs_row["samples_s_rounds"], gpunet_over_torch_rounds=per_round)
            line += f" {theirs_row['samples_s']:9.0f} {row['gpunet_over_torch']:11.2f}x"
        else:
            line += f" {'-':>9} {'-':>12}"
        line += products_bound_columns(r, theirs_row, row)
        if device_name != "cpu":
            row["torch_step_s"] = theirs_row.get("step_s")
            row["torch_cuda_kernels_per_step"] = theirs_row.get("cuda_kernels_per_step")

            def fmt(value, scale=1.0, digits=0):
                return "-" if value is None else f"{value * scale:.{digits}f}"
            line += (f"   {fmt(r.get('step_s'), 1e3, 3):>13} {fmt(row['torch_step_s'], 1e3, 3):>6}"
                     f"   {fmt(r.get('kernel_launches_per_step')):>17} {fmt(r.get('cuda_kernels_per_step')):>4}"
                     f" {fmt(row['torch_cuda_kernels_per_step']):>10}")
        if r.get("blas"):
            line += f"   BLAS: {r['blas']}"
        if "gpunet_over_torch_rounds" in row:
            line += f"   rounds: {' '.join(f'{x:.2f}x' for x in row['gpunet_over_torch_rounds'])}"
        print(line)
        results["training"].append(row)


# ---- the CPU goals -------------------------------------------------------------------------------------------------
def cpu_goals(results):
    """The CPU goals (docs/performance.md) judged on this run's rows: (goal, what was measured, met) each, met None
    where the run has no figure for it. Where a small-batch network misses 1.3x and its products and update alone
    ('+update') make less than 1.3x PyTorch too, the row says so: no step that updates in a pass of its own could
    have met it in this run."""
    training = [r for r in results["training"] if r["device"] == "cpu" and "gpunet_over_torch" in r]
    rows = [r for r in results["row_ops"] if r["device"] == "cpu"]

    def name(r):
        return f"{r['network']} b{r['batch']}"
    goals = []
    if training:
        ratios = [(name(r), r["gpunet_over_torch"]) for r in training]
        goals.append((">= 1.0x PyTorch, every network", ", ".join(f"{n} {v:.2f}x" for n, v in ratios),
                      all(v >= 1.0 for _, v in ratios)))
        small = [r for r in training if r["batch"] < 1024]
        text = []
        for r in small:
            text.append(f"{name(r)} {r['gpunet_over_torch']:.2f}x")
            if r["gpunet_over_torch"] < 1.3 and r.get("update_bound_over_torch", 2.0) < 1.3:
                text[-1] += f" (its products and update alone: {r['update_bound_over_torch']:.2f}x)"
        goals.append((">= 1.3x PyTorch, small batches", ", ".join(text), all(r["gpunet_over_torch"] >= 1.3
                                                                          for r in small)))
        large = [r for r in training if r["batch"] >= 1024 and "gpunet_over_bound" in r]
        goals.append((">= 90% of the products bound, batch 1024",
                      ", ".join(f"{name(r)} {r['gpunet_over_bound']:.1%}" for r in large),
                      all(r["gpunet_over_bound"] >= 0.9 for r in large) if large else None))
        bounds = [r for r in training if "bound_over_torch" in r]
        goals.append(("products bound >= PyTorch's step", ", ".join(f"{name(r)} {r['bound_over_torch']:.2f}x"
                                                                     for r in bounds),
                      all(r["bound_over_torch"] >= 1.0 for r in bounds) if bounds else None))
    cells = [(f"{r['op']} C={r['shape'][1]}{mode}", r[key]) for r in rows if r["shape"][1] >= 100
             for key, mode in (("gpunet_over_torch", ""), ("gpunet_out_over_torch_out", " out="))
             if r.get(key) is not None]
    if cells:
        lowest = min(cells, key=lambda c: c[1])
        goals.append((">= 1.0x PyTorch, row ops at C >= 100", f"lowest: {lowest[0]} {lowest[1]:.2f}x",
                      lowest[1] >= 1.0))
    fractions = [(f"{r['op']} C={r['shape'][1]}", r["fraction_of_copy"]) for r in rows
                 if r["shape"][1] >= 1000 and r.get("fraction_of_copy") is not None]
    if fractions:
        lowest = min(fractions, key=lambda c: c[1])
        goals.append((">= 80% of the copy, row ops at C >= 1000 (out=)", f"lowest: {lowest[0]} {lowest[1]:.0%}",
                      lowest[1] >= 0.8))
    return goals


def print_goals(goals, results):
    if not goals:
        return
    print("\n(d) the CPU goals (docs/performance.md) in this run")
    for goal, measured, met in goals:
        print(f"{'met' if met else 'not met' if met is not None else '-':>8}  {goal}: {measured}")
    results["goals"] = [{"goal": g, "measured": m, "met": met} for g, m, met in goals]


# ---- (c) data parallelism (--nproc) ------------------------------------------------------------------------------
DP_NETWORK = ("784-512-512-10 relu", [784, 512, 512, 10], "relu")
DP_BATCHES = (128, 1024)
DP_STEPS = 100  # timed steps at the largest batch; a smaller batch runs proportionally more, the same samples
DP_WARMUP = 10
DP_ALONE_REPEATS = 20


def dp_steps(batch, steps):
    """Timed steps at global batch ``batch``: ``steps`` at the largest of DP_BATCHES, as many samples at others."""
    return max(1, steps * max(DP_BATCHES) // batch)


def dp_worker(batches, steps, warmup, distributed):
    """One process, or (``distributed``) one rank of an MPI job, training DP_NETWORK with Adam on MNIST at each
    global batch: ``warmup`` steps, then the timed ones between two barriers. The single process runs the step of
    ``gpunet train``, a rank the step of ``gpunet train --distributed`` (its slice of the global batch, then
    DataParallel's allreduce). Rank 0 returns one row per batch, the others None."""
    from gpunet.devices.host import host_threads
    from gpunet.distributed import Communicator, DataParallel, world

    comm = world() if distributed else Communicator()
    dev = gpunet.device("cpu")
    x, y, _, _ = load_mnist()
    name, sizes, activation = DP_NETWORK
    out = []
    for batch in batches:
        model = nn.mlp(sizes, activation, seed=0, device=dev)
        loss_fn = nn.SoftmaxCrossEntropy(device=dev)
        opt = optim.Adam(model.parameters(), lr=1e-3)
        parallel = DataParallel(model, loss_fn, comm) if distributed else None

        def step(xb, yb):
            if parallel:
                parallel.forward_backward(xb, yb)
            else:
                loss_fn.forward(model.forward(xb), yb)
                model.backward(loss_fn.backward())
            opt.step()
        data = Batches(x, y, batch, seed=0, drop_last=True, device=dev)
        stream = (b for epoch in itertools.count() for b in data.epoch(epoch))
        for _ in range(warmup):
            step(*next(stream))
        timed = dp_steps(batch, steps)
        if parallel:
            parallel.allreduce_seconds, parallel.steps = 0.0, 0
        comm.barrier()
        start = time.perf_counter()
        for _ in range(timed):
            step(*next(stream))
        comm.barrier()
        seconds = time.perf_counter() - start
        row = {"network": name, "batch": batch, "ranks": comm.size, "threads_per_rank": host_threads(),
               "warmup": warmup, "steps": timed, "seconds": seconds, "samples_s": timed * batch / seconds,
               "step_s": seconds / timed}
        if parallel:
            # Time in the collective, waiting for the slowest rank included; the mean over the ranks.
            per_rank = comm.allgather(parallel.allreduce_seconds / parallel.steps)
            grads = [g.copy() for g in parallel.buffers.grads]
            comm.barrier()
            start = time.perf_counter()
            for _ in range(DP_ALONE_REPEATS):
                for g in grads:
                    comm.allreduce_sum(g)
            alone = comm.allgather((time.perf_counter() - start) / DP_ALONE_REPEATS)
            row.update(communicator=comm.name, allreduce_s=statistics.mean(per_rank),
                       allreduce_s_per_rank=per_rank, allreduce_share=statistics.mean(per_rank) / row["step_s"],
                       allreduce_alone_s=statistics.mean(alone),
                       allreduce_bytes=sum(g.size * g.itemsize for g in grads))
        out.append(row)
    return out if comm.rank == 0 else None


def run_dp_worker(args, nproc):
    """One measurement in fresh processes: 1 process (no MPI) or ``mpiexec -n nproc``, with the threads of each
    given out as ``gpunet train --nproc`` gives them (launch.rank_environment). Rank 0's rows, or None."""
    from gpunet.distributed import launch

    tail = [__file__, "--worker", "dp", "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--batches", ",".join(map(str, args.batches))]
    cmd = ([sys.executable, *tail] if nproc == 1
           else [launch.mpiexec(), "-n", str(nproc), sys.executable, "-m", "mpi4py", *tail, "--distributed"])
    done = subprocess.run(cmd, capture_output=True, text=True, env=launch.rank_environment(nproc))
    if done.returncode != 0:
        print(f"{nproc}-process data-parallel worker failed:\n{done.stderr[-3000:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_dp(runs):
    """median_runs over dp_worker's rounds: its figures, without the per-rank detail."""
    rows = median_runs(runs, ("samples_s", "step_s", "allreduce_s", "allreduce_share", "allreduce_alone_s"))
    for row in rows or ():
        row.pop("allreduce_s_per_rank", None)
    return rows


def print_distributed(nproc, single, ranks, results):
    if single is None or ranks is None:
        print("\n(c) data parallelism: a worker failed")
        return
    first = ranks[0]
    print(f"\n(c) data parallelism on cpu: {first['network']}, Adam, MNIST, samples/s over the timed steps after "
          f"{first['warmup']} warm-up steps, median of {len(single[0]['samples_s_rounds'])} "
          f"rounds alternating the two; 1 process on {single[0]['threads_per_rank']} threads against {nproc} ranks "
          f"on {first['threads_per_rank']} each ({first['communicator']}); allreduce ms/step: DataParallel's "
          f"allreduce of the {first['allreduce_bytes'] / 1e6:.2f} MB gradient, waiting for the slowest rank "
          "included (mean over the ranks); share: of the ranks' step; alone: the same allreduce back to back; "
          "'rounds' gives each round's ratio")
    print(f"{'network':22} {'batch':>5} {'steps':>5} {'1 process samples/s':>19} {f'{nproc} ranks samples/s':>19} "
          f"{'ratio':>7} {'allreduce ms/step':>17} {'share of step':>13} {'alone ms':>8}")
    for one, many in zip(single, ranks):
        per_round = [b / a for a, b in zip(one["samples_s_rounds"], many["samples_s_rounds"])]
        row = {"device": "cpu", "network": one["network"], "batch": one["batch"], "ranks": nproc,
               "threads_single": one["threads_per_rank"], "threads_per_rank": many["threads_per_rank"],
               "steps": many["steps"], "single_samples_s": one["samples_s"], "ranks_samples_s": many["samples_s"],
               "ratio": many["samples_s"] / one["samples_s"], "ratio_rounds": per_round,
               "single_samples_s_rounds": one["samples_s_rounds"], "ranks_samples_s_rounds": many["samples_s_rounds"],
               "single_step_s": one["step_s"], "ranks_step_s": many["step_s"],
               "allreduce_s_per_step": many["allreduce_s"], "allreduce_share": many["allreduce_share"],
               "allreduce_alone_s": many["allreduce_alone_s"], "allreduce_bytes": many["allreduce_bytes"],
               "communicator": many["communicator"]}
        print(f"{one['network']:22} {one['batch']:5d} {many['steps']:5d} {one['samples_s']:19.0f} "
              f"{many['samples_s']:19.0f} {row['ratio']:6.2f}x {1e3 * many['allreduce_s']:17.3f} "
              f"{many['allreduce_share']:13.1%} {1e3 * many['allreduce_alone_s']:8.3f}   "
              f"rounds: {' '.join(f'{r:.2f}x' for r in per_round)}")
        results["distributed"].append(row)


def bench_distributed(args, results):
    """Rounds alternating the order (1 process then the ranks, then the other way round), medians over them."""
    single_runs, rank_runs = [], []
    for r in range(args.rounds):
        for nproc in ((1, args.nproc) if r % 2 == 0 else (args.nproc, 1)):
            (single_runs if nproc == 1 else rank_runs).append(run_dp_worker(args, nproc))
    print_distributed(args.nproc, median_dp(single_runs), median_dp(rank_runs), results)


def run_worker(args, worker, framework, device_name, network=None):
    """Each framework is measured in a process of its own: PyTorch's OpenMP threads and OpenBLAS's spin after
    their work, and in one process each would slow the other (measured here: 30% on the small MLP)."""
    cmd = [sys.executable, __file__, "--worker", worker, "--framework", framework, "--device", device_name,
           "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
    if network is not None:
        cmd += ["--network", str(network)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{framework} {worker} worker failed:\n{done.stderr[-3000:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine_header(extra: str) -> dict:
    """Print what the run measures on (CPU model, vendor, instruction sets, kernels, BLAS, threads: ``gpunet
    info``) and return it for the JSON."""
    info = machine_info()
    cpu, blas = info["cpu"], info["blas"]
    kernels = info["compiled_kernels"]
    print(f"gpunet bench{extra}, {time.strftime('%Y-%m-%d')}, NumPy {np.__version__}")
    print(f"CPU: {cpu['model']} ({cpu['vendor']}), {os.cpu_count()} CPUs, {info['host_threads']} host threads; "
          f"ISA: {' '.join(cpu['isa_flags'])}; kernels: {kernels['isa'] if kernels['built'] else 'NumPy forms'}")
    print(f"BLAS: NumPy's {blas['numpy_blas']}; oneMKL: {blas['mkl'] or 'not installed'}; "
          f"GPUNET_BLAS={blas['setting']} (each gpunet worker's choice is in the training table)")
    return {"platform": platform.platform(), "cpu_model": cpu["model"], "cpu_vendor": cpu["vendor"],
            "isa_flags": cpu["isa_flags"], "kernel_isa": kernels["isa"], "kernels_built": kernels["built"],
            "cpus": os.cpu_count(), "host_threads": info["host_threads"], "numpy": np.__version__,
            "numpy_blas": blas["numpy_blas"], "mkl": blas["mkl"], "blas_setting": blas["setting"],
            "date": time.strftime("%Y-%m-%d")}


def main_distributed(args) -> int:
    results = {"machine": machine_header(f" --nproc {args.nproc}"),
               "settings": {"nproc": args.nproc, "rounds": args.rounds, "steps": args.steps, "warmup": args.warmup,
                            "batches": args.batches, "optimizer": "adam", "device": "cpu"},
               "distributed": []}
    bench_distributed(args, results)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.json}")
    return 0 if results["distributed"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="bench.json")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--rounds", type=int, default=5,
                        help="runs of each framework's row-op and training workers, alternating frameworks; "
                             "the tables give medians over them")
    parser.add_argument("--skip-rows", action="store_true", help="training only")
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated devices to bench, of those present")
    parser.add_argument("--nproc", type=int, default=None, metavar="N",
                        help="data parallelism only: 1 process against N MPI ranks on the CPU (table (c))")
    parser.add_argument("--steps", type=int, default=DP_STEPS,
                        help=f"--nproc: timed steps at batch {max(DP_BATCHES)} (as many samples at the smaller "
                             f"batch); default {DP_STEPS}")
    parser.add_argument("--warmup", type=int, default=DP_WARMUP, help="--nproc: untimed steps first")
    parser.add_argument("--batches", type=lambda v: [int(b) for b in v.split(",")], default=list(DP_BATCHES),
                        help="--nproc: comma-separated global batches (default 128,1024)")
    parser.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=("rows", "train", "dp"), help=argparse.SUPPRESS)
    parser.add_argument("--network", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--framework", choices=("gpunet", "torch", "cupy-naive"), help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shapes, repeats = (QUICK_SHAPES, 5) if args.quick else (ROW_SHAPES, 15)
    if args.worker == "dp":
        rows = dp_worker(args.batches, args.steps, args.warmup, args.distributed)
        if rows is not None:  # rank 0
            print(json.dumps(rows))
        return 0
    if args.worker:
        if args.framework == "torch":
            import torch
            torch.set_num_threads(args.threads)
        rows = (rows_worker(args.framework, args.device, shapes, repeats) if args.worker == "rows"
                else train_worker(args.framework, args.device, None if args.network is None else [args.network]))
        print(json.dumps(rows))
        return 0
    if args.nproc:
        return main_distributed(args)

    try:
        import torch
        torch_version = torch.__version__
        torch_cuda = torch.cuda.is_available()
    except ImportError:
        torch_version, torch_cuda = None, False
        print("PyTorch not installed: gpunet alone (pip install torch for the side-by-side columns)")
    wanted = args.devices.split(",")
    devices = ["cpu"] if "cpu" in wanted else []
    cupy, reason = probe_cuda(0)
    if cupy is not None:
        devices += ["cuda"] if "cuda" in wanted else []
    else:
        print(f"no GPU: {reason}")
    results = {"machine": dict(machine_header(f" (torch {torch_version}, {args.threads} threads each)"),
                               torch=torch_version, threads=args.threads),
               "row_ops": [], "training": []}
    for device_name in devices:
        has_torch = torch_version is not None and (device_name == "cpu" or torch_cuda)
        if not args.skip_rows:
            # As for training below: rounds alternate the frameworks, medians over the rounds.
            frameworks = {"gpunet": "gpunet"}
            if has_torch:
                frameworks["torch"] = "torch"
            if device_name == "cuda":
                frameworks["naive CuPy"] = "cupy-naive"
            runs = {name: [] for name in frameworks}
            for _ in range(args.rounds):
                for name, framework in frameworks.items():
                    runs[name].append(run_worker(args, "rows", framework, device_name))
            medians = {name: median_rows(r) for name, r in runs.items()}
            ours = medians.pop("gpunet")
            if ours is None:
                print(f"(a) row ops on {device_name}: the gpunet worker failed")
            else:
                print_row_ops(device_name, ours, {k: v for k, v in medians.items() if v}, results)
        if not args.skip_training:
            # A shared host drifts by 10-50% within seconds: each network gets its own workers, the two
            # frameworks back to back in alternating order (A B, B A, ...), and the figures are medians over the
            # rounds; each round's ratio compares two epochs seconds apart.
            ours_runs, theirs_runs = [[] for _ in range(args.rounds)], [[] for _ in range(args.rounds)]
            for network in range(len(MLPS)):
                for r in range(args.rounds):
                    order = ["torch", "gpunet"] if r % 2 == 0 else ["gpunet", "torch"]
                    for framework in order if has_torch else ["gpunet"]:
                        done = run_worker(args, "train", framework, device_name, network)
                        runs = ours_runs if framework == "gpunet" else theirs_runs
                        runs[r] = None if done is None or runs[r] is None else runs[r] + done
            print_training(device_name, median_runs(ours_runs), median_runs(theirs_runs) if has_torch else None,
                           results)
    if "cpu" in devices and not args.quick:  # the goals are set for the full shapes
        print_goals(cpu_goals(results), results)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
