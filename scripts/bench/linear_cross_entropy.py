#!/usr/bin/env python3
"""The bench's linear cross-entropy section: ``gpunet.ops.linear_cross_entropy`` (row blocks, no N x V logits)
against PyTorch's ``F.cross_entropy(h @ W.T + b, labels)`` forward and backward, side by side.

    python scripts/bench/linear_cross_entropy.py                  # (N, d, V) = (4096, 512, 32768), float32
    python scripts/bench/linear_cross_entropy.py --lce-large      # (8192, 1024, 131072): 6.6 TFLOP a step
    python scripts/bench/linear_cross_entropy.py --json out.json

Each framework runs in a fresh process of its own (one BLAS's spinning threads would slow the other's), rounds
alternating the order (A B, B A, ...). A process allocates the inputs, warms its libraries up on a tiny problem,
allocates and touches arrays the size of the gradients it will return, reads its RSS (the baseline), frees them,
resets its peak RSS (``/proc/self/clear_refs``) and runs one step: the peak RSS less the baseline is the memory
the step needs beyond its inputs and the gradients it returns. Then it times ``--lce-repeats`` more steps. The
table gives medians over the rounds: time per step, the ratio PyTorch / gpunet (above 1: gpunet is faster),
extra memory and gpunet's share of PyTorch's; then each round's ratio (its two processes ran back to back).
Goals: at most 1/20 of PyTorch's memory and at least 1.0x its speed.

As a section of ``scripts/bench``: ``add_arguments(parser)`` adds the ``--lce-*`` flags, ``run(args)`` runs it
and returns its results for the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from gpunet import ops
from gpunet.devices.host import host_blas
from gpunet.info import collect as machine_info

SHAPES = {"default": (4096, 512, 32768), "large": (8192, 1024, 131072)}
MEMORY_GOAL = 1 / 20  # gpunet's extra memory as a share of PyTorch's, at most
SPEED_GOAL = 1.0  # PyTorch's time over gpunet's, at least
WARMUP_SHAPE = (8, 16, 40)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("linear cross-entropy")
    group.add_argument("--lce-large", action="store_true",
                       help=f"(N, d, V) = {SHAPES['large']} instead of {SHAPES['default']} (about 12 GB for "
                            "PyTorch's process, minutes a step on two cores)")
    group.add_argument("--lce-rounds", type=int, default=3, help="fresh processes per framework, alternating")
    group.add_argument("--lce-repeats", type=int, default=2, help="timed steps per process, after the memory step")
    group.add_argument("--lce-shape", type=lambda v: tuple(int(x) for x in v.split(",")), default=None,
                       help=argparse.SUPPRESS)  # N,d,V (the tests' tiny problems)
    group.add_argument("--lce-worker", choices=("gpunet", "torch"), help=argparse.SUPPRESS)


def inputs(shape, seed=0):
    """float32 ``h`` (N, d), ``weight`` (V, d) and ``bias`` (V,) as a language model's output layer sees them
    (logits of order 1), and int64 labels."""
    n_rows, width, n_classes = shape
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n_rows, width), dtype=np.float32)
    weight = rng.standard_normal((n_classes, width), dtype=np.float32) / np.float32(np.sqrt(width))
    bias = rng.standard_normal(n_classes, dtype=np.float32) * np.float32(0.1)
    return h, weight, bias, rng.integers(0, n_classes, n_rows)


def gpunet_step():
    def step(h, weight, bias, labels):
        result = ops.linear_cross_entropy(h, weight, labels, bias, device="cpu")
        return float(result.loss), result[1:]
    return step


def torch_step():
    import torch  # optional: only its worker needs it
    import torch.nn.functional as F
    torch.set_num_threads(len(os.sched_getaffinity(0)))

    def step(h, weight, bias, labels):
        h, weight, bias = (torch.from_numpy(a).requires_grad_() for a in (h, weight, bias))
        loss = F.cross_entropy(h @ weight.T + bias, torch.from_numpy(labels))
        loss.backward()
        return float(loss), (h.grad, weight.grad, bias.grad)
    return step


def rss(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (the peak since the last reset) of this process, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> None:
    """Make the peak RSS the current RSS (Linux 4.0 and later), so that the step's peak is its own, not an earlier
    one's (importing a library, say)."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


def worker(framework: str, shape, repeats: int) -> dict:
    """One fresh process's measurement: the extra memory of its first step and the times of the next ones."""
    step = gpunet_step() if framework == "gpunet" else torch_step()
    step(*inputs(WARMUP_SHAPE, seed=1))  # libraries, thread pools, kernels loaded; BLAS buffers allocated
    h, weight, bias, labels = inputs(shape)
    placeholders = [np.ones_like(h), np.ones_like(weight), np.ones_like(bias)]  # the gradients' size, touched
    baseline = rss("VmRSS")
    del placeholders
    reset_peak()
    start = time.perf_counter()
    loss, grads = step(h, weight, bias, labels)
    first = time.perf_counter() - start
    extra = max(0, rss("VmHWM") - baseline)
    seconds = []
    for _ in range(repeats):
        del grads
        start = time.perf_counter()
        _, grads = step(h, weight, bias, labels)
        seconds.append(time.perf_counter() - start)
    result = {"framework": framework, "loss": loss, "extra_bytes": extra, "baseline_bytes": baseline,
              "first_step_s": first, "seconds": seconds}
    if framework == "gpunet":
        result["blas"] = host_blas().choice()[1]
    else:
        import torch
        result["torch"] = torch.__version__
    return result


