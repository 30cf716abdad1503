"""Section (e), ``--lce``: ``gpunet.ops.linear_cross_entropy`` (row blocks, no N x V logits) against PyTorch's
``F.cross_entropy(h @ W.T + b, labels)`` forward and backward, side by side, on the CPU. It runs alone.

    python scripts/bench --lce                  # (N, d, V) = (4096, 512, 32768), float32
    python scripts/bench --lce --lce-large      # (8192, 1024, 131072): 6.6 TFLOP a step

Each framework runs in a worker process of its own, rounds alternating the order (A B, B A, ...). A worker
allocates the inputs, warms its libraries up on a tiny problem, allocates and touches arrays the size of the
gradients it will return, reads its RSS (the baseline), frees them, resets its peak RSS (``/proc/self/clear_refs``)
and runs one step: the peak RSS less the baseline is the memory the step needs beyond its inputs and the gradients
it returns. Then it times ``--lce-repeats`` more steps. The table gives medians over the rounds: time per step,
the ratio PyTorch / gpunet (above 1: gpunet is faster), extra memory and gpunet's share of PyTorch's; then each
round's ratio (its two processes ran back to back). Goals: at most 1/20 of PyTorch's memory and at least 1.0x its
speed.
"""
import argparse
import statistics
import time

import numpy as np

from gpunet import ops
from gpunet.devices.host import host_blas

NAME = "linear_cross_entropy"
ALONE = True
SHAPES = {"default": (4096, 512, 32768), "large": (8192, 1024, 131072)}
MEMORY_GOAL = 1 / 20  # gpunet's extra memory as a share of PyTorch's, at most
SPEED_GOAL = 1.0  # PyTorch's time over gpunet's, at least
WARMUP_SHAPE = (8, 16, 40)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("linear cross-entropy")
    group.add_argument("--lce", action="store_true", help="linear cross-entropy only (table (e))")
    group.add_argument("--lce-large", action="store_true",
                       help=f"(N, d, V) = {SHAPES['large']} instead of {SHAPES['default']} (about 12 GB for "
                            "PyTorch's process, minutes a step on two cores)")
    group.add_argument("--lce-rounds", type=int, default=3, help="fresh processes per framework, alternating")
    group.add_argument("--lce-repeats", type=int, default=2, help="timed steps per process, after the memory step")
    group.add_argument("--lce-shape", type=lambda v: tuple(int(x) for x in v.split(",")), default=None,
                       help=argparse.SUPPRESS)  # N,d,V (the tests' tiny problems)


def wanted(args) -> bool:
    return bool(args.lce)


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


def worker(args) -> dict:
    return measure(args.framework, args.lce_shape or SHAPES["default"], args.lce_repeats)


def measure(framework: str, shape, repeats: int) -> dict:
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


def run(args, bench) -> bool:
    """``args.lce_rounds`` rounds of one worker per framework, alternating their order; False when gpunet's own
    measurement failed."""
    shape = args.lce_shape or SHAPES["large" if args.lce_large else "default"]
    frameworks = ["gpunet", "torch"] if bench.has_torch("cpu") else ["gpunet"]
    argv = ["--lce-shape", ",".join(map(str, shape)), "--lce-repeats", str(args.lce_repeats)]
    runs = {name: [] for name in frameworks}
    for r in range(args.lce_rounds):
        for framework in frameworks if r % 2 == 0 else frameworks[::-1]:
            runs[framework].append(bench.worker(NAME, framework, "cpu", *argv))
    result = report(shape, summary(runs["gpunet"]), summary(runs.get("torch", [])))
    result["round_speed_ratios"] = round_ratios(runs)
    if result["round_speed_ratios"]:
        print("each round's PyTorch / gpunet (two processes seconds apart): "
              + ", ".join(f"{r:.2f}x" for r in result["round_speed_ratios"]))
    result["runs"] = runs
    bench.rows(NAME).append(result)
    return result["gpunet"] is not None


def round_ratios(runs: dict) -> list:
    """PyTorch's median step time over gpunet's, round by round: on a shared machine the load drifts within
    minutes, and a round's two processes ran back to back."""
    pairs = zip(runs.get("gpunet", []), runs.get("torch", []))
    return [statistics.median(theirs["seconds"]) / statistics.median(ours["seconds"])
            for ours, theirs in pairs if ours and theirs and ours["seconds"] and theirs["seconds"]]
