"""The communicators' branches that a healthy two-rank job never takes, run in this process as an MPI job of one
rank on the simulated GPU: NCCL missing, its id or its init failing (each gives MPI and one log line), host
arrays through the NCCL communicator, GPU arrays staged through the host by MPI, and the start timeout's rules."""
import logging
import sys

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="pip install 'gpunet[mpi]'")
from gpunet.devices import simgpu  # noqa: E402
from gpunet.distributed import communicator as comms  # noqa: E402
from gpunet.distributed.communicator import (Communicator, DistributedUnavailable, MpiCommunicator,  # noqa: E402
                                             NcclCommunicator, gpu_communicator, nccl_of, start_timeout)


@pytest.fixture(scope="module")
def mpi():
    return MpiCommunicator()


def test_one_rank_alone_is_the_identity():
    alone, a = Communicator(), np.arange(3.0)
    alone.allreduce_sum(a)
    alone.allreduce_sum_start(a).wait()
    alone.broadcast(a)
    alone.barrier()
    alone.finalize()
    assert a.tolist() == [0.0, 1.0, 2.0] and alone.allgather(5) == [5] and alone.from_rank0("x") == "x"
    assert alone.host and alone.size == 1
    with pytest.raises(SystemExit) as ended:
        alone.abort(3)
    assert ended.value.code == 3


def test_mpi_stages_gpu_arrays_through_the_host_and_syncs_to_do_so(mpi):
    cupy = simgpu.cupy
    with cupy.cuda.Device(1):
        a = cupy.arange(4.0)
        before = simgpu.host_syncs()
        mpi.allreduce_sum(a)
        mpi.broadcast(a, root=0)
        assert simgpu.host_syncs() == before + 2  # each one a read back: why GPU ranks want NCCL
    assert a.device.id == 1 and a.get().tolist() == [0.0, 1.0, 2.0, 3.0]
    host = np.arange(3.0)
    mpi.allreduce_sum_start(host).wait()
    mpi.broadcast(host, root=0)
    mpi.barrier()
    assert host.tolist() == [0.0, 1.0, 2.0] and mpi.allgather("r") == ["r"] and mpi.from_rank0(7) == 7
    assert mpi.name.startswith("MPI (") and mpi.size == 1


def test_nccl_takes_gpu_arrays_and_leaves_host_arrays_to_mpi(mpi):
    cupy = simgpu.make_cupy(nccl=True)
    comm = NcclCommunicator(mpi, 1, cupy)
    assert comm.name.startswith("NCCL 22703 over MPI")
    with cupy.cuda.Device(1):
        a = cupy.arange(5, dtype=cupy.float16)
        before = simgpu.host_syncs()
        comm.allreduce_sum(a)
        comm.broadcast(a, root=0)
        assert simgpu.host_syncs() == before  # on the stream: no read back
    host = np.ones(2)
    comm.allreduce_sum(host)
    comm.broadcast(host)
    assert a.get().tolist() == list(range(5)) and host.tolist() == [1.0, 1.0]
    with cupy.cuda.Device(0):
        wrong = cupy.ones(2, dtype=cupy.float32)  # a GPU-0 buffer handed to GPU 1's communicator: NCCL's error
    with pytest.raises(RuntimeError, match="ncclInvalidArgument"):
        comm.allreduce_sum(wrong)


def test_without_nccl_the_nccl_communicator_says_what_to_install(mpi, monkeypatch):
    cupy = simgpu.make_cupy(nccl=False)
    assert nccl_of(cupy)[1] is None and "pip install nvidia-nccl" in nccl_of(cupy)[2]
    monkeypatch.setitem(sys.modules, "cupy", cupy)  # no CuPy given: the installed one is imported
    assert nccl_of()[:2] == (cupy, None)
    with pytest.raises(DistributedUnavailable, match="CuPy finds no NCCL library"):
        NcclCommunicator(mpi, 0, cupy)


