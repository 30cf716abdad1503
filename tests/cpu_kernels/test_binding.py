"""The typed binding of the compiled CPU kernels: signatures parsed from the .cpp, and every call checked before it
runs, so that no call can read or write memory its arrays do not own."""
import os

import numpy as np
import pytest

import gpunet
from gpunet import cpu_kernels, ops
from gpunet.cpu_kernels import binding
from gpunet.cpu_kernels.binding import parse_signatures

BUILT = cpu_kernels.library() is not None
if not BUILT and os.environ.get("CI"):
    raise RuntimeError("the compiled CPU kernels failed to build (the log line above says why)")
needs_library = pytest.mark.skipif(not BUILT, reason="the compiled CPU kernels cannot be built here")


def test_every_entry_point_declares_every_buffer_length():
    signatures = cpu_kernels.signatures()
    assert {"softmax_forward", "log_softmax_backward", "softmax_cross_entropy_reduced", "sgd_update",
            "adam_update", "relu_forward", "gelu_backward"} <= set(signatures)
    for signature in signatures.values():
        for param in signature.params:
            if param.kind in ("buffer", "list"):
                assert param.length, (signature.name, param.name)
    sgd = signatures["sgd_update"]
    assert [(p.name, p.kind) for p in sgd.params[:4]] == [("w", "list"), ("grad", "list"), ("velocity", "list"),
                                                          ("n", "buffer")]
    assert sgd.params[2].nullable and not sgd.params[0].nullable
    assert sgd.params[0].writable and not sgd.params[1].writable


def test_a_buffer_without_a_length_is_refused_at_parse_time():
    source = "#define E(T, SUFFIX) void f_##SUFFIX(const T* x, int64_t n, int threads) { }\n"
    with pytest.raises(ValueError, match="x .* has no /\\*\\[length\\]\\*/ comment"):
        parse_signatures(source)


