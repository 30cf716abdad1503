// elementwise.cu: activations and their backward (taking the forward output y), and the bias add.
// One thread per element with a grid-stride loop and 64-bit indices.
#include "common.cuh"

extern "C" __global__ void relu_forward(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, long long n) {
    GRID_STRIDE(i, n) {
        const acc_t v = load(x, i);
        store(y, i, v > acc_t(0) ? v : acc_t(0));
    }
}

extern "C" __global__ void relu_backward(const scalar_t* __restrict__ y, const scalar_t* __restrict__ dy,
                                         scalar_t* __restrict__ dx, long long n) {
    GRID_STRIDE(i, n) store(dx, i, load(y, i) > acc_t(0) ? load(dy, i) : acc_t(0));
}

extern "C" __global__ void tanh_forward(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, long long n) {
    GRID_STRIDE(i, n) store(y, i, gp_tanh(load(x, i)));
}

extern "C" __global__ void tanh_backward(const scalar_t* __restrict__ y, const scalar_t* __restrict__ dy,
                                         scalar_t* __restrict__ dx, long long n) {
    GRID_STRIDE(i, n) {
        const acc_t v = load(y, i);
        store(dx, i, load(dy, i) * (acc_t(1) - v * v));
    }
}

// sigmoid via e = exp(-|x|): 1 / (1 + e) for x >= 0, e / (1 + e) below: no overflow, full precision in both tails.
extern "C" __global__ void sigmoid_forward(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, long long n) {
    GRID_STRIDE(i, n) {
        const acc_t v = load(x, i);
        const acc_t e = gp_exp(v < acc_t(0) ? v : -v);
        store(y, i, (v >= acc_t(0) ? acc_t(1) : e) / (acc_t(1) + e));
    }
}

extern "C" __global__ void sigmoid_backward(const scalar_t* __restrict__ y, const scalar_t* __restrict__ dy,
                                            scalar_t* __restrict__ dx, long long n) {
    GRID_STRIDE(i, n) {
        const acc_t v = load(y, i);
        store(dx, i, load(dy, i) * v * (acc_t(1) - v));
    }
}

// y[r, c] += bias[c], in place over a contiguous (rows, cols) array.
extern "C" __global__ void bias_add(scalar_t* __restrict__ y, const scalar_t* __restrict__ bias, long long rows,
                                    int cols) {
    GRID_STRIDE(i, rows * cols) store(y, i, load(y, i) + load(bias, i % cols));
}
