"""Running an op's CUDA kernel, written once for the GPU and the simulator.

A subclass supplies ``launch(module, plan, dtype, args)`` (CuPy's RawModule, or the CPU simulator) and the grid
cap; the rest (outputs, launch plans, the label flag) is here, so both run the same code. Each op kind
(``gpunet.kinds``) has one method, which launches ``kernels/<op.module>.cu``'s kernel ``op.name`` (a row op's
variant of it) with the arguments that kind declares; they were checked at the op boundary, and
``source.check_arguments`` checks them against the kernel's signature at the launch.
"""
from __future__ import annotations

from typing import NamedTuple

from ..errors import check_label_range, label_out_of_range
from ..kinds import Kernels
from .plans import elementwise_plan, row_plan
from .source import dtype_config

NO_ERROR = 2**64 - 1


class LabelFlag(NamedTuple):
    """What unchecked cross-entropy calls flagged, still on the device: ``word`` (one uint64: the smallest row
    whose label was out of range, ``NO_ERROR`` for none), and the classes and ``ignore_index`` of the last call,
    which a reader needs to say what was wrong (``gpunet.errors.label_out_of_range``)."""
    word: object
    n_classes: int
    ignore_index: int

    @staticmethod
    def flagged_row(value) -> int | None:
        """The row a word read back says (also as a float64, where rows below 2**53 stay exact), or None."""
        return int(value) if value < 2**63 else None


