// rows.cpp: the CPU path's softmax-family row ops, compiled on the user's machine (gpunet.native).
//
// NumPy builds a row softmax from separate ufunc passes whose float32 exp is scalar; here each row is a few
// short passes over row primitives: for float32 on x86 with AVX2 or AVX-512 the explicit vectors of
// vector_f32.h, otherwise (and for float64) loops that GCC vectorises, the exp going to glibc's vector math
// library (libmvec) through the `simd` declaration below. Each entry point splits its rows over row_pool.h's
// threads (ctypes releases the GIL for the call). Semantics are the NumPy path's: m = row max, a -inf entry
// gives 0, a row of nothing but -inf and any NaN or +inf give NaN.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>
#include <vector>

#include "row_pool.h"

#if defined(__AVX2__) && defined(__FMA__)
#include "vector_f32.h"
#define GPUNET_VECTOR_F32 1
#endif

extern "C" __attribute__((simd("notinbranch"))) float expf(float);
extern "C" __attribute__((simd("notinbranch"))) double exp(double);

// The generic row primitives (any T); sums accumulate in double.
static inline float gp_exp(float v) { return expf(v); }
static inline double gp_exp(double v) { return exp(v); }

template <class T>
static inline T row_max(const T* __restrict__ x, int64_t n) {
    T m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < n; ++j) m = x[j] > m ? x[j] : m;
    return m;
}

// out[j] = exp(x[j] - m) (out may be null: the sum only); returns the sum.
template <class T>
static inline double exp_shifted(const T* __restrict__ x, T* __restrict__ out, int64_t n, T m) {
    double s = 0;
    if (out) {
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < n; ++j) {
            const T e = gp_exp(x[j] - m);
            out[j] = e;
            s += e;
        }
    } else {
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < n; ++j) s += gp_exp(x[j] - m);
    }
    return s;
}

template <class T>
static inline void scale(T* __restrict__ y, int64_t n, T a) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] *= a;
}

template <class T>
static inline void shift(const T* __restrict__ x, T* __restrict__ y, int64_t n, T m, T c) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] = (x[j] - m) - c;
}

template <class T>
static inline double dot(const T* __restrict__ a, const T* __restrict__ b, int64_t n) {
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; ++j) s += a[j] * b[j];
    return s;
}

template <class T>
static inline double sum(const T* __restrict__ a, int64_t n) {
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; ++j) s += a[j];
    return s;
}

template <class T>
static inline void softmax_grad(const T* __restrict__ y, const T* __restrict__ dy, T* __restrict__ dx, int64_t n, T d) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) dx[j] = y[j] * (dy[j] - d);
}

template <class T>
static inline void log_softmax_grad(const T* __restrict__ logy, const T* __restrict__ dy, T* __restrict__ dx,
                                    int64_t n, T d) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) dx[j] = dy[j] - gp_exp(logy[j]) * d;
}

#ifdef GPUNET_VECTOR_F32
using vf32::dot, vf32::exp_shifted, vf32::log_softmax_grad, vf32::row_max, vf32::scale, vf32::shift,
    vf32::softmax_grad, vf32::sum;  // float32 rows take these overloads (non-templates win)
#endif

// An op whose arrays (inputs and output) hold at least STREAM_BYTES (float32 with AVX2 or AVX-512) writes its
// output around the cache (vector_f32.h): that much does not stay in a last-level cache until the next op, and
// ordinary stores would first read every line of the output. Below it, back-to-back ops find their arrays in the
// cache, and streaming measured 2-3x slower there (C = 100, 6.5 MB arrays). Log-softmax and both backwards stream; softmax does not: its write pass scales the exps
// its sum pass stored (cached), and streaming would mean computing each exp twice, which measured slower
// (docs/measurements/, the 2026-12-01 CPU notes).
constexpr int64_t STREAM_BYTES = int64_t(32) << 20;

template <class T>
static bool streams(const T* out, int64_t rows, int64_t cols, int arrays) {
#ifdef GPUNET_VECTOR_F32
    return std::is_same_v<T, float> && rows * cols * (int64_t)sizeof(T) * arrays >= STREAM_BYTES &&
           (uintptr_t)out % sizeof(T) == 0;
#else
    return false;
#endif
}

