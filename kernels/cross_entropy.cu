// cross_entropy.cu: fused softmax cross-entropy over (rows, cols) logits, with class-index labels (int64) or
// probability targets, optional class weights and label smoothing.
//
// Forward, one pass over the logits per row (the block variant, for rows over 1024 columns, reads its row once
// more, as every block variant does): m = max, s = sum exp(x - m), p = exp(x - m) / s, and the loss and gradient
// of the row's target distribution q (PyTorch's semantics, docs/semantics.md):
//   labels:  q_c = a [c == label] + k w_c,  with a = (1 - eps) w_label, k = eps / cols (eps: label smoothing);
//   targets: q_c = k w_c ((1 - eps) t_c + eps / cols),  with a = 0, k = 1;
// (w = 1 without weights). loss = a ((m - x_label) + log s) + k (S + U log s), with S = sum_c u_c (m - x_c) and
// U = sum_c u_c (u_c = q's weighted part w_c, or w_c t'_c): every term a product of non-negative numbers, so no
// cancellation. Without smoothing and targets (k = 0), S and U are not computed at all: a -inf logit elsewhere in
// the row would make 0 * inf = NaN of them. The output is either the probabilities, or, when `grad_scale` is
// given, directly the gradient (a (p - [c == label]) + k (U p - u_c)) * grad_scale[0] (the host passes
// 1 / divisor for a mean): the label's p - 1 first, exact near p = 1.
// The row losses are written in the accumulation type (acc_t), so that a reduction over them rounds to the
// logits' dtype once (docs/semantics.md). Rows labelled `ignore_index` get loss 0 and a zero gradient. A label
// outside [0, cols) is flagged: the smallest offending row goes to `*error_row` (initialised to ULLONG_MAX by the
// host, which raises ValueError).
//
// Backward from stored probabilities: the same gradient, with a per-row scale.
#include "block_rows.cuh"
#include "warp_rows.cuh"

__device__ __forceinline__ bool label_ok(long long label, int cols) { return label >= 0 && label < cols; }

// The label's logit, loaded (block variant) after the row's reductions: 0 for an ignored row or a label out of
// range (whose loss does not use it). The warp variant picks it from the row's registers instead.
__device__ __forceinline__ acc_t label_logit(const scalar_t* __restrict__ xr, long long label, int cols) {
    return label_ok(label, cols) ? load(xr, label) : acc_t(0);
}

// How one row's target enters the loss and gradient (see the top of the file): decided once per row.
struct RowTarget {
    const acc_t* __restrict__ weight;     // (cols) class weights, or null (all 1)
    const scalar_t* __restrict__ target;  // this row's probability targets, or null (labels)
    acc_t smoothing;                      // eps
    acc_t spread;                         // eps / C, divided once per thread, not per row or column
    long long label;                      // labels: the row's label; -1 for targets
    bool ignored, mixed;                  // mixed: k != 0 (S and U needed)
    acc_t a, k;

    // u_c: the smoothing (labels) or target (targets) part of q at column col, before the factor k.
    __device__ __forceinline__ acc_t u(long long col, int cols) const {
        const acc_t w = weight != nullptr ? weight[col] : acc_t(1);
        if (target == nullptr) return w;
        return w * ((acc_t(1) - smoothing) * load(target, col) + spread);
    }
    __device__ __forceinline__ acc_t grad(acc_t p, long long col, int cols, acc_t U) const {
        acc_t g = a * (p - (col == label ? acc_t(1) : acc_t(0)));
        if (mixed) g += k * (U * p - u(col, cols));
        return g;
    }
};

