"""The compiled CPU row kernels (gpunet/cpu_kernels/rows.cpp) against the NumPy form of the same ops, which the
CPU uses where they cannot be built: same values within rounding, same NaN and -inf behaviour, and a clean
fallback when switched off or when no compiler is found."""
import logging
import os
from pathlib import Path

import numpy as np
import pytest

import gpunet
from gpunet import cpu_kernels, ops
from gpunet.devices.cpu import CpuKernels, reset_compiled_cache

from tests.helpers import (TOLERANCES, assert_per_value, log_softmax_backward_scale, log_softmax_scale,
                           softmax_backward_scale)

TOL = TOLERANCES["numpy_form"]

_BUILT = cpu_kernels.library() is not None
if not _BUILT and os.environ.get("CI"):  # in CI a broken build fails the suite; elsewhere these tests skip
    raise RuntimeError("the compiled CPU kernels failed to build (the log line above says why)")
pytestmark = pytest.mark.skipif(not _BUILT, reason="the compiled CPU kernels cannot be built here (NumPy is used)")


def spy_compiled(monkeypatch):
    """The (entry point, dtype) of every compiled kernel the CPU device calls, in order."""
    calls = []
    real = CpuKernels.compiled

    def compiled(self, name, dtype):
        fn = real(self, name, dtype)
        if fn is None:
            return None

        def run(*args):
            calls.append((name, np.dtype(dtype)))
            return fn(*args)
        return run
    monkeypatch.setattr(CpuKernels, "compiled", compiled)
    return calls


def entry(name, dtype):
    return cpu_kernels.library().function(name, dtype)


@pytest.fixture(autouse=True, params=cpu_kernels.supported_isas())
def isa(request, monkeypatch):
    """Every test runs once per instruction set this CPU has: the explicit float32 vectors (AVX-512, AVX2) and
    the generic loops are different code."""
    monkeypatch.setenv("GPUNET_CPU_ISA", request.param)
    return request.param


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
    rtol, atol = TOL[dtype]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=max(atol, rtol * scale))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
# Every width from 1 to 33 (each vector tail of 8 and 16 lanes), and longer rows; 3000 rows: several threads.
@pytest.mark.parametrize("rows,cols", [(4, c) for c in range(1, 34)] + [(5, 100), (4, 1000), (3, 20000), (3000, 40)])
def test_softmax_and_log_softmax_match_the_numpy_form(numpy_form, rows, cols, dtype):
    x = logits(rows, cols, dtype)
    dy = logits(rows, cols, dtype, seed=1)  # NaN and -inf in the incoming gradient too
    for forward, backward in ((ops.softmax, ops.softmax_backward), (ops.log_softmax, ops.log_softmax_backward)):
        log = forward is ops.log_softmax
        y = forward(x, device="cpu")
        assert y.dtype == dtype
        assert_per_value(y, numpy_form(lambda: forward(x, device="cpu")), dtype,
                         log_softmax_scale(x) if log else None, purpose="numpy_form")
        y = numpy_form(lambda: forward(np.nan_to_num(x, nan=0.0), device="cpu"))
        dx = backward(y, dy, device="cpu")
        assert dx.dtype == dtype
        scale = (log_softmax_backward_scale if log else softmax_backward_scale)(y, dy)  # per value: no atol
        assert_per_value(dx, numpy_form(lambda: backward(y, dy, device="cpu")), dtype, scale, purpose="numpy_form")