#ifdef GPUNET_VECTOR_F32
// The streaming forms of the row ops below (float32): the same passes and arithmetic as theirs (the max, the
// exp-sum or dot, read from the cache after the first), the write pass streamed.
static void log_softmax_rows_streamed(const float* x, float* y, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x + r * cols;
        const float m = vf32::row_max(xr, cols);
        vf32::shift_stream(xr, y + r * cols, cols, m, (float)::log(vf32::exp_shifted(xr, nullptr, cols, m)));
    }
    _mm_sfence();
}

static void softmax_backward_rows_streamed(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols,
                                           int log) {
    for (int64_t r = 0; r < rows; ++r) {
        const float* yr = y + r * cols;
        const float* dyr = dy + r * cols;
        float* dxr = dx + r * cols;
        if (log) {
            vf32::log_softmax_grad_stream(yr, dyr, dxr, cols, (float)vf32::sum(dyr, cols));
        } else {
            vf32::softmax_grad_stream(yr, dyr, dxr, cols, (float)vf32::dot(yr, dyr, cols));
        }
    }
    _mm_sfence();
}
#endif

// The row ops, written once over the primitives.
template <class T>
static void softmax_rows(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t cols, int log,
                         bool stream = false) {
#ifdef GPUNET_VECTOR_F32
    if constexpr (std::is_same_v<T, float>) {
        if (stream && log) return log_softmax_rows_streamed(x, y, rows, cols);
    }
#endif
    for (int64_t r = 0; r < rows; ++r) {
        const T* __restrict__ xr = x + r * cols;
        T* __restrict__ yr = y + r * cols;
        const T m = row_max(xr, cols);
        if (log) {  // (x - m) - log s, in that order, as the NumPy path and the kernels
            shift(xr, yr, cols, m, (T)::log(exp_shifted(xr, (T*)nullptr, cols, m)));
        } else {
            scale(yr, cols, (T)(1.0 / exp_shifted(xr, yr, cols, m)));
        }
    }
}

// Backward from the forward output: softmax dx = y * (dy - sum(y * dy)); log-softmax dx = dy - exp(logy) * sum(dy).
template <class T>
static void softmax_backward_rows(const T* __restrict__ y, const T* __restrict__ dy, T* __restrict__ dx,
                                  int64_t rows, int64_t cols, int log, bool stream = false) {
#ifdef GPUNET_VECTOR_F32
    if constexpr (std::is_same_v<T, float>) {
        if (stream) return softmax_backward_rows_streamed(y, dy, dx, rows, cols, log);
    }
#endif
    for (int64_t r = 0; r < rows; ++r) {
        const T* yr = y + r * cols;
        const T* dyr = dy + r * cols;
        T* dxr = dx + r * cols;
        if (log) {
            log_softmax_grad(yr, dyr, dxr, cols, (T)sum(dyr, cols));
        } else {
            softmax_grad(yr, dyr, dxr, cols, (T)dot(yr, dyr, cols));
        }
    }
}

// One row's loss and its gradient times row_scale (kernels/cross_entropy.cu's formula, returned in double): for
// a label, a (log s + m - x[label]) + k (S + U log s), with a = (1 - eps) w[label], k = eps / cols, u_c = w_c;
// for probability targets `tr`, k (S + U log s) with k = 1, u_c = w_c ((1 - eps) t_c + eps / cols); S = sum_c
// u_c (m - x_c), U = sum_c u_c (computed only where k != 0: a -inf logit would make 0 * inf of them). Gradient
// a (p - onehot) + k (U p - u). A row labelled ignore_index gets loss 0 and a zero gradient. The label is in
// range (the caller checked).
template <class T>
static inline T target_part(const T* __restrict__ tr, const T* __restrict__ weight, T smoothing, int64_t cols,
                            int64_t j) {
    const T w = weight ? weight[j] : T(1);
    return tr ? w * ((T(1) - smoothing) * tr[j] + smoothing / (T)cols) : w;
}