template <bool MIXED>
__device__ __forceinline__ RowTarget row_target(const acc_t* __restrict__ weight, const scalar_t* __restrict__ targets,
                                                acc_t smoothing, acc_t spread, long long label,
                                                long long ignore_index, long long row, int cols) {
    RowTarget t;
    t.weight = weight;
    t.smoothing = smoothing;
    t.spread = spread;
    if (MIXED && targets != nullptr) {
        t.target = targets + row * (long long)cols;
        t.label = -1;
        t.ignored = false;
        t.mixed = true;
        t.a = 0;
        t.k = 1;
        return t;
    }
    t.target = nullptr;
    t.label = label;
    t.ignored = label == ignore_index;
    t.mixed = MIXED && smoothing != acc_t(0);
    const acc_t w = (weight != nullptr && label_ok(label, cols)) ? weight[label] : acc_t(1);
    t.a = (acc_t(1) - smoothing) * w;
    t.k = spread;
    return t;
}

__device__ __forceinline__ acc_t row_loss(const RowTarget t, acc_t x_label, int cols, long long row, acc_t m,
                                          acc_t s, acc_t S, acc_t U, unsigned long long* error_row) {
    if (t.ignored) return acc_t(0);
    const acc_t log_s = gp_log(s);
    if (t.target == nullptr && !label_ok(t.label, cols)) {
        atomicMin(error_row, (unsigned long long)row);
        return quiet_nan();
    }
    acc_t loss = t.target == nullptr ? t.a * ((m - x_label) + log_s) : acc_t(0);  // (m - x) first: exact at the max
    if (t.mixed) loss += t.k * (S + U * log_s);
    return loss;
}

// What the forward writes for probability p at column col: p itself, or the gradient times the scale.
struct RowOutput {
    bool grad;
    acc_t scale;
    __device__ __forceinline__ acc_t operator()(const RowTarget t, acc_t p, long long col, int cols, acc_t U) const {
        if (!grad) return p;
        if (t.ignored) return acc_t(0);
        return t.grad(p, col, cols, U) * scale;
    }
};

// The gradient's scale, read once per thread before any row (a load issued at each row's end stalled it).
__device__ __forceinline__ acc_t gradient_scale(const acc_t* __restrict__ grad_scale) {
    return grad_scale != nullptr ? grad_scale[0] : acc_t(1);
}

// Warp variant (cols <= 1024): a group of `width` lanes per row, COLS logits per lane in registers.
template <int COLS, bool MIXED>
__device__ __forceinline__ void ce_warp(const scalar_t* __restrict__ x, const long long* __restrict__ labels,
                                        const scalar_t* __restrict__ targets, const acc_t* __restrict__ weight,
                                        acc_t* __restrict__ loss, scalar_t* __restrict__ out,
                                        const acc_t* __restrict__ grad_scale, unsigned long long* error_row,
                                        long long rows, int cols, long long ignore_index, acc_t smoothing,
                                        int width) {
    width = group_width<COLS>(width);
    const RowOutput output{grad_scale != nullptr, gradient_scale(grad_scale)};
    const acc_t spread = smoothing / acc_t(cols);  // once: a double division in the row loop made ptxas spill
    WARP_ROW_LOOP(width) {
        const long long row = base + (lane >> width_log2);
        const bool row_ok = row < rows;
        const long long offset = row * cols;
        const long long label = !row_ok ? ignore_index : labels != nullptr ? labels[row] : -1;
        const RowTarget t = row_target<MIXED>(weight, targets, smoothing, spread, label, ignore_index,
                                              row_ok ? row : 0, cols);
        acc_t v[COLS], m, s, S = 0, U = 0;
        warp_row_load<COLS>(x + offset, row_ok, cols, sub, width, v);
        // The label's logit from the registers of its lane: a load of x[label] waited for the label (SASS: the
        // row's loads issued only after it, one memory latency a row).
        const acc_t x_label = warp_row_pick<COLS>(v, label_ok(label, cols) ? int(label) : 0, width);
        if (MIXED) {
            acc_t top = neg_inf();
#pragma unroll
            for (int j = 0; j < COLS; ++j) top = MaxOp::apply(top, v[j]);
            top = group_reduce<MaxOp>(top, width);
#pragma unroll
            for (int j = 0; j < COLS; ++j) {
                const int col = sub + j * width;
                if (row_ok && col < cols) {
                    const acc_t u = t.u(col, cols);
                    S += u * (top - v[j]);
                    U += u;
                }
            }
            S = group_reduce<SumOp>(S, width);
            U = group_reduce<SumOp>(U, width);
        }
        warp_row_reduce<COLS, true>(row_ok, cols, sub, width, v, m, s);
        if (!row_ok) continue;
        if (sub == 0) loss[row] = row_loss(t, x_label, cols, row, m, s, S, U, error_row);
        const acc_t inv_s = acc_t(1) / s;
        scalar_t* __restrict__ outr = out + offset;
#pragma unroll
        for (int j = 0; j < COLS; ++j) {
            const int col = sub + j * width;
            if (col < cols) store(outr, col, output(t, v[j] * inv_s, col, cols, U));
        }
    }
}