@needs_library
class TestCallChecks:
    def softmax(self, dtype=np.float32):
        return cpu_kernels.library().function("softmax_forward", dtype)

    def test_a_correct_call_runs(self):
        x, y = np.zeros((2, 3), np.float32), np.empty((2, 3), np.float32)
        self.softmax()(x, y, 2, 3, 1)
        np.testing.assert_allclose(y, 1 / 3)

    def test_the_wrong_dtype_is_a_type_error(self):
        x, y = np.zeros((2, 3), np.float64), np.empty((2, 3), np.float32)
        with pytest.raises(TypeError, match="softmax_forward_f32: x takes float32 data, got float64"):
            self.softmax()(x, y, 2, 3, 1)

    def test_a_length_other_than_declared_is_refused(self):
        x, y = np.zeros((2, 3), np.float32), np.empty(5, np.float32)
        with pytest.raises(ValueError, match="y must hold 6 elements, got 5"):
            self.softmax()(x, y, 2, 3, 1)
        with pytest.raises(ValueError, match="x must hold 8 elements, got 6"):  # rows claimed past the array
            self.softmax()(x, np.empty(8, np.float32), 2, 4, 1)

    def test_strided_and_read_only_arrays_are_refused(self):
        x, y = np.zeros((2, 6), np.float32)[:, ::2], np.empty((2, 3), np.float32)
        with pytest.raises(ValueError, match="C-contiguous"):
            self.softmax()(x, y, 2, 3, 1)
        y.flags.writeable = False
        with pytest.raises(ValueError, match="y is written to, but the array is read-only"):
            self.softmax()(np.zeros((2, 3), np.float32), y, 2, 3, 1)

    def test_integers_are_range_checked_and_bools_refused(self):
        ce = cpu_kernels.library().function("softmax_cross_entropy", np.float32)
        x, grad = np.zeros((2, 3), np.float32), np.empty((2, 3), np.float32)
        labels, scale, loss = np.zeros(2, np.int64), np.ones(2, np.float32), np.empty(2, np.float32)
        with pytest.raises(OverflowError, match="ignore_index = 1180591620717411303424 does not fit int64_t"):
            ce(x, labels, None, None, scale, loss, grad, 2, 3, 2**70, 0.0, 1)
        with pytest.raises(TypeError, match="threads takes an integer, got bool"):
            ce(x, labels, None, None, scale, loss, grad, 2, 3, -100, 0.0, True)
        with pytest.raises(TypeError, match="takes 12 arguments"):
            ce(x, labels, None, None, scale, loss, grad, 2, 3, -100, 0.0)
        with pytest.raises(TypeError, match="labels takes int64 data, got int32"):
            ce(x, labels.astype(np.int32), None, None, scale, loss, grad, 2, 3, -100, 0.0, 1)

    def test_buffer_lists_are_checked_element_by_element(self):
        sgd = cpu_kernels.library().function("sgd_update", np.float32)
        w, g = [np.ones(4, np.float32), np.ones(3, np.float32)], [np.ones(4, np.float32), np.ones(3, np.float32)]
        sizes = np.array([4, 3])
        sgd(w, g, None, sizes, 2, 0.5, 0.0, 0, 0.0, 1)  # no momentum: a null velocity list
        np.testing.assert_array_equal(w[1], 0.5)
        with pytest.raises(ValueError, match=r"grad\[1\] must hold 3 elements, got 2"):
            sgd(w, [g[0], np.ones(2, np.float32)], None, sizes, 2, 0.5, 0.0, 0, 0.0, 1)
        with pytest.raises(ValueError, match="w takes a list of 2 arrays"):
            sgd(w[:1], g, None, sizes, 2, 0.5, 0.0, 0, 0.0, 1)
        with pytest.raises(TypeError, match="grad takes a list of 2 arrays, got NoneType"):
            sgd(w, None, None, sizes, 2, 0.5, 0.0, 0, 0.0, 1)

    def test_a_cached_list_is_checked_again_when_the_sizes_change(self):
        """The pointer array of a list is reused while its arrays are the same objects, but not past a change
        of the declared sizes."""
        sgd = cpu_kernels.library().function("sgd_update", np.float32)
        w, g = [np.ones(4, np.float32)], [np.ones(4, np.float32)]
        sgd(w, g, None, np.array([4]), 1, 0.5, 0.0, 0, 0.0, 1)
        with pytest.raises(ValueError, match=r"w\[0\] must hold 5 elements, got 4"):
            sgd(w, g, None, np.array([5]), 1, 0.5, 0.0, 0, 0.0, 1)


@pytest.mark.parametrize("shape", [(3, 7), (512, 1024)])
def test_mixed_dtypes_in_a_backward_give_the_numpy_answer_not_foreign_memory(shape):
    """The reproduction of the issue: float64 y with float32 dy read the float32 buffer as float64 (values like
    8e-316, a crash at 8192 x 8192). Now the pair is promoted to float64 before any form runs."""
    rng = np.random.default_rng(0)
    y = ops.softmax(rng.standard_normal(shape), device="cpu")
    dy = rng.standard_normal(shape).astype(np.float32)
    got = ops.softmax_backward(y, dy, device="cpu")
    want = y * (dy - np.sum(dy * y, axis=-1, keepdims=True))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    if shape[0] < 10:  # the simulator runs one CUDA thread per std::thread: small shapes only
        np.testing.assert_allclose(ops.softmax_backward(y, dy, device=gpunet.device("sim")), want, rtol=1e-12,
                                   atol=1e-15)


@needs_library
def test_optimizers_on_several_threads_at_once_neither_crash_nor_mix_their_tensors():
    """Each thread's pointer arrays are its own (a shared cache let one thread free another's mid-call)."""
    import concurrent.futures

    def train(seed):
        layer = gpunet.nn.Linear(64, 32, device="cpu", rng=seed)
        opt = gpunet.optim.SGD(layer.parameters(), lr=0.01, momentum=0.9)
        for step in range(300):
            layer.weight.grad[...] = np.sin(step + seed)
            layer.bias.grad[...] = np.cos(step + seed)
            opt.step()
        return [p.data.copy() for p in layer.parameters()]
    alone = [train(seed) for seed in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(train, range(4)))
    for a, b in zip(alone, together):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


