// cross_entropy.cu: fused softmax cross-entropy over (rows, cols) logits and int64 labels.
//
// Forward, one pass over the logits per row: m = max, s = sum exp(x - m), loss = (m - x[label]) + log s
// (= -log softmax(x)[label]), and either the probabilities p = exp(x - m) / s, or, when `grad_scale` is given,
// directly the gradient (p - onehot(label)) * grad_scale[0] (the host passes dloss / n_valid for a mean).
// The row losses are written in the accumulation type (acc_t), so that a reduction over them rounds to the
// logits' dtype once (docs/semantics.md). Rows labelled `ignore_index` get loss 0 and a zero gradient. A label outside [0, cols) is flagged: the
// smallest offending row goes to `*error_row` (initialised to ULLONG_MAX by the host, which raises ValueError).
//
// Backward from stored probabilities: grad = (p - onehot(label)) * row_scale[row], 0 for ignored rows.
#include "block_rows.cuh"
#include "warp_rows.cuh"

__device__ __forceinline__ bool label_ok(long long label, int cols) { return label >= 0 && label < cols; }

// The label's logit, loaded (block variant) after the row's reductions: 0 for an ignored row or a label out of
// range (whose loss does not use it). The warp variant picks it from the row's registers instead.
__device__ __forceinline__ acc_t label_logit(const scalar_t* __restrict__ xr, long long label, int cols) {
    return label_ok(label, cols) ? load(xr, label) : acc_t(0);
}

__device__ __forceinline__ acc_t row_loss(acc_t x_label, long long label, long long ignore_index, int cols,
                                          long long row, acc_t m, acc_t s, unsigned long long* error_row) {
    if (label == ignore_index) return acc_t(0);
    if (!label_ok(label, cols)) {
        atomicMin(error_row, (unsigned long long)row);
        return quiet_nan();
    }
    return (m - x_label) + gp_log(s);  // (m - x) first: exact when x is the max
}

// What the forward writes for probability p at column col: p itself, or the gradient (p - [col == label]) * g.
// Decided once per row (the scale is read once, not at every element).
struct RowOutput {
    bool grad, ignored;
    long long label;
    acc_t scale;
    __device__ __forceinline__ acc_t operator()(acc_t p, long long col) const {
        if (!grad) return p;
        if (ignored) return acc_t(0);
        return (p - (col == label ? acc_t(1) : acc_t(0))) * scale;
    }
};

// The gradient's scale, read once per thread before any row (a load issued at each row's end stalled it).
__device__ __forceinline__ acc_t gradient_scale(const scalar_t* __restrict__ grad_scale) {
    return grad_scale != nullptr ? load(grad_scale, 0) : acc_t(1);
}

__device__ __forceinline__ RowOutput row_output(const scalar_t* __restrict__ grad_scale, acc_t scale,
                                                long long label, long long ignore_index) {
    return RowOutput{grad_scale != nullptr, label == ignore_index, label, scale};
}

// Warp variant (cols <= 1024): a group of `width` lanes per row, COLS logits per lane in registers.
template <int COLS>
__device__ __forceinline__ void ce_warp(const scalar_t* __restrict__ x, const long long* __restrict__ labels,
                                        acc_t* __restrict__ loss, scalar_t* __restrict__ out,
                                        const scalar_t* __restrict__ grad_scale, unsigned long long* error_row,
                                        long long rows, int cols, long long ignore_index, int width) {
    width = group_width<COLS>(width);
    const acc_t scale = gradient_scale(grad_scale);
    WARP_ROW_LOOP(width) {
        const long long row = base + (lane >> width_log2);
        const bool row_ok = row < rows;
        const long long offset = row * cols;
        const long long label = row_ok ? labels[row] : ignore_index;
        acc_t v[COLS], m, s;
        warp_row_load<COLS>(x + offset, row_ok, cols, sub, width, v);
        // The label's logit from the registers of its lane: a load of x[label] waited for the label (SASS: the
        // row's loads issued only after it, one memory latency a row).
        const acc_t x_label = warp_row_pick<COLS>(v, label_ok(label, cols) ? int(label) : 0, width);
        warp_row_reduce<COLS, true>(row_ok, cols, sub, width, v, m, s);
        if (!row_ok) continue;
        if (sub == 0) loss[row] = row_loss(x_label, label, ignore_index, cols, row, m, s, error_row);
        const acc_t inv_s = acc_t(1) / s;
        const RowOutput output = row_output(grad_scale, scale, label, ignore_index);
        scalar_t* __restrict__ outr = out + offset;
#pragma unroll
        for (int j = 0; j < COLS; ++j) {
            const int col = sub + j * width;
            if (col < cols) store(outr, col, output(v[j] * inv_s, col));
        }
    }
}

