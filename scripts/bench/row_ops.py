"""Section (a): the softmax family's row ops, GB/s over the minimum bytes each op must move, as a fraction of a
same-size copy on that device and as a ratio to PyTorch's same op (and, on a GPU, to naive CuPy), each op both
returning a new array and writing a preallocated one."""
import numpy as np

import gpunet
from gpunet import ops

from .report import cell, ratio
from .timing import alternating_rounds, device_timer, host_timer, median_rows, torch_cuda_timer

NAME = "row_ops"
ROW_SHAPES = [(65536, 10), (16384, 100), (4096, 1000), (1024, 10000), (256, 100000)]
QUICK_SHAPES = [(16384, 10), (4096, 100), (1024, 1000), (256, 10000)]
# On a GPU the same widths with more rows, 2**26 elements (256 MB float32) each: past any L2 cache (50 MB on an
# H100), so that repeated runs over one buffer measure device memory, not the cache.
GPU_ELEMENTS = 2**26
MIN_BYTES = {"softmax fwd": 2, "softmax bwd": 3, "log_softmax fwd": 2, "log_softmax bwd": 3,
             "cross_entropy f+b": 2}


def add_arguments(parser):
    parser.add_argument("--skip-rows", action="store_true", help="training only")


def wanted(args) -> bool:
    return not args.skip_rows


def run(args, bench) -> bool:
    """Rounds alternate the frameworks (as for training), medians over the rounds."""
    ok = True
    for device_name in bench.devices:
        frameworks = {"gpunet": "gpunet"}
        if bench.has_torch(device_name):
            frameworks["torch"] = "torch"
        if device_name == "cuda":
            frameworks["naive CuPy"] = "cupy-naive"
        runs = alternating_rounds(args.rounds, list(frameworks),
                                  lambda name: bench.worker(NAME, frameworks[name], device_name))
        medians = {name: median_rows(r) for name, r in runs.items()}
        ours = medians.pop("gpunet")
        if ours is None:
            print(f"(a) row ops on {device_name}: the gpunet worker failed")
            ok = False
        else:
            print_row_ops(device_name, ours, {k: v for k, v in medians.items() if v}, bench.rows(NAME))
    return ok


def worker(args):
    shapes, repeats = (QUICK_SHAPES, 5) if args.quick else (ROW_SHAPES, 15)
    return measure(args.framework, args.device, shapes, repeats)


def gpunet_cases(dev, x, dy, labels):
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


def measure(framework, device_name, shapes, repeats):
    """Time every row op of one framework on one device, into a new array and into a preallocated one; returns
    rows of {op, shape, seconds, out_seconds (None without an out form), copy_seconds, new_copy_seconds}."""
    out = []
    if framework == "torch":
        import torch
        timer = host_timer if device_name == "cpu" else torch_cuda_timer(torch)
    else:
        dev = gpunet.device(device_name)
        timer = device_timer(dev)
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
            cases = (naive_cupy_cases(xp, x, dy, labels) if framework == "cupy-naive"
                     else gpunet_cases(dev, x, dy, labels))
        for name, (new_fn, out_fn) in cases.items():
            out.append({"op": name, "shape": [rows, cols], "seconds": timer(new_fn, repeats),
                        "out_seconds": None if out_fn is None else timer(out_fn, repeats),
                        "copy_seconds": copy_s, "new_copy_seconds": new_copy_s,
                        "bytes": MIN_BYTES[name] * rows * cols * 4})
    return out


def print_row_ops(device_name, ours, others, rows):
    """``others``: framework -> rows of the same ops and shapes. Like is compared with like: an op returning a
    new array with a copy into a new array and with the other framework's op returning one; an op writing a
    preallocated array (``out=``) with a copy into an existing array and with the other's ``.out`` form. The
    table's rows are added to ``rows`` (the JSON's)."""
    print(f"\n(a) row ops on {device_name}, float32: GB/s over the minimum bytes each op must move, median over the "
          "rounds' medians. 'new': each op returns a new array, 'of copy' = over a copy into a new array; 'out': "
          "each writes a preallocated array, 'of copy' = over a copy into an existing array")
    columns = list(others)
    print(f"{'':32} {'--- new ---':>19}" + "".join(f" {'':>9}" for _ in columns) + f" {'--- out ---':>19}")
    print(f"{'op':18} {'shape':>13} {'gpunet GB/s':>11} {'of copy':>7}"
          + "".join(f" {'/' + c:>9}" for c in columns) + f" {'gpunet GB/s':>11} {'of copy':>7}"
          + "".join(f" {'/' + c:>9}" for c in columns))
    index = {name: {(r["op"], tuple(r["shape"])): r for r in other} for name, other in others.items()}
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
            new_part += f" {cell(row[f'gpunet_over_{c}'], 8, '.2f', 'x')}"
            out_part += f" {cell(row[f'gpunet_out_over_{c}_out'], 8, '.2f', 'x')}"
        print(f"{r['op']:18} {str(tuple(r['shape'])):>13} {gbs:11.2f} {gbs / new_copy_gbs:7.0%}{new_part}"
              f" {cell(out_gbs, 11, '.2f')} {cell(row['fraction_of_copy'], 7, '.0%')}{out_part}")
        rows.append(row)
