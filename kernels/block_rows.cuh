// block_rows.cuh: the block variants' row walk, with ROW_UNROLL loads in flight per thread.
//
// A plain `for (c = threadIdx.x; c < cols; c += blockDim.x)` loop whose body uses the loaded value keeps one
// load in flight per thread: on an H100 that held the block variants near 55% of copy bandwidth (measured). So
// each step of the walk first loads ROW_UNROLL columns (base, base + blockDim.x, ...) into registers, then uses
// them. Columns past the row's end read as `pad` and are never stored.
#pragma once
#include "reduce.cuh"

// Half as deep for double: the same bytes in flight, and ptxas spilled the 8-deep float64 version (sm_86).
#define ROW_UNROLL (sizeof(acc_t) == 8 ? 4 : 8)

// Backward kernels read two arrays: half as deep each, the same loads in flight (and ptxas spilled the 8-deep
// log-softmax backward).
#define ROW_UNROLL_2 (ROW_UNROLL / 2)

// for (chunk start `base` of this thread) over a row of `cols` columns, `depth` columns a chunk
#define ROW_CHUNKS(base, depth) \
    for (long long base = threadIdx.x; base < cols; base += (long long)blockDim.x * (depth))

__device__ __forceinline__ long long chunk_column(long long base, int u) { return base + (long long)u * blockDim.x; }

template <int DEPTH>
__device__ __forceinline__ void load_chunk(const scalar_t* __restrict__ r, long long base, int cols, acc_t pad,
                                           acc_t (&v)[DEPTH]) {
#pragma unroll
    for (int u = 0; u < DEPTH; ++u) {
        const long long c = chunk_column(base, u);
        v[u] = c < cols ? load(r, c) : pad;
    }
}

// Online (max, sum exp) of a chunk, folded into (m, s): one rescale per chunk instead of one per element.
// -inf columns (and the padding) contribute 0; NaN and +inf reach s as NaN, as in every other variant.
__device__ __forceinline__ void online_add_chunk(acc_t& m, acc_t& s, const acc_t (&v)[ROW_UNROLL]) {
    acc_t cm = neg_inf();
#pragma unroll
    for (int u = 0; u < ROW_UNROLL; ++u) cm = MaxOp::apply(cm, v[u]);
    acc_t cs = 0;
    if (cm != neg_inf()) {
#pragma unroll
        for (int u = 0; u < ROW_UNROLL; ++u) cs += gp_exp(v[u] - cm);
    }
    online_merge(m, s, cm, cs);
}

// m = max, s = sum exp(x - m) of row `xr`, over the whole block (every thread gets both).
__device__ __forceinline__ void block_row_stats(const scalar_t* __restrict__ xr, int cols, acc_t& m, acc_t& s) {
    m = neg_inf();
    s = 0;
    ROW_CHUNKS(base, ROW_UNROLL) {
        acc_t v[ROW_UNROLL];
        load_chunk(xr, base, cols, neg_inf(), v);
        online_add_chunk(m, s, v);
    }
    block_reduce_online(m, s);
}