template <class T>
static inline double cross_entropy_row(const T* __restrict__ xr, int64_t label, const T* __restrict__ tr,
                                       const T* __restrict__ weight, T smoothing, T row_scale, T* __restrict__ gr,
                                       int64_t cols, int64_t ignore_index) {
    const bool soft = tr != nullptr;
    if (!soft && label == ignore_index) {
        memset(gr, 0, cols * sizeof(T));
        return 0;
    }
    const T m = row_max(xr, cols);
    const bool mixed = soft || smoothing != T(0);
    const T k = soft ? T(1) : smoothing / (T)cols;
    double S = 0, U = 0;
    if (mixed) {
        for (int64_t j = 0; j < cols; ++j) {
            const T u = target_part(tr, weight, smoothing, cols, j);
            S += (double)(u * (m - xr[j]));
            U += (double)u;
        }
    }
    const double s = exp_shifted(xr, gr, cols, m);
    const double log_s = ::log(s);
    const T inv_s = (T)(1.0 / s);
    const T a = soft ? T(0) : (T(1) - smoothing) * (weight ? weight[label] : T(1));
    double loss = soft ? 0.0 : (double)a * ((double)(m - xr[label]) + log_s);  // (m - x) first: exact at the max
    if (!mixed) {
        const T p_label = gr[label] * inv_s;
        scale(gr, cols, inv_s * a * row_scale);
        gr[label] = (p_label - 1) * a * row_scale;  // p - 1 first: -inf, not inf - inf, for an infinite scale
        return loss;
    }
    loss += (double)k * (S + U * log_s);
    const T u_sum = (T)U;
    for (int64_t j = 0; j < cols; ++j) {
        const T p = gr[j] * inv_s;
        const T g = (soft ? T(0) : a * (p - (j == label ? T(1) : T(0)))) +
                    k * (u_sum * p - target_part(tr, weight, smoothing, cols, j));
        gr[j] = g * row_scale;
    }
    return loss;
}

// Per-row losses and gradients, each row with its own scale (reduction "none", or a caller's mean).
template <class T>
static void cross_entropy_rows(const T* __restrict__ x, const int64_t* __restrict__ labels,
                               const T* __restrict__ targets, const T* __restrict__ weight, T smoothing,
                               const T* __restrict__ row_scale, T* __restrict__ loss, T* __restrict__ grad,
                               int64_t rows, int64_t cols, int64_t ignore_index) {
    for (int64_t r = 0; r < rows; ++r)
        loss[r] = (T)cross_entropy_row(x + r * cols, labels ? labels[r] : -1, targets ? targets + r * cols : nullptr,
                                       weight, smoothing, row_scale[r], grad + r * cols, cols, ignore_index);
}

// The first row whose label is neither in [0, cols) nor ignore_index (-1 if none), and how many rows count.
static inline int64_t check_labels(const int64_t* labels, int64_t rows, int64_t cols, int64_t ignore_index,
                                   int64_t* counted) {
    int64_t n = 0;
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t label = labels[r];
        if (label == ignore_index) continue;
        if (label < 0 || label >= cols) return r;
        ++n;
    }
    *counted = n;
    return -1;
}

// The entry points: rows split over `threads` threads (row_pool.h), float32 and float64.
template <class Body>
static void over_threads(int64_t rows, int64_t cols, int threads, Body body) {
    row_pool::Pool::instance().run(rows, cols, threads, body);
}

// Reduction "mean" (over the rows that count; NaN when none does, as PyTorch's) or "sum" in one call: labels
// checked (the first bad row is returned and nothing written; -1 when all are good), the gradient scaled as it
// is written, the row losses summed in double in row order (the same result on any number of threads).
template <class T>
static int64_t cross_entropy_reduced(const T* x, const int64_t* labels, T* grad, int64_t rows, int64_t cols,
                                     int64_t ignore_index, int mean, int threads, double* loss) {
    int64_t counted = 0;
    const int64_t bad = check_labels(labels, rows, cols, ignore_index, &counted);
    if (bad >= 0) return bad;
    const double scale = mean ? 1.0 / (double)counted : 1.0;  // inf when no row counts: no row then uses it
    std::vector<double> row_loss(rows);
    double* row_loss_data = row_loss.data();
    over_threads(rows, cols, threads, [=](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
            row_loss_data[r] = cross_entropy_row(x + r * cols, labels[r], (const T*)nullptr, (const T*)nullptr, T(0),
                                                 (T)scale, grad + r * cols, cols, ignore_index);
    });
    double total = 0;
    for (int64_t r = 0; r < rows; ++r) total += row_loss_data[r];
    *loss = mean ? total * scale : total;  // 0 * inf = NaN for a mean over no rows
    return -1;
}

