"""Row ops into a given array (``out=``): the softmax family and the fused cross-entropy write where the caller
says, with the values of a new array bit for bit, on every device, dtype and axis; and they refuse an ``out``
that cannot take the result, or that overlaps an input (each row is read again after part of it is written)."""
import numpy as np
import pytest

from gpunet import ops

NAN = np.nan


def _softmax_family(dev, x, dy, axis):
    """name -> (function, its array arguments), for the four row ops on ``x`` along ``axis``."""
    y = ops.softmax(x, axis, device=dev)
    logy = ops.log_softmax(x, axis, device=dev)
    return {"softmax": (ops.softmax, (x,)), "log_softmax": (ops.log_softmax, (x,)),
            "softmax_backward": (ops.softmax_backward, (y, dy)),
            "log_softmax_backward": (ops.log_softmax_backward, (logy, dy))}


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("axis", [-1, 1, 0])
def test_row_ops_into_out_equal_a_new_array(dev, rng, dtype, axis):
    x_np = (rng.standard_normal((5, 7, 37)) * 3).astype(dtype)
    x_np[0, 0, 3], x_np[1, 2, :] = NAN, -np.inf  # a NaN row and an all -inf row come out the same way too
    x, dy = dev.asarray(x_np), dev.asarray(rng.standard_normal(x_np.shape).astype(dtype))
    for name, (fn, args) in _softmax_family(dev, x, dy, axis).items():
        expected = dev.to_numpy(fn(*args, axis=axis, device=dev))
        out = dev.xp.full(x_np.shape, 7.0, dtype=dtype)  # every element must be written
        assert fn(*args, axis=axis, device=dev, out=out) is out, name
        np.testing.assert_array_equal(dev.to_numpy(out), expected, err_msg=name)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_into_out_equals_a_new_array(dev, rng, dtype, reduction):
    logits = dev.asarray((rng.standard_normal((9, 13)) * 3).astype(dtype))
    labels = dev.asarray(np.array([0, 12, 5, -100, 3, 3, 7, 1, 11]))
    loss, grad = ops.softmax_cross_entropy_with_grad(logits, labels, reduction=reduction, device=dev)
    out = dev.xp.full(logits.shape, 7.0, dtype=dtype)
    loss_out, grad_out = ops.softmax_cross_entropy_with_grad(logits, labels, reduction=reduction, device=dev,
                                                             out=out)
    assert grad_out is out
    np.testing.assert_array_equal(dev.to_numpy(out), dev.to_numpy(grad))
    np.testing.assert_array_equal(dev.to_numpy(loss_out), dev.to_numpy(loss))
    if reduction == "mean":  # the data-parallel form: divided by the global batch's count
        out = dev.xp.full(logits.shape, 7.0, dtype=dtype)
        _, grad = ops.softmax_cross_entropy_with_grad(logits, labels, count=20, device=dev)
        assert ops.softmax_cross_entropy_with_grad(logits, labels, count=20, device=dev, out=out)[1] is out
        np.testing.assert_array_equal(dev.to_numpy(out), dev.to_numpy(grad))
    out = dev.xp.full(logits.shape, 7.0, dtype=dtype)
    loss, probs = ops.softmax_cross_entropy(logits, labels, reduction=reduction, device=dev)
    loss_out, probs_out = ops.softmax_cross_entropy(logits, labels, reduction=reduction, device=dev, out=out)
    assert probs_out is out
    np.testing.assert_array_equal(dev.to_numpy(out), dev.to_numpy(probs))
    np.testing.assert_array_equal(dev.to_numpy(loss_out), dev.to_numpy(loss))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_numpy_forms_write_out_too(rng, dtype, monkeypatch):
    """The CPU without its compiled kernels (GPUNET_CPU_KERNELS=0) runs the NumPy forms over row blocks into
    ``out``: the same values as their new arrays, NaN rows included."""
    import gpunet
    from gpunet import cpu_kernels
    monkeypatch.setenv("GPUNET_CPU_KERNELS", "0")
    assert cpu_kernels.library() is None
    dev = gpunet.device("cpu")
    x = (rng.standard_normal((3000, 37)) * 3).astype(dtype)  # several row blocks of the host pool
    x[5, 3], x[7, :] = NAN, -np.inf
    dy = rng.standard_normal(x.shape).astype(dtype)
    for name, (fn, args) in _softmax_family(dev, x, dy, -1).items():
        out = np.full(x.shape, 7.0, dtype=dtype)
        assert fn(*args, device=dev, out=out) is out
        np.testing.assert_array_equal(out, fn(*args, device=dev), err_msg=name)
    labels = rng.integers(0, 37, 3000)
    for call in (ops.softmax_cross_entropy_with_grad, ops.softmax_cross_entropy):
        out = np.full(x.shape, 7.0, dtype=dtype)
        assert call(x, labels, device=dev, out=out)[1] is out
        np.testing.assert_array_equal(out, call(x, labels, device=dev)[1])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_last_axis_row_ops_write_out_without_a_new_array(dev, rng, dtype, monkeypatch):
    """The point of ``out``: along the last axis in float32/64 no op allocates an array of the result's size
    (past the last-level cache a new array's page faults cost as much as the op)."""
    x = dev.asarray(rng.standard_normal((64, 300)).astype(dtype))
    dy = dev.asarray(rng.standard_normal((64, 300)).astype(dtype))
    labels = dev.asarray(rng.integers(0, 300, 64))
    cases = _softmax_family(dev, x, dy, -1)
    out = dev.xp.empty_like(x)
    xp = dev.xp
    allocations = []
    for name in ("empty_like", "empty", "zeros_like", "ascontiguousarray"):
        original = getattr(xp, name)

        def counting(*args, _original=original, _name=name, **kwargs):
            result = _original(*args, **kwargs)
            if getattr(result, "size", 0) >= x.size and all(result is not a for a in args):
                allocations.append(_name)
            return result
        monkeypatch.setattr(xp, name, counting)
    for name, (fn, args) in cases.items():
        fn(*args, device=dev, out=out)
        assert allocations == [], name
    ops.softmax_cross_entropy_with_grad(x, labels, device=dev, out=out)
    ops.softmax_cross_entropy(x, labels, device=dev, out=out)
    assert allocations == []


