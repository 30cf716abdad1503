"""``gpunet train --nproc N``: the one-node shortcut that runs ``mpiexec -n N python -m mpi4py -m gpunet train
--distributed ...`` itself. ``python -m mpi4py`` makes a rank that raises abort the whole job instead of leaving
the others waiting in a collective."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..devices.host import host_threads
from .communicator import MPI_MISSING, DistributedUnavailable


def mpiexec() -> str:
    """The ``mpiexec`` of this environment (the mpich wheel installs one beside the interpreter), else on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.is_file() else shutil.which("mpiexec")
    if found is None:
        raise DistributedUnavailable(f"--nproc needs mpiexec: {MPI_MISSING}")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise DistributedUnavailable(MPI_MISSING) from None
    return found


def command(nproc: int, train_args: list[str]) -> list[str]:
    return [mpiexec(), "-n", str(nproc), sys.executable, "-m", "mpi4py", "-m", "gpunet", "train", "--distributed",
            *train_args]


def rank_environment(nproc: int) -> dict:
    """The cores shared out: each rank's BLAS and gpunet's own threads get ``cores // nproc`` (at least one), so
    ranks do not oversubscribe the machine."""
    per_rank = str(max(1, host_threads() // nproc))
    env = dict(os.environ)
    for name in ("GPUNET_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = per_rank
    return env


def run(nproc: int, train_args: list[str]) -> int:
    """Run the job and return its exit status."""
    return subprocess.call(command(nproc, train_args), env=rank_environment(nproc))
