// optimizers.cu: fused parameter updates, one kernel per parameter tensor and step (see gpunet/optim).
#include "common.cuh"

// g = grad + wd * w; v = mu * v + g; w -= lr * (nesterov ? g + mu * v : v). Without momentum v is unused.
extern "C" __global__ void sgd_update(scalar_t* __restrict__ w, const scalar_t* __restrict__ grad,
                                      scalar_t* __restrict__ velocity, long long n, double lr, double momentum,
                                      int nesterov, double weight_decay) {
    GRID_STRIDE(i, n) {
        const acc_t wi = load(w, i);
        acc_t g = load(grad, i) + acc_t(weight_decay) * wi;
        if (velocity != nullptr) {
            const acc_t v = acc_t(momentum) * load(velocity, i) + g;
            store(velocity, i, v);
            g = nesterov ? g + acc_t(momentum) * v : v;
        }
        store(w, i, wi - acc_t(lr) * g);
    }
}

// Adam (L2 decay added to the gradient) or AdamW (decoupled: w *= 1 - lr * wd first).
// step_size = lr / (1 - beta1^t), inv_bias2 = 1 / sqrt(1 - beta2^t), computed on the host per step.
extern "C" __global__ void adam_update(scalar_t* __restrict__ w, const scalar_t* __restrict__ grad,
                                       scalar_t* __restrict__ m, scalar_t* __restrict__ v, long long n, double lr,
                                       double beta1, double beta2, double eps, double weight_decay, int decoupled,
                                       double step_size, double inv_bias2) {
    GRID_STRIDE(i, n) {
        acc_t wi = load(w, i);
        acc_t g = load(grad, i);
        if (decoupled) wi *= acc_t(1.0 - lr * weight_decay);
        else g += acc_t(weight_decay) * wi;
        const acc_t mi = acc_t(beta1) * load(m, i) + acc_t(1.0 - beta1) * g;
        const acc_t vi = acc_t(beta2) * load(v, i) + acc_t(1.0 - beta2) * g * g;
        store(m, i, mi);
        store(v, i, vi);
        store(w, i, wi - acc_t(step_size) * (mi / (gp_sqrt(vi) * acc_t(inv_bias2) + acc_t(eps))));
    }
}
