"""Communicators: how the ranks of a data-parallel run exchange arrays.

MPI (mpi4py) launches the ranks, bootstraps them and reduces host arrays; NCCL (CuPy's ``cupy.cuda.nccl``) reduces
GPU arrays on the compute stream, its id broadcast over MPI (the design of ChainerMN's pure NCCL communicator).
A single process is a communicator of one rank whose collectives do nothing, so the training loop is written once.
"""
from __future__ import annotations

import faulthandler
import importlib
import logging
import os
import socket
import sys

from .. import dtypes
from ..devices import is_cupy_array
from ..env import seconds_setting

MPI_MISSING = ("--distributed needs MPI for Python and an MPI library: pip install 'gpunet[mpi]' (mpi4py and the "
               "mpich wheel; pip install mpich where mpi4py is there but no MPI library), or mpi4py built against "
               "your cluster's MPI")


START_TIMEOUT_ENV = "GPUNET_MPI_START_TIMEOUT"
DEFAULT_START_TIMEOUT = 30.0  # seconds a rank waits in MPI_Init for the others before it gives up


class DistributedUnavailable(RuntimeError):
    """MPI (or NCCL) was asked for and cannot be used; the message says what to install."""


class Communicator:
    """One rank alone: every collective is the identity."""

    rank, size, local_rank, local_size = 0, 1, 0, 1
    name = "single process"

    def allreduce_sum(self, array) -> None:
        """Sum ``array`` over the ranks, in place."""

    def allreduce_sum_start(self, array) -> "Pending":
        """Start summing host array ``array`` over the ranks, in place; ``wait()`` on the answer finishes it (leave
        ``array`` alone until then). Every rank must start it in the same order among its collectives."""
        return Pending()

    def broadcast(self, array, root: int = 0) -> None:
        """Overwrite ``array`` with ``root``'s, in place."""

    def allgather(self, value) -> list:
        """Every rank's ``value`` (a small Python object), in rank order."""
        return [value]

    def from_rank0(self, value):
        """Rank 0's ``value`` (a small Python object) on every rank: a decision every rank must take alike (a
        rank's own clock would let them disagree, and one would wait in a collective the others never enter)."""
        return value

    def barrier(self) -> None:
        pass

    def finalize(self) -> None:
        """End the communication layer before a non-zero exit (under ``python -m mpi4py`` an exit status would
        otherwise become ``MPI_Abort``, which cuts the other ranks off and prints a line of its own)."""

    def abort(self, code: int) -> None:
        """End every rank of the job with exit status ``code`` (here: this process)."""
        raise SystemExit(code)

    @property
    def host(self) -> str:
        return socket.gethostname()


class Pending:
    """A started collective: ``wait()`` returns once it is done (at once for one rank)."""

    def __init__(self, request=None):
        self.request = request

    def wait(self) -> None:
        if self.request is not None:
            self.request.Wait()
            self.request = None


class MpiCommunicator(Communicator):
    """MPI collectives on host buffers (CPU and simulator ranks). A GPU array is staged through the host, the
    compute stream synchronised first: the pip MPI wheels are not CUDA-aware."""

    def __init__(self, comm=None):
        self.MPI = MPI = _wait_for_every_rank_in_mpi_init()
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)  # the ranks on this machine
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self.name = f"MPI ({MPI.Get_library_version().splitlines()[0].strip()}), {self.size} ranks"

    def allreduce_sum(self, array) -> None:
        if not is_cupy_array(array):
            self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)
            return
        host = array.get()  # waits for the work queued on the current stream
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        array.set(host)

    def allreduce_sum_start(self, array) -> "Pending":
        return Pending(self.comm.Iallreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM))

    def broadcast(self, array, root: int = 0) -> None:
        if not is_cupy_array(array):
            self.comm.Bcast(array, root=root)
            return
        host = array.get()
        self.comm.Bcast(host, root=root)
        array.set(host)

    def allgather(self, value) -> list:
        return self.comm.allgather(value)

    def from_rank0(self, value):
        return self.comm.bcast(value, root=0)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int) -> None:
        self.comm.Abort(code)

    def finalize(self) -> None:
        if not self.MPI.Is_finalized():
            self.MPI.Finalize()


class NcclCommunicator(MpiCommunicator):
    """MPI for bootstrapping and small objects, NCCL for GPU arrays: one allreduce on the current (compute)
    stream, with no host synchronisation in the step."""

    _NCCL_DTYPES = {d.name: d.nccl for d in dtypes.FLOATS}

    def __init__(self, mpi: MpiCommunicator, gpu_index: int, cupy=None, uid=None):
        """Built collectively by every rank, each with its own GPU (``gpu_index``) chosen first. ``cupy``: the
        CuPy (or stand-in) the GPU arrays belong to; ``uid``: rank 0's NCCL id, broadcast already
        (``gpu_communicator`` does both, after every rank agreed that NCCL works)."""
        self.MPI, self.comm = mpi.MPI, mpi.comm
        self.rank, self.size, self.local_rank, self.local_size = mpi.rank, mpi.size, mpi.local_rank, mpi.local_size
        self.cupy, nccl, reason = nccl_of(cupy)
        if nccl is None:
            raise DistributedUnavailable(reason)
        self.nccl = nccl
        if uid is None:
            uid = self.comm.bcast(nccl.get_unique_id() if self.rank == 0 else None, root=0)
        with self.cupy.cuda.Device(gpu_index):
            self.nccl_comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self.name = f"NCCL {nccl.get_version()} over {mpi.name}"

    def allreduce_sum(self, array) -> None:
        if not is_cupy_array(array):
            return super().allreduce_sum(array)
        stream = self.cupy.cuda.get_current_stream().ptr
        dtype = getattr(self.nccl, self._NCCL_DTYPES[array.dtype.name])
        self.nccl_comm.allReduce(array.data.ptr, array.data.ptr, array.size, dtype, self.nccl.NCCL_SUM, stream)

    def broadcast(self, array, root: int = 0) -> None:
        if not is_cupy_array(array):
            return super().broadcast(array, root)
        stream = self.cupy.cuda.get_current_stream().ptr
        dtype = getattr(self.nccl, self._NCCL_DTYPES[array.dtype.name])
        self.nccl_comm.bcast(array.data.ptr, array.size, dtype, root, stream)


