"""What every run prints and writes alike: the machine header (``gpunet info``'s figures) and the cells of the
tables. Each section adds its rows to the run's JSON (``Bench.rows``)."""
import os
import platform
import time

import numpy as np

from gpunet.info import collect as machine_info


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


def ratio(seconds, other_seconds):
    """How many times faster than the other side (its seconds over ours); None where either is missing."""
    return None if seconds is None or other_seconds is None else other_seconds / seconds


def cell(value, width, spec, unit=""):
    """A table cell: ``value`` formatted, or a dash where it is missing."""
    return f"{'-':>{width + len(unit)}}" if value is None else f"{value:{width}{spec}}{unit}"


def plain(value, scale=1.0, digits=0):
    """An unpadded figure, or a dash where it is missing."""
    return "-" if value is None else f"{value * scale:.{digits}f}"