# Arrays of at least 32 MiB in all (float32): the log-softmax forward (input and output: from 4.2 M elements)
# and both backwards (from 2.8 M) write their output with streaming stores, a row's unaligned head and its tail
# apart. Rows of 1001 floats start at every 4-byte offset of a vector; (2801, 1001) streams the backwards only.
@pytest.mark.parametrize("rows,cols", [(2801, 1001), (4200, 1001), (70, 60000)])
def test_streamed_outputs_match_the_numpy_form(numpy_form, rows, cols):
    test_softmax_and_log_softmax_match_the_numpy_form(numpy_form, rows, cols, np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("rows,cols", [(4, 1), (5, 10), (4, 17), (4, 32), (6, 1000), (3, 20000), (2000, 50),
                                       (4000, 10)])
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("rows,cols", [(1, 1), (5, 10), (4, 17), (64, 10), (6, 1000), (4000, 10), (300, 1001)])
def test_reduced_cross_entropy_matches_the_numpy_form(numpy_form, rows, cols, dtype, reduction):
    """Mean and sum go through one compiled call (labels checked, loss summed, gradient scaled): finite logits
    here, so the loss itself is compared, not only its NaN."""
    rng = np.random.default_rng(rows * cols)
    x = (rng.standard_normal((rows, cols)) * 4).astype(dtype)
    labels = rng.integers(0, cols, rows)
    labels[::3] = -100  # ignored rows: a mean over the others
    labels[-1] = cols - 1
    loss, grad = ops.softmax_cross_entropy_with_grad(x, labels, reduction=reduction, device="cpu")
    want_loss, want_grad = numpy_form(
        lambda: ops.softmax_cross_entropy_with_grad(x, labels, reduction=reduction, device="cpu"))
    assert np.asarray(loss).dtype == dtype and grad.dtype == dtype and np.isfinite(loss)
    np.testing.assert_allclose(loss, want_loss, rtol=TOL[dtype].rtol * 4)
    same(grad, want_grad, dtype)
    assert np.all(grad[labels == -100] == 0)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reduced_cross_entropy_over_no_counted_row(numpy_form, reduction):
    """Every row ignored: a mean is NaN (0 / 0, as PyTorch's), a sum 0, and the gradient 0, in both forms."""
    x = np.random.default_rng(0).standard_normal((6, 12)).astype(np.float32)
    labels = np.full(6, -100)
    for loss, grad in (ops.softmax_cross_entropy_with_grad(x, labels, reduction=reduction, device="cpu"),
                       numpy_form(lambda: ops.softmax_cross_entropy_with_grad(x, labels, reduction=reduction,
                                                                              device="cpu"))):
        assert np.isnan(loss) if reduction == "mean" else loss == 0
        assert np.all(grad == 0)


@pytest.mark.parametrize("bad", [-1, 12, 2**40, 2**64 - 1])
def test_reduced_cross_entropy_names_the_first_bad_label_as_numpy_does(numpy_form, bad):
    """The compiled call checks the labels itself: the same error, naming the first bad row and its label as
    given (2^64 - 1: unsigned labels, which int64 would read as -1), as the NumPy form."""
    x = np.zeros((9, 12), np.float32)
    labels = np.array([3, 7, 11, 0, bad, 5, 4, 2, 1], dtype=np.uint64 if bad > 2**63 else np.int64)
    if bad < 2**63:
        labels[[1, 6]] = [-100, -7]
    messages = []
    for run in (lambda f: f(), numpy_form):
        with pytest.raises(ValueError, match=f"label {bad} at row 4 is out of range") as error:
            run(lambda: ops.softmax_cross_entropy_with_grad(x, labels, device="cpu"))
        messages.append(str(error.value))
    assert messages[0] == messages[1]


def test_huge_logits_stay_finite():
    x = np.full((2, 40), -np.inf, dtype=np.float32)  # 40 columns: the compiled path; -inf columns weigh 0
    x[0, :3], x[1, :3] = [1e4, 0.0, -1e4], [3e38, 3e38, -3e38]
    np.testing.assert_allclose(ops.softmax(x, device="cpu")[:, :3], [[1, 0, 0], [0.5, 0.5, 0]], atol=1e-7)
    loss, _ = ops.softmax_cross_entropy_with_grad(x, np.array([2, 0]), reduction="none", device="cpu")
    np.testing.assert_allclose(loss, [2e4, np.log(2)], rtol=1e-6)


def test_rows_of_any_width_take_the_compiled_kernels(monkeypatch):
    """Short rows too: with masked vector tails the kernels beat the NumPy form's column-wise reductions there
    (cross-entropy at C = 10: 2-2.5x, measured), so nothing picks the NumPy form while the kernels exist."""
    calls = spy_compiled(monkeypatch)
    ops.softmax(np.ones((4, 3), np.float32), device="cpu")
    ops.softmax_cross_entropy_with_grad(np.ones((4, 10), np.float32), np.arange(4), device="cpu")
    ops.softmax_cross_entropy_with_grad(np.ones((4, 10), np.float32), np.arange(4), reduction="none", device="cpu")
    assert calls == [("softmax_forward", np.dtype(np.float32)),
                     ("softmax_cross_entropy_reduced", np.dtype(np.float32)),
                     ("softmax_cross_entropy", np.dtype(np.float32))]


def test_no_compiler_falls_back_to_numpy_with_one_log_line(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("GPUNET_CACHE", str(tmp_path / "cache"))  # nothing built there yet
    reset_compiled_cache()
    try:
        calls = spy_compiled(monkeypatch)
        with caplog.at_level(logging.WARNING, logger="gpunet"):
            assert cpu_kernels.library() is None
            y = ops.softmax(np.array([[1.0, 2.0, 3.0]]), device=gpunet.device("cpu"))
        assert "compiled CPU kernels unavailable" in caplog.text and "no-such-compiler" in caplog.text
        np.testing.assert_allclose(y.sum(), 1.0)
        assert calls == []
    finally:
        reset_compiled_cache()


def test_exp_is_accurate_over_the_whole_float32_range():
    """The float32 kernels inline their own exp. log-softmax's backward with dy = (1, 0, ..., 0) gives
    dx = -exp(logy) in every column but the first, so any values can be fed to it: within 2 ulp of the true
    exp, inf past float32's range, 0 (or the true value) where that is under 3e-38, NaN for NaN."""
    v = np.concatenate([np.linspace(-110, 89, 200_001), [88.72, 88.7228, 88.73, 1e4, np.inf, -np.inf, np.nan, 0.0,
                                                          -0.0, 1e-30, -1e-30]]).astype(np.float32)
    cols = 64
    logy = np.resize(v, (-(-v.size // (cols - 1)), cols - 1))
    logy = np.concatenate([np.zeros((logy.shape[0], 1), np.float32), logy], axis=1)
    dy = np.zeros_like(logy)
    dy[:, 0] = 1
    got = -ops.log_softmax_backward(logy, dy, device="cpu")[:, 1:].astype(np.float64)
    with np.errstate(over="ignore"):
        want = np.exp(logy[:, 1:].astype(np.float64))
    with np.errstate(over="ignore"):
        want_f32 = want.astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want_f32))  # inf exactly where float32 overflows
    finite = np.isfinite(want_f32) & (want > 3e-38)
    np.testing.assert_allclose(got[finite], want[finite], rtol=2.4e-7, atol=0)
    tiny = np.isfinite(want) & (want <= 3e-38)
    assert np.all((got[tiny] == 0) | (np.abs(got[tiny] - want[tiny]) <= 2.4e-7 * want[tiny] + 1.5e-45))


def _all_ops(dtype, threads):
    """Every compiled row op on one fixed input, run on up to ``threads`` threads."""
    x = logits(1500, 301, dtype)  # 451500 elements: parts of 131072 or more, so up to 3 threads take part
    dy = logits(1500, 301, dtype, seed=1)
    labels = np.random.default_rng(2).integers(0, 301, 1500)
    labels[5] = -100
    out = []
    for prefix in ("", "log_"):
        y = np.empty_like(x)
        entry(f"{prefix}softmax_forward", x.dtype)(x, y, 1500, 301, threads)
        dx = np.empty_like(x)
        entry(f"{prefix}softmax_backward", x.dtype)(np.nan_to_num(y), dy, dx, 1500, 301, threads)
        out += [y, dx]
    loss, grad = np.empty(1500, dtype), np.empty_like(x)
    entry("softmax_cross_entropy", x.dtype)(x, labels, None, None, np.full(1500, 0.5, dtype), loss, grad, 1500, 301,
                                            -100, 0.0, threads)
    reduced_grad = np.empty_like(x)
    x_finite = np.nan_to_num(x, nan=0.0, neginf=-50.0)
    reduced_loss = np.zeros(1)
    bad_row = entry("softmax_cross_entropy_reduced", x.dtype)(x_finite, labels, reduced_grad, 1500, 301, -100, 1,
                                                             threads, reduced_loss)
    assert bad_row == -1 and np.isfinite(reduced_loss[0])
    return out + [loss, grad, reduced_grad, reduced_loss]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_splitting_rows_over_threads_changes_no_bit(dtype):
    one = _all_ops(dtype, threads=1)
    for threads in (2, 3, 8):
        for a, b in zip(one, _all_ops(dtype, threads)):
            np.testing.assert_array_equal(a, b)


def test_concurrent_callers_each_get_their_own_rows():
    """Python threads calling at once: one gets the pool, the others run in their own thread; all correct."""
    import concurrent.futures

    want = _all_ops(np.float32, threads=1)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: _all_ops(np.float32, threads=2), range(12)))
    for got in results:
        for a, b in zip(want, got):
            np.testing.assert_array_equal(a, b)


def _ops_in_child(queue):
    queue.put([a.tobytes() for a in _all_ops(np.float32, threads=2)])


def test_a_forked_child_gets_a_working_pool():
    """The pool's threads do not survive fork(); the child must start its own rather than wait on them."""
    import multiprocessing

    _all_ops(np.float32, threads=2)  # the parent's pool is running
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_ops_in_child, args=(queue,), daemon=True)
    child.start()
    try:
        got = queue.get(timeout=60)
    finally:
        child.join(timeout=5)
        child.kill()
    assert child.exitcode == 0
    assert got == [a.tobytes() for a in _all_ops(np.float32, threads=1)]