class KernelLauncher(Kernels):
    max_grid = 65535

    def __init__(self, xp):
        self.xp = xp
        self._modules: dict = {}
        self._error_scratch = None  # the error word of unchecked cross-entropy calls, until taken
        self._flag_meta = (0, -100)  # the classes and ignore_index of the last unchecked call
        self.launches = 0  # kernels launched so far: each subclass's ``launch`` counts its own

    def launch(self, module: str, plan, dtype, args) -> None:
        """Launch ``plan.kernel`` of ``module`` for ``dtype`` on ``args``, and add one to ``launches``."""
        raise NotImplementedError

    def load_module(self, module: str, config):
        """``kernels/<module>.cu`` compiled for ``config`` (a DtypeConfig), ready to launch."""
        raise NotImplementedError

    def module(self, module: str, dtype):
        """The loaded module for ``dtype``, compiled once per (module, dtype)."""
        config = dtype_config(dtype)
        key = (module, config.name)
        if key not in self._modules:
            self._modules[key] = self.load_module(module, config)
        return self._modules[key]

    def elementwise(self, op, *inputs, out=None):
        """``out`` (C-contiguous, of the inputs' shape and dtype; checked by the op) may be an input: the
        kernels that allow it read each element before writing it."""
        xp = self.xp
        shape = inputs[0].shape  # ascontiguousarray makes a 0-d array 1-d; the output keeps the input's shape
        inputs = [xp.ascontiguousarray(a) for a in inputs]
        given = out
        if out is None:
            out = xp.empty_like(inputs[0])
        if out.size:
            self.launch(op.module, elementwise_plan(op.name, out.size, self.max_grid), out.dtype,
                        [*inputs, out, out.size])
        return out.reshape(shape) if given is None else given

    def rows(self, op, *inputs, out=None):
        """``out``, where given, is C-contiguous, of the inputs' shape and dtype and apart from them (checked by
        the op)."""
        xp = self.xp
        inputs = [xp.ascontiguousarray(a) for a in inputs]
        rows, cols = inputs[0].shape
        if out is None:
            out = xp.empty_like(inputs[0])
        acc = dtype_config(out.dtype).acc_numpy_dtype.itemsize
        plan = row_plan(op.name, rows, cols, acc, self.max_grid, op.cached_arrays)
        self.launch(op.module, plan, out.dtype, [*inputs, out, rows, cols, *plan.extra_args])
        return out

    def bias_add(self, op, y, bias):
        """``y += bias`` in place over a contiguous (rows, cols) ``y``."""
        rows, cols = y.shape
        self.launch(op.module, elementwise_plan(op.name, y.size, self.max_grid), y.dtype,
                    [y, self.xp.ascontiguousarray(bias), rows, cols])
        return y

    def update(self, op, params, grads, *state_lists, hyper=()):
        for i, (w, grad) in enumerate(zip(params, grads)):
            states = [None if lst is None else lst[i] for lst in state_lists]
            self.launch(op.module, elementwise_plan(op.name, w.size, self.max_grid), w.dtype,
                        [w, grad, *states, w.size, *hyper])

    def cross_entropy(self, op, logits, labels, ignore_index: int, grad_scale=None, check: bool = True,
                      out=None, targets=None, weight=None, smoothing: float = 0.0):
        """Per-row losses (in the accumulation type) and the probabilities (or, given a 1-element ``grad_scale``,
        the gradient), into ``out`` where given (C-contiguous, of the logits' shape and dtype, apart from them: checked by the op).

        ``check=False``: the kernel still flags a label out of range (its row's loss is NaN), but nobody reads
        the flag back, which saves a host sync per call. ``labels`` is None for probability ``targets``;
        ``weight`` (C,) is in the accumulation type.
        """
        xp = self.xp
        logits = xp.ascontiguousarray(logits)
        labels64 = None if labels is None else xp.ascontiguousarray(labels.astype(xp.int64, copy=False))
        if targets is not None:
            targets = xp.ascontiguousarray(targets.astype(logits.dtype, copy=False))
            check = False  # no labels: nothing to flag
        rows, cols = logits.shape
        acc = dtype_config(logits.dtype).acc_numpy_dtype
        loss = xp.empty(rows, dtype=acc)  # in the accumulation type: a reduction rounds once (docs/semantics.md)
        if out is None:
            out = xp.empty_like(logits)
        elif check:  # a caller's array is left as it was when a label is bad, as on the CPU (one more sync)
            check_label_range(xp, labels, cols, ignore_index)
        if grad_scale is not None:
            grad_scale = xp.ascontiguousarray(grad_scale.astype(acc, copy=False))
        if weight is not None:
            weight = xp.ascontiguousarray(weight.astype(acc, copy=False))
        error_row = xp.full(1, NO_ERROR, dtype=xp.uint64) if check else self._unread_error_word()
        if not check:
            self._flag_meta = (cols, int(ignore_index))
        mixed = targets is not None or smoothing != 0  # the kernels that also sum the smoothing or target part
        plan = row_plan(op.name + ("_mixed" if mixed else ""), rows, cols, acc.itemsize, self.max_grid,
                        has_smem_variant=False)
        self.launch(op.module, plan, logits.dtype,
                    [logits, labels64, targets, weight, loss, out, grad_scale, error_row, rows, cols,
                     int(ignore_index), float(smoothing), *plan.extra_args])
        if check:
            bad_row = int(error_row[0])
            if bad_row != NO_ERROR:
                raise label_out_of_range(bad_row, int(labels[bad_row]), cols, ignore_index)
        return loss, out

    def _unread_error_word(self):
        if self._error_scratch is None:
            self._error_scratch = self.xp.full(1, NO_ERROR, dtype=self.xp.uint64)
        return self._error_scratch

    def take_label_flag(self) -> LabelFlag | None:
        """The unchecked calls' error word since the last take (None if none ran), and a fresh word for the calls
        after it. Nothing is read back: a training loop keeps each step's word on the device and reads it where it
        synchronises anyway (its loss check), so a bad label is still found, and its row named, without a host
        sync per step."""
        word, self._error_scratch = self._error_scratch, None
        return None if word is None else LabelFlag(word, *self._flag_meta)

    def cross_entropy_backward(self, op, probs, labels, row_scale, ignore_index: int, row_u=None, targets=None,
                               weight=None, smoothing: float = 0.0):
        xp = self.xp
        probs = xp.ascontiguousarray(probs)
        rows, cols = probs.shape
        acc = dtype_config(probs.dtype).acc_numpy_dtype
        if labels is not None:
            check_label_range(xp, labels, cols, ignore_index)
            labels = xp.ascontiguousarray(labels.astype(xp.int64, copy=False))
        if targets is not None:
            targets = xp.ascontiguousarray(targets.astype(probs.dtype, copy=False))
        grad = xp.empty_like(probs)

        def in_acc(a):
            return None if a is None else xp.ascontiguousarray(a.astype(acc, copy=False))
        plan = elementwise_plan(op.name, rows * cols, self.max_grid)
        self.launch(op.module, plan, probs.dtype,
                    [probs, labels, targets, in_acc(weight), in_acc(row_scale), in_acc(row_u), grad, rows, cols,
                     int(ignore_index), float(smoothing)])
        return grad

