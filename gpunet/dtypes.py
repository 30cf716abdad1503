"""The floating dtypes gpunet computes in: one table that every part reads.

The op checks (``gpunet.ops.checks``), the CUDA build (``gpunet.cuda.source``: the storage and accumulation C
types, the defines), the compiled CPU kernels' binding (``gpunet.cpu_kernels.binding``: the entry points'
suffixes), the numerics (``gpunet.numerics``: the dtype a computation runs in) and NCCL read it from here.
``tests/test_dtypes.py`` checks the C and CUDA sources against it: ``kernels/common.cuh``, ``gpunet/cuda/cuda_sim.h``
and the ``.cpp`` entry points list exactly these dtypes. Adding one (bfloat16, say) starts with a row here.
"""
from __future__ import annotations

import dataclasses

import numpy


@dataclasses.dataclass(frozen=True)
class FloatDtype:
    name: str                  # NumPy's name, e.g. "float16"
    c_type: str                # the C/CUDA storage type (scalar_t), e.g. "__half"
    accumulate: str            # the dtype a computation on it runs in (acc_t; float16 in float32)
    cuda_defines: tuple = ()   # extra -D flags of its CUDA build (the header switches on them)
    cpu_suffix: str | None = None  # the compiled CPU kernels' entry point suffix; None: computed in ``accumulate``
    nccl: str = ""             # NCCL's name for it

    @property
    def numpy_dtype(self) -> numpy.dtype:
        return numpy.dtype(self.name)


FLOATS = (
    FloatDtype("float16", "__half", "float32", ("GPUNET_HALF=1",), None, "NCCL_FLOAT16"),
    FloatDtype("float32", "float", "float32", (), "f32", "NCCL_FLOAT32"),
    FloatDtype("float64", "double", "float64", (), "f64", "NCCL_FLOAT64"),
)
BY_NAME = {d.name: d for d in FLOATS}
NAMES = tuple(d.name for d in FLOATS)
CHARS = "".join(numpy.dtype(d.name).char for d in FLOATS)  # "efd": cheaper to test than a dtype's name
C_TYPES = {d.c_type: d.name for d in FLOATS}                  # "float" -> "float32"