def test_row_ops_refuse_an_out_that_cannot_take_the_result(dev):
    x = dev.asarray(np.ones((3, 4), np.float32))
    labels = dev.asarray(np.array([0, 1, 2]))
    bad = [dev.xp.empty((4, 3), np.float32), dev.xp.empty((3, 4), np.float64), dev.xp.empty((3, 8), np.float32)[:, ::2],
           [[0.0] * 4] * 3]
    if dev.name in ("cpu", "sim"):
        readonly = np.empty((3, 4), np.float32)
        readonly.flags.writeable = False
        bad.append(readonly)
    calls = [lambda out: ops.softmax(x, out=out), lambda out: ops.log_softmax(x, out=out),
             lambda out: ops.softmax_backward(x, x, out=out), lambda out: ops.log_softmax_backward(x, x, out=out),
             lambda out: ops.softmax_cross_entropy_with_grad(x, labels, out=out),
             lambda out: ops.softmax_cross_entropy(x, labels, out=out)]
    for call in calls:
        for out in bad:
            with pytest.raises(ValueError, match="out must be a writable, C-contiguous float32 array of shape"):
                call(out)


def test_row_ops_refuse_an_out_that_overlaps_an_input(dev, rng):
    """Unlike ReLU's, a row op's ``out`` may not even be its input: a row's max and sum are read again after
    the row's first elements are written (the NumPy backward would compute ``dy - sum(dy * y)`` from a ``dy``
    it had already overwritten)."""
    buffer = dev.asarray(rng.standard_normal((4, 10)).astype(np.float32))
    x, shifted = buffer[:3], buffer[1:]
    y = ops.softmax(x)
    labels = dev.asarray(np.array([0, 1, 2]))
    calls = [lambda out: ops.softmax(x, out=out), lambda out: ops.log_softmax(x, out=out),
             lambda out: ops.softmax_backward(y, x, out=out), lambda out: ops.log_softmax_backward(y, x, out=out),
             lambda out: ops.softmax_cross_entropy_with_grad(x, labels, out=out),
             lambda out: ops.softmax_cross_entropy(x, labels, out=out)]
    before = dev.to_numpy(buffer).copy()
    for call in calls:
        for out in (x, shifted):
            with pytest.raises(ValueError, match="out may overlap an input"):
                call(out)
    np.testing.assert_array_equal(dev.to_numpy(buffer), before)  # refused before anything was written


def test_numpy_backward_in_place_would_be_wrong(rng):
    """Why overlap is refused (a mutation check of the rule above): the NumPy softmax backward run with
    ``dx`` = ``dy`` gives a different, wrong answer."""
    from gpunet.ops.softmax import _softmax_backward_rows
    y = ops.softmax(rng.standard_normal((3, 10)))
    dy = rng.standard_normal((3, 10))
    apart = np.empty_like(dy)
    _softmax_backward_rows(np, y, dy, apart)
    in_place = dy.copy()
    _softmax_backward_rows(np, y, in_place, in_place)
    assert not np.allclose(in_place, apart)


def test_a_bad_label_leaves_out_as_it_was(dev):
    """Labels are checked before anything is written, on every device (kernel devices check them first when
    given an ``out``: their kernels would otherwise write it and flag the label afterwards)."""
    logits = dev.asarray(np.linspace(-2, 2, 24, dtype=np.float32).reshape(4, 6))
    labels = dev.asarray(np.array([0, 1, 9, 2]))
    calls = [lambda out: ops.softmax_cross_entropy_with_grad(logits, labels, out=out),
             lambda out: ops.softmax_cross_entropy_with_grad(logits, labels, reduction="none", out=out),
             lambda out: ops.softmax_cross_entropy_with_grad(logits, labels, count=10, out=out),
             lambda out: ops.softmax_cross_entropy(logits, labels, out=out)]
    for call in calls:
        out = dev.xp.full((4, 6), 7.0, dtype=np.float32)
        with pytest.raises(ValueError, match="label 9 at row 2 is out of range"):
            call(out)
        assert np.all(dev.to_numpy(out) == 7.0)


def test_an_out_that_does_not_fit_the_launch_is_refused_at_the_op_boundary(dev):
    """A given output's shape is checked once, where the op is called (``checks.checked_out``): kernels index it
    by rows and columns, so a smaller one would be written past its end, and nothing below the op checks again."""
    x = dev.asarray(np.ones((4, 8), np.float32))
    labels = dev.asarray(np.array([0, 1, 2, 3]))
    big = dev.xp.zeros((8, 8), np.float32)
    for call in (lambda out: ops.softmax(x, out=out), lambda out: ops.softmax_backward(x, x, out=out),
                 lambda out: ops.softmax_cross_entropy(x, labels, out=out),
                 lambda out: ops.softmax_cross_entropy_with_grad(x, labels, out=out),
                 lambda out: ops.relu(x, out=out)):
        with pytest.raises(ValueError, match="out must be a writable, C-contiguous"):
            call(big[:1])
    assert np.all(dev.to_numpy(big) == 0)
