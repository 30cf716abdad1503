"""Section (b): one training epoch of 60000 MNIST samples for 784-512-512-10 ReLU (batch 128 and 1024) and
784-100-10 tanh (batch 64), samples/s, gpunet against PyTorch: same network, same optimizer (SGD, momentum 0.9),
same threads. Beside them the products bound (``products``). On a GPU it also times one step on a fixed batch with
CUDA events and counts its kernels and host synchronisations (``step_counts``)."""
import argparse
import time

import gpunet
from gpunet import nn, optim
from gpunet.data import Batches, load_mnist
from gpunet.trainer import Trainer

from .products import matrix_products, products_and_update, products_bound_columns
from .report import plain
from .step import loss_module, require_labels
from .step_counts import count_gpunet_launches, count_host_syncs, profile_step
from .timing import alternating_rounds, device_timer, joined_rounds, median_runs, torch_cuda_timer

NAME = "training"
STEP_REPEATS = 50
MLPS = [("784-512-512-10 relu", [784, 512, 512, 10], "relu", 128),
        ("784-512-512-10 relu", [784, 512, 512, 10], "relu", 1024),
        ("784-100-10 tanh", [784, 100, 10], "tanh", 64)]
CPU_SYNCS = "host syncs per step: 0 on the CPU by construction (no queue: every op has finished when it returns)"


def add_arguments(parser):
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--network", type=int, help=argparse.SUPPRESS)


def wanted(args) -> bool:
    return not args.skip_training


def run(args, bench) -> bool:
    """A shared host drifts by 10-50% within seconds: each network gets its own workers, the two frameworks back to
    back in alternating order (A B, B A, ...), and the figures are medians over the rounds; each round's ratio
    compares two epochs seconds apart."""
    ok = True
    for device_name in bench.devices:
        frameworks = ["torch", "gpunet"] if bench.has_torch(device_name) else ["gpunet"]
        per_network = [alternating_rounds(args.rounds, frameworks,
                                          lambda fw: bench.worker(NAME, fw, device_name, "--network", str(n)))
                       for n in range(len(MLPS))]
        ours = median_runs(joined_rounds([runs["gpunet"] for runs in per_network]))
        theirs = (median_runs(joined_rounds([runs["torch"] for runs in per_network]))
                  if "torch" in frameworks else None)
        print_training(device_name, ours, theirs, bench.rows(NAME))
        ok = ok and ours is not None
    return ok


def worker(args):
    return measure(args.framework, args.device, None if args.network is None else [args.network])


def gpunet_trainer(dev, sizes, activation):
    """One SGD step of gpunet's MLP as a function of a batch already on ``dev``."""
    model = nn.mlp(sizes, activation, seed=0, device=dev)
    loss_fn = loss_module(dev)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return Trainer(model, loss_fn, opt).step


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


def measure(framework, device_name, networks=None):
    """Train ``MLPS`` (those at indices ``networks``, all by default) for an epoch each."""
    x, y, _, _ = load_mnist()
    out = []
    for name, sizes, activation, batch in (MLPS if networks is None else [MLPS[i] for i in networks]):
        row = {"network": name, "batch": batch}
        if device_name == "cpu":
            row["host_syncs_per_step"] = 0  # by construction (see CPU_SYNCS)
        if framework == "torch":
            import torch
            target = "cpu" if device_name == "cpu" else "cuda"
            xt, yt = torch.from_numpy(x).to(target), torch.from_numpy(y).to(target)
            step = torch_trainer(torch, target, sizes, activation)
            row["samples_s"] = torch_epoch(torch, target, step, batch, xt, yt)
            if target == "cuda":
                xb, yb = xt[:batch], yt[:batch]
                row["step_s"] = torch_cuda_timer(torch)(lambda: step(xb, yb), STEP_REPEATS)
                row.update(gpu_counts(lambda: step(xb, yb), torch.cuda.synchronize))
        else:
            dev = gpunet.device(device_name)
            require_labels(y, sizes[-1])  # once, for the step that does not check them
            step = gpunet_trainer(dev, sizes, activation)
            row["samples_s"] = gpunet_epoch(dev, step, batch, x, y)
            timer = device_timer(dev)
            row["products_s"] = timer(matrix_products(dev, sizes, batch), STEP_REPEATS)
            row["products_update_s"] = timer(products_and_update(dev, sizes, batch), STEP_REPEATS)
            if device_name == "cpu":
                row["blas"] = dev.describe()["blas"]
            xb, yb = dev.asarray(x[:batch]), dev.asarray(y[:batch])
            launches = count_gpunet_launches(dev, lambda: step(xb, yb))
            if launches is not None:  # a device with CUDA kernels (sim, cuda)
                row["kernel_launches_per_step"] = launches
            if device_name.startswith("cuda"):
                row["step_s"] = timer(lambda: step(xb, yb), STEP_REPEATS)
                row.update(gpu_counts(lambda: step(xb, yb), dev.synchronize))
            syncs = count_host_syncs(dev, lambda: step(xb, yb))
            if syncs is not None:  # the simulated GPU counts its own (simgpu)
                row["host_syncs_per_step"] = syncs
        out.append(row)
    return out


