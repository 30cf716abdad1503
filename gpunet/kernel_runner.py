"""The custom-kernel implementation of the ops, written once for the GPU and the simulator.

A subclass supplies ``launch(module, plan, dtype, args)`` (CuPy's RawModule, or the CPU simulator) and the
grid cap; everything else (shapes, outputs, launch rules, label errors) is here, so both run the same code.
"""
from __future__ import annotations

from .kernel_source import dtype_config
from .launch import elementwise_plan, row_plan
from .ops.checks import raise_label_out_of_range

NO_ERROR = 2**64 - 1


class KernelRunner:
    max_grid = 65535

    def __init__(self, device):
        self.device = device
        self.xp = device.xp
        self._error_scratch = None  # the error word of unchecked cross-entropy calls, allocated once

    def launch(self, module: str, plan, dtype, args) -> None:
        raise NotImplementedError

    # ---- softmax family ------------------------------------------------------------------------------------
    def _row_op(self, op: str, cached_arrays: int, *inputs):
        xp = self.xp
        inputs = [xp.ascontiguousarray(a) for a in inputs]
        rows, cols = inputs[0].shape
        out = xp.empty_like(inputs[0])
        acc = dtype_config(out.dtype).acc_numpy_dtype.itemsize
        plan = row_plan(op, rows, cols, acc, self.max_grid, cached_arrays)
        self.launch("softmax", plan, out.dtype, [*inputs, out, rows, cols, *plan.extra_args])
        return out

    def softmax_forward(self, x):
        return self._row_op("softmax_forward", 1, x)

    def log_softmax_forward(self, x):
        return self._row_op("log_softmax_forward", 1, x)

    def softmax_backward(self, y, dy):
        return self._row_op("softmax_backward", 2, y, dy)

    def log_softmax_backward(self, logy, dy):
        return self._row_op("log_softmax_backward", 2, logy, dy)

    # ---- fused cross-entropy -----------------------------------------------------------------------------------
    def softmax_cross_entropy(self, logits, labels, ignore_index: int, grad_scale=None, check: bool = True):
        """Per-row losses and the probabilities (or, given a 1-element ``grad_scale``, the gradient).

        ``check=False``: the kernel still flags a label out of range (its row's loss is NaN), but nobody reads
        the flag back, which saves a host sync per call.
        """
        xp = self.xp
        logits = xp.ascontiguousarray(logits)
        labels64 = xp.ascontiguousarray(labels.astype(xp.int64, copy=False))
        rows, cols = logits.shape
        loss = xp.empty(rows, dtype=logits.dtype)
        out = xp.empty_like(logits)
        error_row = xp.full(1, NO_ERROR, dtype=xp.uint64) if check else self._unread_error_word()
        acc = dtype_config(logits.dtype).acc_numpy_dtype.itemsize
        plan = row_plan("softmax_cross_entropy", rows, cols, acc, self.max_grid, has_smem_variant=False)
        self.launch("cross_entropy", plan, logits.dtype,
                    [logits, labels64, loss, out, grad_scale, error_row, rows, cols, int(ignore_index),
                     *plan.extra_args])
        if check:
            bad_row = int(error_row[0])
            if bad_row != NO_ERROR:
                raise_label_out_of_range(bad_row, int(labels64[bad_row]), cols, ignore_index)
        return loss, out

    def _unread_error_word(self):
        if self._error_scratch is None:
            self._error_scratch = self.xp.full(1, NO_ERROR, dtype=self.xp.uint64)
        return self._error_scratch

    def softmax_cross_entropy_backward(self, probs, labels, row_scale, ignore_index: int):
        xp = self.xp
        rows, cols = probs.shape
        grad = xp.empty_like(probs)
        labels64 = xp.ascontiguousarray(labels.astype(xp.int64, copy=False))
        bad = (labels64 != ignore_index) & ((labels64 < 0) | (labels64 >= cols))
        if bool(bad.any()):
            row = int(xp.argmax(bad))
            raise_label_out_of_range(row, int(labels64[row]), cols, ignore_index)
        plan = elementwise_plan("softmax_cross_entropy_backward", rows * cols, self.max_grid)
        self.launch("cross_entropy", plan, probs.dtype,
                    [probs, labels64, xp.ascontiguousarray(row_scale.astype(probs.dtype, copy=False)), grad, rows,
                     cols, int(ignore_index)])
        return grad

    # ---- elementwise ---------------------------------------------------------------------------------------------
    def elementwise(self, kernel: str, *inputs):
        xp = self.xp
        inputs = [xp.ascontiguousarray(a) for a in inputs]
        out = xp.empty_like(inputs[0])
        if out.size:
            self.launch("elementwise", elementwise_plan(kernel, out.size, self.max_grid), out.dtype,
                        [*inputs, out, out.size])
        return out

    def bias_add(self, y, bias):
        """``y += bias`` in place over a contiguous (rows, cols) ``y``."""
        rows, cols = y.shape
        self.launch("elementwise", elementwise_plan("bias_add", y.size, self.max_grid), y.dtype,
                    [y, self.xp.ascontiguousarray(bias), rows, cols])
        return y

    # ---- optimizers ------------------------------------------------------------------------------------------------
    def sgd_update(self, w, grad, velocity, lr, momentum, nesterov, weight_decay):
        self.launch("optimizers", elementwise_plan("sgd_update", w.size, self.max_grid), w.dtype,
                    [w, grad, velocity, w.size, lr, momentum, int(nesterov), weight_decay])

    def adam_update(self, w, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step_size, inv_bias2):
        self.launch("optimizers", elementwise_plan("adam_update", w.size, self.max_grid), w.dtype,
                    [w, grad, m, v, w.size, lr, beta1, beta2, eps, weight_decay, int(decoupled), step_size,
                     inv_bias2])