@needs_library
def test_a_parameter_made_read_only_after_a_step_is_refused():
    layer = gpunet.nn.Linear(4, 3, device="cpu")
    opt = gpunet.optim.SGD(layer.parameters(), lr=0.1)
    opt.step()  # the pointer arrays are cached now
    layer.weight.data.flags.writeable = False
    with pytest.raises(ValueError, match=r"w\[0\] is written to, but the array is read-only"):
        opt.step()


@needs_library
def test_a_label_past_the_row_is_reported_by_the_kernel_not_read():
    ce = cpu_kernels.library().function("softmax_cross_entropy", np.float32)
    x, grad = np.zeros((3, 4), np.float32), np.full((3, 4), 7.0, np.float32)
    loss = np.full(3, 7.0, np.float32)
    for bad in (4, 1 << 40, -5):
        labels = np.array([0, bad, 1], np.int64)
        assert ce(x, labels, None, None, np.ones(3, np.float32), loss, grad, 3, 4, -100, 0.0, 1) == 1
        assert np.all(grad == 7.0) and np.all(loss == 7.0)  # nothing written


@pytest.mark.parametrize("device", ["cpu", "sim"])
def test_byte_swapped_arrays_give_the_native_answer(device):
    """A big-endian float32 array (from a file, say) was read as little-endian by the compiled CPU kernels:
    silent garbage on cpu, a TypeError on sim. Ops now convert it once to the machine's order."""
    x = np.array([[1.0, -2.0, 3.0, 0.5], [0.0, 1.0, -1.0, 2.0]], np.float32)
    swapped = x.astype(">f4")
    labels = np.array([2, 0])
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    for op in (ops.relu, ops.gelu, ops.softmax, ops.log_softmax, ops.tanh):
        np.testing.assert_array_equal(op(swapped, device=device), op(x, device=device))
    np.testing.assert_array_equal(ops.softmax_backward(swapped, swapped, device=device),
                                  ops.softmax_backward(x, x, device=device))
    for a, b in zip(ops.softmax_cross_entropy_with_grad(swapped, labels, reduction="none", device=device),
                    ops.softmax_cross_entropy_with_grad(x, labels, reduction="none", device=device)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ops.linear(swapped, w.astype(">f4"), device=device), ops.linear(x, w, device=device))


@pytest.mark.parametrize("make", [
    lambda: np.arange(12, dtype=np.float32),
    lambda: np.arange(24.0).reshape(4, 6)[1:3],         # a view into another array's memory
    lambda: np.arange(24.0).reshape(4, 6)[:, 2],        # a strided view
    lambda: np.zeros((0, 5), np.float32),                # no elements
    lambda: np.asarray(np.arange(6.0)).view(np.recarray),  # a subclass
], ids=["owner", "rows-view", "column-view", "empty", "subclass"])
def test_data_pointer_is_the_arrays_own_address(make):
    """The binding reads a buffer's address through NumPy's array interface: the same address as ``.ctypes``
    gives, for owners, views, empty arrays and subclasses alike."""
    a = make()
    assert binding.data_pointer(a) == a.ctypes.data


def test_data_pointer_of_a_proxy_is_the_proxied_arrays():
    """A forwarding proxy that reports ndarray as its __class__ passes isinstance: the address read is the proxied
    array's, never something of the proxy object's own."""
    class Proxy:
        def __init__(self, wrapped):
            object.__setattr__(self, "_wrapped", wrapped)

        @property
        def __class__(self):
            return np.ndarray

        def __getattr__(self, name):
            return getattr(self._wrapped, name)
    a = np.arange(8.0)
    proxy = Proxy(a)
    assert isinstance(proxy, np.ndarray)
    assert binding.data_pointer(proxy) == a.ctypes.data
