"""Cross-entropy's PyTorch options (weight, label_smoothing, probability targets, K-dim and unbatched inputs, axis)
on every form: gradients against finite differences in float64, the three entry points and the layer agreeing,
the data-parallel divisor, and clear errors. PyTorch's own answers: test_cross_entropy_oracle.py."""
import numpy as np
import pytest

from gpunet import nn, ops
from gpunet.gradcheck import numerical_gradient, relative_error

from tests.ops.test_cross_entropy_oracle import _assert_close, _magnitudes

OPTIONS = [
    pytest.param({"weight": True}, id="weight"),
    pytest.param({"label_smoothing": 0.2}, id="smoothing"),
    pytest.param({"weight": True, "label_smoothing": 0.3, "ignore_index": 2}, id="weight-smoothing-ignore"),
    pytest.param({"probs": True}, id="probs"),
    pytest.param({"probs": True, "weight": True, "label_smoothing": 0.1}, id="probs-weight-smoothing"),
]
# (logits shape, class axis): 2-D in the warp and the block kernel variant, K-dim, unbatched, another axis
SHAPES = [((5, 7), None), ((3, 1500), None), ((2, 4, 3, 2), None), ((6,), None), ((3, 2, 5), 2)]



def _case(rng, shape, axis, options):
    """Logits, targets (labels with one ignored where asked, or probabilities) and the op's keyword arguments."""
    x = rng.standard_normal(shape) * 2
    class_axis = (1 if len(shape) > 1 else 0) if axis is None else axis
    C = shape[class_axis]
    if options.get("probs"):
        t = rng.random(shape)
        t /= t.sum(axis=class_axis, keepdims=True)
    else:
        t = rng.integers(0, C, np.delete(shape, class_axis)) if len(shape) > 1 else np.int64(rng.integers(0, C))
        if "ignore_index" in options and t.ndim:
            t.reshape(-1)[0] = options["ignore_index"]
    kwargs = {"axis": axis, "label_smoothing": options.get("label_smoothing", 0.0),
              "ignore_index": options.get("ignore_index", -100),
              "weight": rng.random(C) + 0.5 if options.get("weight") else None}
    return x, t, kwargs


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("shape, axis", SHAPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradient_against_finite_differences(form, rng, options, shape, axis, reduction):
    x, t, kwargs = _case(rng, shape, axis, options)
    dloss = rng.standard_normal(np.shape(ops.softmax_cross_entropy(x, t, reduction=reduction, device="cpu",
                                                                   **kwargs)[0]))

    def loss_of(z):
        loss = ops.softmax_cross_entropy_with_grad(z, t, reduction=reduction, device=form, **kwargs)[0]
        return float(np.sum(dloss * loss))

    loss, grad = ops.softmax_cross_entropy_with_grad(x, t, reduction=reduction, device=form, **kwargs)
    grad = ops.scale_grad(grad, dloss if reduction == "none" else float(dloss), reduction) if axis is None else \
        grad * (np.expand_dims(dloss, axis) if reduction == "none" else dloss)
    numeric = numerical_gradient(loss_of, x) if x.size <= 200 else None
    if numeric is None:  # 4500 entries: check a column block's worth by directional derivatives instead
        direction = rng.standard_normal(x.shape)
        h = 1e-6
        numeric_dir = (loss_of(x + h * direction) - loss_of(x - h * direction)) / (2 * h)
        assert abs(np.sum(grad * direction) - numeric_dir) <= 1e-6 * (abs(numeric_dir) + 1)
    else:
        assert relative_error(grad, numeric) < 1e-6
    assert grad.shape == x.shape and np.shape(loss) == np.shape(dloss)


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("shape, axis", SHAPES)
def test_entry_points_and_layer_agree(form, rng, options, shape, axis):
    """with_grad, forward-then-backward and nn.SoftmaxCrossEntropy: one loss and one gradient, per reduction."""
    x, t, kwargs = _case(rng, shape, axis, options)
    for reduction in ("mean", "sum", "none"):
        loss, grad = ops.softmax_cross_entropy_with_grad(x, t, reduction=reduction, device=form, **kwargs)
        loss2, probs = ops.softmax_cross_entropy(x, t, reduction=reduction, device=form, **kwargs)
        grad2 = ops.softmax_cross_entropy_backward(probs, t, reduction=reduction, device=form, **kwargs)
        layer = nn.SoftmaxCrossEntropy(kwargs["ignore_index"], reduction, device=form, weight=kwargs["weight"],
                                       label_smoothing=kwargs["label_smoothing"], axis=axis)
        loss3 = layer.forward(x, t)
        np.testing.assert_allclose(loss2, loss, rtol=1e-13)
        np.testing.assert_allclose(loss3, loss, rtol=1e-13)
        np.testing.assert_allclose(grad2, grad, rtol=1e-12, atol=1e-15 * np.abs(grad).max())
        np.testing.assert_array_equal(layer.backward(), grad)


def test_a_class_axis_not_last_equals_the_moved_logits(form, rng):
    """axis=2 of (3, 2, 5): the same numbers as the class axis moved to 1, as PyTorch lays it out."""
    x, t, kwargs = _case(rng, (3, 2, 5), 2, {"weight": True, "label_smoothing": 0.1})
    loss, grad = ops.softmax_cross_entropy_with_grad(x, t, reduction="none", device=form, **kwargs)
    kwargs["axis"] = None
    loss_moved, grad_moved = ops.softmax_cross_entropy_with_grad(np.moveaxis(x, 2, 1), t, reduction="none",
                                                                 device=form, **kwargs)
    np.testing.assert_array_equal(loss, loss_moved)
    np.testing.assert_array_equal(grad, np.moveaxis(grad_moved, 1, 2))
    out = np.empty_like(x)
    assert ops.softmax_cross_entropy_with_grad(x, t, reduction="none", device=form, out=out,
                                               weight=kwargs["weight"], label_smoothing=0.1, axis=2)[1] is out
    np.testing.assert_array_equal(out, grad)


@pytest.mark.parametrize("options", OPTIONS)
def test_data_parallel_divisor_gives_one_process(form, rng, options):
    """Two "ranks" with half the batch each and count= the global divisor: their gradients sum to the whole
    batch's, and their losses to its loss (what DataParallel relies on)."""
    x, t, kwargs = _case(rng, (8, 5), None, options)
    loss, grad = ops.softmax_cross_entropy_with_grad(x, t, device=form, **kwargs)
    divisor = ops.softmax_cross_entropy_divisor(t, kwargs["ignore_index"], weight=kwargs["weight"])
    layer = nn.SoftmaxCrossEntropy(kwargs["ignore_index"], device=form, weight=kwargs["weight"],
                                   label_smoothing=kwargs["label_smoothing"])
    assert layer.divisor(t) == divisor
    parts = [layer.forward(x[lo:hi], t[lo:hi], count=divisor) for lo, hi in ((0, 3), (3, 8))]
    grads = [ops.softmax_cross_entropy_with_grad(x[lo:hi], t[lo:hi], count=divisor, device=form, **kwargs)[1]
             for lo, hi in ((0, 3), (3, 8))]
    np.testing.assert_allclose(sum(parts), loss, rtol=1e-13)
    np.testing.assert_allclose(np.concatenate(grads), grad, rtol=1e-13, atol=1e-16)


def test_a_rank_whose_global_batch_counts_no_row_gets_nan_not_an_error(form):
    """The divisor is a 0-d float64 array on every device (never read back: a host sync on a GPU), so a global
    batch whose every label is ignored gives PyTorch's 0 / 0 = NaN mean on each rank, as one process does, and a
    zero gradient; a divisor of 0 given as a Python number is still the caller's error."""
    labels = np.full(4, -100)
    divisor = ops.softmax_cross_entropy_divisor(labels, -100, device=form)
    assert divisor.ndim == 0 and divisor.dtype == np.float64 and not isinstance(divisor, np.generic)
    loss, grad = ops.softmax_cross_entropy_with_grad(np.ones((4, 3)), labels, count=divisor, device=form)
    assert np.isnan(float(loss)) and not np.any(grad)  # cpu and sim arrays are NumPy arrays
    with pytest.raises(ValueError, match="count must be positive and finite, got 0.0"):
        ops.softmax_cross_entropy_with_grad(np.ones((4, 3)), labels, count=0, device=form)


def test_weighted_mean_divides_by_the_weight_sum(form):
    """Planted bug guard: a weighted mean divided by the row count instead of the weight sum is off by 3x here."""
    x, t, w = np.zeros((2, 2)), np.array([0, 0]), np.array([3.0, 1.0])
    loss, grad = ops.softmax_cross_entropy_with_grad(x, t, weight=w, device=form)
    assert float(loss) == pytest.approx(np.log(2), rel=1e-15)  # (3 log 2 + 3 log 2) / (3 + 3)
    np.testing.assert_allclose(grad, [[-0.25, 0.25], [-0.25, 0.25]], rtol=1e-15)


def test_smoothing_of_one_hot_probabilities_equals_smoothing_of_labels(form, rng):
    x, t, kwargs = _case(rng, (6, 4, 3), None, {"weight": True, "label_smoothing": 0.25})
    one_hot = np.moveaxis(np.eye(4)[t], -1, 1)
    for reduction in ("sum", "none"):  # (a mean divides labels by the weight sum, probabilities by the rows)
        want = ops.softmax_cross_entropy_with_grad(x, t, reduction=reduction, device=form, **kwargs)
        got = ops.softmax_cross_entropy_with_grad(x, one_hot, reduction=reduction, device=form, **kwargs)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-13)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"label_smoothing": 1.5}, ValueError, "label_smoothing must be between 0.0 and 1.0"),
    ({"label_smoothing": -0.1}, ValueError, "label_smoothing"),
    ({"label_smoothing": float("nan")}, ValueError, "label_smoothing"),
    ({"label_smoothing": "0.1"}, TypeError, "label_smoothing"),
    ({"label_smoothing": True}, TypeError, "label_smoothing"),
    ({"weight": np.ones(3)}, ValueError, r"weight must have shape \(4,\)"),
    ({"weight": np.ones(4, dtype=np.int64)}, ValueError, "weight must be a floating-point array"),
    ({"axis": 3}, ValueError, "axis 3 is out of range"),
    ({"axis": 1.0}, TypeError, "axis must be an integer"),
])
def test_bad_options(form, kwargs, error, match):
    with pytest.raises(error, match=match):
        ops.softmax_cross_entropy_with_grad(np.zeros((2, 4)), np.array([0, 1]), device=form, **kwargs)