SANITIZER_DRIVER = r"""
#include "rows.cpp"
#include <cstdio>
#include <thread>
#include <vector>
// Three callers at once on the pool, rows of odd widths (every vector tail), heap arrays of exactly the size.
int main() {
    int bad = 0;
    std::vector<std::thread> callers;
    for (int t = 0; t < 3; ++t) callers.emplace_back([&bad, t] {
        const int64_t rows = 3000, cols = 37 + 110 * t;  // 111000 elements and more: 1 to 5 parts
        std::vector<float> x(rows * cols), y(rows * cols), once(rows * cols), dx(rows * cols), grad(rows * cols);
        std::vector<float> loss(rows), scale(rows, 0.5f);
        std::vector<int64_t> labels(rows);
        for (int64_t i = 0; i < rows * cols; ++i) x[i] = (float)((i * 7919 + t) % 1000) / 100.f;
        for (int64_t r = 0; r < rows; ++r) labels[r] = r % 5 == 0 ? -100 : (r * 13) % cols;
        softmax_forward_f32(x.data(), once.data(), rows, cols, 1);
        for (int it = 0; it < 20; ++it) {
            (it & 1 ? log_softmax_forward_f32 : softmax_forward_f32)(x.data(), y.data(), rows, cols, 4);
            if (!(it & 1) && y != once) bad = 1;
            (it & 1 ? log_softmax_backward_f32 : softmax_backward_f32)(once.data(), x.data(), dx.data(), rows, cols, 3);
            softmax_cross_entropy_f32(x.data(), labels.data(), nullptr, nullptr, scale.data(), loss.data(), grad.data(), rows,
                                      cols, -100, 0.0, 2);
            double total = 0;
            if (softmax_cross_entropy_reduced_f32(x.data(), labels.data(), grad.data(), rows, cols, -100, it & 1, 2,
                                                  &total) != -1)
                bad = 1;
        }
    });
    for (auto& c : callers) c.join();
    std::printf(bad ? "mismatch\n" : "clean run\n");
    return bad;
}
"""


