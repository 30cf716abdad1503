"""An op as every device sees it: declared once, with the forms each kind of device runs.

An op module (``gpunet.ops``, ``gpunet.optim``) declares ``Op(name, kind, module, numpy, compiled)`` and calls
``device.run(op, ...)``; it never asks which device it is on. A device with CUDA kernels launches
``kernels/<module>.cu``'s kernel ``name`` through the launch rule of ``kind`` (``gpunet.cuda.launcher``); the CPU
calls the compiled CPU kernel ``name`` where ``compiled`` says there is one and its library was built, else the
NumPy form. What each kind passes to its forms:

- "elementwise": ``run(op, *inputs, out=None) -> out`` (one shape; ``out``, where given, C-contiguous and of that
  shape and dtype, and it may be an input where the op says so). NumPy form ``numpy(xp, *inputs) -> out``; CUDA
  kernel ``name(*inputs, out, n)``; compiled ``name(*inputs, out, n, threads)``.
- "rows": ``run(op, *inputs, out=None) -> out`` over C-contiguous (rows, C) arrays (``out``, where given, of
  that shape and dtype and apart from the inputs). NumPy form ``numpy(xp, *inputs, out)``
  over a block of rows, in float32 or wider; CUDA kernels ``name_<variant>(*inputs, out, rows, C, ...)``
  (``gpunet.cuda.plans.row_plan``); compiled ``name(*inputs, out, rows, C, threads)``.
- "update": ``run(op, params, grads, *state_lists, hyper=(...))``, every tensor in place. NumPy form
  ``numpy(xp, w, grad, *states, *hyper)`` per tensor; CUDA ``name(w, grad, *states, n, *hyper)`` per tensor;
  compiled ``name(ws, grads, *state_lists, sizes, count, *hyper, threads)`` for all tensors at once.
- "bias_add": ``run(op, y, bias) -> y``, a C-contiguous (rows, cols) ``y`` updated in place (``bias_add``,
  ``bias_relu``). NumPy form ``numpy(xp, y, bias)``; CUDA kernel and compiled ``name(y, bias, rows, cols[,
  threads])``.
- "cross_entropy", "cross_entropy_reduced", "cross_entropy_backward": the ops of those names in
  ``gpunet.ops`` (``cross_entropy_reduced`` has a compiled CPU kernel; elsewhere its NumPy-form argument is the
  composition of its ``base`` op that every device runs).
"""
from __future__ import annotations

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True, eq=False)
class Op:
    name: str
    kind: str
    module: str              # the CUDA source kernels/<module>.cu
    numpy: Callable          # the NumPy form (see the kinds above)
    compiled: bool = False   # gpunet/cpu_kernels has an entry point ``name``
    cached_arrays: int = 1   # "rows": how many (rows, C) arrays the shared-memory variant keeps per row
    base: "Op | None" = None  # an op this one is composed from where it has no kernel of its own

    def __repr__(self) -> str:
        return f"Op({self.name!r}, {self.kind!r})"
