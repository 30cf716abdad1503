"""``gpunet info``: what this machine gives gpunet, in words and as JSON (gpunet.info)."""
import json

import numpy as np
import pytest

from gpunet import cli, cpu_kernels
from gpunet.info import step_products
from gpunet.machine import cpu_model


def test_info_names_the_cpu_kernels_blas_and_threads(capsys, monkeypatch):
    monkeypatch.setenv("GPUNET_THREADS", "2")
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"CPU        {cpu_model()}" in out
    assert f"kernels    compiled for {cpu_kernels.chosen_isa()}:" in out  # CI builds them (tests/test_ci_rules.py)
    assert "BLAS       NumPy's: " in out and "GPUNET_BLAS=numpy: this process multiplies on NumPy's BLAS" in out
    assert "CUDA       " in out


def test_info_json_and_measure_fill_the_blas_timings(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("GPUNET_CACHE", str(tmp_path))
    monkeypatch.setenv("GPUNET_BLAS", "auto")
    assert cli.main(["info", "--json", "--measure"]) == 0
    info = json.loads(capsys.readouterr().out)
    blas = info["blas"]
    assert info["compiled_kernels"]["built"] and "softmax_forward" in info["compiled_kernels"]["entry_points"]
    if blas["mkl"] is None:
        pytest.fail(f"the test extra installs oneMKL: {blas['mkl_error']}")
    # Every product of the bench's three steps timed on both BLASes (each in processes of its own); the choice
    # is a training process's, over its own first step: none was taken here.
    assert len(blas["timings"]) == 21 and blas["seen"] == []
    assert all(set(t) == {"numpy", "mkl"} and min(t.values()) > 0 for t in blas["timings"].values())
    assert blas["current"] == "numpy"
    assert "float32 128x784x512 nn" in blas["timings"] and "float32 784x128x512 tn" in blas["timings"]


def test_info_reports_a_bad_setting_as_an_error(capsys, monkeypatch):
    monkeypatch.setenv("GPUNET_BLAS", "fastest")
    assert cli.main(["info"]) == 2
    assert "GPUNET_BLAS='fastest': must be one of auto, numpy, mkl" in capsys.readouterr().err


def test_step_products_are_a_training_steps():
    pairs = step_products((5, 4, 3), 2)
    assert [(a.shape, b.shape, a.flags.c_contiguous, b.flags.c_contiguous) for a, b in pairs] == [
        ((2, 5), (5, 4), True, True), ((2, 4), (4, 3), True, True),  # forward
        ((4, 2), (2, 3), False, True), ((2, 3), (3, 4), True, False),  # last layer: x^T dy, dy W^T
        ((5, 2), (2, 4), False, True)]  # first layer: x^T dy only
    assert all(np.any(a != 0) for a, _ in pairs)