// Block variant (longer rows): one block per row, online (max, sum) pass, then the output pass.
__device__ __forceinline__ void ce_block(const scalar_t* __restrict__ x, const long long* __restrict__ labels,
                                         acc_t* __restrict__ loss, scalar_t* __restrict__ out,
                                         const scalar_t* __restrict__ grad_scale, unsigned long long* error_row,
                                         long long rows, int cols, long long ignore_index) {
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const long long offset = row * cols;
        const acc_t scale = gradient_scale(grad_scale);  // per row here: held across rows, ptxas spilled (sm_70)
        acc_t m, s;
        block_row_stats(x + offset, cols, m, s);
        // After the reductions here: one dependent load per row of over 1024 columns costs little, and held
        // across them it made ptxas spill (float16, sm_70).
        const long long label = labels[row];
        if (threadIdx.x == 0)
            loss[row] = row_loss(label_logit(x + offset, label, cols), label, ignore_index, cols, row, m, s,
                                 error_row);
        const acc_t inv_s = acc_t(1) / s;
        const RowOutput output = row_output(grad_scale, scale, label, ignore_index);
        ROW_CHUNKS(base, ROW_UNROLL) {
            acc_t v[ROW_UNROLL];
            load_chunk(x + offset, base, cols, acc_t(0), v);
#pragma unroll
            for (int u = 0; u < ROW_UNROLL; ++u) {
                const long long c = chunk_column(base, u);
                if (c < cols)
                    store(out, offset + c, output(gp_exp(v[u] - m) * inv_s, c));
            }
        }
    }
}

#define CE_ARGS const scalar_t* __restrict__ x, const long long* __restrict__ labels, acc_t* __restrict__ loss,    \
                scalar_t* __restrict__ out, const scalar_t* __restrict__ grad_scale,                              \
                unsigned long long* error_row, long long rows, int cols, long long ignore_index
#define CE_PASS x, labels, loss, out, grad_scale, error_row, rows, cols, ignore_index

extern "C" __global__ void WARP_FORWARD_BOUNDS softmax_cross_entropy_warp1(CE_ARGS, int width) { ce_warp<1>(CE_PASS, width); }
extern "C" __global__ void WARP_FORWARD_BOUNDS softmax_cross_entropy_warp2(CE_ARGS, int width) { ce_warp<2>(CE_PASS, width); }
extern "C" __global__ void WARP_FORWARD_BOUNDS softmax_cross_entropy_warp4(CE_ARGS, int width) { ce_warp<4>(CE_PASS, width); }
extern "C" __global__ void WARP_FORWARD_BOUNDS softmax_cross_entropy_warp8(CE_ARGS, int width) { ce_warp<8>(CE_PASS, width); }
extern "C" __global__ void WARP_FORWARD_BOUNDS softmax_cross_entropy_warp16(CE_ARGS, int width) { ce_warp<16>(CE_PASS, width); }
extern "C" __global__ void WARP_FORWARD_BOUNDS softmax_cross_entropy_warp32(CE_ARGS, int width) { ce_warp<32>(CE_PASS, width); }
extern "C" __global__ void __launch_bounds__(256) softmax_cross_entropy_plain(CE_ARGS) { ce_block(CE_PASS); }

extern "C" __global__ void softmax_cross_entropy_backward(const scalar_t* __restrict__ probs,
                                                          const long long* __restrict__ labels,
                                                          const scalar_t* __restrict__ row_scale,
                                                          scalar_t* __restrict__ grad, long long rows, int cols,
                                                          long long ignore_index) {
    GRID_STRIDE(i, rows * cols) {
        const long long row = i / cols;
        const int col = int(i - row * cols);
        const long long label = labels[row];
        acc_t g = 0;
        if (label != ignore_index)
            g = (load(probs, i) - (col == label ? acc_t(1) : acc_t(0))) * load(row_scale, row);
        store(grad, i, g);
    }
}