def test_bad_targets(form):
    x = np.zeros((2, 4, 3))
    with pytest.raises(ValueError, match=r"labels must have shape \(2, 3\) to match logits of shape \(2, 4, 3\)"):
        ops.softmax_cross_entropy_with_grad(x, np.zeros((2, 4), np.int64), device=form)
    with pytest.raises(ValueError, match=r"probability targets a floating array of the logits' shape"):
        ops.softmax_cross_entropy_with_grad(x, np.zeros((2, 3)), device=form)
    with pytest.raises(ValueError, match="label 4 at row 0"):
        ops.softmax_cross_entropy_with_grad(x, np.full((2, 3), 4), device=form)


@pytest.mark.parametrize("dtype, rtol", [(np.float16, 4e-3), (np.float32, 2e-5)])
@pytest.mark.parametrize("cols", [33, 100, 1000, 1025])  # warp variants with 2, 4 and 32 values a lane; block
@pytest.mark.parametrize("options", OPTIONS)
def test_narrow_dtypes_against_float64(form, rng, dtype, rtol, cols, options):
    """float16 and float32 (computed in float32, rounded once) against the float64 answer for the same rounded
    inputs, every value within its dtype's rounding of the terms it sums (test_cross_entropy_oracle's bound)."""
    x, t, kwargs = _case(rng, (4, cols), None, options)
    x, t = x.astype(dtype), (t.astype(dtype) if t.dtype.kind == "f" else t)
    want_kwargs = dict(kwargs, weight=None if kwargs["weight"] is None else kwargs["weight"].astype(dtype))
    for reduction in ("mean", "none"):
        loss, grad = ops.softmax_cross_entropy_with_grad(x, t, reduction=reduction, device=form, **want_kwargs)
        want = ops.softmax_cross_entropy_with_grad(x.astype(np.float64), t.astype(np.float64) if t.dtype.kind == "f"
                                                   else t, reduction=reduction, device="cpu", **want_kwargs)
        loss_terms, grad_terms = _magnitudes(x.astype(np.float64), t, dict(want_kwargs, reduction=reduction))
        assert loss.dtype == dtype and grad.dtype == dtype
        _assert_close(loss, want[0], loss_terms, rtol, f"{dtype.__name__} {reduction} loss")
        _assert_close(grad, want[1], grad_terms, rtol, f"{dtype.__name__} {reduction} grad")