def run_worker(framework: str, shape, repeats: int) -> dict | None:
    cmd = [sys.executable, __file__, "--lce-worker", framework, "--lce-shape", ",".join(map(str, shape)),
           "--lce-repeats", str(repeats)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"linear cross-entropy: the {framework} worker failed:\n{done.stderr[-3000:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(runs: list) -> dict | None:
    """Medians over a framework's processes: seconds a step (each process's median first) and extra bytes."""
    if not runs or any(r is None for r in runs):
        return None
    return {"seconds": statistics.median(statistics.median(r["seconds"] or [r["first_step_s"]]) for r in runs),
            "extra_bytes": statistics.median(r["extra_bytes"] for r in runs), "loss": runs[0]["loss"],
            "blas": runs[0].get("blas")}


def report(shape, ours: dict | None, theirs: dict | None) -> dict:
    """Print the side-by-side table and return it with the goals."""
    n_rows, width, n_classes = shape
    flops = 6 * n_rows * width * n_classes
    print(f"\nlinear cross-entropy, (N, d, V) = {shape}, float32, forward + backward "
          f"({flops / 1e12:.2f} TFLOP a step), medians over fresh processes")
    print(f"{'':10} {'s / step':>10} {'GFLOP/s':>9} {'extra MB':>10}")
    for name, row in (("gpunet", ours), ("PyTorch", theirs)):
        if row is not None:
            print(f"{name:10} {row['seconds']:10.3f} {flops / row['seconds'] / 1e9:9.1f} "
                  f"{row['extra_bytes'] / 2**20:10.1f}")
    out = {"shape": list(shape), "flops": flops, "gpunet": ours, "torch": theirs}
    if ours is None or theirs is None:
        return out
    speed = theirs["seconds"] / ours["seconds"]
    memory = ours["extra_bytes"] / max(theirs["extra_bytes"], 1)
    loss_gap = abs(ours["loss"] - theirs["loss"]) / abs(theirs["loss"])
    print(f"speed PyTorch / gpunet: {speed:.2f}x (goal >= {SPEED_GOAL}x: "
          f"{'met' if speed >= SPEED_GOAL else 'NOT met'})")
    print(f"memory gpunet / PyTorch: 1/{1 / memory:.1f} (goal <= 1/{round(1 / MEMORY_GOAL)}: "
          f"{'met' if memory <= MEMORY_GOAL else 'NOT met'}); losses agree to {loss_gap:.1e}")
    out.update(speed_ratio=speed, memory_ratio=memory, loss_relative_gap=loss_gap,
               goals={"speed": speed >= SPEED_GOAL, "memory": memory <= MEMORY_GOAL})
    return out


def run(args) -> dict:
    """The section: ``args.lce_rounds`` rounds of one fresh process per framework, alternating their order."""
    shape = args.lce_shape or SHAPES["large" if args.lce_large else "default"]
    try:
        import torch  # noqa: F401 - only to know whether to run its workers
        frameworks = ["gpunet", "torch"]
    except ImportError:
        print("PyTorch not installed: gpunet alone (pip install torch for the side-by-side columns)")
        frameworks = ["gpunet"]
    runs = {name: [] for name in frameworks}
    for r in range(args.lce_rounds):
        for framework in frameworks if r % 2 == 0 else frameworks[::-1]:
            runs[framework].append(run_worker(framework, shape, args.lce_repeats))
    result = report(shape, summary(runs["gpunet"]), summary(runs.get("torch", [])))
    result["round_speed_ratios"] = round_ratios(runs)
    if result["round_speed_ratios"]:
        print("each round's PyTorch / gpunet (two processes seconds apart): "
              + ", ".join(f"{r:.2f}x" for r in result["round_speed_ratios"]))
    result["runs"] = runs
    return result


def round_ratios(runs: dict) -> list:
    """PyTorch's median step time over gpunet's, round by round: on a shared machine the load drifts within
    minutes, and a round's two processes ran back to back."""
    pairs = zip(runs.get("gpunet", []), runs.get("torch", []))
    return [statistics.median(theirs["seconds"]) / statistics.median(ours["seconds"])
            for ours, theirs in pairs if ours and theirs and ours["seconds"] and theirs["seconds"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default="bench-linear-cross-entropy.json")
    add_arguments(parser)
    args = parser.parse_args()
    if args.lce_worker:
        print(json.dumps(worker(args.lce_worker, args.lce_shape or SHAPES["default"], args.lce_repeats)))
        return 0
    info, load = machine_info(), os.getloadavg()
    cpu = info["cpu"]
    results = {"machine": {"platform": platform.platform(), "cpu_model": cpu["model"], "cpu_vendor": cpu["vendor"],
                           "isa_flags": cpu["isa_flags"], "cpus": os.cpu_count(), "host_threads": info["host_threads"],
                           "numpy": np.__version__, "numpy_blas": info["blas"]["numpy_blas"],
                           "mkl": info["blas"]["mkl"], "blas_setting": info["blas"]["setting"],
                           "date": time.strftime("%Y-%m-%d"), "load_average_at_start": load}}
    print(f"gpunet bench: linear cross-entropy, {results['machine']['date']}; CPU: {cpu['model']} "
          f"({cpu['vendor']}), {os.cpu_count()} CPUs; load average {load[0]:.1f} (a shared machine's load slows "
          "both frameworks, unevenly)")
    results["linear_cross_entropy"] = run(args)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
