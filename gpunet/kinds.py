"""Op kinds: how an op's arguments reach a device, written once per kind.

An op (``gpunet.ops``, ``gpunet.optim``) is declared as one of the kinds below, e.g.
``SOFTMAX = RowOp("softmax_forward", "softmax", _softmax_rows, compiled=True)``, and run with
``device.run(SOFTMAX, rows)``, which is ``SOFTMAX.run(device.kernels, rows)``, which is
``device.kernels.rows(SOFTMAX, rows)``: each kind calls the one method of :class:`Kernels` named after it, and
that method is what a device implements (``gpunet.devices.cpu.CpuKernels``: compiled CPU kernels or NumPy forms;
``gpunet.cuda.launcher.KernelLauncher``: the CUDA kernel ``kernels/<module>.cu: <name>``, on a GPU or in the
simulator).

Every argument has been checked at the op boundary (``gpunet.ops.checks``: device, dtype, shape, ``out``) before
it gets here; a kind's method trusts its contract and checks nothing again. What stays below it is the last guard
before native code (``gpunet.cpu_kernels.binding``, ``gpunet.cuda.source.check_arguments``) and the label range,
which the kernels check themselves.
"""
from __future__ import annotations

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True, eq=False)
class Op:
    """What every kind of op declares: the kernel ``name`` (CUDA and compiled CPU alike), the CUDA source
    ``kernels/<module>.cu``, the NumPy form (its arguments depend on the kind), and whether ``gpunet/cpu_kernels``
    has a compiled entry point ``name``."""
    name: str
    module: str
    numpy: Callable | None
    compiled: bool = False

    def run(self, kernels: "Kernels", *args, **params):
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


@dataclasses.dataclass(frozen=True, eq=False)
class ElementwiseOp(Op):
    """Inputs of one shape (the op promoted them to one dtype); the result is of that shape. ``out``, where
    given, is C-contiguous, of that shape and dtype, and may be an input (the kernels read each element before
    they write it). NumPy form ``numpy(xp, *inputs) -> result``; CUDA kernel ``name(*inputs, out, n)``; compiled
    ``name(*inputs, out, n, threads)``."""

    def run(self, kernels, *inputs, out=None):
        return kernels.elementwise(self, *inputs, out=out)


@dataclasses.dataclass(frozen=True, eq=False)
class RowOp(Op):
    """C-contiguous (rows, C) inputs of one dtype, rows >= 1; the result is (rows, C). ``out``, where given, is
    C-contiguous, of that shape and dtype, apart from every input. NumPy form ``numpy(xp, *inputs, out)`` over a
    block of rows in float32 or wider; CUDA kernels ``name_<variant>(*inputs, out, rows, C, ...)``
    (``gpunet.cuda.plans.row_plan``); compiled ``name(*inputs, out, rows, C, threads)``."""
    cached_arrays: int = 1  # how many (rows, C) arrays the shared-memory variant keeps per row

    def run(self, kernels, *inputs, out=None):
        return kernels.rows(self, *inputs, out=out)


@dataclasses.dataclass(frozen=True, eq=False)
class BiasAddOp(Op):
    """A new C-contiguous (rows, cols) product ``y`` updated in place with a (cols,) ``bias`` of its dtype (and
    the op's activation). NumPy form ``numpy(xp, y, bias) -> y``; CUDA kernel and compiled
    ``name(y, bias, rows, cols[, threads])``."""

    def run(self, kernels, y, bias):
        return kernels.bias_add(self, y, bias)


@dataclasses.dataclass(frozen=True, eq=False)
class UpdateOp(Op):
    """An optimizer's update of ``params`` (C-contiguous, one device and dtype) in place, with ``grads`` of
    their dtypes and shapes, one list per state buffer (or None) and the scalar ``hyper``-parameters. NumPy form
    ``numpy(xp, w, grad, *states, *hyper)`` per tensor; CUDA ``name(w, grad, *states, n, *hyper)`` per tensor;
    compiled ``name(ws, grads, *state_lists, sizes, count, *hyper, threads)`` for all tensors at once."""

    def run(self, kernels, params, grads, *state_lists, hyper=()):
        return kernels.update(self, params, grads, *state_lists, hyper=hyper)