@pytest.mark.slow
@pytest.mark.parametrize("sanitizer", ["thread", "address"])
def test_row_kernels_and_their_thread_pool_are_clean_under_sanitizers(sanitizer, isa, tmp_path):
    """Races in the pool (ThreadSanitizer), reads or writes past a row's tail (AddressSanitizer)."""
    import subprocess

    from gpunet import native

    driver = tmp_path / "driver.cpp"
    driver.write_text(SANITIZER_DRIVER)
    flags = [f for f in cpu_kernels.compile_flags(isa) if f not in ("-shared", "-fPIC", "-O3")]
    exe = tmp_path / "driver"
    build = subprocess.run([native.compiler("test"), *flags, "-O1", "-g", f"-fsanitize={sanitizer}", str(driver),
                            "-o", str(exe), "-lmvec"], capture_output=True, text=True)
    if build.returncode != 0 and "cannot find -l" in build.stderr:
        pytest.skip(f"the {sanitizer} sanitizer runtime is not installed: {build.stderr.strip()[-200:]}")
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300,
                         env={"TSAN_OPTIONS": "halt_on_error=1", "ASAN_OPTIONS": "detect_leaks=0"})
    assert run.returncode == 0 and "clean run" in run.stdout, run.stderr[-3000:]
    assert "Sanitizer" not in run.stderr


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [
    lambda p: gpunet.optim.SGD(p, lr=0.1),
    lambda p: gpunet.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
    lambda p: gpunet.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    lambda p: gpunet.optim.Adam(p, lr=0.01, weight_decay=0.1),
    lambda p: gpunet.optim.AdamW(p, lr=0.01, weight_decay=0.1),
], ids=["sgd", "sgd-momentum-decay", "sgd-nesterov", "adam", "adamw"])
def test_optimizer_updates_match_the_numpy_form(numpy_form, make, dtype):
    """Three steps on a 1000 x 301 weight and a bias (301000 elements: split over threads; 301: no thread gets a
    multiple of the vector width) through the compiled one-pass update and through the NumPy form."""
    def train():
        layer = gpunet.nn.Linear(1000, 301, dtype=np.dtype(dtype).name, device="cpu", rng=0)
        opt = make(layer.parameters())
        grads = np.random.default_rng(3).standard_normal((3, 1000 * 301 + 301))
        for g in grads:
            layer.weight.grad[...] = g[:-301].reshape(1000, 301)
            layer.bias.grad[...] = g[-301:]
            opt.step()
        return [p.data.copy() for p in layer.parameters()] + [b.copy() for s in opt.state for b in s.values()]
    got, want = train(), numpy_form(train)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == dtype
        same(a, b, dtype)


