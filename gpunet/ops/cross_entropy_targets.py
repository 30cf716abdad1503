"""The arguments of a cross-entropy call, checked and laid out as the forms read them: (rows, C) scores with the
class axis last, and either one int64 label per row or a (rows, C) array of probability targets, class weights
in the accumulation type, and the label smoothing.

PyTorch's shapes: (N, C) scores with (N,) labels, an unbatched (C,) row with a 0-d label, and K-dim (N, C, d1,
...) scores with (N, d1, ...) labels: the class axis is 1 (``axis`` chooses another). Probability targets have
the scores' shape. Moving a class axis that is not last to the end costs one copy of the scores (and of the
targets); the results come back as views with the caller's layout.
"""
from __future__ import annotations

import dataclasses

from ..numerics import wide_dtype
from .checks import (checked_out, labels_as_int64, normalize_axis, on_device, promoted, require_floating,
                     require_int64, require_reduction, require_smoothing)
from .rows import from_rows, to_rows


@dataclasses.dataclass
class Call:
    """One checked cross-entropy call: ``scores`` (rows, C), ``labels`` (rows,) int64 or None, ``targets`` (rows,
    C) or None, ``weight`` (C,) or None, ``smoothing`` a float, ``layout`` to undo the row layout, ``batch_shape``
    the shape of a "none" loss."""
    dev: object
    scores: object
    labels: object
    targets: object
    weight: object
    smoothing: float
    ignore_index: int
    layout: tuple
    batch_shape: tuple
    dtype: object

    @property
    def options(self) -> dict:
        """What every device's cross-entropy takes besides the scores and labels."""
        return {"targets": self.targets, "weight": self.weight, "smoothing": self.smoothing}

    def divisor(self):
        """What a mean divides by (PyTorch's): the counted rows' weight sum (their number without weights) for
        labels; the number of rows for probability targets."""
        xp = self.dev.xp
        if self.targets is not None:
            return xp.asarray(self.scores.shape[0], dtype=xp.float64)
        valid = self.labels != self.ignore_index
        if self.weight is None:
            return valid.sum().astype(xp.float64)
        picked = self.weight[xp.where(valid, self.labels, 0)].astype(xp.float64)
        return (picked * valid).sum()

    def row_u(self):
        """U per row for the backward: the sum over classes of the weighted smoothing (labels) or target part."""
        xp, C = self.dev.xp, self.scores.shape[1]
        w = xp.ones(C, dtype=wide_dtype(self.dtype)) if self.weight is None else self.weight
        if self.targets is None:
            return xp.full(self.scores.shape[0], w.sum(dtype=xp.float64), dtype=w.dtype)
        t = self.targets.astype(w.dtype, copy=False)
        return ((1 - self.smoothing) * (t @ w) + self.smoothing / C * w.sum()).astype(w.dtype)

    def in_layout(self, rows):
        """A (rows, C) result in the caller's layout (a view)."""
        return from_rows(self.dev.xp, rows, self.layout)

    def loss_shape(self, loss_rows):
        return loss_rows.reshape(self.batch_shape)


def prepare(scores, targets, name, reduction, device, ignore_index, out=None, weight=None, label_smoothing=0.0,
            axis=None) -> Call:
    """Every argument on the op's device and checked (a floating, nonempty ``scores``; integer labels of its
    shape less the class axis, or floating targets of its shape; a (C,) floating weight; a known reduction; an
    ``ignore_index`` that fits int64; an ``out`` apart from the inputs), then laid out as rows. The label range
    is checked where the loss runs (a GPU's kernels flag it without a sync of their own)."""
    dev, scores = on_device(scores, device, name, nonempty=True)
    xp = dev.xp
    targets = dev.asarray(targets)
    require_reduction(reduction)
    require_int64(ignore_index, "ignore_index")
    smoothing = require_smoothing(label_smoothing)
    if axis is None:
        axis = 1 if scores.ndim >= 2 else 0
    if isinstance(axis, bool) or not hasattr(axis, "__index__"):
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}: {axis!r}")
    axis = normalize_axis(int(axis), scores.ndim)
    n_classes = scores.shape[axis]
    batch_shape = scores.shape[:axis] + scores.shape[axis + 1:]
    if out is not None:
        checked_out(out, scores, dev, scores, targets, may_be_input=False)
    if targets.dtype.kind == "f":
        if tuple(targets.shape) != tuple(scores.shape):
            raise ValueError(f"labels must be an integer array of shape {tuple(batch_shape)}, or probability targets "
                             f"a floating array of the {name}' shape {tuple(scores.shape)}; got {targets.dtype} "
                             f"{tuple(targets.shape)}")
        require_floating(targets, "targets")
        scores, targets = promoted(xp, scores, targets)
        target_rows, _ = to_rows(xp, targets, axis)
        labels = None
    else:
        if targets.dtype.kind not in "iu":
            raise ValueError(f"labels must be an integer array (or probability targets a floating one), got dtype "
                             f"{targets.dtype} with shape {tuple(targets.shape)}")
        if tuple(targets.shape) != tuple(batch_shape):
            raise ValueError(f"labels must have shape {tuple(batch_shape)} to match {name} of shape "
                             f"{tuple(scores.shape)} (class axis {axis}), got {tuple(targets.shape)}")
        target_rows = None
        labels = labels_as_int64(xp, targets.reshape(-1), n_classes, ignore_index)
    rows, layout = to_rows(xp, scores, axis)
    return Call(dev, rows, labels, target_rows, _checked_weight(dev, weight, n_classes, scores.dtype), smoothing,
                int(ignore_index), layout, batch_shape, scores.dtype)


def _checked_weight(dev, weight, n_classes, dtype):
    """A (C,) floating weight in the accumulation type, or None."""
    if weight is None:
        return None
    weight = dev.asarray(weight)
    require_floating(weight, "weight")
    if tuple(weight.shape) != (n_classes,):
        raise ValueError(f"weight must have shape ({n_classes},), one per class, got {tuple(weight.shape)}")
    return dev.xp.ascontiguousarray(weight.astype(wide_dtype(dtype), copy=False))


def rows_out(call: Call, out):
    """Where the (rows, C) output goes: ``out`` itself as rows when the class axis is last, else None (a new
    array, copied into ``out`` in the caller's layout afterwards)."""
    if out is None or call.layout[1] != call.layout[2] - 1:
        return None
    return out.reshape(call.scores.shape)


def delivered(call: Call, rows, out):
    """The (rows, C) result in the caller's layout, copied into ``out`` where given and not already there."""
    if out is None:
        return call.in_layout(rows)
    if rows_out(call, out) is None:
        out[...] = call.in_layout(rows)
    return out