def _failing(kind):
    cupy = simgpu.make_cupy(nccl=True)
    nccl = cupy.cuda.nccl

    def fail(*args):
        raise nccl.NcclError(f"ncclSystemError: {kind} failed (planted)")
    if kind == "id":
        nccl.get_unique_id = fail
    else:
        nccl.NcclCommunicator = fail
    return cupy


@pytest.mark.parametrize("kind, said", [("id", "ncclGetUniqueId failed"), ("init", "ncclCommInitRank failed")])
def test_a_failing_nccl_gives_mpi_and_one_log_line(mpi, caplog, kind, said):
    with caplog.at_level(logging.WARNING, logger="gpunet"):
        comm = gpu_communicator(mpi, 0, _failing(kind))
    assert comm is mpi
    lines = [r.getMessage() for r in caplog.records if "NCCL unavailable" in r.getMessage()]
    assert len(lines) == 1 and f"rank 0: {said}: NcclError" in lines[0] and "(planted)" in lines[0]


def test_a_working_nccl_is_chosen_without_a_log_line(mpi, caplog):
    with caplog.at_level(logging.WARNING, logger="gpunet"):
        comm = gpu_communicator(mpi, 1, simgpu.make_cupy(nccl=True))
    assert isinstance(comm, NcclCommunicator) and not caplog.records


@pytest.mark.parametrize("text, seconds", [("", comms.DEFAULT_START_TIMEOUT), (" ", comms.DEFAULT_START_TIMEOUT),
                                           ("2.5", 2.5)])
def test_the_start_timeout_comes_from_the_environment(text, seconds):
    assert start_timeout({comms.START_TIMEOUT_ENV: text}) == seconds


@pytest.mark.parametrize("text", ["0", "-1", "inf", "nan", "soon"])
def test_a_bad_start_timeout_is_an_error(text):
    with pytest.raises(DistributedUnavailable, match="must be a number of seconds > 0"):
        start_timeout({comms.START_TIMEOUT_ENV: text})


def test_the_watchdog_writes_to_the_original_stderr_or_nowhere(monkeypatch):
    class NoDescriptor:
        def fileno(self):
            raise OSError("no file descriptor")
    monkeypatch.setattr("sys.stderr", NoDescriptor())
    assert comms._stream_with_a_file_descriptor() is not None  # sys.__stderr__
    monkeypatch.setattr("sys.__stderr__", NoDescriptor())
    assert comms._stream_with_a_file_descriptor() is None


def test_the_real_cupys_nccl_module_is_imported_not_looked_up(tmp_path):
    """CuPy 14 has no ``cupy.cuda.nccl`` attribute until ``cupy.cuda.nccl`` is imported: looking it up gave
    "NCCL unavailable" on every GPU machine, NCCL installed or not, and the job fell back to MPI. In a fresh
    process (nothing imported it yet), with the real CuPy of the test extra: NCCL found, or (no NCCL wheel here)
    CuPy's own answer that it finds no library; and a package laid out as CuPy is, whose ``nccl`` is there."""
    import subprocess
    import textwrap

    code = ("import cupy\nfrom gpunet.distributed.communicator import nccl_of\n"
            "_, nccl, why = nccl_of(cupy)\nprint('found' if nccl is not None else why)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    said = done.stdout.strip().splitlines()[-1]
    assert said == "found" or "CuPy finds no NCCL library" in said, said
    lazy = tmp_path / "lazycupy"
    (lazy / "cuda").mkdir(parents=True)
    (lazy / "__init__.py").write_text("from . import cuda\n")
    (lazy / "cuda" / "__init__.py").write_text("")  # as CuPy's: nccl is a submodule not imported here
    (lazy / "cuda" / "nccl.py").write_text(textwrap.dedent("""\
        available = True
        """))
    sys.path.insert(0, str(tmp_path))
    try:
        import lazycupy
        assert not hasattr(lazycupy.cuda, "nccl")
        _, nccl, why = nccl_of(lazycupy)
        assert why is None and nccl is sys.modules["lazycupy.cuda.nccl"]
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n.startswith("lazycupy")]:
            del sys.modules[name]