// Entry points named as the CUDA kernels they mirror. Each buffer's comment is its length in elements, which
// gpunet.cpu_kernels.binding parses and checks before every call.
extern "C" {
#define GPUNET_ROW_ENTRY_POINTS(T, SUFFIX)                                                                          \
    void softmax_forward_##SUFFIX(const T* x /*[rows*cols]*/, T* y /*[rows*cols]*/, int64_t rows, int64_t cols,    \
                                  int threads) {                                                                    \
        const bool stream = streams(y, rows, cols, 2);                                                                   \
        over_threads(rows, cols, threads, [=](int64_t r0, int64_t r1) {                                             \
            softmax_rows(x + r0 * cols, y + r0 * cols, r1 - r0, cols, 0, stream);                                   \
        });                                                                                                         \
    }                                                                                                               \
    void log_softmax_forward_##SUFFIX(const T* x /*[rows*cols]*/, T* y /*[rows*cols]*/, int64_t rows,              \
                                      int64_t cols, int threads) {                                                  \
        const bool stream = streams(y, rows, cols, 2);                                                                   \
        over_threads(rows, cols, threads, [=](int64_t r0, int64_t r1) {                                             \
            softmax_rows(x + r0 * cols, y + r0 * cols, r1 - r0, cols, 1, stream);                                   \
        });                                                                                                         \
    }                                                                                                               \
    void softmax_backward_##SUFFIX(const T* y /*[rows*cols]*/, const T* dy /*[rows*cols]*/,                         \
                                   T* dx /*[rows*cols]*/, int64_t rows, int64_t cols, int threads) {                \
        const bool stream = streams(dx, rows, cols, 3);                                                                 \
        over_threads(rows, cols, threads, [=](int64_t r0, int64_t r1) {                                             \
            softmax_backward_rows(y + r0 * cols, dy + r0 * cols, dx + r0 * cols, r1 - r0, cols, 0, stream);         \
        });                                                                                                         \
    }                                                                                                               \
    void log_softmax_backward_##SUFFIX(const T* logy /*[rows*cols]*/, const T* dy /*[rows*cols]*/,                 \
                                       T* dx /*[rows*cols]*/, int64_t rows, int64_t cols, int threads) {            \
        const bool stream = streams(dx, rows, cols, 3);                                                                 \
        over_threads(rows, cols, threads, [=](int64_t r0, int64_t r1) {                                             \
            softmax_backward_rows(logy + r0 * cols, dy + r0 * cols, dx + r0 * cols, r1 - r0, cols, 1, stream);      \
        });                                                                                                         \
    }                                                                                                               \
    int64_t softmax_cross_entropy_##SUFFIX(const T* x /*[rows*cols]*/, const int64_t* labels /*[rows]?*/,          \
                                           const T* targets /*[rows*cols]?*/, const T* weight /*[cols]?*/,          \
                                           const T* row_scale /*[rows]*/, T* loss /*[rows]*/,                       \
                                           T* grad /*[rows*cols]*/, int64_t rows, int64_t cols,                     \
                                           int64_t ignore_index, double smoothing, int threads) {                   \
        int64_t counted = 0;                                                                                        \
        if (labels) {                                                                                               \
            const int64_t bad = check_labels(labels, rows, cols, ignore_index, &counted);                           \
            if (bad >= 0) return bad; /* a label past the row is never read: nothing is written */                  \
        }                                                                                                           \
        over_threads(rows, cols, threads, [=](int64_t r0, int64_t r1) {                                             \
            cross_entropy_rows(x + r0 * cols, labels ? labels + r0 : nullptr,                                       \
                               targets ? targets + r0 * cols : nullptr, weight, (T)smoothing, row_scale + r0,       \
                               loss + r0, grad + r0 * cols, r1 - r0, cols, ignore_index);                           \
        });                                                                                                         \
        return -1;                                                                                                  \
    }                                                                                                               \
    int64_t softmax_cross_entropy_reduced_##SUFFIX(const T* x /*[rows*cols]*/, const int64_t* labels /*[rows]*/,   \
                                                   T* grad /*[rows*cols]*/, int64_t rows, int64_t cols,             \
                                                   int64_t ignore_index, int mean, int threads,                     \
                                                   double* loss /*[1]*/) {                                          \
        return cross_entropy_reduced(x, labels, grad, rows, cols, ignore_index, mean, threads, loss);               \
    }
GPUNET_ROW_ENTRY_POINTS(float, f32)
GPUNET_ROW_ENTRY_POINTS(double, f64)
}
