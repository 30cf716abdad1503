"""The simulated GPU's ``cupy.cuda.nccl``: NCCL's communicator over MPI (mpi4py), one rank per process, or, where
NCCL is "not installed", what CuPy gives then: a module with ``available = False`` and nothing else (so
``nccl.get_unique_id`` raises AttributeError, as in CuPy without NCCL)."""
from __future__ import annotations

import ctypes
import os
import types

import numpy as np

from .. import dtypes

NCCL_SUM = 0
_DTYPES = {6: np.float16, 7: np.float32, 8: np.float64}  # NCCL's numbering (nccl.h)
_CONSTANTS = {d.nccl: code for d in dtypes.FLOATS for code, np_type in _DTYPES.items()
              if np.dtype(np_type).name == d.name}


class NcclError(RuntimeError):
    """``cupy.cuda.nccl.NcclError``."""


def module(*, available: bool, device_of_pointer, current_device) -> types.SimpleNamespace:
    """``nccl`` for the stand-in CuPy; ``device_of_pointer(ptr)`` says which GPU an address belongs to."""
    if not available:
        return types.SimpleNamespace(available=False)

    class NcclCommunicator:
        """``nccl.NcclCommunicator(ndev, uid, rank)``, built on the current GPU by every rank together."""

        def __init__(self, ndev: int, commId, rank: int):
            from mpi4py import MPI  # a third-party import, made only where NCCL is simulated

            self.MPI, self.device = MPI, current_device()
            self.comm = MPI.COMM_WORLD.Dup()  # collective, as ncclCommInitRank is: waits for every rank
            ids = self.comm.allgather((tuple(commId), rank, ndev))
            if len({i for i, _, _ in ids}) != 1 or sorted(r for _, r, _ in ids) != list(range(ndev)) or \
                    self.comm.Get_size() != ndev:
                raise NcclError("ncclInvalidUsage: the ranks disagree on the unique id, the ranks or their number")

        def _buffer(self, ptr: int, count: int, datatype: int):
            where = device_of_pointer(ptr)
            if where != self.device:
                raise NcclError(f"ncclInvalidArgument: a buffer of GPU {where} handed to the communicator of GPU "
                                f"{self.device}")
            dtype = np.dtype(_DTYPES[datatype])  # ctypes has no float16: the bytes as unsigned ints, then viewed
            c_type = np.ctypeslib.as_ctypes_type(np.dtype(f"u{dtype.itemsize}"))
            return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(c_type)), shape=(count,)).view(dtype)

        def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):  # noqa: N802  (NCCL's names)
            if op != NCCL_SUM:
                raise NcclError("only ncclSum is simulated")
            send, recv = self._buffer(sendbuf, count, datatype), self._buffer(recvbuf, count, datatype)
            wide = send.astype(np.float64)  # MPI has no float16 sum
            self.comm.Allreduce(self.MPI.IN_PLACE, wide, op=self.MPI.SUM)
            recv[...] = wide

        def bcast(self, buff, count, datatype, root, stream):
            buffer = self._buffer(buff, count, datatype)
            wide = buffer.astype(np.float64)
            self.comm.Bcast(wide, root=root)
            buffer[...] = wide

        def destroy(self):
            self.comm.Free()

    return types.SimpleNamespace(
        available=True, NcclCommunicator=NcclCommunicator, NcclError=NcclError, NCCL_SUM=NCCL_SUM,
        get_unique_id=lambda: tuple(os.urandom(128)), get_version=lambda: 22703, **_CONSTANTS)