def nccl_of(cupy=None):
    """``(cupy, nccl, None)`` where this rank can use NCCL, else ``(cupy, None, why)``. CuPy imports its
    ``cupy.cuda.nccl`` only when asked (14.x: no ``cupy.cuda.nccl`` attribute before that import), so it is
    imported by name; CuPy without NCCL still imports it: it says ``available = False`` and has no functions."""
    try:
        if cupy is None:
            import cupy
        nccl = getattr(cupy.cuda, "nccl", None)
        if nccl is None:
            nccl = importlib.import_module(cupy.cuda.__name__ + ".nccl")
        if not getattr(nccl, "available", False):
            raise ImportError("CuPy finds no NCCL library")
    except (ImportError, AttributeError) as exc:
        return cupy, None, (f"NCCL is not available through CuPy ({exc}): pip install nvidia-nccl-cu13 (or -cu12 "
                            "to match CuPy)")
    return cupy, nccl, None


def start_timeout(environ=os.environ) -> float:
    """``$GPUNET_MPI_START_TIMEOUT`` (seconds > 0), else 30; a bad value is an error, not ignored."""
    try:
        return seconds_setting(START_TIMEOUT_ENV, DEFAULT_START_TIMEOUT, zero_allowed=False, environ=environ)
    except ValueError as exc:
        raise DistributedUnavailable(str(exc)) from None


def _wait_for_every_rank_in_mpi_init():
    """mpi4py's MPI module, MPI started. MPI_Init waits for every rank of the job; a rank that died before
    reaching it (a failed import, a bad interpreter) would leave the others spinning there for ever, since to
    mpiexec a process that never started MPI and exited is a finished process. So the wait is bounded: after
    ``start_timeout()`` seconds faulthandler's watchdog (a C thread: MPI_Init holds the GIL) prints where this
    rank waited and ends it with status 1, and the job ends."""
    timeout = start_timeout()
    stream = _stream_with_a_file_descriptor()
    starting = "mpi4py.MPI" not in sys.modules and stream is not None
    if starting:
        faulthandler.dump_traceback_later(timeout, exit=True, file=stream)
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedUnavailable(f"{MPI_MISSING} ({exc})") from None
    except RuntimeError as exc:  # mpi4py 4 without a loadable libmpi: "cannot load MPI library" and each path tried
        raise DistributedUnavailable(f"{MPI_MISSING} (mpi4py: {str(exc).splitlines()[0]})") from None
    finally:
        if starting:
            faulthandler.cancel_dump_traceback_later()
    return MPI


def _stream_with_a_file_descriptor():
    """Where faulthandler can write: stderr, or the process's original stderr where stderr was replaced by an
    object without a file descriptor (pytest's capture), else None."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            stream.fileno()
            return stream
        except (AttributeError, OSError, ValueError):
            continue
    return None


def world() -> Communicator:
    """This job's MPI communicator (several ranks, or a job of one under mpiexec)."""
    return MpiCommunicator()


def gpu_communicator(mpi: MpiCommunicator, gpu_index: int, cupy=None) -> Communicator:
    """NCCL for GPU ranks where every rank can use it, else MPI through the host on every rank, said once (by rank
    0) in the log. The choice is collective: each rank's verdict (and rank 0's NCCL id) is gathered before any rank
    enters ncclCommInitRank, which would wait for ever for a rank that fell back; a failed init is voted on too."""
    cupy, nccl, why = nccl_of(cupy)
    uid = None
    if nccl is not None and mpi.rank == 0:
        try:
            uid = nccl.get_unique_id()
        except (RuntimeError, AttributeError) as exc:
            why = f"ncclGetUniqueId failed: {type(exc).__name__}: {exc}"
    verdicts = mpi.allgather(why)
    uid = mpi.from_rank0(uid)
    comm, failed = None, [(rank, w) for rank, w in enumerate(verdicts) if w]
    if not failed:
        try:
            comm = NcclCommunicator(mpi, gpu_index, cupy, uid)
        except (DistributedUnavailable, RuntimeError) as exc:
            why = f"ncclCommInitRank failed: {type(exc).__name__}: {exc}"
        failed = [(rank, w) for rank, w in enumerate(mpi.allgather(why)) if w]
    if not failed:
        return comm
    if mpi.rank == 0:
        ranks = ", ".join(f"rank {rank}: {w}" for rank, w in failed)
        logging.getLogger("gpunet").warning("gpunet: NCCL unavailable (%s); every rank reduces GPU gradients "
                                            "through the host with MPI", ranks)
    return mpi
