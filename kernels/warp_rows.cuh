// warp_rows.cuh: the warp variant's row loop and row statistics, shared by softmax.cu and cross_entropy.cu.
//
// A group of `width` lanes owns a row; COLS values per lane stay in registers. The loop runs whole warps over
// row groups (uniform per warp), so all 32 lanes reach every shuffle, including lanes past the last row.
#pragma once
#include "reduce.cuh"

// Register caps of the warp kernels. Forward and cross-entropy: 64 registers (8 blocks of 128 threads per SM,
// 50% occupancy) for float and half, 85 for double. Measured on an H100 (ncu): with the looser (128, 2) the device's
// compiler gave softmax_forward_warp32 96+ registers, 25-31% occupancy, and 44-65% of DRAM bandwidth. Backward
// kernels hold two arrays per lane and already reach 97% of copy at (128, 2). No variant spills (test_nvrtc).
#define WARP_FORWARD_BOUNDS __launch_bounds__(128, (sizeof(acc_t) == 8 ? 3 : 8))
#define WARP_BACKWARD_BOUNDS __launch_bounds__(128, 2)

// Lanes per row: always 32 when a lane holds more than one value (gpunet/cuda/plans.py sends width 32 for
// cols > 32), so for COLS > 1 the compiler sees a constant, unrolls the shuffles and drops the sub-warp arithmetic.
template <int COLS>
__device__ __forceinline__ int group_width(int width) { return COLS > 1 ? 32 : width; }

// `width` is a power of two: lane / width and lane % width are a shift and a mask.
#define WARP_ROW_LOOP(width)                                                                                      \
    const int lane = threadIdx.x % 32, sub = lane & ((width) - 1), width_log2 = __ffs(width) - 1;               \
    const long long rows_per_warp = 32 >> width_log2;                                                            \
    const long long warps_per_block = blockDim.x / 32;                                                           \
    const long long first = ((long long)blockIdx.x * warps_per_block + threadIdx.x / 32) * rows_per_warp;       \
    const long long stride = (long long)gridDim.x * warps_per_block * rows_per_warp;                             \
    for (long long base = first; base < rows; base += stride)

// This lane's part of row `xr` (its first element): v[j] = x at column sub + j * width, -inf past the row's end
// or for a row past the last (whose `xr` is never read).
template <int COLS>
__device__ __forceinline__ void warp_row_load(const scalar_t* __restrict__ xr, bool row_ok, int cols, int sub,
                                              int width, acc_t (&v)[COLS]) {
#pragma unroll
    for (int j = 0; j < COLS; ++j) {
        const int col = sub + j * width;
        v[j] = (row_ok && col < cols) ? load(xr, col) : neg_inf();
    }
}

// Reduce a loaded row over the group: m = row max, s = sum exp(x - m). On return v[j] holds exp(x - m) (EXP) or
// x - m, and 0 past the row's end.
template <int COLS, bool EXP>
__device__ __forceinline__ void warp_row_reduce(bool row_ok, int cols, int sub, int width, acc_t (&v)[COLS], acc_t& m,
                                                acc_t& s) {
    m = neg_inf();
#pragma unroll
    for (int j = 0; j < COLS; ++j) m = MaxOp::apply(m, v[j]);
    m = group_reduce<MaxOp>(m, width);
    s = 0;
#pragma unroll
    for (int j = 0; j < COLS; ++j) {
        const bool ok = row_ok && sub + j * width < cols;
        const acc_t shifted = ok ? v[j] - m : acc_t(0);
        const acc_t e = ok ? gp_exp(shifted) : acc_t(0);
        v[j] = EXP ? e : shifted;
        s += e;
    }
    s = group_reduce<SumOp>(s, width);
}

template <int COLS, bool EXP>
__device__ __forceinline__ void warp_row_stats(const scalar_t* __restrict__ xr, bool row_ok, int cols, int sub,
                                               int width, acc_t (&v)[COLS], acc_t& m, acc_t& s) {
    warp_row_load<COLS>(xr, row_ok, cols, sub, width, v);
    warp_row_reduce<COLS, EXP>(row_ok, cols, sub, width, v, m, s);
}

// The value a loaded row holds at column `col` (0 <= col < cols), for every lane of the group: its owner lane
// (sub = col % width) selects v[col / width] without indexing registers dynamically, then broadcasts it.
template <int COLS>
__device__ __forceinline__ acc_t warp_row_pick(const acc_t (&v)[COLS], int col, int width) {
    const int owner_j = col / width;
    acc_t mine = 0;
#pragma unroll
    for (int j = 0; j < COLS; ++j)
        if (j == owner_j) mine = v[j];
    return __shfl_sync(GPUNET_FULL_MASK, mine, col & (width - 1), width);
}
