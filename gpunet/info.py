"""``gpunet info``: what this machine gives gpunet (devices, CPU and instruction sets, the compiled kernels, the
BLAS and its measured choice, threads), so that a slow or surprising run can be explained from one printout.

``measure=True`` first runs the matrix products of the bench's three training steps through the host BLAS, so
that the choice it prints is the one those steps would get (and is cached for them).

Public (docs/api.md): ``collect`` (the dict ``gpunet info --json`` prints) and ``step_products`` (a training
step's matrix products), which the bench uses for its header and its products bound.
"""
from __future__ import annotations

import importlib.metadata
import json
import platform
import sys

import numpy

from . import cpu_kernels
from .devices import device, probe_cuda
from .devices.blas import product_key
from .devices.host import host_blas, host_threads
from .machine import cpu_model, cpu_vendor, notable_flags

__all__ = ["collect", "render", "main", "step_products", "BENCH_STEPS"]

# The networks and batches of the bench's training section (scripts/bench/training.py): (layer sizes, batch).
BENCH_STEPS = (((784, 512, 512, 10), 128), ((784, 512, 512, 10), 1024), ((784, 100, 10), 64))


def step_products(sizes, batch, dtype="float32"):
    """The products of one training step of an MLP of ``sizes`` (see ``gpunet.nn.Linear``): ``x W`` per layer,
    then ``x^T dy`` per layer and ``dy W^T`` for every layer but the first; as (a, b) operand pairs."""
    rng = numpy.random.default_rng(0)
    acts = [rng.standard_normal((batch, n)).astype(dtype) for n in sizes]
    weights = [rng.standard_normal((a, b)).astype(dtype) for a, b in zip(sizes[:-1], sizes[1:])]
    pairs = [(acts[i], w) for i, w in enumerate(weights)]
    for i in reversed(range(len(weights))):
        pairs.append((acts[i].T, acts[i + 1]))
        if i > 0:
            pairs.append((acts[i + 1], weights[i].T))
    return pairs


def collect(measure: bool = False) -> dict:
    """Everything ``gpunet info`` prints, as a dict (``--json``)."""
    blas = host_blas()
    if measure:
        blas.measure_keys([product_key(a, b) for sizes, batch in BENCH_STEPS for a, b in step_products(sizes, batch)])
    cupy, cuda_reason = probe_cuda(0)
    try:
        isa = cpu_kernels.chosen_isa()
        kernels = cpu_kernels.library()
        compiled = {"isa": isa, "built": kernels is not None,
                    "entry_points": sorted(cpu_kernels.signatures()) if kernels is not None else [],
                    "why_not": None if kernels is not None else "switched off (GPUNET_CPU_KERNELS=0) or the build "
                                                                 "failed: see the log line above"}
    except ValueError as exc:  # GPUNET_CPU_ISA names an ISA this CPU lacks
        compiled = {"isa": None, "built": False, "entry_points": [], "why_not": str(exc)}
    return {
        "gpunet": importlib.metadata.version("gpunet"), "python": platform.python_version(), "numpy": numpy.__version__,
        "cpu": {"model": cpu_model(), "vendor": cpu_vendor(), "machine": platform.machine(),
                "isa_flags": notable_flags(), "kernel_isas": list(cpu_kernels.supported_isas())},
        "host_threads": host_threads(),
        "compiled_kernels": compiled,
        "blas": blas.summary(),
        "cuda": {"available": cupy is not None, "why_not": cuda_reason,
                 "device": device("cuda:0").describe()["gpu"] if cupy is not None else None},
    }


def render(info: dict) -> str:
    """The human-readable form."""
    cpu, kernels, blas, cuda = info["cpu"], info["compiled_kernels"], info["blas"], info["cuda"]
    lines = [f"gpunet {info['gpunet']}, Python {info['python']}, NumPy {info['numpy']}",
             f"CPU        {cpu['model']} ({cpu['vendor'] or 'vendor unknown'}, {cpu['machine']}), "
             f"{info['host_threads']} host threads",
             f"ISA        {' '.join(cpu['isa_flags']) or 'none of note'}; kernels can target: "
             f"{', '.join(cpu['kernel_isas'])}"]
    if kernels["built"]:
        lines.append(f"kernels    compiled for {kernels['isa']}: {len(kernels['entry_points'])} entry points")
    else:
        lines.append(f"kernels    not compiled: every op runs its NumPy form ({kernels['why_not']})")
    lines.append(f"BLAS       NumPy's: {blas['numpy_blas']}")
    lines.append("           oneMKL: " + (f"{blas['mkl']} ({blas['mkl_path']})" if blas["mkl"]
                                          else f"not available ({blas['mkl_error']})"))
    if blas["current"] is None:
        lines.append("           GPUNET_BLAS=mkl, but oneMKL is not available: every product will raise")
    else:
        lines.append(f"           GPUNET_BLAS={blas['setting']}: this process multiplies on "
                     f"{'oneMKL' if blas['current'] == 'mkl' else 'NumPy' + chr(39) + 's BLAS'}"
                     + (" (measured over the first step's shapes below)" if blas["setting"] == "auto"
                        and blas["seen"] else ""))
    if blas["timings"]:
        lines.append(f"           timings ({blas['cache_file']}), microseconds:")
        lines.append(f"           {'product':28} {'numpy':>9} {'mkl':>9}  faster")
        for key, t in sorted(blas["timings"].items()):
            faster = "mkl" if t["mkl"] < t["numpy"] else "numpy"
            lines.append(f"           {key:28} {t['numpy'] * 1e6:9.1f} {t['mkl'] * 1e6:9.1f}  {faster}")
    elif blas["setting"] == "auto" and blas["mkl"]:
        lines.append("           no shape measured yet on this machine (gpunet info --measure measures the bench's)")
    lines.append("CUDA       " + (f"device 0: {cuda['device']}" if cuda["available"] else f"none ({cuda['why_not']})"))
    return "\n".join(lines)


def main(measure: bool = False, as_json: bool = False) -> int:
    info = collect(measure)
    print(json.dumps(info, indent=1) if as_json else render(info))
    sys.stdout.flush()
    return 0
