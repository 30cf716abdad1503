"""The host BLAS runs small matrix products on one thread and large ones as it was set
(gpunet.devices.blas_threads)."""
import numpy as np
import pytest

import gpunet
from gpunet.devices.blas_threads import SMALL_PRODUCT, BlasThreads

threadpoolctl = pytest.importorskip("threadpoolctl")


def blas_threads_now():
    return max(info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas")


@pytest.fixture
def two_threads():
    """2 BLAS threads (even on a 1-core machine, so that a change is visible), the caller's count restored after."""
    controller = threadpoolctl.ThreadpoolController()
    if not controller.select(user_api="blas").lib_controllers:
        pytest.skip("NumPy's BLAS is not one threadpoolctl can control")
    before = blas_threads_now()
    with controller.limit(limits=2, user_api="blas"):
        yield
    assert blas_threads_now() == before


def threads_seen(policy, shape):
    """The BLAS threads during a product of ``shape`` (m, k, n) run through ``policy``."""
    m, k, n = shape
    seen = []
    policy.matmul(lambda a, b, out: seen.append(blas_threads_now()), np.empty((m, k)), np.empty((k, n)))
    return seen[0]


@pytest.mark.parametrize("shape, threads", [((64, 784, 100), 1),  # the small tanh network's first layer
                                            ((1, 1, SMALL_PRODUCT - 1), 1),
                                            ((1, 1, SMALL_PRODUCT), 2),
                                            ((128, 784, 512), 2)])  # the large network's
def test_small_products_run_on_one_thread_and_the_count_is_put_back(two_threads, shape, threads):
    assert threads_seen(BlasThreads(), shape) == threads
    assert blas_threads_now() == 2


def test_a_limit_the_user_set_stays(two_threads):
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        assert threads_seen(BlasThreads(), (128, 784, 512)) == 1
        assert threads_seen(BlasThreads(), (2, 2, 2)) == 1
        assert blas_threads_now() == 1


def test_the_count_is_put_back_when_the_product_fails(two_threads):
    def failing(a, b, out):
        raise ValueError("shapes")
    with pytest.raises(ValueError, match="shapes"):
        BlasThreads().matmul(failing, np.empty((2, 3)), np.empty((3, 2)))
    assert blas_threads_now() == 2


def test_no_controllable_blas_leaves_threads_alone(two_threads, monkeypatch):
    policy = BlasThreads()
    monkeypatch.setattr(policy, "_find", lambda: [])
    assert threads_seen(policy, (2, 2, 2)) == 2


@pytest.mark.parametrize("shape", [(64, 784, 100), (128, 784, 512), (3, 5, 7)])
def test_host_matmul_is_the_product(shape, two_threads):
    """On either side of the threshold: the product within float32 rounding, into ``out``, the same on every call."""
    m, k, n = shape
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    cpu = gpunet.device("cpu")
    out = np.empty((m, n), np.float32)
    assert cpu.matmul(a, b, out=out) is out
    np.testing.assert_allclose(out, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-5, atol=1e-4)
    assert np.array_equal(cpu.matmul(a, b), out)
