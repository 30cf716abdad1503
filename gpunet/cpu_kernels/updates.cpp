// updates.cpp: the optimizers' parameter updates for the CPU path, one pass over each tensor (the NumPy form
// takes four to seven, one core each), split over row_pool's threads. The same arithmetic as
// kernels/optimizers.cu and gpunet/optim, in the parameter's dtype.
#include <math.h>
#include <stdint.h>

#include "row_pool.h"

namespace updates {

// g = grad + wd * w; v = mu * v + g; w -= lr * (nesterov ? g + mu * v : v). Without momentum v is null.
template <class T>
static void sgd(T* __restrict__ w, const T* __restrict__ grad, T* __restrict__ velocity, int64_t n, T lr, T mu,
                int nesterov, T wd) {
    if (velocity == nullptr) {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) w[i] -= lr * (grad[i] + wd * w[i]);
        return;
    }
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        const T g = grad[i] + wd * w[i];
        const T v = mu * velocity[i] + g;
        velocity[i] = v;
        w[i] -= lr * (nesterov ? g + mu * v : v);
    }
}

// Adam (L2 decay added to the gradient) or AdamW (decoupled: w *= 1 - lr * wd first); step_size =
// lr / (1 - beta1^t) and inv_bias2 = 1 / sqrt(1 - beta2^t) come from the caller.
template <class T>
static void adam(T* __restrict__ w, const T* __restrict__ grad, T* __restrict__ m, T* __restrict__ v, int64_t n,
                 T beta1, T beta2, T eps, T wd, int decoupled, T decay_factor, T step_size, T inv_bias2) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        T wi = w[i], g = grad[i];
        if (decoupled) wi *= decay_factor;
        else g += wd * wi;
        const T mi = beta1 * m[i] + (T(1) - beta1) * g;
        const T vi = beta2 * v[i] + (T(1) - beta2) * (g * g);
        m[i] = mi;
        v[i] = vi;
        w[i] = wi - step_size * (mi / (sqrt(vi) * inv_bias2 + eps));
    }
}

}  // namespace updates

// Every tensor of an optimizer in one call, pointers and sizes in arrays: through ctypes, a call per tensor
// costs more than updating a small one. A buffer list's comment [count][n] says: count buffers, the k-th of n[k]
// elements; a trailing ? lets the list be null (SGD without momentum). The tensors are one job for the pool,
// split over their elements laid end to end: one wake-up of its threads a step, not one a tensor (and
// row_pool's workers then do not take the tensors' updates for row ops coming back to back).
namespace updates {

// update(k, i0, i1) over elements [i0, i1) of tensor k, for every tensor's part in [e0, e1) of the tensors'
// elements laid end to end.
template <class Update>
static void over_tensors(const int64_t* n, int64_t count, int64_t e0, int64_t e1, Update&& update) {
    int64_t start = 0;  // the first element of tensor k
    for (int64_t k = 0; k < count && start < e1; start += n[k], ++k) {
        const int64_t i0 = e0 > start ? e0 - start : 0, i1 = e1 - start < n[k] ? e1 - start : n[k];
        if (i0 < i1) update(k, i0, i1);
    }
}

static int64_t total(const int64_t* n, int64_t count) {
    int64_t sum = 0;
    for (int64_t k = 0; k < count; ++k) sum += n[k];
    return sum;
}

}  // namespace updates

extern "C" {
#define GPUNET_UPDATE_ENTRY_POINTS(T, SUFFIX)                                                                      \
    void sgd_update_##SUFFIX(T* const* w /*[count][n]*/, const T* const* grad /*[count][n]*/,                     \
                             T* const* velocity /*[count][n]?*/, const int64_t* n /*[count]*/, int64_t count,   \
                             double lr, double mu, int nesterov, double wd, int threads) {                         \
        auto body = [=](int64_t e0, int64_t e1) {                                                                  \
            updates::over_tensors(n, count, e0, e1, [&](int64_t k, int64_t i0, int64_t i1) {                       \
                updates::sgd<T>(w[k] + i0, grad[k] + i0, velocity ? velocity[k] + i0 : nullptr, i1 - i0, (T)lr,    \
                                (T)mu, nesterov, (T)wd);                                                           \
            });                                                                                                    \
        };                                                                                                         \
        row_pool::Pool::instance().run(updates::total(n, count), 1, threads, body);                                \
    }                                                                                                              \
    void adam_update_##SUFFIX(T* const* w /*[count][n]*/, const T* const* grad /*[count][n]*/,                    \
                              T* const* m /*[count][n]*/, T* const* v /*[count][n]*/, const int64_t* n /*[count]*/, \
                              int64_t count, double lr, double beta1, double beta2, double eps, double wd,          \
                              int decoupled, double step_size, double inv_bias2, int threads) {                     \
        auto body = [=](int64_t e0, int64_t e1) {                                                                  \
            updates::over_tensors(n, count, e0, e1, [&](int64_t k, int64_t i0, int64_t i1) {                       \
                updates::adam<T>(w[k] + i0, grad[k] + i0, m[k] + i0, v[k] + i0, i1 - i0, (T)beta1, (T)beta2,       \
                                 (T)eps, (T)wd, decoupled, (T)(1.0 - lr * wd), (T)step_size, (T)inv_bias2);        \
            });                                                                                                    \
        };                                                                                                         \
        row_pool::Pool::instance().run(updates::total(n, count), 1, threads, body);                                \
    }
GPUNET_UPDATE_ENTRY_POINTS(float, f32)
GPUNET_UPDATE_ENTRY_POINTS(double, f64)
}