@dataclasses.dataclass(frozen=True, eq=False)
class CrossEntropyOp(Op):
    """Per-row losses (in the accumulation dtype) of (N, C) ``logits`` against (N,) int64 ``labels`` (or, with
    ``labels`` None, (N, C) probability ``targets`` of the logits' dtype) and the probabilities, or, given a
    1-element ``grad_scale`` (in the logits' wide dtype), the gradient ``(a (p - onehot) + k (U p - u)) *
    grad_scale`` (``a`` the label's weight times ``1 - smoothing``, ``k`` = ``smoothing / C``, ``u`` the smoothing
    or target part, ``U`` its row sum: docs/semantics.md; 0 for ignored rows); ``weight`` (C,) class weights in
    the wide dtype or None; into ``out`` where given (C-contiguous, of the logits' shape and dtype, apart from
    them). Returns ``(loss_rows, probs_or_grad)``. Labels out of range are the kernels' to find: an error
    (``check``), or with ``check=False`` on a GPU a NaN row that nobody reads back. NumPy form
    ``numpy(xp, x, labels, targets, row_scale, loss, out, ignore_index, weight, smoothing)`` over a block of rows;
    CUDA kernels ``softmax_cross_entropy[_mixed]_<variant>(x, labels, targets, weight, loss, out, grad_scale,
    error_row, rows, cols, ignore_index, smoothing[, width])`` (``_mixed`` with smoothing or targets)."""

    def run(self, kernels, logits, labels, ignore_index: int, grad_scale=None, check: bool = True, out=None,
            targets=None, weight=None, smoothing: float = 0.0):
        return kernels.cross_entropy(self, logits, labels, ignore_index, grad_scale=grad_scale, check=check,
                                     out=out, targets=targets, weight=weight, smoothing=smoothing)


@dataclasses.dataclass(frozen=True, eq=False)
class CrossEntropyReducedOp(Op):
    """The "mean" (``mean``) or "sum" loss and its gradient in one call, as ``(loss, grad)``; arguments as
    :class:`CrossEntropyOp`. A fused form only: a device without one returns None and the op composes the result
    from its :class:`CrossEntropyOp` (``numpy`` is None)."""

    def run(self, kernels, logits, labels, ignore_index: int, mean: bool, check: bool = True, out=None):
        return kernels.cross_entropy_reduced(self, logits, labels, ignore_index, mean, check=check, out=out)


@dataclasses.dataclass(frozen=True, eq=False)
class CrossEntropyBackwardOp(Op):
    """``(a (p - onehot) + k (U p - u)) * row_scale[:, None]`` (the terms of :class:`CrossEntropyOp`) for (N, C)
    ``probs``, (N,) int64 ``labels`` or (N, C) ``targets``, an (N,) ``row_scale`` and, where given, the (N,)
    row sums ``row_u`` of ``u`` (0 for ignored rows); labels out of range raise. NumPy form
    ``numpy(xp, probs, labels, targets, scale, grad, ignore_index, weight, smoothing, U)`` over a block of rows;
    CUDA kernel ``name(probs, labels, targets, weight, row_scale, row_u, grad, rows, cols, ignore_index,
    smoothing)``."""

    def run(self, kernels, probs, labels, row_scale, ignore_index: int, row_u=None, targets=None, weight=None,
            smoothing: float = 0.0):
        return kernels.cross_entropy_backward(self, probs, labels, row_scale, ignore_index, row_u=row_u,
                                              targets=targets, weight=weight, smoothing=smoothing)


class Kernels:
    """What a device implements: one method per kind, called by that kind's ``run`` with the op and arguments of
    the contract written on the kind. A device that lacks a kind raises NotImplementedError from it."""

    def elementwise(self, op: ElementwiseOp, *inputs, out=None):
        raise NotImplementedError(f"{type(self).__name__} has no elementwise kernels")

    def rows(self, op: RowOp, *inputs, out=None):
        raise NotImplementedError(f"{type(self).__name__} has no row kernels")

    def bias_add(self, op: BiasAddOp, y, bias):
        raise NotImplementedError(f"{type(self).__name__} has no bias kernels")

    def update(self, op: UpdateOp, params, grads, *state_lists, hyper=()):
        raise NotImplementedError(f"{type(self).__name__} has no update kernels")

    def cross_entropy(self, op: CrossEntropyOp, logits, labels, ignore_index, grad_scale=None, check=True,
                      out=None, targets=None, weight=None, smoothing=0.0):
        raise NotImplementedError(f"{type(self).__name__} has no cross-entropy kernels")

    def cross_entropy_reduced(self, op: CrossEntropyReducedOp, logits, labels, ignore_index, mean, check=True,
                              out=None):
        """None: no fused form here (the op composes it from :meth:`cross_entropy`)."""
        return None

    def cross_entropy_backward(self, op: CrossEntropyBackwardOp, probs, labels, row_scale, ignore_index,
                               row_u=None, targets=None, weight=None, smoothing=0.0):
        raise NotImplementedError(f"{type(self).__name__} has no cross-entropy kernels")

    def take_label_flag(self):
        """The label flag of the cross-entropy calls made with ``check=False`` since the last take, left on the
        device (``gpunet.cuda.launcher.LabelFlag``), or None: a device that checks labels in every call (the CPU,
        where the check costs no host sync) has none to defer."""
        return None
