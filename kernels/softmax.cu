// softmax.cu: softmax and log-softmax over the rows of a contiguous (rows, cols) array, forward and backward.
//
// Three variants, picked by row width in gpunet/cuda/plans.py (one rule for the GPU and the simulator):
// - warp:  cols <= 1024. A group of `width` lanes owns a row and keeps it in registers (COLS values per lane);
//          rows shorter than 32 use sub-warp groups, 32/width rows per warp. Reads x once, writes y once.
// - smem:  a block owns a row and caches it in dynamic shared memory. Reads x once, writes y once.
// - plain: rows too long for shared memory: one pass for the online (max, sum), one to write. Reads x twice.
// Every index into a row is 64-bit (row * cols can exceed 2^31); no variant assumes cols % 32 == 0 or
// rows % rows_per_block == 0. Forward: y = exp(x - m) / s (log: x - m - log s), m = row max, s = sum exp(x - m).
// Backward: softmax dx = y * (dy - sum(y * dy)); log-softmax dx = dy - exp(logy) * sum(dy).
#include "block_rows.cuh"
#include "warp_rows.cuh"

// ---- warp variant ------------------------------------------------------------------------------------------
template <int COLS, bool LOG>
__device__ __forceinline__ void warp_forward(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                                             long long rows, int cols, int width) {
    width = group_width<COLS>(width);
    WARP_ROW_LOOP(width) {
        const long long row = base + (lane >> width_log2);
        const bool row_ok = row < rows;
        const long long offset = row * cols;
        acc_t v[COLS], m, s;
        warp_row_stats<COLS, !LOG>(x + offset, row_ok, cols, sub, width, v, m, s);
        if (!row_ok) continue;
        // One division per row; each element then costs a multiply (1 ulp more than dividing each).
        const acc_t scale = LOG ? gp_log(s) : acc_t(1) / s;
        scalar_t* __restrict__ yr = y + offset;
#pragma unroll
        for (int j = 0; j < COLS; ++j) {
            const int col = sub + j * width;
            if (col < cols) store(yr, col, LOG ? v[j] - scale : v[j] * scale);
        }
    }
}

template <int COLS, bool LOG>
__device__ __forceinline__ void warp_backward(const scalar_t* __restrict__ y, const scalar_t* __restrict__ dy,
                                              scalar_t* __restrict__ dx, long long rows, int cols, int width) {
    width = group_width<COLS>(width);
    WARP_ROW_LOOP(width) {
        const long long row = base + (lane >> width_log2);
        const bool row_ok = row < rows;
        const long long offset = row * cols;
        const scalar_t* __restrict__ yr = y + offset;
        const scalar_t* __restrict__ dyr = dy + offset;
        acc_t yv[COLS], gv[COLS];
        acc_t dot = 0;
#pragma unroll
        for (int j = 0; j < COLS; ++j) {
            const int col = sub + j * width;
            const bool ok = row_ok && col < cols;
            yv[j] = ok ? load(yr, col) : acc_t(0);
            gv[j] = ok ? load(dyr, col) : acc_t(0);
            dot += LOG ? gv[j] : yv[j] * gv[j];
        }
        dot = group_reduce<SumOp>(dot, width);
        if (!row_ok) continue;
        scalar_t* __restrict__ dxr = dx + offset;
#pragma unroll
        for (int j = 0; j < COLS; ++j) {
            const int col = sub + j * width;
            if (col < cols) store(dxr, col, LOG ? gv[j] - gp_exp(yv[j]) * dot : yv[j] * (gv[j] - dot));
        }
    }
}

// ---- block variants (one block per row, grid-stride over rows; loads ROW_UNROLL deep, see block_rows.cuh) ---
template <bool LOG>
__device__ __forceinline__ void smem_forward(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                                             long long rows, int cols) {
    extern __shared__ acc_t cache[];  // cols values; each thread touches only its own columns
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const scalar_t* __restrict__ xr = x + row * cols;
        scalar_t* __restrict__ yr = y + row * cols;
        acc_t m = neg_inf();
        ROW_CHUNKS(base, ROW_UNROLL) {
            acc_t v[ROW_UNROLL];
            load_chunk(xr, base, cols, neg_inf(), v);
#pragma unroll
            for (int u = 0; u < ROW_UNROLL; ++u) {
                const long long c = chunk_column(base, u);
                if (c < cols) cache[c] = v[u];
                m = MaxOp::apply(m, v[u]);
            }
        }
        m = block_reduce<MaxOp>(m);
        acc_t s = 0;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            const acc_t shifted = cache[c] - m;
            const acc_t e = gp_exp(shifted);
            cache[c] = LOG ? shifted : e;
            s += e;
        }
        s = block_reduce<SumOp>(s);
        const acc_t scale = LOG ? gp_log(s) : acc_t(1) / s;
        for (int c = threadIdx.x; c < cols; c += blockDim.x)
            store(yr, c, LOG ? cache[c] - scale : cache[c] * scale);
    }
}

