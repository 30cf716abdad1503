"""The CPU device: NumPy arrays; each op runs its compiled CPU kernel where there is one, else its NumPy form
(``CpuKernels``, one method per op kind of ``gpunet.kinds``).

The compiled kernels (``gpunet.cpu_kernels``) are built on first use and give the NumPy form's results within
rounding; where they cannot be built the CPU logs why once and runs the NumPy forms. NumPy forms of row ops run
over cache-sized row blocks spread over the cores (NumPy releases the GIL inside its loops).
"""
from __future__ import annotations

import functools

import numpy

from .. import cpu_kernels
from ..env import setting
from ..errors import check_label_range, label_out_of_range
from ..kinds import Kernels
from ..numerics import quiet, wide_dtype, widened
from .host import HostDevice, host_pool, host_threads
from .registry import register_device


def quietly(fn):
    """``fn`` under :func:`quiet` in whichever thread runs it (NumPy's error state is per thread)."""
    def run(*args):
        with quiet():
            return fn(*args)
    return run


class CpuKernels(Kernels):
    """The CPU's form of each op kind (``gpunet.kinds``): the op's compiled kernel where there is one for its
    dtype, else its NumPy form."""
    block_bytes = 1 << 20  # about half of a core's L2: a block's inputs and outputs stay in cache

    # ---- the compiled kernels ---------------------------------------------------------------------------------
    def compiled(self, name: str, dtype):
        """The checked compiled entry point ``name`` for ``dtype`` (``cpu_kernels.library``), or None. Looked up
        once per entry point, dtype and setting: ops ask at every call."""
        key = (name, dtype, setting("GPUNET_CPU_KERNELS"), setting("GPUNET_CPU_ISA"))
        try:
            return _COMPILED[key]
        except KeyError:
            library = cpu_kernels.library()
            found = _COMPILED[key] = None if library is None else library.function(name, numpy.dtype(dtype))
            return found

    def _compiled_for(self, op, arrays):
        """``op``'s compiled kernel for ``arrays`` (of one dtype, by the kind's contract), or None: none for that
        dtype, or an array that is not C-contiguous (the kernels ignore strides)."""
        if not op.compiled:
            return None
        for a in arrays:
            if not a.flags.c_contiguous:
                return None
        return self.compiled(op.name, arrays[0].dtype)

    def map_rows(self, fn, inputs, outputs) -> None:
        """``fn(*inputs, *outputs)`` over row blocks of about ``block_bytes`` on a thread per core, so each op's
        passes over a block hit the cache instead of memory. The calling thread runs the first block itself."""
        rows = inputs[0].shape[0]
        row_bytes = max(1, inputs[0].nbytes // max(rows, 1))
        block = max(1, self.block_bytes // row_bytes)
        if rows <= block:
            fn(*inputs, *outputs)
            return

        def run(start):
            fn(*(a[start:start + block] for a in inputs), *(a[start:start + block] for a in outputs))
        pending = [host_pool().submit(run, start) for start in range(block, rows, block)]
        run(0)
        for part in pending:
            part.result()

    # ---- the op kinds (gpunet.kinds) ---------------------------------------------------------------------------
    def elementwise(self, op, *inputs, out=None):
        fn = self._compiled_for(op, inputs)
        if fn is None:
            result = op.numpy(numpy, *inputs)  # a form that may warn silences itself: errstate costs a microsecond
            if out is None:
                return result
            numpy.copyto(out, result)
            return out
        if out is None:
            out = numpy.empty_like(inputs[0])
        fn(*inputs, out, out.size, host_threads())
        return out

    def rows(self, op, *inputs, out=None):
        wide = inputs if inputs[0].dtype.itemsize >= 4 else [widened(a) for a in inputs]
        result = _place(out, wide[0])
        fn = self._compiled_for(op, wide)
        if fn is not None:
            fn(*wide, result, *wide[0].shape, host_threads())
        else:
            self.map_rows(quietly(functools.partial(op.numpy, numpy)), wide, [result])
        return _delivered(result, out, inputs[0].dtype)

    def bias_add(self, op, y, bias):
        """``y`` (a new C-contiguous product) updated in place with ``bias`` (and the op's activation)."""
        fn = self._compiled_for(op, (y, bias))
        if fn is None:
            return op.numpy(numpy, y, bias)
        fn(y, bias, y.shape[0], y.shape[1], host_threads())
        return y

    def update(self, op, params, grads, *state_lists, hyper=()):
        arrays = [*params, *grads, *(a for lst in state_lists if lst is not None for a in lst)]
        fn = self._compiled_for(op, arrays)
        if fn is not None:
            sizes = numpy.fromiter((w.size for w in params), dtype=numpy.int64, count=len(params))
            fn(list(params), list(grads), *state_lists, sizes, len(params), *hyper, host_threads())
            return
        for i, (w, grad) in enumerate(zip(params, grads)):
            narrow = [w, *(None if lst is None else lst[i] for lst in state_lists)]
            if w.dtype == wide_dtype(w.dtype):
                op.numpy(numpy, narrow[0], grad, *narrow[1:], *hyper)
                continue
            # float16: computed in float32 and each of w and its state rounded once, as the kernel does (in float16
            # eps and a small second moment underflow, and the step becomes inf)
            wide = [None if a is None else widened(a) for a in narrow]
            op.numpy(numpy, wide[0], widened(grad), *wide[1:], *hyper)
            for a, computed in zip(narrow, wide):
                if a is not None:
                    a[...] = computed

    def cross_entropy(self, op, logits, labels, ignore_index: int, grad_scale=None, check: bool = True,
                      out=None, targets=None, weight=None, smoothing: float = 0.0):
        """Per-row losses (in the accumulation type, float32 for float16) and the probabilities, or the gradient
        scaled by ``grad_scale``, into ``out`` where given (the kernel devices' contract; labels are always checked
        here, which costs no device sync). ``labels`` is None for probability ``targets``; ``weight`` is in the
        accumulation type."""
        wide = numpy.ascontiguousarray(widened(logits))
        wide_targets = None if targets is None else numpy.ascontiguousarray(widened(targets))
        given, out = out, _place(out, wide)
        loss = numpy.empty(wide.shape[0], dtype=wide.dtype)
        row_scale = None
        if grad_scale is not None:
            row_scale = numpy.full(wide.shape[0], grad_scale.astype(wide.dtype)[0], dtype=wide.dtype)
            if labels is not None:
                row_scale[labels == ignore_index] = 0
            fn = self._compiled_for(op, [wide])
            if fn is not None:  # it checks the labels itself, before it reads a row
                labels64 = None if labels is None else numpy.ascontiguousarray(labels, dtype=numpy.int64)
                bad_row = fn(wide, labels64, wide_targets, weight, row_scale, loss, out, *wide.shape,
                             int(ignore_index), float(smoothing), host_threads())
                if bad_row >= 0:
                    raise label_out_of_range(bad_row, int(labels[bad_row]), logits.shape[1], ignore_index)
                return loss, _delivered(out, given, logits.dtype)
        if labels is not None:
            check_label_range(numpy, labels, logits.shape[1], ignore_index)
        form = quietly(functools.partial(op.numpy, numpy, ignore_index=ignore_index, weight=weight,
                                         smoothing=smoothing))
        _map_optional_rows(self, form, [wide, labels, wide_targets, row_scale], [loss, out])
        return loss, _delivered(out, given, logits.dtype)

    def cross_entropy_reduced(self, op, logits, labels, ignore_index: int, mean: bool, check: bool = True,
                              out=None):
        """The loss reduced ("mean" or "sum") and its gradient (into ``out`` where given); one compiled call that
        also checks the labels (a small batch's loss otherwise costs a dozen NumPy calls, more than the
        arithmetic). None without a compiled kernel: the op composes it from :meth:`cross_entropy`."""
        fn = self._compiled_for(op, [logits])
        if fn is None:
            return None
        grad = numpy.empty(logits.shape, dtype=logits.dtype) if out is None else out
        loss = numpy.zeros(1, dtype=numpy.float64)
        bad_row = fn(logits, numpy.ascontiguousarray(labels, dtype=numpy.int64), grad,
                     *logits.shape, int(ignore_index), int(mean), host_threads(), loss)
        if bad_row >= 0:  # the label as given, not as converted (a uint64 past 2^63 would read negative)
            raise label_out_of_range(bad_row, int(labels[bad_row]), logits.shape[1], ignore_index)
        with quiet():  # rounded once from float64: past the dtype's range it is inf, without a warning
            return loss[0].astype(logits.dtype), grad

    def cross_entropy_backward(self, op, probs, labels, row_scale, ignore_index: int, row_u=None, targets=None,
                               weight=None, smoothing: float = 0.0):
        if labels is not None:
            check_label_range(numpy, labels, probs.shape[1], ignore_index)
        wide = numpy.ascontiguousarray(widened(probs))
        wide_targets = None if targets is None else numpy.ascontiguousarray(widened(targets))
        grad = numpy.empty_like(wide)
        form = quietly(lambda p, lab, t, sc, u, g: op.numpy(numpy, p, lab, t, sc, g, ignore_index, weight, smoothing,
                                                            u))
        _map_optional_rows(self, form, [wide, labels, wide_targets, row_scale.astype(wide.dtype, copy=False),
                                        None if row_u is None else row_u.astype(wide.dtype, copy=False)], [grad])
        return grad.astype(probs.dtype, copy=False)


def _map_optional_rows(device, form, inputs, outputs) -> None:
    """``device.map_rows(form, ...)`` where some inputs may be None (passed to ``form`` as None)."""
    present = [a for a in inputs if a is not None]

    def body(*arrays):
        given = iter(arrays[:len(present)])
        form(*(None if a is None else next(given) for a in inputs), *arrays[len(present):])
    device.map_rows(body, present, outputs)


def _place(out, wide):
    """Where a form writes a result like ``wide`` (float32 or wider): ``out`` itself where it has that dtype
    (its shape is the kind's contract), else a new array."""
    if out is None or out.dtype != wide.dtype:
        return numpy.empty_like(wide)
    return out


def _delivered(result, out, dtype):
    """``result`` as the op returns it: in ``dtype`` (float16 past its range becomes inf, as the kernels'
    conversion does), copied into ``out`` where given and not already there."""
    if result is out or (out is None and result.dtype == dtype):  # the common case: no errstate (a microsecond)
        return result
    with quiet():
        if out is None:
            return result.astype(dtype)
        numpy.copyto(out, result, casting="unsafe")
        return out


class CpuDevice(HostDevice):
    name = "cpu"

    def __init__(self):
        self.kernels = CpuKernels()


register_device("cpu", CpuDevice)
_COMPILED: dict = {}


def reset_compiled_cache() -> None:
    """Forget every looked-up entry point (tests that rebuild or switch off the library)."""
    _COMPILED.clear()
    cpu_kernels._reset_for_tests()
