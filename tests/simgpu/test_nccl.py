"""Defect 3 of issue 23 on two simulated GPUs: NCCL present on every rank gives NCCL on every rank; NCCL missing on
one rank (CuPy's ``nccl.available = False``) gives MPI on every rank and one log line, never a hang."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="pip install 'gpunet[mpi]'")
from gpunet.devices import simgpu  # noqa: E402
from gpunet.distributed.launch import mpiexec  # noqa: E402

SCRIPT = Path(__file__).with_name("nccl_ranks.py")


def two_ranks(mode: str, out: Path):
    job = subprocess.run([mpiexec(), "-n", "2", sys.executable, "-m", "mpi4py", str(SCRIPT), mode, str(out)],
                         capture_output=True, text=True, timeout=60)  # a rank waiting for the other would hang
    assert job.returncode == 0, job.stderr[-3000:]
    lines = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["rank"] for r in lines] == [0, 1]
    for r in lines:  # the sum of 1x and 2x arange(4), rank 1's 8.0, each on the rank's own GPU
        assert r["summed"] == [0.0, 3.0, 6.0, 9.0] and r["sent"] == [8.0] * 3 and r["gpus"] == [r["rank"]] * 2
    return {r["kind"] for r in lines}, job.stderr


def test_nccl_on_every_rank_reduces_gpu_arrays_with_nccl(tmp_path):
    kinds, err = two_ranks("present", tmp_path)
    assert kinds == {"NcclCommunicator"} and "NCCL unavailable" not in err


def test_nccl_missing_on_one_rank_makes_every_rank_use_mpi_with_one_log_line(tmp_path):
    kinds, err = two_ranks("missing", tmp_path)
    assert kinds == {"MpiCommunicator"}
    assert err.count("NCCL unavailable") == 1 and "rank 1: NCCL is not available" in err, err


def test_gpunet_train_on_two_simulated_gpus_reaches_the_weights_of_one_cpu_process(tmp_path):
    """The command line end to end (issue 23, item 3): ``--nproc 2 --device simgpu`` (rank r on GPU r, NCCL, every
    step ``gpunet.trainer.Trainer``'s through ``fit``) against one cpu process on the same global batches; every
    array rank 1 ever allocated, and every kernel it launched, was on GPU 1 (the stand-in's count, by GPU)."""
    common = [sys.executable, "-m", "gpunet", "train", "--dataset", "moons", "--hidden", "8", "--no-progress",
              "--epochs", "2", "--batch-size", "60", "--optimizer", "adam", "--schedule", "constant"]
    (tmp_path / "usage").mkdir()
    env = {**os.environ, simgpu.REPORT_ENV: str(tmp_path / "usage")}
    gpus = subprocess.run([*common, "--nproc", "2", "--device", "simgpu", "--out", str(tmp_path / "gpus")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert gpus.returncode == 0, gpus.stderr[-3000:]
    assert "2 ranks (NCCL" in gpus.stdout + gpus.stderr
    cpu = subprocess.run([*common, "--device", "cpu", "--out", str(tmp_path / "cpu")], capture_output=True,
                         text=True, timeout=300)
    assert cpu.returncode == 0, cpu.stderr[-3000:]
    a, b = np.load(tmp_path / "gpus" / "checkpoint.npz"), np.load(tmp_path / "cpu" / "checkpoint.npz")
    for key in [k for k in b.files if k != "meta"]:  # float32: only the order of the additions differs, and
        # Adam's moments are sums whose terms cancel: a slack of each array's largest term, not of each value
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-4 * np.abs(b[key]).max(), err_msg=key)
    usage = {r["rank"]: r for r in map(json.loads, map(Path.read_text, (tmp_path / "usage").glob("*.json")))
             if r["rank"] is not None}  # the launcher's own process has no rank
    assert sorted(usage) == ["0", "1"]
    for rank, report in usage.items():
        assert list(report["allocations"]) == [rank] and report["allocations"][rank] > 100, report
        assert list(report["launches"]) == [rank] and report["launches"][rank] > 10, report
