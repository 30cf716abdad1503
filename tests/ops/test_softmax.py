"""softmax / log_softmax forward and backward on every device: references, Jacobians, finite differences."""
import numpy as np
import pytest

import gpunet
from gpunet import ops
from gpunet.gradcheck import check_backward
from tests.ops.reference import log_softmax_ref, softmax_ref

GRAD_TOL = 1e-6


def on(dev, fn):
    return lambda *a: dev.to_numpy(fn(*[dev.asarray(v) for v in a]))


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (2, 33)])
def test_softmax_matches_reference(dev, rng, shape):
    x = rng.standard_normal(shape) * 3
    np.testing.assert_allclose(dev.to_numpy(ops.softmax(dev.asarray(x))), softmax_ref(x), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dev.to_numpy(ops.log_softmax(dev.asarray(x))), log_softmax_ref(x), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_any_axis(dev, rng, axis):
    x = rng.standard_normal((3, 4, 5))
    got = dev.to_numpy(ops.softmax(dev.asarray(x), axis=axis))
    want = np.moveaxis(softmax_ref(np.moveaxis(x, axis, -1)), -1, axis)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    dy = rng.standard_normal(x.shape)
    dx = dev.to_numpy(ops.softmax_backward(dev.asarray(got), dev.asarray(dy), axis=axis))
    y_rows, dy_rows = np.moveaxis(got, axis, -1), np.moveaxis(dy, axis, -1)
    want_dx = np.einsum("...ij,...j->...i", ops.softmax_jacobian(y_rows.reshape(-1, x.shape[axis]),
                                                                 device="cpu").reshape(*y_rows.shape, -1), dy_rows)
    np.testing.assert_allclose(dx, np.moveaxis(want_dx, -1, axis), rtol=1e-10, atol=1e-14)


def test_softmax_backward_equals_jacobian_product(dev, rng):
    x = rng.standard_normal((4, 6))
    y = softmax_ref(x)
    dy = rng.standard_normal((4, 6))
    dx = dev.to_numpy(ops.softmax_backward(dev.asarray(y), dev.asarray(dy)))
    jac = ops.softmax_jacobian(y, device="cpu")
    assert jac.shape == (4, 6, 6)
    np.testing.assert_allclose(dx, np.einsum("nij,nj->ni", jac, dy), rtol=1e-10, atol=1e-14)


def test_jacobian_of_a_vector(rng):
    y = softmax_ref(rng.standard_normal(5))
    jac = ops.softmax_jacobian(y)
    assert jac.shape == (5, 5)
    np.testing.assert_allclose(jac, np.diag(y) - np.outer(y, y))
    np.testing.assert_allclose(jac.sum(axis=1), 0, atol=1e-15)  # rows of J sum to 0: softmax is shift-invariant


def test_softmax_gradient_check(dev, rng):
    err = check_backward(on(dev, ops.softmax), lambda x, y, dy: on(dev, ops.softmax_backward)(y, dy),
                         rng.standard_normal((3, 5)))
    assert err < GRAD_TOL


def test_log_softmax_gradient_check(dev, rng):
    err = check_backward(on(dev, ops.log_softmax), lambda x, y, dy: on(dev, ops.log_softmax_backward)(y, dy),
                         rng.standard_normal((3, 5)))
    assert err < GRAD_TOL


def test_wrong_jacobian_using_the_input_fails_the_gradient_check(rng):
    """A classic mistake: writing the backward with x where the Jacobian needs y = softmax(x)."""
    def wrong_backward(x, y, dy):
        return x * (dy - (dy * x).sum(axis=-1, keepdims=True))
    err = check_backward(ops.softmax, wrong_backward, rng.standard_normal((3, 5)))
    assert err > 0.1


@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_extreme_logits_stay_finite(dev, scale):
    x = np.array([[1.0, 2.0, 3.0], [0.0, 0.5, -1.0]]) * scale
    y = dev.to_numpy(ops.softmax(dev.asarray(x)))
    logy = dev.to_numpy(ops.log_softmax(dev.asarray(x)))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(logy))
    np.testing.assert_allclose(y.sum(axis=1), 1.0)
    np.testing.assert_allclose(logy, log_softmax_ref(x), rtol=1e-12)