template <bool LOG>
__device__ __forceinline__ void plain_forward(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                                              long long rows, int cols) {
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const scalar_t* __restrict__ xr = x + row * cols;
        scalar_t* __restrict__ yr = y + row * cols;
        acc_t m, s;
        block_row_stats(xr, cols, m, s);
        const acc_t log_s = gp_log(s), inv_s = acc_t(1) / s;
        ROW_CHUNKS(base, ROW_UNROLL) {
            acc_t v[ROW_UNROLL];
            load_chunk(xr, base, cols, acc_t(0), v);
#pragma unroll
            for (int u = 0; u < ROW_UNROLL; ++u) {
                const long long c = chunk_column(base, u);
                const acc_t shifted = v[u] - m;
                if (c < cols) store(yr, c, LOG ? shifted - log_s : gp_exp(shifted) * inv_s);
            }
        }
    }
}

template <bool LOG>
__device__ __forceinline__ void smem_backward(const scalar_t* __restrict__ y, const scalar_t* __restrict__ dy,
                                              scalar_t* __restrict__ dx, long long rows, int cols) {
    extern __shared__ acc_t cache[];  // [0, cols): y, [cols, 2 cols): dy; each thread only its own columns
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const long long offset = row * cols;
        acc_t dot = 0;
        ROW_CHUNKS(base, ROW_UNROLL_2) {
            acc_t yv[ROW_UNROLL_2], gv[ROW_UNROLL_2];
            load_chunk(y + offset, base, cols, acc_t(0), yv);
            load_chunk(dy + offset, base, cols, acc_t(0), gv);
#pragma unroll
            for (int u = 0; u < ROW_UNROLL_2; ++u) {
                const long long c = chunk_column(base, u);
                if (c < cols) {
                    cache[c] = yv[u];
                    cache[cols + c] = gv[u];
                }
                dot += LOG ? gv[u] : yv[u] * gv[u];
            }
        }
        dot = block_reduce<SumOp>(dot);
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            const acc_t yv = cache[c], gv = cache[cols + c];
            store(dx, offset + c, LOG ? gv - gp_exp(yv) * dot : yv * (gv - dot));
        }
    }
}

template <bool LOG>
__device__ __forceinline__ void plain_backward(const scalar_t* __restrict__ y, const scalar_t* __restrict__ dy,
                                               scalar_t* __restrict__ dx, long long rows, int cols) {
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const long long offset = row * cols;
        acc_t dot = 0;
        ROW_CHUNKS(base, ROW_UNROLL_2) {
            acc_t gv[ROW_UNROLL_2];
            load_chunk(dy + offset, base, cols, acc_t(0), gv);
            if (LOG) {
#pragma unroll
                for (int u = 0; u < ROW_UNROLL_2; ++u) dot += gv[u];
            } else {
                acc_t yv[ROW_UNROLL_2];
                load_chunk(y + offset, base, cols, acc_t(0), yv);
#pragma unroll
                for (int u = 0; u < ROW_UNROLL_2; ++u) dot += yv[u] * gv[u];
            }
        }
        dot = block_reduce<SumOp>(dot);
        ROW_CHUNKS(base, ROW_UNROLL_2) {
            acc_t yv[ROW_UNROLL_2], gv[ROW_UNROLL_2];
            load_chunk(y + offset, base, cols, acc_t(0), yv);
            load_chunk(dy + offset, base, cols, acc_t(0), gv);
#pragma unroll
            for (int u = 0; u < ROW_UNROLL_2; ++u) {
                const long long c = chunk_column(base, u);
                if (c < cols) store(dx, offset + c, LOG ? gv[u] - gp_exp(yv[u]) * dot : yv[u] * (gv[u] - dot));
            }
        }
    }
}

// ---- entry points ---------------------------------------------------------------------------------------------
// The warp kernels come in COLS = 1, 2, 4, 8, 16, 32 values per lane (cols up to 32 * COLS).
#define FORWARD_ARGS const scalar_t* __restrict__ x, scalar_t* __restrict__ y, long long rows, int cols
#define BACKWARD_ARGS const scalar_t* __restrict__ y, const scalar_t* __restrict__ dy, scalar_t* __restrict__ dx, \
                      long long rows, int cols

