"""ops.linear_cross_entropy: the same loss and gradients as the materialised logits, value by value, on every
device and dtype; gradients against finite differences in float64; the label errors of the fused op; and extra
memory that grows with the block, not with the batch."""
import importlib
import tracemalloc

import numpy as np
import pytest

from gpunet import ops
from gpunet.gradcheck import numerical_gradient, relative_error

from tests.helpers import assert_per_value

# The module, not the function of its name that gpunet.ops exports.
lce_module = importlib.import_module("gpunet.ops.linear_cross_entropy")

LABELS = np.array([0, 3, 1, -100, 2, 3, 3, 4, 0, 1, -100, 2, 4])


def problem(rng, dtype, n_classes=5, width=3, rows=len(LABELS), scale=1.0):
    h = (rng.standard_normal((rows, width)) * scale).astype(dtype)
    weight = rng.standard_normal((n_classes, width)).astype(dtype)
    bias = rng.standard_normal(n_classes).astype(dtype)
    labels = np.resize(np.where(LABELS >= 0, LABELS * n_classes // 5, LABELS), rows)
    return h, weight, bias, labels


def materialised(h, weight, bias, labels, reduction="mean", eps=0.0, ignore_index=-100):
    """The float64 reference with every (N, V) array built: PyTorch's smoothed loss
    ``(1 - eps)(lse - z_t) + eps mean_j(lse - z_j)`` and its gradient, then the three products; and the size of
    the terms each value is a sum of (for assert_per_value)."""
    h, weight = h.astype(np.float64), weight.astype(np.float64)
    z = h @ weight.T + (0 if bias is None else bias.astype(np.float64))
    n_rows, n_classes = z.shape
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    valid = labels != ignore_index
    picked = np.where(valid, labels, 0)
    rows = np.where(valid, (1 - eps) * (lse - z[np.arange(n_rows), picked]) + eps * (lse - z.mean(axis=1)), 0)
    onehot = np.eye(n_classes)[picked]
    grad = (np.exp(z - lse[:, None]) - (1 - eps) * onehot - eps / n_classes) * valid[:, None]
    scale = 1 / valid.sum() if reduction == "mean" else 1.0
    grad *= scale
    loss = rows if reduction == "none" else rows.sum() * scale
    loss_terms = (np.abs(lse) + np.abs(z).max(axis=1)) * valid
    loss_scale = loss_terms if reduction == "none" else loss_terms.sum() * scale
    terms = np.abs(grad) + scale * valid[:, None] * (np.exp(z - lse[:, None]) + onehot)
    return ((loss, grad @ weight, grad.T @ h, grad.sum(axis=0)),
            (loss_scale, terms @ np.abs(weight), terms.T @ np.abs(h), terms.sum(axis=0)))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_matches_the_materialised_logits_value_by_value(dev, rng, reduction, dtype, eps):
    """Several blocks and a partial last one (block_rows=4 over 13 rows), a bias, ignored rows; each value
    within its dtype's rounding of the terms it is a sum of."""
    h, weight, bias, labels = problem(rng, dtype, n_classes=37, width=6, scale=2.0)
    got = ops.linear_cross_entropy(dev.asarray(h), dev.asarray(weight), dev.asarray(labels), dev.asarray(bias),
                                   reduction=reduction, label_smoothing=eps, block_rows=4)
    want, scales = materialised(h, weight, bias, labels, reduction, eps)
    for name, value, reference, scale in zip(got._fields, got, want, scales):
        value = dev.to_numpy(value)
        assert value.dtype == dtype, name
        assert_per_value(value, reference, dtype, scale=scale)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_sub_blocks_write_the_gradient_over_logits_already_read(dev, rng, reduction):
    """Blocks of 40 rows over 97 take the fused op 16 rows at a time, each writing its gradient over the 16 rows
    of logits before it (the last block: 16 and 1 rows): the same values as the reference."""
    assert ops.sub_block_rows(40) == 16 and ops.sub_block_rows(4) == 4 and ops.sub_block_rows(512) == 64
    h, weight, bias, labels = problem(rng, np.float64, n_classes=23, width=5, rows=97)
    got = ops.linear_cross_entropy(h, weight, labels, bias, reduction=reduction, label_smoothing=0.1,
                                   block_rows=40, device=dev)
    want, scales = materialised(h, weight, bias, labels, reduction, 0.1)
    for value, reference, scale in zip(got, want, scales):
        assert_per_value(dev.to_numpy(value), reference, np.float64, scale=scale)


def test_weight_layouts_and_no_bias(dev, rng):
    """The transposed view nn.LinearCrossEntropy passes gives its gradient in the same layout; no bias, no
    grad_bias; one block or many, the same numbers."""
    h, weight, _, labels = problem(rng, np.float64, n_classes=9, width=4)
    whole = ops.linear_cross_entropy(h, weight, labels, block_rows=len(labels), device=dev)
    view = ops.linear_cross_entropy(h, np.ascontiguousarray(weight.T).T, labels, block_rows=3, device=dev)
    assert whole.grad_bias is None and view.grad_bias is None
    assert view.grad_weight.flags.f_contiguous  # on the device: CuPy's asnumpy returns C order whatever the layout
    for a, b in zip(whole[:3], view[:3]):
        np.testing.assert_allclose(dev.to_numpy(a), dev.to_numpy(b), rtol=1e-13, atol=0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradient_check(dev, rng, reduction):
    """h, weight and bias against finite differences of the loss in float64, with smoothing, ignored rows and
    several blocks; for "none" the gradient of a weighted sum of the rows (per-row ``dloss``)."""
    h, weight, bias, labels = problem(rng, np.float64)
    dloss = rng.standard_normal(len(labels)) if reduction == "none" else 0.7

    def loss_of(h, weight, bias):
        loss = ops.linear_cross_entropy(h, weight, labels, bias, reduction=reduction, label_smoothing=0.2,
                                        block_rows=4, compute_grads=False, device=dev).loss
        return float(np.sum(dloss * dev.to_numpy(loss)))

    got = ops.linear_cross_entropy(h, weight, labels, bias, reduction=reduction, label_smoothing=0.2,
                                   dloss=dloss, block_rows=4, device=dev)
    inputs = [h, weight, bias]
    for k, analytic in enumerate(got[1:]):
        def along_k(v, k=k):
            return loss_of(*inputs[:k], v, *inputs[k + 1:])
        assert relative_error(dev.to_numpy(analytic), numerical_gradient(along_k, inputs[k])) < 1e-7, k


def test_gradient_check_catches_smoothing_without_its_constant(rng, monkeypatch):
    """The planted bug: the smoothing gradient without ``-eps/V`` (the loss untouched) fails the check above."""
    h, weight, bias, labels = problem(rng, np.float64)
    smooth = lce_module._smooth

    def planted(xp, z, labels, grad, loss, eps, ignore_index, count, reduction):
        loss = smooth(xp, z, labels, grad, loss, eps, ignore_index, count, reduction)
        grad += (eps / z.shape[1] / count) * (labels != ignore_index)[:, None]  # its -eps/V taken back
        return loss

    monkeypatch.setattr(lce_module, "_smooth", planted)
    got = ops.linear_cross_entropy(h, weight, labels, bias, label_smoothing=0.2, block_rows=4, device="cpu")
    numeric = numerical_gradient(lambda v: float(ops.linear_cross_entropy(
        h, weight, labels, v, label_smoothing=0.2, compute_grads=False, device="cpu").loss), bias)
    assert relative_error(got.grad_bias, numeric) > 1e-2


def test_count_splits_a_batch_as_data_parallel_ranks_do(dev, rng):
    """Two halves, each divided by the whole batch's counted rows, sum to the whole batch's loss and gradients."""
    h, weight, bias, labels = problem(rng, np.float64)
    whole = ops.linear_cross_entropy(h, weight, labels, bias, device=dev)
    count = int((labels != -100).sum())
    halves = [ops.linear_cross_entropy(h[s], weight, labels[s], bias, count=count, device=dev)
              for s in (slice(0, 6), slice(6, None))]
    np.testing.assert_allclose(float(halves[0].loss) + float(halves[1].loss), float(whole.loss), rtol=1e-13)
    for k in (2, 3):
        np.testing.assert_allclose(dev.to_numpy(halves[0][k]) + dev.to_numpy(halves[1][k]), dev.to_numpy(whole[k]),
                                   rtol=1e-12)
    with pytest.raises(ValueError, match="count divides a mean"):
        ops.linear_cross_entropy(h, weight, labels, count=3, reduction="sum", device=dev)


def test_every_row_ignored_and_nan(dev):
    h, weight = np.ones((5, 2)), np.ones((3, 2))
    got = ops.linear_cross_entropy(h, weight, np.full(5, -100), block_rows=2, device=dev)
    assert np.isnan(float(got.loss))  # the mean over no rows, as the fused op and PyTorch
    assert all(np.all(dev.to_numpy(g) == 0) for g in got[1:3])
    assert float(ops.linear_cross_entropy(h, weight, np.full(5, -100), reduction="sum", device=dev).loss) == 0
    h[3, 1] = np.nan  # a NaN row: its loss is NaN, the others are not; it spreads to grad_weight as a product does
    got = ops.linear_cross_entropy(h, weight, np.array([0, 1, 2, 0, 1]), reduction="none", block_rows=2,
                                   device=dev)
    np.testing.assert_array_equal(np.isnan(dev.to_numpy(got.loss)), [False, False, False, True, False])
    assert np.isnan(dev.to_numpy(got.grad_h)[3]).all() and np.isfinite(dev.to_numpy(got.grad_h)[[0, 1, 2, 4]]).all()
    assert np.isnan(dev.to_numpy(got.grad_weight)).all()


def test_bad_labels_name_the_row_of_the_batch(dev):
    """As the fused op's error, with the row counted in the whole batch, not in its block."""
    labels = np.zeros(40, dtype=np.int64)
    labels[37] = 7
    with pytest.raises(ValueError, match=r"label 7 at row 37 is out of range: labels must lie in \[0, 5\)"):
        ops.linear_cross_entropy(np.ones((40, 2)), np.ones((5, 2)), labels, block_rows=16, device=dev)
    labels[37] = -1
    with pytest.raises(ValueError, match="label -1 at row 37"):
        ops.linear_cross_entropy(np.ones((40, 2)), np.ones((5, 2)), labels.astype(np.int8), device=dev)
    with pytest.raises(ValueError, match="labels must be an integer array"):
        ops.linear_cross_entropy(np.ones((4, 2)), np.ones((5, 2)), np.zeros(4), device=dev)


@pytest.mark.parametrize("call, message", [
    (dict(h=np.ones((4, 3)), weight=np.ones((5, 2))), r"weight must have shape \(V, 3\)"),
    (dict(h=np.ones(3)), "h must have 2 dimension"),
    (dict(h=np.ones((0, 2))), "h is empty"),
    (dict(h=np.ones((4, 2), dtype=np.int32)), "h must be a floating-point array"),
    (dict(bias=np.ones(4)), r"bias must have shape \(5,\)"),
    (dict(labels=np.zeros(3, dtype=np.int64)), r"labels must have shape \(4,\)"),
    (dict(reduction="avg"), "reduction must be one of"),
    (dict(label_smoothing=1.5), "label_smoothing must be between 0.0 and 1.0"),
    (dict(dloss=np.ones(4)), "dloss for reduction='mean' must be a scalar"),
    (dict(block_rows=0), "block_rows must be a positive integer"),
])
def test_bad_arguments(call, message):
    args = dict(h=np.ones((4, 2)), weight=np.ones((5, 2)), labels=np.zeros(4, dtype=np.int64), bias=None)
    args.update(call)
    options = {k: args.pop(k) for k in list(args) if k not in ("h", "weight", "labels", "bias")}
    with pytest.raises(ValueError, match=message):
        ops.linear_cross_entropy(args["h"], args["weight"], args["labels"], args["bias"], device="cpu", **options)


def test_mixed_dtypes_are_promoted(rng):
    h, weight, bias, labels = problem(rng, np.float32)
    got = ops.linear_cross_entropy(h, weight.astype(np.float64), labels, bias, device="cpu")
    want = ops.linear_cross_entropy(h.astype(np.float64), weight.astype(np.float64), labels,
                                    bias.astype(np.float64), device="cpu")
    for a, b in zip(got, want):
        assert a.dtype == np.float64
        np.testing.assert_array_equal(a, b)


def test_block_rule():
    rule, host_bytes = ops.block_rows_for, lce_module.HOST_BLOCK_BYTES
    rows = rule(True, 10**6, 1000, 4)
    assert rows % 16 == 0 and rows * 1000 * 4 <= host_bytes < (rows + 16) * 1000 * 4
    assert rule(True, 10**6, 10**7, 4) == lce_module.MIN_BLOCK_ROWS  # a huge vocabulary: never fewer rows
    assert rule(True, 5, 1000, 4) == 5  # never more than the batch
    assert rule(False, 10**6, 1000, 4) > rows  # a GPU's budget is its memory's, not a cache's


def peak_extra_bytes(run):
    """The most memory NumPy held at once during ``run()``, beyond what it held before and what it returned
    (NumPy reports its allocations to tracemalloc)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    returned = sum(a.nbytes for a in result if isinstance(a, np.ndarray))
    return peak - before - returned


def test_extra_memory_grows_with_the_block_not_the_batch(rng):
    """Twice the rows, the same extra memory: the block's one buffer ((r + s) V values: its logits, then its
    gradient) and the dL/dW chunk's two scratch arrays. With the whole batch as one block it is the materialised
    computation, and the bound fails: the measurement sees what it must."""
    n_classes, width, rows = 3000, 16, 64
    buffer = (rows + ops.sub_block_rows(rows)) * n_classes * 8
    bound = buffer + 2 * lce_module.HOST_CHUNK_BYTES + 64 * 1024
    for n_rows in (1024, 2048):
        h, weight, bias, labels = problem(rng, np.float64, n_classes=n_classes, width=width, rows=n_rows)
        extra = peak_extra_bytes(lambda: ops.linear_cross_entropy(h, weight, labels, bias, block_rows=rows,
                                                                  device="cpu"))
        assert buffer <= extra <= bound, (n_rows, extra, bound)
    whole = peak_extra_bytes(lambda: ops.linear_cross_entropy(h, weight, labels, bias, block_rows=n_rows,
                                                              device="cpu"))
    assert whole >= n_rows * n_classes * 8 > 10 * bound
