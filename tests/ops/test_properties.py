"""Property tests over random shapes, dtypes and values (huge, tiny, -inf), on cpu and on the simulator."""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import gpunet
from gpunet import ops

# cpu: many cases; sim: fewer (each kernel launch starts real threads), still hundreds in all.
BUDGET = {"cpu": 700, "sim": 150}


def logit_values(dtype):
    """Ordinary, huge, tiny and -inf logits (drawn as float64, then cast)."""
    huge = 1e4 if dtype == np.float32 else 1e150
    return st.one_of(st.floats(-30, 30), st.floats(-huge, huge), st.sampled_from([1e-30, -1e-30, 0.0, -np.inf]))


@st.composite
def logit_batches(draw, max_rows=5, max_cols=70):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rows, cols = draw(st.integers(1, max_rows)), draw(st.integers(1, max_cols))
    x = draw(arrays(np.float64, (rows, cols), elements=logit_values(dtype))).astype(dtype)
    x[:, draw(st.integers(0, cols - 1))] = draw(st.floats(-50, 50))  # every row has a finite entry
    return x


def per_device(fn):
    """Run the property on cpu and sim with each device's example budget."""
    return pytest.mark.parametrize("device", ["cpu", "sim"])(fn)


def settings_for(device):
    return settings(max_examples=BUDGET[device], deadline=None, suppress_health_check=list(HealthCheck),
                    derandomize=True)


@per_device
def test_softmax_rows_are_distributions(device):
    dev = gpunet.device(device)

    @settings_for(device)
    @given(logit_batches())
    def check(x):
        y = dev.to_numpy(ops.softmax(dev.asarray(x), device=dev))
        assert np.all((y >= 0) & (y <= 1))
        np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-5 if x.dtype == np.float32 else 1e-12)
        assert np.all(y[np.isneginf(x)] == 0)
    check()


@per_device
def test_log_softmax_is_log_of_softmax(device):
    dev = gpunet.device(device)

    @settings_for(device)
    @given(logit_batches())
    def check(x):
        logy = dev.to_numpy(ops.log_softmax(dev.asarray(x), device=dev))
        y = dev.to_numpy(ops.softmax(dev.asarray(x), device=dev))
        assert np.all(logy <= 1e-6)
        where = (y > 1e-30) & np.isfinite(logy)
        tol = 2e-4 if x.dtype == np.float32 else 1e-9
        np.testing.assert_allclose(logy[where], np.log(y[where]), rtol=tol, atol=tol)
    check()


@per_device
def test_backward_is_the_jacobian_product(device):
    dev = gpunet.device(device)

    @settings_for(device)
    @given(logit_batches(max_cols=40), st.integers(0, 2**31 - 1))
    def check(x, seed):
        y = ops.softmax(x, device="cpu")
        dy = np.random.default_rng(seed).standard_normal(x.shape).astype(x.dtype)
        dx = dev.to_numpy(ops.softmax_backward(dev.asarray(y), dev.asarray(dy), device=dev))
        want = np.einsum("nij,nj->ni", ops.softmax_jacobian(y.astype(np.float64), device="cpu"), dy)
        tol = 1e-4 if x.dtype == np.float32 else 1e-10
        np.testing.assert_allclose(dx, want, rtol=tol, atol=tol)
    check()


@per_device
def test_cross_entropy_is_minus_log_p_label(device):
    dev = gpunet.device(device)

    @settings_for(device)
    @given(logit_batches(), st.data())
    def check(x, data):
        rows, cols = x.shape
        labels = np.array(data.draw(st.lists(st.integers(0, cols - 1), min_size=rows, max_size=rows)))
        assume(np.all(np.isfinite(x[np.arange(rows), labels])))
        loss, p = ops.softmax_cross_entropy(dev.asarray(x), dev.asarray(labels), reduction="none", device=dev)
        logp = ops.log_softmax(x.astype(np.float64), device="cpu")[np.arange(rows), labels]
        tol = 1e-4 if x.dtype == np.float32 else 1e-10
        np.testing.assert_allclose(dev.to_numpy(loss), -logp, rtol=tol, atol=tol)
        assert np.all(dev.to_numpy(loss) >= -tol)
    check()
