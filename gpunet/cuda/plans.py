"""Launch rules: which kernel variant, grid, block and shared memory, for the GPU and the simulator alike.

Row ops (softmax family, cross-entropy) dispatch on the row width, as OneFlow's and PyTorch's softmax do:

- ``cols <= 1024``: the warp variant. A group of ``width`` lanes (the next power of two >= cols, at most 32)
  owns a row and keeps ``per_lane`` values in registers (a power of two, so six compiled variants cover it);
  32 / width rows per warp, 4 warps per block.
- the row fits in shared memory (48 KiB, the default limit without opt-in): one block of 256 threads per row,
  the row cached in shared memory, read once.
- otherwise: one block per row, read twice (an online max/sum pass, then the output pass).

Grids are capped (``max_grid``); every kernel loops grid-stride over whatever remains, so any cap is correct.
The simulator uses a tiny cap on purpose: it exercises those loops and keeps a thread switch per block cheap.
"""
from __future__ import annotations

import dataclasses
import functools

WARP_BLOCK = 128
ROW_BLOCK = 256
ELEMENTWISE_BLOCK = 256
MAX_WARP_COLS = 1024
SHARED_MEMORY_LIMIT = 48 * 1024


@dataclasses.dataclass(frozen=True)
class LaunchPlan:
    kernel: str
    grid: int
    block: int
    shared_bytes: int = 0
    extra_args: tuple = ()
    variant: str = ""


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@functools.lru_cache(maxsize=4096)  # pure, and asked for at every launch
def row_plan(op: str, rows: int, cols: int, acc_bytes: int, max_grid: int, cached_arrays: int = 1,
             has_smem_variant: bool = True) -> LaunchPlan:
    """The launch of row op ``op`` (e.g. "softmax_forward") over a contiguous (rows, cols) array."""
    if rows <= 0 or cols <= 0:
        raise ValueError(f"row op {op} needs a non-empty (rows, cols) array, got ({rows}, {cols})")
    if cols > 2**31 - 1:
        raise ValueError(f"row op {op}: rows of {cols} elements exceed the kernels' int column index")
    if cols <= MAX_WARP_COLS:
        width = min(32, _next_pow2(cols))
        per_lane = _next_pow2(_cdiv(cols, 32)) if cols > 32 else 1
        rows_per_block = (WARP_BLOCK // 32) * (32 // width)
        grid = min(_cdiv(rows, rows_per_block), max_grid)
        return LaunchPlan(f"{op}_warp{per_lane}", grid, WARP_BLOCK, 0, (width,), "warp")
    shared = cols * acc_bytes * cached_arrays
    if has_smem_variant and shared <= SHARED_MEMORY_LIMIT:
        return LaunchPlan(f"{op}_smem", min(rows, max_grid), ROW_BLOCK, shared, (), "smem")
    return LaunchPlan(f"{op}_plain", min(rows, max_grid), ROW_BLOCK, 0, (), "plain")


@functools.lru_cache(maxsize=4096)
def elementwise_plan(kernel: str, n: int, max_grid: int) -> LaunchPlan:
    return LaunchPlan(kernel, max(1, min(_cdiv(n, ELEMENTWISE_BLOCK), max_grid)), ELEMENTWISE_BLOCK)