def test_minus_inf_entries_give_zero_probability(dev):
    x = np.array([[0.0, -np.inf, 1.0], [-np.inf, 2.0, -np.inf]])
    y = dev.to_numpy(ops.softmax(dev.asarray(x)))
    assert y[0, 1] == 0 and y[1, 0] == 0 and y[1, 2] == 0 and y[1, 1] == 1
    np.testing.assert_allclose(y[0], softmax_ref([[0.0, -50.0 * 1e3, 1.0]])[0], atol=1e-300)
    logy = dev.to_numpy(ops.log_softmax(dev.asarray(x)))
    assert logy[0, 1] == -np.inf and logy[1, 1] == 0


def test_row_of_only_minus_inf_is_nan(dev):
    """Documented choice (as in PyTorch): a fully masked row has no distribution."""
    y = dev.to_numpy(ops.softmax(dev.asarray(np.array([[-np.inf, -np.inf], [0.0, 0.0]]))))
    assert np.all(np.isnan(y[0])) and np.allclose(y[1], 0.5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_keeps_input_dtype(dev, rng, dtype):
    x = rng.standard_normal((2, 3)).astype(dtype)
    assert ops.softmax(dev.asarray(x)).dtype == dtype
    assert ops.log_softmax(dev.asarray(x)).dtype == dtype


def test_bad_input(dev):
    with pytest.raises(ValueError, match="floating-point"):
        ops.softmax(dev.asarray(np.arange(6).reshape(2, 3)))
    with pytest.raises(ValueError, match="axis 2"):
        ops.softmax(dev.asarray(np.zeros((2, 3))), axis=2)
    with pytest.raises(ValueError, match="empty"):
        ops.softmax(dev.asarray(np.zeros((0, 3))))
    with pytest.raises(ValueError, match="same shape"):
        ops.softmax_backward(dev.asarray(np.zeros((2, 3))), dev.asarray(np.zeros((2, 4))))
    with pytest.raises(ValueError, match="dimension"):
        ops.softmax_jacobian(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="does not support"):
        ops.softmax(dev.asarray(np.zeros((2, 3), dtype=np.longdouble)))


@pytest.mark.parametrize("cols", [3, 10, 40])
def test_host_row_blocks_on_threads_match_one_block(monkeypatch, rng, cols):
    """The CPU's NumPy forms split rows into cache-sized blocks on a thread per core; tiny blocks must change
    nothing. (With the compiled kernels on, the softmax family would not go through the blocks at all.)"""
    monkeypatch.setenv("GPUNET_CPU_KERNELS", "0")
    cpu = gpunet.device("cpu")
    x = rng.standard_normal((37, cols)) * 3
    dy = rng.standard_normal((37, cols))
    labels = rng.integers(0, cols, 37)
    labels[5] = -100

    def everything():
        y, logy = ops.softmax(x, device=cpu), ops.log_softmax(x, device=cpu)
        loss, p = ops.softmax_cross_entropy(x, labels, reduction="none", device=cpu)
        return [y, logy, ops.softmax_backward(y, dy, device=cpu), ops.log_softmax_backward(logy, dy, device=cpu),
                loss, p, ops.softmax_cross_entropy_backward(p, labels, device=cpu)]
    whole = everything()
    blocks = []
    real_map_rows = type(cpu.kernels).map_rows
    monkeypatch.setattr(type(cpu.kernels), "map_rows",
                        lambda self, fn, inputs, outputs: blocks.append(len(inputs[0])) or
                        real_map_rows(self, fn, inputs, outputs))
    monkeypatch.setattr(type(cpu.kernels), "block_bytes", 3 * cols * 8)  # 3 rows a block: 13 blocks
    for a, b in zip(everything(), whole):
        np.testing.assert_array_equal(a, b)
    assert len(blocks) == 6  # six calls (the loss and the probabilities come from one), each over row blocks
    np.testing.assert_allclose(whole[0], softmax_ref(x), rtol=1e-12)
