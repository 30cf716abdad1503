"""``gpunet train --nproc N``: the one-node shortcut that runs ``mpiexec -n N python -m mpi4py -m gpunet train
--distributed ...`` itself. ``python -m mpi4py`` makes a rank that raises abort the whole job instead of leaving
the others waiting in a collective. Signals to this launcher are passed on to the job (docs/distributed.md,
"Signals"), never turned into a SIGKILL first."""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..devices.host import host_threads
from . import stop
from .communicator import MPI_MISSING, DistributedUnavailable

# Seconds the launcher waits, past the ranks' own grace period, before it kills a job that did not end.
BACKSTOP_SECONDS = 10.0
PR_SET_PDEATHSIG = 1


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
    """Run the job and return its exit status (128 + the signal's number once a signal ended it).

    ``mpiexec`` runs in a session of its own, so a Ctrl-C at the terminal reaches it once, through this launcher,
    not twice (a second SIGINT makes MPICH's mpiexec kill the ranks outright). If the job is still there
    ``BACKSTOP_SECONDS`` after the ranks' grace period, its process group is killed. ``mpiexec`` gets SIGTERM if
    this launcher dies (Linux), so it never trains on detached, holding the run folder."""
    forwarder = _Forwarder(stop.grace_seconds())
    previous = {s: signal.signal(s, forwarder) for s in stop.SIGNALS}
    try:
        job = subprocess.Popen(command(nproc, train_args), env=rank_environment(nproc), stdin=subprocess.DEVNULL,
                               start_new_session=True, preexec_fn=_end_with_parent)
        forwarder.attach(job)
        while True:
            try:
                code = job.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if forwarder.deadline is not None and time.monotonic() > forwarder.deadline:
                    os.killpg(job.pid, signal.SIGKILL)
                    job.wait()
                    print(f"\ngpunet: the job did not end within {forwarder.grace + BACKSTOP_SECONDS:g} s of "
                          f"{stop.signal_name(forwarder.first)}: killed", file=sys.stderr)
                    return stop.exit_status(forwarder.first)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if forwarder.first is not None and code != 0:
        return stop.exit_status(forwarder.first)
    return code


class _Forwarder:
    """The launcher's SIGINT and SIGTERM handler: the first signal goes on to ``mpiexec`` as it came (the ranks
    stop after the step, rank 0 saves); every later one as SIGTERM, which the ranks take as "stop at once"."""

    def __init__(self, grace: float):
        self.grace, self.job, self.first, self.deadline, self.sent = grace, None, None, None, 0

    def __call__(self, signum, frame) -> None:
        if self.first is None:
            self.first, self.deadline = signum, time.monotonic() + self.grace + BACKSTOP_SECONDS
        self._send(signum)

    def attach(self, job) -> None:
        """``job`` started; a signal that came while it was starting is passed on now."""
        self.job = job
        if self.first is not None:
            self._send(self.first)

    def _send(self, signum: int) -> None:
        if self.job is not None:
            self.job.send_signal(signum if self.sent == 0 else signal.SIGTERM)
            self.sent += 1


def _end_with_parent() -> None:
    """In the child before exec: SIGTERM it when this launcher dies, however (Linux's PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
