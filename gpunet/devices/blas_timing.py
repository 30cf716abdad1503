"""One BLAS timed on a training step's products, alone in a process of its own (``python -m
gpunet.devices.blas_timing``, run by ``blas.HostBlas``).

Why a process of its own: a BLAS keeps its threads spinning on the cores for a while after each product, so two
BLASes timed in turn in one process each run against the other's spinning threads. On a 2-core AMD Zen 4 that
made oneMKL look up to 6x slower than NumPy's OpenBLAS on a batch-128 product where, each in a process of its
own, the whole step's products were 1.2x slower (docs/measurements/, the CPU notes of 2026-12-01): a measurement
that could keep a faster oneMKL from being chosen.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy

from .blas_threads import BlasThreads, run_on
from .mkl import Mkl

# The longest a product's median may take and still be a timing: a step's product over a minute is a corrupt
# value (or a machine too loaded to measure), not a measurement to choose by.
MAX_SECONDS = 60.0


def timing_problem(value) -> str | None:
    """Why ``value`` is not a product's timing in seconds (a real number in (0, MAX_SECONDS]), or None. A JSON
    integer is taken when it is in range; one of 400 digits is not (no float holds it: the sums would overflow)."""
    if type(value) not in (int, float):
        return f"{type(value).__name__}, not a number"
    try:
        seconds = float(value)
    except OverflowError:
        return f"an integer of {value.bit_length()} bits"
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_SECONDS:
        return f"{seconds!r} is not in (0, {MAX_SECONDS:g}] seconds"
    return None


def operands(key: str, rng) -> tuple:
    """The operands of the product ``key`` names (``float32 MxKxN tn``, ``blas.product_key``), each stored as
    given ("n") or as the transposed view of a row-major array ("t"), as the step passes them."""
    dtype, dims, layout = key.split()
    m, k, n = (int(d) for d in dims.split("x"))

    def make(rows, cols, how):
        if how == "n":
            return rng.standard_normal((rows, cols)).astype(dtype)
        return rng.standard_normal((cols, rows)).astype(dtype).T
    return make(m, k, layout[0]), make(k, n, layout[1])


def time_products(run, keys: list, seconds: float) -> dict:
    """key -> median seconds of ``run(a, b, out)`` for each product, the products run in the order given (a
    step's), pass after pass, for about ``seconds`` after an untimed pass (at least one timed pass): in a step's
    order rather than each product over and over, so that each finds the caches as a step leaves them."""
    rng = numpy.random.default_rng(0)
    cases = []
    for key in keys:
        a, b = operands(key, rng)
        cases.append((key, a, b, numpy.empty((a.shape[0], b.shape[1]), dtype=a.dtype)))
    for _, a, b, out in cases:
        run(a, b, out)
    times = {key: [] for key in keys}
    deadline = time.perf_counter() + seconds
    while True:
        for key, a, b, out in cases:
            start = time.perf_counter()
            run(a, b, out)
            times[key].append(time.perf_counter() - start)
        if time.perf_counter() >= deadline:
            return {key: statistics.median(t) for key, t in times.items()}


# The child imports the very gpunet of its parent (not one on its working directory or its default path).
_CHILD = "import sys; sys.path.insert(0, {root!r}); from gpunet.devices.blas_timing import main; sys.exit(main())"


def in_child(candidate: str, keys: list, threads: int, mkl_path: str | None, seconds: float) -> dict:
    """``time_products`` for ``candidate`` in a new Python process: key -> seconds. A RuntimeError if it fails,
    or where no Python can be started (a frozen application's executable is the application itself)."""
    if not sys.executable or getattr(sys, "frozen", False):
        raise RuntimeError("no Python interpreter to start a timing process with")
    request = {"candidate": candidate, "keys": keys, "threads": threads, "mkl_path": mkl_path, "seconds": seconds}
    root = str(Path(__file__).resolve().parents[2])
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD.format(root=root)], input=json.dumps(request),
                              capture_output=True, text=True, timeout=60 + 10 * seconds,
                              start_new_session=True)  # a Ctrl-C meant for the run does not kill the timing
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"the {candidate} timing process failed ({exc})") from exc
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        raise RuntimeError(f"the {candidate} timing process failed (exit {done.returncode}"
                           f"{': ' + said[-1] if said else ''})")
    try:
        timings = json.loads(done.stdout)
        valid = (isinstance(timings, dict) and set(timings) == set(keys)
                 and all(timing_problem(v) is None for v in timings.values()))
    except ValueError:
        valid = False
    if not valid:
        raise RuntimeError(f"the {candidate} timing process answered {done.stdout[:200]!r}")
    return timings


def main() -> int:
    """The child: a request on stdin, the timings as JSON on stdout. Whatever a library prints (oneMKL's
    ``MKL_VERBOSE`` log, say) goes to stderr: stdout is kept for the answer alone."""
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    request = json.loads(sys.stdin.read())
    name, threads = request["candidate"], int(request["threads"])
    # oneMKL at the path the parent process loaded (mkl.load tried it in a process of its own first).
    mkl = Mkl(request["mkl_path"], threads) if name == "mkl" else None
    numpy_threads = BlasThreads()
    timings = time_products(lambda a, b, out: run_on(name, numpy_threads, mkl, a, b, out), request["keys"],
                            float(request["seconds"]))
    answer.write(json.dumps(timings))
    answer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
