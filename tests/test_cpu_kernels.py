"""The compiled CPU row kernels (gpunet/cpu_kernels/rows.cpp) against the NumPy form of the same ops, which the
CPU uses where they cannot be built: same values within rounding, same NaN and -inf behaviour, and a clean
fallback when switched off or when no compiler is found."""
import logging

import numpy as np
import pytest

import gpunet
from gpunet import cpu_kernels, ops

from conftest import TOLERANCES

pytestmark = pytest.mark.skipif(cpu_kernels.library() is None,
                                reason="the CPU row kernels cannot be built on this machine (NumPy is used)")


@pytest.fixture
def numpy_form(monkeypatch):
    """Run ``fn`` with the compiled kernels switched off."""
    def run(fn):
        with monkeypatch.context() as m:
            m.setenv("GPUNET_CPU_KERNELS", "0")
            assert cpu_kernels.library() is None
            return fn()
    return run


def logits(rows, cols, dtype, seed=0):
    x = np.random.default_rng(seed).standard_normal((rows, cols)) * 4
    x[0, 0] = -np.inf  # a column with no probability
    if rows > 2:
        x[1, :] = -np.inf  # a row with none at all: NaN, as everywhere
        x[2, cols // 2] = np.nan
    return x.astype(dtype)


def same(got, want, dtype, scale=1.0):
    """Equal NaN patterns, values within the dtype's tolerance; ``scale``: the size of the terms that cancel
    (a backward's dy - exp(logy) sum(dy) loses relative precision where they nearly do, in both forms)."""
    rtol, atol = TOLERANCES[dtype]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=max(atol, rtol * scale))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
# Rows of 32 columns and more: shorter ones take the NumPy form's column-wise path on purpose.
@pytest.mark.parametrize("rows,cols", [(1, 32), (3, 33), (5, 100), (4, 1000), (3, 20000), (3000, 40)])
def test_softmax_and_log_softmax_match_the_numpy_form(numpy_form, rows, cols, dtype):
    x = logits(rows, cols, dtype)
    dy = logits(rows, cols, dtype, seed=1)  # NaN and -inf in the incoming gradient too
    for forward, backward in ((ops.softmax, ops.softmax_backward), (ops.log_softmax, ops.log_softmax_backward)):
        y = forward(x, device="cpu")
        assert y.dtype == dtype
        same(y, numpy_form(lambda: forward(x, device="cpu")), dtype)
        y = numpy_form(lambda: forward(np.nan_to_num(x, nan=0.0), device="cpu"))
        dx = backward(y, dy, device="cpu")
        assert dx.dtype == dtype
        finite_dy = np.abs(dy[np.isfinite(dy)]).astype(np.float64)
        same(dx, numpy_form(lambda: backward(y, dy, device="cpu")), dtype, scale=4 * finite_dy.max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("rows,cols", [(4, 32), (6, 1000), (3, 20000), (2000, 50)])
def test_cross_entropy_with_grad_matches_the_numpy_form(numpy_form, rows, cols, dtype, reduction):
    x = logits(rows, cols, dtype)
    x[0, 0] = 0.0  # keep the first row's label logit finite
    labels = np.random.default_rng(1).integers(0, cols, rows).astype(np.int32)  # not int64: converted
    labels[-1] = -100
    loss, grad = ops.softmax_cross_entropy_with_grad(x, labels, reduction=reduction, device="cpu")
    want_loss, want_grad = numpy_form(
        lambda: ops.softmax_cross_entropy_with_grad(x, labels, reduction=reduction, device="cpu"))
    same(np.asarray(loss), np.asarray(want_loss), dtype)
    same(grad, want_grad, dtype)
    assert np.all(grad[-1] == 0)


def test_huge_logits_stay_finite():
    x = np.full((2, 40), -np.inf, dtype=np.float32)  # 40 columns: the compiled path; -inf columns weigh 0
    x[0, :3], x[1, :3] = [1e4, 0.0, -1e4], [3e38, 3e38, -3e38]
    np.testing.assert_allclose(ops.softmax(x, device="cpu")[:, :3], [[1, 0, 0], [0.5, 0.5, 0]], atol=1e-7)
    loss, _ = ops.softmax_cross_entropy_with_grad(x, np.array([2, 0]), reduction="none", device="cpu")
    np.testing.assert_allclose(loss, [2e4, np.log(2)], rtol=1e-6)


def test_short_rows_keep_the_numpy_form(monkeypatch):
    calls = []
    real = cpu_kernels.block
    monkeypatch.setattr(cpu_kernels, "block", lambda *a, **k: calls.append(a) or real(*a, **k))
    ops.softmax(np.ones((4, 31), np.float32), device="cpu")
    assert calls == []
    ops.softmax(np.ones((4, 32), np.float32), device="cpu")
    assert calls == [("softmax", np.dtype(np.float32))]


def test_no_compiler_falls_back_to_numpy_with_one_log_line(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("GPUNET_CACHE", str(tmp_path / "cache"))  # nothing built there yet
    cpu_kernels._reset_for_tests()
    try:
        with caplog.at_level(logging.WARNING, logger="gpunet"):
            assert cpu_kernels.library() is None
            y = ops.softmax(np.array([[1.0, 2.0, 3.0]]), device=gpunet.device("cpu"))
        assert "CPU row kernels unavailable" in caplog.text and "no-such-compiler" in caplog.text
        np.testing.assert_allclose(y.sum(), 1.0)
    finally:
        cpu_kernels._reset_for_tests()