// Block variant (longer rows): one block per row, online (max, sum) pass, then (smoothing or targets) the
// (S, U) pass, then the output pass.
template <bool MIXED>
__device__ __forceinline__ void ce_block(const scalar_t* __restrict__ x, const long long* __restrict__ labels,
                                         const scalar_t* __restrict__ targets, const acc_t* __restrict__ weight,
                                         acc_t* __restrict__ loss, scalar_t* __restrict__ out,
                                         const acc_t* __restrict__ grad_scale, unsigned long long* error_row,
                                         long long rows, int cols, long long ignore_index, acc_t smoothing) {
    // once per thread: a double division in the row loop made ptxas spill around its slow-path call (sm_70, sm_90)
    const acc_t spread = smoothing / acc_t(cols);
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const long long offset = row * cols;
        // per row here: held across rows, ptxas spilled (sm_70)
        const RowOutput output{grad_scale != nullptr, gradient_scale(grad_scale)};
        acc_t m, s, S = 0, U = 0;
        block_row_stats(x + offset, cols, m, s);
        // Here, while little is live: a double reciprocal's slow path (subnormal or huge operands, never taken
        // for a sum in [1, C]) is a call, and ptxas saves registers around it.
        const acc_t inv_s = acc_t(1) / s;
        // After the reductions here: one dependent load per row of over 1024 columns costs little, and held
        // across them it made ptxas spill (float16, sm_70).
        const long long label = labels != nullptr ? labels[row] : -1;
        const RowTarget t = row_target<MIXED>(weight, targets, smoothing, spread, label, ignore_index, row, cols);
        if (MIXED) {
            for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
                const acc_t u = t.u(c, cols);
                S += u * (m - load(x + offset, c));
                U += u;
            }
            S = block_reduce<SumOp>(S);
            U = block_reduce<SumOp>(U);
        }
        if (threadIdx.x == 0)
            loss[row] = row_loss(t, label_logit(x + offset, label, cols), cols, row, m, s, S, U, error_row);
        // Half as deep with smoothing or targets: each column also loads its weight and target (ptxas spilled the
        // full depth in double, sm_80-89).
        constexpr int DEPTH = MIXED ? ROW_UNROLL_2 : ROW_UNROLL;
        ROW_CHUNKS(base, DEPTH) {
            acc_t v[DEPTH];
            load_chunk<DEPTH>(x + offset, base, cols, acc_t(0), v);
#pragma unroll
            for (int u = 0; u < DEPTH; ++u) {
                const long long c = chunk_column(base, u);
                if (c < cols)
                    store(out, offset + c, output(t, gp_exp(v[u] - m) * inv_s, c, cols, U));
            }
        }
    }
}

#define CE_ARGS const scalar_t* __restrict__ x, const long long* __restrict__ labels,                            \
                const scalar_t* __restrict__ targets, const acc_t* __restrict__ weight, acc_t* __restrict__ loss, \
                scalar_t* __restrict__ out, const acc_t* __restrict__ grad_scale, unsigned long long* error_row,  \
                long long rows, int cols, long long ignore_index, acc_t smoothing
#define CE_PASS x, labels, targets, weight, loss, out, grad_scale, error_row, rows, cols, ignore_index, smoothing

