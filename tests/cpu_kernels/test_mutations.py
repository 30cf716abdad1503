"""Mutation tests of the compiled CPU kernels' checks: the kernels built with a planted bug must fail the very
comparison the real ones pass, else that comparison proves nothing."""
import shutil
from pathlib import Path

import numpy as np
import pytest

from gpunet import cpu_kernels, ops
from tests.helpers import TOLERANCES, assert_per_value, softmax_backward_scale

# A float32 backward of this shape holds 3 x 11.2 MB, past the kernels' STREAM_BYTES: its output is streamed.
STREAMED_BACKWARD = (2801, 1001)
ZEROING = "for (int64_t i = r0 * cols; i < r1 * cols; ++i) if (dx[i] < T(5e-4) && dx[i] > T(-5e-4)) dx[i] = T(0);"


def kernels_with(tmp_path: Path, file: str, old: str, new: str):
    """The compiled CPU kernels with ``old`` replaced by ``new`` in ``file``, built in a folder of their own."""
    folder = tmp_path / "cpu_kernels"
    shutil.copytree(Path(cpu_kernels.__file__).parent, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    text = (folder / file).read_text()
    assert text.count(old) == 1, f"the mutation's anchor is not once in {file}"
    (folder / file).write_text(text.replace(old, new))
    return cpu_kernels.build(cpu_kernels.chosen_isa(), folder)


def test_a_backward_that_zeroes_small_values_fails_the_comparison(tmp_path, monkeypatch):
    """softmax_backward writing 0 wherever |dx| < 5e-4 passed the old check (an absolute tolerance of
    rtol * 4 * max|dy|); the per-value check must refuse it."""
    anchor = "softmax_backward_rows(y + r0 * cols, dy + r0 * cols, dx + r0 * cols, r1 - r0, cols, 0, stream);"
    bad = kernels_with(tmp_path, "rows.cpp", anchor, anchor + " " + ZEROING).function("softmax_backward",
                                                                                       np.float32)
    rng = np.random.default_rng(0)
    y = ops.softmax((rng.standard_normal((4, 1000)) * 4).astype(np.float32), device="cpu")
    dy = (rng.standard_normal((4, 1000)) * 4).astype(np.float32)
    dx = np.empty_like(y)
    bad(y, dy, dx, 4, 1000, 1)
    monkeypatch.setenv("GPUNET_CPU_KERNELS", "0")
    want = ops.softmax_backward(y, dy, device="cpu")  # the NumPy form
    small = (np.abs(want) < 5e-4) & (want != 0)
    assert small.mean() > 0.3 and np.all(dx[small] == 0)  # the bug is planted, and it touches most values
    rtol, atol = TOLERANCES["numpy_form"][np.float32]
    np.testing.assert_allclose(dx, want, rtol=rtol, atol=max(atol, rtol * 4 * np.abs(dy).max()))  # old: passes
    with pytest.raises(AssertionError, match="differ more than numpy_form allows"):
        assert_per_value(dx, want, np.float32, softmax_backward_scale(y, dy), purpose="numpy_form")


def test_a_streamed_backward_that_drops_a_rows_tail_fails_the_comparison(tmp_path, monkeypatch):
    """The streamed write pass stores a row's unaligned head and its tail apart from the streamed middle: a kernel
    that forgot the tail of each row must fail the comparison the streamed path is tested with."""
    anchor = "if (j < n) store(out + j, value(j, Tail(n - j)), Tail(n - j));"
    bad = kernels_with(tmp_path, "vector_f32.h", anchor, "").function("softmax_backward", np.float32)
    rows, cols = STREAMED_BACKWARD
    rng = np.random.default_rng(0)
    y = ops.softmax((rng.standard_normal((rows, cols)) * 4).astype(np.float32), device="cpu")
    dy = (rng.standard_normal((rows, cols)) * 4).astype(np.float32)
    dx = np.zeros_like(y)
    bad(y, dy, dx, rows, cols, 2)
    monkeypatch.setenv("GPUNET_CPU_KERNELS", "0")
    want = ops.softmax_backward(y, dy, device="cpu")
    with pytest.raises(AssertionError, match="differ more than numpy_form allows"):
        assert_per_value(dx, want, np.float32, softmax_backward_scale(y, dy), purpose="numpy_form")
