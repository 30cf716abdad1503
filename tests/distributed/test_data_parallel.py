"""Data-parallel training through MPI (the mpich wheel's mpiexec, CPU and simulator ranks): N ranks reach the
weights of one process on the same global batches, hold identical weights, use every sample once per epoch,
resume across world sizes, and a failing rank ends the job."""
import importlib
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from gpunet.devices import simgpu
from gpunet.distributed import split
from tests.helpers import gpu

pytest.importorskip("mpi4py", reason="pip install 'gpunet[mpi]'")
from gpunet.distributed.launch import mpiexec  # noqa: E402

SCRIPT = Path(__file__).with_name("train_ranks.py")


def ranks(n: int, out: Path, *args, timeout=120):
    """Run train_ranks.py on ``n`` MPI ranks (n = 0: one process without MPI, the reference)."""
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(SCRIPT), str(out), *args]
    if n:
        command = [mpiexec(), "-n", str(n), sys.executable, "-m", "mpi4py", *command[1:]]
    else:
        command.append("--single")
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    return done


def weights(path: Path) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("rows,parts", [(10, 3), (2, 3), (0, 2), (7, 1), (203, 4)])
def test_split_covers_every_row_once_as_evenly_as_possible(rows, parts):
    bounds = [split(rows, parts, r) for r in range(parts)]
    assert bounds[0][0] == 0 and bounds[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("n,activation,optimizer,device", [
    (2, "relu", "sgd", "cpu"), (3, "tanh", "adam", "cpu"), (3, "relu", "adam", "cpu"), (2, "tanh", "sgd", "cpu"),
    (2, "relu", "sgd", "sim"),
])
def test_ranks_reach_the_weights_of_one_process(tmp_path, n, activation, optimizer, device):
    extra = ["--rows", "43", "--batch", "8", "--epochs", "1"] if device == "sim" else []  # the simulator is slow
    options = ["--activation", activation, "--optimizer", optimizer, "--device", device, *extra]
    single = ranks(0, tmp_path / "single", *options)
    assert single.returncode == 0, single.stderr[-3000:]
    job = ranks(n, tmp_path / "ranks", *options)
    assert job.returncode == 0, job.stderr[-3000:]
    want = weights(tmp_path / "single" / "rank0.npz")
    got = [weights(tmp_path / "ranks" / f"rank{r}.npz") for r in range(n)]
    for name in want:
        if name.startswith("used"):  # the samples (used0, ...) and GPUs (usedgpus) each rank used
            continue
        for r in range(1, n):  # every rank holds the same weights, bit for bit
            np.testing.assert_array_equal(got[r][name], got[0][name], err_msg=f"{name} on rank {r}")
        # float32, a dozen steps: only the order of the additions differs from one process
        np.testing.assert_allclose(got[0][name], want[name], rtol=2e-5, atol=2e-6 * np.abs(want[name]).max(),
                                   err_msg=name)
    for epoch in range(1 if device == "sim" else 2):  # every sample exactly once per epoch, across the ranks
        used = np.concatenate([g[f"used{epoch}"] for g in got])
        assert sorted(used.tolist()) == list(range(43 if device == "sim" else 203))


def farthest(got: dict, want: dict) -> float:
    """The largest difference between two sets of weights, relative to each tensor's largest weight."""
    return max(float(np.abs(got[k] - want[k]).max() / np.abs(want[k]).max()) for k in want
               if not k.startswith("used") and k not in ("losses", "norms"))


def test_one_process_and_two_ranks_clip_alike(tmp_path):
    """--clip-grad-norm on 2 ranks clips the global gradient, after the allreduce: the weights stay as close to one
    process's as they are without clipping (only the order of float additions differs), though clipping is
    active at most steps and changes the weights."""
    options = ["--activation", "tanh", "--optimizer", "sgd", "--device", "cpu"]
    runs = {}
    for clip in (None, "0.3"):
        extra = ["--clip-grad-norm", clip] if clip else []
        for n in (0, 2):
            out = tmp_path / f"{clip}-{n}"
            job = ranks(n, out, *options, *extra)
            assert job.returncode == 0, job.stderr[-3000:]
            runs[clip, n] = [weights(out / f"rank{r}.npz") for r in range(max(n, 1))]
    single, two = runs["0.3", 0][0], runs["0.3", 2]
    np.testing.assert_allclose(two[0]["norms"], single["norms"], rtol=1e-4)  # every rank saw the global norm
    np.testing.assert_array_equal(two[1]["norms"], two[0]["norms"])
    assert (single["norms"] > 0.3).mean() > 0.5  # clipping active at most steps
    assert farthest(single, runs[None, 0][0]) > 1e-2  # and it changed the weights
    unclipped = farthest(runs[None, 2][0], runs[None, 0][0])
    assert 0 < unclipped < 1e-5  # float32 rounding, from the order of the additions alone
    assert farthest(two[0], single) <= 4 * unclipped
    assert farthest(two[1], two[0]) == 0


def test_a_rank_that_raises_ends_the_job(tmp_path):
    start = time.monotonic()
    job = ranks(3, tmp_path / "fault", "--fault-rank", "1", timeout=60)
    assert job.returncode != 0
    assert time.monotonic() - start < 30
    assert "an injected fault on rank 1" in job.stderr


def test_a_checkpoint_of_three_ranks_resumes_on_one(tmp_path):
    """World-size independence: 2 epochs on 3 ranks, then 2 more on 1 process, against 4 epochs on 3 ranks."""
    common = ["--dataset", "moons", "--hidden", "16", "--device", "cpu", "--no-progress", "--batch-size", "60",
              "--optimizer", "adam", "--schedule", "constant"]
    train = [sys.executable, "-m", "gpunet", "train", *common]
    first = subprocess.run([*train, "--epochs", "2", "--nproc", "3", "--out", str(tmp_path / "a")],
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = subprocess.run([*train, "--epochs", "4", "--resume", "--out", str(tmp_path / "a")],
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight = subprocess.run([*train, "--epochs", "4", "--nproc", "3", "--out", str(tmp_path / "b")],
                              capture_output=True, text=True, timeout=120)
    assert straight.returncode == 0, straight.stderr[-3000:]
    a = np.load(tmp_path / "a" / "checkpoint.npz")
    b = np.load(tmp_path / "b" / "checkpoint.npz")
    for key in [k for k in a.files if k != "meta"]:  # the weights and the optimizer's state
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-6, err_msg=key)
    import json

    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["world_size"] == 3 and metrics["history"][-1]["allreduce_seconds_per_step"] > 0


def test_a_divergence_stops_every_rank_with_one_message(tmp_path):
    job = subprocess.run([sys.executable, "-m", "gpunet", "train", "--dataset", "moons", "--hidden", "8", "--device",
                          "cpu", "--no-progress", "--optimizer", "sgd", "--lr", "1e30", "--activation", "relu", "--epochs", "3", "--nproc", "2",
                          "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert job.returncode == 3, job.stderr[-3000:]
    assert job.stderr.count("the weights diverged") == 1, job.stderr


def test_distributed_without_mpi4py_says_what_to_install(monkeypatch, capsys):
    from gpunet.cli import main
    from gpunet.distributed import DistributedUnavailable, MpiCommunicator

    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(DistributedUnavailable, match=r"pip install 'gpunet\[mpi\]'"):
        MpiCommunicator()
    assert main(["train", "--distributed", "--dataset", "moons", "--epochs", "1"]) == 2
    assert "pip install 'gpunet[mpi]'" in capsys.readouterr().err


def test_distributed_without_an_mpi_library_says_what_to_install(monkeypatch, capsys):
    """mpi4py 4 imports without an MPI library; ``from mpi4py import MPI`` then raises RuntimeError("cannot load MPI
    library"), not ImportError: the advice, not the raw error."""
    from gpunet.cli import main
    from gpunet.distributed import DistributedUnavailable, MpiCommunicator

    without_library = types.ModuleType("mpi4py")

    def load(name):
        raise RuntimeError("cannot load MPI library\n/nowhere/libmpi.so: cannot open shared object file")
    without_library.__getattr__ = load
    monkeypatch.setitem(sys.modules, "mpi4py", without_library)
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    with pytest.raises(DistributedUnavailable, match=r"pip install 'gpunet\[mpi\]'") as caught:
        MpiCommunicator()
    assert "pip install mpich" in str(caught.value) and "cannot load MPI library" in str(caught.value)
    assert main(["train", "--distributed", "--dataset", "moons", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'gpunet[mpi]'" in err and "Traceback" not in err


def test_nproc_without_an_mpi_library_says_what_to_install(tmp_path):
    """The same through ``--nproc``: each rank says what to install, and the job ends with an error status."""
    env = {**os.environ, "MPI4PY_LIBMPI": str(tmp_path / "no-libmpi.so")}
    job = subprocess.run([sys.executable, "-m", "gpunet", "train", "--dataset", "moons", "--epochs", "1", "--device",
                          "cpu", "--no-progress", "--nproc", "2", "--out", str(tmp_path / "run")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert job.returncode != 0
    assert "pip install 'gpunet[mpi]'" in job.stderr and "Traceback" not in job.stderr, job.stderr[-3000:]


def test_the_nproc_command_is_the_documented_one():
    from gpunet.distributed.launch import command, rank_environment

    cmd = command(4, ["--dataset", "moons"])
    assert cmd[1:] == ["-n", "4", sys.executable, "-m", "mpi4py", "-m", "gpunet", "train", "--distributed",
                       "--dataset", "moons"]
    assert rank_environment(4)["OPENBLAS_NUM_THREADS"] == rank_environment(4)["GPUNET_THREADS"] >= "1"


# The real CuPy on a GPU (gpu-marked) and the simulated GPU run the same assertions: the day a GPU is lent shows
# whether the stand-in tells the truth.
GPU_KINDS = [pytest.param("cuda", marks=[pytest.mark.gpu, gpu], id="cuda"), pytest.param("simgpu", id="simgpu")]


def gpu_cupy(kind: str):
    return importlib.import_module("cupy") if kind == "cuda" else simgpu.cupy


@pytest.mark.parametrize("kind", GPU_KINDS)
def test_nccl_on_one_rank_reduces_a_gpu_buffer(kind):
    from gpunet.distributed import NcclCommunicator, world

    cupy = gpu_cupy(kind)
    comm = NcclCommunicator(world(), 0, cupy)
    with cupy.cuda.Device(0):
        a = cupy.arange(10, dtype=cupy.float32)
        comm.allreduce_sum(a)
        np.testing.assert_array_equal(a.get(), np.arange(10, dtype=np.float32))  # one rank: the sum is itself


@pytest.mark.parametrize("kind", GPU_KINDS)
def test_two_gpu_ranks_reach_the_weights_of_one_process(tmp_path, kind):
    if gpu_cupy(kind).cuda.runtime.getDeviceCount() < 2:
        pytest.skip("fewer than 2 GPUs")
    single = ranks(0, tmp_path / "single", "--device", kind)
    job = ranks(2, tmp_path / "ranks", "--device", kind)
    assert single.returncode == 0 and job.returncode == 0, job.stderr[-3000:]
    want = weights(tmp_path / "single" / "rank0.npz")
    got = [weights(tmp_path / "ranks" / f"rank{r}.npz") for r in range(2)]
    for name in want:
        if not name.startswith("used"):
            np.testing.assert_allclose(got[0][name], want[name], rtol=2e-5, atol=2e-6 * np.abs(want[name]).max())
    # rank r trains on GPU r, and every array of it lives there (issue 23, defect 2)
    assert [set(g["usedgpus"].tolist()) for g in got] == [{0}, {1}]
    if kind == "simgpu":  # a step (the shard, the divisor, NCCL's allreduce, the update) waits for no GPU
        assert [g["usedsyncs"].tolist() for g in got] == [[0] * len(got[0]["losses"])] * 2
