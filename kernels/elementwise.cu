// elementwise.cu: activations and their backward (taking the forward output y), and the bias add.
// One thread per element with a grid-stride loop and 64-bit indices.
#include "common.cuh"

// ReLU as PyTorch: NaN stays NaN; the backward passes dy where y > 0 or y is NaN, and gives exactly 0 where
// y <= 0 (an inf or NaN dy there included). Both may run in place (y = x, dx = dy: nn.ReLU(inplace=True)), so
// their pointers are not __restrict__: each thread reads its element before it writes it.
extern "C" __global__ void relu_forward(const scalar_t* x, scalar_t* y, long long n) {
    GRID_STRIDE(i, n) {
        const acc_t v = load(x, i);
        store(y, i, v > acc_t(0) || v != v ? v : acc_t(0));
    }
}

extern "C" __global__ void relu_backward(const scalar_t* y, const scalar_t* dy, scalar_t* dx, long long n) {
    GRID_STRIDE(i, n) store(dx, i, load(y, i) <= acc_t(0) ? acc_t(0) : load(dy, i));
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

// GELU, tanh form (PyTorch's approximate="tanh"): y = x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3),
// evaluated as y = x s with s = (1 + tanh(u))/2 = 1 / (1 + exp(-2u)): where tanh(u) nears -1 the sum 1 + tanh(u)
// would cancel (a float32 error of 1e-5 relative at x = -3), the exp form does not. NaN and inf come out as in
// PyTorch (gelu(-inf) and every slope at +-inf are NaN).
#define GPUNET_GELU_BETA 0.7978845608028654
#define GPUNET_GELU_KAPPA 0.044715

__device__ __forceinline__ acc_t gelu_u(acc_t v) {
    return acc_t(GPUNET_GELU_BETA) * (v + acc_t(GPUNET_GELU_KAPPA) * v * v * v);
}

extern "C" __global__ void gelu_forward(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, long long n) {
    GRID_STRIDE(i, n) {
        const acc_t v = load(x, i);
        store(y, i, v * (acc_t(1) / (acc_t(1) + gp_exp(acc_t(-2) * gelu_u(v)))));
    }
}

// GELU is not invertible, so its backward takes the input x, not y: with r = 1 - s = 1 / (1 + exp(2u)),
// dy/dx = s + 2 x s r u'(x), u'(x) = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
extern "C" __global__ void gelu_backward(const scalar_t* __restrict__ x, const scalar_t* __restrict__ dy,
                                         scalar_t* __restrict__ dx, long long n) {
    GRID_STRIDE(i, n) {
        const acc_t v = load(x, i);
        const acc_t u = gelu_u(v);
        const acc_t s = acc_t(1) / (acc_t(1) + gp_exp(acc_t(-2) * u));
        const acc_t r = acc_t(1) / (acc_t(1) + gp_exp(acc_t(2) * u));
        const acc_t du = acc_t(GPUNET_GELU_BETA) * (acc_t(1) + acc_t(3 * GPUNET_GELU_KAPPA) * v * v);
        store(dx, i, load(dy, i) * (s + acc_t(2) * v * s * r * du));
    }
}

// y[r, c] += bias[c], in place over a contiguous (rows, cols) array.
extern "C" __global__ void bias_add(scalar_t* __restrict__ y, const scalar_t* __restrict__ bias, long long rows,
                                    int cols) {
    GRID_STRIDE(i, rows * cols) store(y, i, load(y, i) + load(bias, i % cols));
}

// y[r, c] = relu(y[r, c] + bias[c]), in place: a Linear layer and the ReLU after it in one pass (the sum rounded
// to scalar_t first, so the result has the bits of bias_add then relu_forward).
extern "C" __global__ void bias_relu(scalar_t* __restrict__ y, const scalar_t* __restrict__ bias, long long rows,
                                     int cols) {
    GRID_STRIDE(i, rows * cols) {
        const acc_t v = static_cast<acc_t>(static_cast<scalar_t>(load(y, i) + load(bias, i % cols)));
        store(y, i, v > acc_t(0) || v != v ? v : acc_t(0));
    }
}
