// activations.cpp: ReLU and GELU forward and backward for the CPU path, one threaded pass each, where the NumPy
// forms take one to several single-threaded passes and temporaries. ReLU gives the bits of its NumPy form, NaN
// included (gpunet.ops.activations); GELU the arithmetic of kernels/elementwise.cu.
#include <stdint.h>

#include <cmath>

#include "row_pool.h"

namespace activations {

// ReLU may run in place (y = x, dx = dy): no __restrict__; each element is read before it is written.
template <class T>
static void relu(const T* x, T* y, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] > T(0) ? x[i] : (x[i] != x[i] ? x[i] : T(0));
}

template <class T>
static void relu_backward(const T* y, const T* dy, T* dx, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) dx[i] = y[i] <= T(0) ? T(0) : dy[i];  // y NaN passes dy, as PyTorch
}

// GELU, tanh form, the arithmetic of kernels/elementwise.cu (y = x s, s = 1 / (1 + exp(-2u))), in T.
constexpr double kGeluBeta = 0.7978845608028654, kGeluKappa = 0.044715;

template <class T>
static inline T gelu_u(T v) { return T(kGeluBeta) * (v + T(kGeluKappa) * v * v * v); }

template <class T>
static void gelu(const T* __restrict__ x, T* __restrict__ y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * (T(1) / (T(1) + std::exp(T(-2) * gelu_u(x[i]))));
}

template <class T>
static void gelu_backward(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const T v = x[i], u = gelu_u(v);
        const T s = T(1) / (T(1) + std::exp(T(-2) * u)), r = T(1) / (T(1) + std::exp(T(2) * u));
        const T du = T(kGeluBeta) * (T(1) + T(3 * kGeluKappa) * v * v);
        dx[i] = dy[i] * (s + T(2) * v * s * r * du);
    }
}

// y[r, c] = y[r, c] + bias[c], then (RELU) max with 0 as relu: a Linear layer's bias and the ReLU after it in
// one pass over the product, in place.
template <class T, bool RELU>
static void bias_rows(T* __restrict__ y, const T* __restrict__ bias, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; ++r) {
        T* __restrict__ yr = y + r * cols;
#pragma omp simd
        for (int64_t c = 0; c < cols; ++c) {
            const T v = yr[c] + bias[c];
            yr[c] = RELU ? (v > T(0) ? v : (v != v ? v : T(0))) : v;
        }
    }
}

}  // namespace activations

extern "C" {
#define GPUNET_ACTIVATION_ENTRY_POINTS(T, SUFFIX)                                                                  \
    void relu_forward_##SUFFIX(const T* x /*[n]*/, T* y /*[n]*/, int64_t n, int threads) {                                         \
        auto body = [=](int64_t i0, int64_t i1) { activations::relu<T>(x + i0, y + i0, i1 - i0); };                \
        row_pool::Pool::instance().run(n, 1, threads, body);                                                       \
    }                                                                                                              \
    void relu_backward_##SUFFIX(const T* y /*[n]*/, const T* dy /*[n]*/, T* dx /*[n]*/, int64_t n, int threads) {                          \
        auto body = [=](int64_t i0, int64_t i1) { activations::relu_backward<T>(y + i0, dy + i0, dx + i0, i1 - i0); }; \
        row_pool::Pool::instance().run(n, 1, threads, body);                                                       \
    }                                                                                                              \
    void bias_add_##SUFFIX(T* y /*[rows*cols]*/, const T* bias /*[cols]*/, int64_t rows, int64_t cols,            \
                           int threads) {                                                                          \
        auto body = [=](int64_t r0, int64_t r1) { activations::bias_rows<T, false>(y + r0 * cols, bias, r1 - r0, cols); }; \
        row_pool::Pool::instance().run(rows, cols, threads, body);                                                 \
    }                                                                                                              \
    void bias_relu_##SUFFIX(T* y /*[rows*cols]*/, const T* bias /*[cols]*/, int64_t rows, int64_t cols,           \
                            int threads) {                                                                         \
        auto body = [=](int64_t r0, int64_t r1) { activations::bias_rows<T, true>(y + r0 * cols, bias, r1 - r0, cols); }; \
        row_pool::Pool::instance().run(rows, cols, threads, body);                                                 \
    }                                                                                                              \
    void gelu_forward_##SUFFIX(const T* x /*[n]*/, T* y /*[n]*/, int64_t n, int threads) {                         \
        auto body = [=](int64_t i0, int64_t i1) { activations::gelu<T>(x + i0, y + i0, i1 - i0); };                \
        row_pool::Pool::instance().run(n, 1, threads, body);                                                       \
    }                                                                                                              \
    void gelu_backward_##SUFFIX(const T* x /*[n]*/, const T* dy /*[n]*/, T* dx /*[n]*/, int64_t n, int threads) {  \
        auto body = [=](int64_t i0, int64_t i1) { activations::gelu_backward<T>(x + i0, dy + i0, dx + i0, i1 - i0); }; \
        row_pool::Pool::instance().run(n, 1, threads, body);                                                       \
    }
GPUNET_ACTIVATION_ENTRY_POINTS(float, f32)
GPUNET_ACTIVATION_ENTRY_POINTS(double, f64)
}