# Tensors laid end to end are one job for the pool: 1 048 598 elements make 8 parts on 2+ threads, whose bounds
# fall inside the big tensors and inside the 5-element one (262 149), so parts start and end mid-tensor.
UPDATE_SIZES = [262147, 5, 262139, 3, 524287, 17]


def _updated(dtype, threads, adam: bool, one_call: bool = True):
    """The tensors and states after one SGD (Nesterov, decay) or Adam update: in one call, or a call per tensor."""
    rng = np.random.default_rng(7)
    w = [rng.standard_normal(n).astype(dtype) for n in UPDATE_SIZES]
    g = [rng.standard_normal(n).astype(dtype) for n in UPDATE_SIZES]
    states = [[rng.standard_normal(n).astype(dtype) for n in UPDATE_SIZES]]
    if adam:
        states.append([np.abs(rng.standard_normal(n)).astype(dtype) for n in UPDATE_SIZES])
    name, hyper = ("adam_update", (0.01, 0.9, 0.999, 1e-8, 0.1, 0, 0.05, 1.2)) if adam else \
        ("sgd_update", (0.1, 0.9, 1, 0.01))
    groups = [slice(None)] if one_call else [slice(k, k + 1) for k in range(len(w))]
    for part in groups:
        sizes = np.array(UPDATE_SIZES[part], dtype=np.int64)
        entry(name, dtype)(w[part], g[part], *(lst[part] for lst in states), sizes, len(sizes), *hyper, threads)
    return w + [a for lst in states for a in lst]