// Labels without smoothing (weights or not): S and U are never needed. With smoothing or probability targets
// (`_mixed`), the extra sums hold more registers: a looser cap (128 for float and half, 170 for double), where
// the tight one spilled.
#define CE_MIXED_BOUNDS __launch_bounds__(128, sizeof(acc_t) == 8 ? 3 : 4)
extern "C" __global__ void WARP_FORWARD_BOUNDS softmax_cross_entropy_warp1(CE_ARGS, int width) { ce_warp<1, false>(CE_PASS, width); }
extern "C" __global__ void WARP_FORWARD_BOUNDS softmax_cross_entropy_warp2(CE_ARGS, int width) { ce_warp<2, false>(CE_PASS, width); }
extern "C" __global__ void WARP_FORWARD_BOUNDS softmax_cross_entropy_warp4(CE_ARGS, int width) { ce_warp<4, false>(CE_PASS, width); }
extern "C" __global__ void WARP_FORWARD_BOUNDS softmax_cross_entropy_warp8(CE_ARGS, int width) { ce_warp<8, false>(CE_PASS, width); }
extern "C" __global__ void WARP_FORWARD_BOUNDS softmax_cross_entropy_warp16(CE_ARGS, int width) { ce_warp<16, false>(CE_PASS, width); }
extern "C" __global__ void WARP_FORWARD_BOUNDS softmax_cross_entropy_warp32(CE_ARGS, int width) { ce_warp<32, false>(CE_PASS, width); }
extern "C" __global__ void __launch_bounds__(256) softmax_cross_entropy_plain(CE_ARGS) { ce_block<false>(CE_PASS); }
extern "C" __global__ void CE_MIXED_BOUNDS softmax_cross_entropy_mixed_warp1(CE_ARGS, int width) { ce_warp<1, true>(CE_PASS, width); }
extern "C" __global__ void CE_MIXED_BOUNDS softmax_cross_entropy_mixed_warp2(CE_ARGS, int width) { ce_warp<2, true>(CE_PASS, width); }
extern "C" __global__ void CE_MIXED_BOUNDS softmax_cross_entropy_mixed_warp4(CE_ARGS, int width) { ce_warp<4, true>(CE_PASS, width); }
extern "C" __global__ void CE_MIXED_BOUNDS softmax_cross_entropy_mixed_warp8(CE_ARGS, int width) { ce_warp<8, true>(CE_PASS, width); }
extern "C" __global__ void CE_MIXED_BOUNDS softmax_cross_entropy_mixed_warp16(CE_ARGS, int width) { ce_warp<16, true>(CE_PASS, width); }
extern "C" __global__ void CE_MIXED_BOUNDS softmax_cross_entropy_mixed_warp32(CE_ARGS, int width) { ce_warp<32, true>(CE_PASS, width); }
extern "C" __global__ void __launch_bounds__(256) softmax_cross_entropy_mixed_plain(CE_ARGS) { ce_block<true>(CE_PASS); }

// Backward: row r's gradient from its probabilities, (a (p - [c == label]) + k (U p - u_c)) * row_scale[r], U the
// row's sum of u (row_u, computed by the host: one reduction it needs anyway for targets).
extern "C" __global__ void softmax_cross_entropy_backward(const scalar_t* __restrict__ probs,
                                                          const long long* __restrict__ labels,
                                                          const scalar_t* __restrict__ targets,
                                                          const acc_t* __restrict__ weight,
                                                          const acc_t* __restrict__ row_scale,
                                                          const acc_t* __restrict__ row_u,
                                                          scalar_t* __restrict__ grad, long long rows, int cols,
                                                          long long ignore_index, acc_t smoothing) {
    const acc_t spread = smoothing / acc_t(cols);
    GRID_STRIDE(i, rows * cols) {
        const long long row = i / cols;
        const int col = int(i - row * cols);
        const long long label = labels != nullptr ? labels[row] : -1;
        const RowTarget t = row_target<true>(weight, targets, smoothing, spread, label, ignore_index, row, cols);
        acc_t g = 0;
        if (!t.ignored) g = t.grad(load(probs, i), col, cols, row_u != nullptr ? row_u[row] : acc_t(0)) * row_scale[row];
        store(grad, i, g);
    }
}