def gpu_counts(step, synchronize):
    counts = profile_step(step, synchronize) or {}
    return {"cuda_kernels_per_step": counts.get("kernels"), "host_syncs_per_step": counts.get("host_syncs")}


def print_training(device_name, ours, theirs, rows):
    """The table, one line per network, its rows added to ``rows`` (the JSON's)."""
    if ours is None:
        print(f"\n(b) training on {device_name}: the gpunet worker failed")
        return
    gpu = device_name != "cpu"
    print(f"\n(b) training on {device_name}: one epoch of 60000 MNIST samples after a warm-up epoch, SGD momentum "
          f"0.9, samples/s, median of {len(ours[0]['samples_s_rounds'])} rounds alternating the frameworks; "
          "'rounds' gives each round's ratio; 'bound': the samples/s if a step took only its matrix products on "
          "this device's BLAS (timed alone, median of the rounds); '+update': the products and then the "
          "optimizer's update, as in a step"
          + ("; one step on a fixed batch timed with CUDA events (median of "
             f"{STEP_REPEATS}), the kernels it runs and the host syncs it makes" if gpu else f"; {CPU_SYNCS}"))
    print(f"{'network':22} {'batch':>5} {'gpunet':>9} {'torch':>9} {'gpunet/torch':>12} {'bound':>9} "
          f"{'gpunet/bound':>12} {'bound/torch':>11} {'+update':>9} {'gpunet/+upd':>12} {'+upd/torch':>11}"
          + ("   step ms: gpunet  torch   kernels: gpunet-own all  torch-all   syncs: gpunet torch" if gpu else ""))
    for i, r in enumerate(ours):
        row = {"device": device_name, **{k: v for k, v in r.items() if k != "samples_s"},
               "gpunet_samples_s": r["samples_s"]}
        theirs_row = theirs[i] if theirs else {}
        line = f"{r['network']:22} {r['batch']:5d} {r['samples_s']:9.0f}"
        if theirs_row:
            per_round = [a / b for a, b in zip(r["samples_s_rounds"], theirs_row["samples_s_rounds"])]
            row.update(torch_samples_s=theirs_row["samples_s"],
                       gpunet_over_torch=r["samples_s"] / theirs_row["samples_s"], torch_samples_s_rounds=theirs_row["samples_s_rounds"], gpunet_over_torch_rounds=per_round)
            line += f" {theirs_row['samples_s']:9.0f} {row['gpunet_over_torch']:11.2f}x"
        else:
            line += f" {'-':>9} {'-':>12}"
        line += products_bound_columns(r, theirs_row, row)
        if gpu:
            for key in ("step_s", "cuda_kernels_per_step", "host_syncs_per_step"):
                row[f"torch_{key}"] = theirs_row.get(key)
            line += (f"   {plain(r.get('step_s'), 1e3, 3):>13} {plain(row['torch_step_s'], 1e3, 3):>6}"
                     f"   {plain(r.get('kernel_launches_per_step')):>17} {plain(r.get('cuda_kernels_per_step')):>4}"
                     f" {plain(row['torch_cuda_kernels_per_step']):>10}"
                     f"   {plain(r.get('host_syncs_per_step')):>13} {plain(row['torch_host_syncs_per_step']):>5}")
        if r.get("blas"):
            line += f"   BLAS: {r['blas']}"
        if "gpunet_over_torch_rounds" in row:
            line += f"   rounds: {' '.join(f'{x:.2f}x' for x in row['gpunet_over_torch_rounds'])}"
        print(line)
        rows.append(row)