@pytest.mark.parametrize("adam", [False, True], ids=["sgd", "adam"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_update_split_over_threads_across_tensors_changes_no_bit(dtype, adam):
    """Every element of every tensor updated once, with its own tensor's arguments, whichever thread's part it
    falls in: the same bits as a call per tensor on one thread."""
    want = _updated(dtype, 1, adam, one_call=False)
    for threads in (1, 2, 3, 8):
        for a, b in zip(want, _updated(dtype, threads, adam)):
            np.testing.assert_array_equal(a, b)


def test_optimizers_use_the_compiled_update(monkeypatch):
    calls = spy_compiled(monkeypatch)
    layer = gpunet.nn.Linear(3, 4, device="cpu")
    for opt in (gpunet.optim.SGD(layer.parameters(), lr=0.1), gpunet.optim.Adam(layer.parameters())):
        opt.step()
    assert [name for name, _ in calls] == ["sgd_update", "adam_update"]  # one call updates every tensor


def test_update_pointer_cache_follows_replaced_arrays():
    """The compiled update keeps the last call's pointers; an optimizer whose arrays are replaced (a checkpoint
    loaded into new arrays, say) must update the new ones, not memory the old ones had."""
    layer = gpunet.nn.Linear(400, 400, device="cpu", rng=0)
    opt = gpunet.optim.SGD(layer.parameters(), lr=1.0)
    layer.weight.grad[...] = 1.0
    opt.step()
    layer.weight.data = layer.weight.data.copy()  # a new array
    before = layer.weight.data.copy()
    opt.step()
    np.testing.assert_allclose(layer.weight.data, before - 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (700, 513)])  # 359100 elements: split over threads
def test_relu_matches_the_numpy_form(numpy_form, dtype, shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    x.flat[:6] = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-30]
    dy.flat[:6] = [1.0, np.nan, np.inf, -np.inf, 2.0, np.nan]  # inf or NaN meeting a zero slope: 0, as PyTorch
    for got, want in ((ops.relu(x, device="cpu"), numpy_form(lambda: ops.relu(x, device="cpu"))),
                      (ops.relu_backward(np.maximum(x, 0), dy, device="cpu"),
                       numpy_form(lambda: ops.relu_backward(np.maximum(x, 0), dy, device="cpu")))):
        assert got.dtype == want.dtype == dtype and got.shape == shape
        np.testing.assert_array_equal(got, want)  # a select, not arithmetic: the same bits


def test_relu_takes_the_compiled_kernel_where_it_can(monkeypatch):
    calls = spy_compiled(monkeypatch)
    x = np.ones((4, 3), np.float32)
    ops.relu(x, device="cpu")
    ops.relu_backward(x, x, device="cpu")
    ops.relu(x[:, ::2], device="cpu")  # not contiguous: NumPy
    assert [name for name, _ in calls] == ["relu_forward", "relu_backward"]


REFUSE_THREADS_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
int gpunet_refuse_threads = 0;  /* set from the test once NumPy's own threads exist */
int pthread_create(pthread_t* t, const pthread_attr_t* a, void* (*f)(void*), void* arg) {
    if (gpunet_refuse_threads) return EAGAIN;
    int (*real)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*) =
        (int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*))dlsym(RTLD_NEXT, "pthread_create");
    return real(t, a, f, arg);
}
"""


@pytest.mark.slow
def test_a_system_that_refuses_threads_gets_the_rows_done_in_the_caller(tmp_path):
    """Where pthread_create fails (a container's process limit), the pool must not abort the process: the
    caller claims every part itself. A preloaded shim refuses every thread created after NumPy's."""
    import subprocess
    import sys
    import textwrap

    from gpunet import native

    shim = tmp_path / "shim.so"
    source = tmp_path / "shim.c"
    source.write_text(REFUSE_THREADS_SHIM)
    build = subprocess.run(["gcc", "-shared", "-fPIC", str(source), "-o", str(shim), "-ldl"], capture_output=True,
                           text=True)
    if build.returncode != 0:
        pytest.skip(f"no C compiler for the shim: {build.stderr[-200:]}")
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent("""
        import ctypes, os, numpy as np
        from gpunet import cpu_kernels
        ctypes.c_int.in_dll(ctypes.CDLL(None), "gpunet_refuse_threads").value = 1
        x = np.random.default_rng(0).standard_normal((3000, 301)).astype(np.float32)
        one, many = np.empty_like(x), np.empty_like(x)
        softmax = cpu_kernels.library().function("softmax_forward", x.dtype)
        softmax(x, one, 3000, 301, 1)
        softmax(x, many, 3000, 301, 4)
        assert np.array_equal(one, many)
        print("rows done")
    """))
    env = dict(os.environ, LD_PRELOAD=str(shim), GPUNET_CACHE=str(native.cache_dir("cpu").parent),
               PYTHONPATH=str(Path(__file__).parents[2]))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0 and "rows done" in done.stdout, done.stderr[-3000:]


@pytest.mark.parametrize("dtype", [np.float32, "float32", np.dtype("float32")])
def test_compiled_kernel_takes_a_dtype_in_any_spelling(dtype):
    """A type or a name works as a dtype does: the same SGD update as the NumPy form."""
    update = gpunet.device("cpu").kernels.compiled("sgd_update", dtype)
    w, g, v = np.ones(5, np.float32), np.full(5, 2.0, np.float32), np.zeros(5, np.float32)
    update([w], [g], [v], np.array([5]), 1, 0.5, 0.9, 0, 0.0, 1)
    np.testing.assert_array_equal(w, np.full(5, 0.0, np.float32))
    np.testing.assert_array_equal(v, g)