extern "C" __global__ void WARP_FORWARD_BOUNDS softmax_forward_warp1(FORWARD_ARGS, int width) { warp_forward<1, false>(x, y, rows, cols, width); }
extern "C" __global__ void WARP_FORWARD_BOUNDS log_softmax_forward_warp1(FORWARD_ARGS, int width) { warp_forward<1, true>(x, y, rows, cols, width); }
extern "C" __global__ void WARP_BACKWARD_BOUNDS softmax_backward_warp1(BACKWARD_ARGS, int width) { warp_backward<1, false>(y, dy, dx, rows, cols, width); }
extern "C" __global__ void WARP_BACKWARD_BOUNDS log_softmax_backward_warp1(BACKWARD_ARGS, int width) { warp_backward<1, true>(y, dy, dx, rows, cols, width); }
extern "C" __global__ void WARP_FORWARD_BOUNDS softmax_forward_warp2(FORWARD_ARGS, int width) { warp_forward<2, false>(x, y, rows, cols, width); }
extern "C" __global__ void WARP_FORWARD_BOUNDS log_softmax_forward_warp2(FORWARD_ARGS, int width) { warp_forward<2, true>(x, y, rows, cols, width); }
extern "C" __global__ void WARP_BACKWARD_BOUNDS softmax_backward_warp2(BACKWARD_ARGS, int width) { warp_backward<2, false>(y, dy, dx, rows, cols, width); }
extern "C" __global__ void WARP_BACKWARD_BOUNDS log_softmax_backward_warp2(BACKWARD_ARGS, int width) { warp_backward<2, true>(y, dy, dx, rows, cols, width); }
extern "C" __global__ void WARP_FORWARD_BOUNDS softmax_forward_warp4(FORWARD_ARGS, int width) { warp_forward<4, false>(x, y, rows, cols, width); }
extern "C" __global__ void WARP_FORWARD_BOUNDS log_softmax_forward_warp4(FORWARD_ARGS, int width) { warp_forward<4, true>(x, y, rows, cols, width); }
extern "C" __global__ void WARP_BACKWARD_BOUNDS softmax_backward_warp4(BACKWARD_ARGS, int width) { warp_backward<4, false>(y, dy, dx, rows, cols, width); }
extern "C" __global__ void WARP_BACKWARD_BOUNDS log_softmax_backward_warp4(BACKWARD_ARGS, int width) { warp_backward<4, true>(y, dy, dx, rows, cols, width); }
extern "C" __global__ void WARP_FORWARD_BOUNDS softmax_forward_warp8(FORWARD_ARGS, int width) { warp_forward<8, false>(x, y, rows, cols, width); }
extern "C" __global__ void WARP_FORWARD_BOUNDS log_softmax_forward_warp8(FORWARD_ARGS, int width) { warp_forward<8, true>(x, y, rows, cols, width); }
extern "C" __global__ void WARP_BACKWARD_BOUNDS softmax_backward_warp8(BACKWARD_ARGS, int width) { warp_backward<8, false>(y, dy, dx, rows, cols, width); }
extern "C" __global__ void WARP_BACKWARD_BOUNDS log_softmax_backward_warp8(BACKWARD_ARGS, int width) { warp_backward<8, true>(y, dy, dx, rows, cols, width); }
extern "C" __global__ void WARP_FORWARD_BOUNDS softmax_forward_warp16(FORWARD_ARGS, int width) { warp_forward<16, false>(x, y, rows, cols, width); }
extern "C" __global__ void WARP_FORWARD_BOUNDS log_softmax_forward_warp16(FORWARD_ARGS, int width) { warp_forward<16, true>(x, y, rows, cols, width); }
extern "C" __global__ void WARP_BACKWARD_BOUNDS softmax_backward_warp16(BACKWARD_ARGS, int width) { warp_backward<16, false>(y, dy, dx, rows, cols, width); }
extern "C" __global__ void WARP_BACKWARD_BOUNDS log_softmax_backward_warp16(BACKWARD_ARGS, int width) { warp_backward<16, true>(y, dy, dx, rows, cols, width); }
extern "C" __global__ void WARP_FORWARD_BOUNDS softmax_forward_warp32(FORWARD_ARGS, int width) { warp_forward<32, false>(x, y, rows, cols, width); }
extern "C" __global__ void WARP_FORWARD_BOUNDS log_softmax_forward_warp32(FORWARD_ARGS, int width) { warp_forward<32, true>(x, y, rows, cols, width); }
extern "C" __global__ void WARP_BACKWARD_BOUNDS softmax_backward_warp32(BACKWARD_ARGS, int width) { warp_backward<32, false>(y, dy, dx, rows, cols, width); }
extern "C" __global__ void WARP_BACKWARD_BOUNDS log_softmax_backward_warp32(BACKWARD_ARGS, int width) { warp_backward<32, true>(y, dy, dx, rows, cols, width); }

extern "C" __global__ void __launch_bounds__(256) softmax_forward_smem(FORWARD_ARGS) { smem_forward<false>(x, y, rows, cols); }
extern "C" __global__ void __launch_bounds__(256) log_softmax_forward_smem(FORWARD_ARGS) { smem_forward<true>(x, y, rows, cols); }
extern "C" __global__ void __launch_bounds__(256) softmax_forward_plain(FORWARD_ARGS) { plain_forward<false>(x, y, rows, cols); }
extern "C" __global__ void __launch_bounds__(256) log_softmax_forward_plain(FORWARD_ARGS) { plain_forward<true>(x, y, rows, cols); }
extern "C" __global__ void __launch_bounds__(256) softmax_backward_smem(BACKWARD_ARGS) { smem_backward<false>(y, dy, dx, rows, cols); }
extern "C" __global__ void __launch_bounds__(256) log_softmax_backward_smem(BACKWARD_ARGS) { smem_backward<true>(y, dy, dx, rows, cols); }
extern "C" __global__ void __launch_bounds__(256) softmax_backward_plain(BACKWARD_ARGS) { plain_backward<false>(y, dy, dx, rows, cols); }
extern "C" __global__ void __launch_bounds__(256) log_softmax_backward_plain(BACKWARD_ARGS) { plain_backward<true>(y, dy, dx, rows, cols); }
