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

// Lanes per row: always 32 when a lane holds more than one value (launch.py sends width 32 for cols > 32), so
// for COLS > 1 the compiler sees a constant, unrolls the shuffles and drops the sub-warp arithmetic.
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

// Load this lane's part of row `xr` (its first element) and reduce it over the group: m = row max,
// s = sum exp(x - m). On return v[j] holds exp(x - m) (EXP) or x - m, and 0 past the row's end or for a row past
// the last (whose `xr` is never read).
template <int COLS, bool EXP>
__device__ __forceinline__ void warp_row_stats(const scalar_t* __restrict__ xr, bool row_ok, int cols, int sub,
                                               int width, acc_t (&v)[COLS], acc_t& m, acc_t& s) {
    m = neg_inf();
#pragma unroll
    for (int j = 0; j < COLS; ++j) {
        const int col = sub + j * width;
        v[j] = (row_ok && col < cols) ? load(xr, col) : neg_inf();
        m = MaxOp::apply(m, v[j]);
    }
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
