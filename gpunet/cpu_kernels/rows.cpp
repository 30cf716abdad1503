// rows.cpp: the CPU path's softmax-family row ops, compiled on the user's machine (gpunet.native).
//
// NumPy builds a row softmax from separate ufunc passes whose float32 exp is scalar; here each row is three
// short loops that GCC vectorises, the exp going to glibc's vector math library (libmvec) through the `simd`
// declaration below. Rows arrive in cache-sized blocks from HostDevice.map_rows, one block per call, a thread
// per core (ctypes releases the GIL). Semantics are the NumPy path's: m = row max, a -inf entry gives 0, a row
// of nothing but -inf and any NaN or +inf give NaN; sums accumulate in double.
#include <math.h>
#include <stdint.h>

extern "C" __attribute__((simd("notinbranch"))) float expf(float);
extern "C" __attribute__((simd("notinbranch"))) double exp(double);

static inline float gp_exp(float v) { return expf(v); }
static inline double gp_exp(double v) { return exp(v); }

template <class T>
static inline T row_max(const T* __restrict__ xr, int64_t cols) {
    T m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < cols; ++j) m = xr[j] > m ? xr[j] : m;
    return m;
}

// out[j] = exp(x[j] - m); returns the sum in double.
template <class T>
static inline double exp_shifted(const T* __restrict__ xr, T* __restrict__ out, int64_t cols, T m) {
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < cols; ++j) {
        const T e = gp_exp(xr[j] - m);
        out[j] = e;
        s += e;
    }
    return s;
}

template <class T>
static void softmax_rows(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t cols, int log) {
    for (int64_t r = 0; r < rows; ++r) {
        const T* __restrict__ xr = x + r * cols;
        T* __restrict__ yr = y + r * cols;
        const T m = row_max(xr, cols);
        const double s = exp_shifted(xr, yr, cols, m);
        if (log) {
            const T log_s = (T)::log(s);  // (x - m) - log s, in that order, as the NumPy path and the kernels
#pragma omp simd
            for (int64_t j = 0; j < cols; ++j) yr[j] = (xr[j] - m) - log_s;
        } else {
            const T inv = (T)(1.0 / s);
#pragma omp simd
            for (int64_t j = 0; j < cols; ++j) yr[j] *= inv;
        }
    }
}

// Backward from the forward output: softmax dx = y * (dy - sum(y * dy)); log-softmax dx = dy - exp(logy) * sum(dy).
template <class T>
static void softmax_backward_rows(const T* __restrict__ y, const T* __restrict__ dy, T* __restrict__ dx,
                                  int64_t rows, int64_t cols, int log) {
    for (int64_t r = 0; r < rows; ++r) {
        const T* __restrict__ yr = y + r * cols;
        const T* __restrict__ dyr = dy + r * cols;
        T* __restrict__ dxr = dx + r * cols;
        double dot = 0;
        if (log) {
#pragma omp simd reduction(+ : dot)
            for (int64_t j = 0; j < cols; ++j) dot += dyr[j];
            const T d = (T)dot;
#pragma omp simd
            for (int64_t j = 0; j < cols; ++j) dxr[j] = dyr[j] - gp_exp(yr[j]) * d;
        } else {
#pragma omp simd reduction(+ : dot)
            for (int64_t j = 0; j < cols; ++j) dot += yr[j] * dyr[j];
            const T d = (T)dot;
#pragma omp simd
            for (int64_t j = 0; j < cols; ++j) dxr[j] = yr[j] * (dyr[j] - d);
        }
    }
}

// Loss (m - x[label]) + log s per row and the gradient (p - onehot(label)) * row_scale[r]; rows labelled
// ignore_index get loss 0 and a zero gradient. Labels were range-checked by the caller.
template <class T>
static void cross_entropy_rows(const T* __restrict__ x, const int64_t* __restrict__ labels,
                               const T* __restrict__ row_scale, T* __restrict__ loss, T* __restrict__ grad,
                               int64_t rows, int64_t cols, int64_t ignore_index) {
    for (int64_t r = 0; r < rows; ++r) {
        const T* __restrict__ xr = x + r * cols;
        T* __restrict__ gr = grad + r * cols;
        const int64_t label = labels[r];
        const T m = row_max(xr, cols);
        const double s = exp_shifted(xr, gr, cols, m);
        if (label == ignore_index) {
            loss[r] = 0;
#pragma omp simd
            for (int64_t j = 0; j < cols; ++j) gr[j] = 0;
            continue;
        }
        loss[r] = (T)((m - xr[label]) + ::log(s));
        const T scale = row_scale[r], inv = (T)(1.0 / s) * scale;
#pragma omp simd
        for (int64_t j = 0; j < cols; ++j) gr[j] *= inv;
        gr[label] -= scale;
    }
}

extern "C" {
void softmax_rows_f32(const float* x, float* y, int64_t rows, int64_t cols, int log) {
    softmax_rows(x, y, rows, cols, log);
}
void softmax_rows_f64(const double* x, double* y, int64_t rows, int64_t cols, int log) {
    softmax_rows(x, y, rows, cols, log);
}
void softmax_backward_rows_f32(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols, int log) {
    softmax_backward_rows(y, dy, dx, rows, cols, log);
}
void softmax_backward_rows_f64(const double* y, const double* dy, double* dx, int64_t rows, int64_t cols, int log) {
    softmax_backward_rows(y, dy, dx, rows, cols, log);
}
void cross_entropy_rows_f32(const float* x, const int64_t* labels, const float* row_scale, float* loss, float* grad,
                            int64_t rows, int64_t cols, int64_t ignore_index) {
    cross_entropy_rows(x, labels, row_scale, loss, grad, rows, cols, ignore_index);
}
void cross_entropy_rows_f64(const double* x, const int64_t* labels, const double* row_scale, double* loss,
                            double* grad, int64_t rows, int64_t cols, int64_t ignore_index) {
    cross_entropy_rows(x, labels, row_scale, loss, grad, rows, cols, ignore_index);
}
}
