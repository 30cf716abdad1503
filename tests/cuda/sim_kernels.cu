// Test-only kernels for the simulator's own tests: each probes one CUDA semantic, some are planted bugs.
#include "common.cuh"

extern "C" __global__ void thread_indices(int* out) {
    const int block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const int thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const int i = (block * blockDim.x * blockDim.y * blockDim.z + thread) * 4;
    out[i] = threadIdx.x; out[i + 1] = threadIdx.y; out[i + 2] = blockIdx.x; out[i + 3] = blockIdx.y;
}

// Threads >= active return at once; the rest reduce through shared memory with __syncthreads.
extern "C" __global__ void sum_with_early_exit(const float* x, float* out, int active) {
    __shared__ float buf[256];
    if ((int)threadIdx.x >= active) return;
    buf[threadIdx.x] = x[blockIdx.x * active + threadIdx.x];
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0;
        for (int i = 0; i < active; ++i) s += buf[i];
        out[blockIdx.x] = s;
    }
}

extern "C" __global__ void read_dynamic_shared(float* out, int index) {
    extern __shared__ float smem[];
    out[blockIdx.x * blockDim.x + threadIdx.x] = smem[index + threadIdx.x];  // unwritten: poisoned
}

extern "C" __global__ void shuffles(const int* x, int* out, int width, int delta) {
    const int v = x[threadIdx.x], i = threadIdx.x * 4;
    out[i] = __shfl_sync(0xffffffffu, v, 3, width);
    out[i + 1] = __shfl_xor_sync(0xffffffffu, v, delta, width);
    out[i + 2] = __shfl_down_sync(0xffffffffu, v, delta, width);
    out[i + 3] = __shfl_up_sync(0xffffffffu, v, delta, width);
}

extern "C" __global__ void votes(const int* pred, unsigned* out) {
    const int p = pred[threadIdx.x];
    const unsigned b = __ballot_sync(0xffffffffu, p);
    const unsigned half = threadIdx.x < 16 ? 0x0000ffffu : 0xffff0000u;  // two disjoint groups at once
    const int any = __any_sync(half, p);
    const int all = __all_sync(0xffffffffu, p);
    out[threadIdx.x * 3] = b; out[threadIdx.x * 3 + 1] = any; out[threadIdx.x * 3 + 2] = all;
}

// Planted: lanes 0-15 shuffle among themselves but lane 0 reads lane 20, outside the mask.
extern "C" __global__ void shuffle_outside_mask(int* out) {
    if (threadIdx.x < 16) out[threadIdx.x] = __shfl_sync(0x0000ffffu, (int)threadIdx.x, threadIdx.x == 0 ? 20 : 1);
}

// Planted: the mask names lanes that returned.
extern "C" __global__ void shuffle_with_exited_lanes(int* out) {
    if (threadIdx.x >= 16) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
}

// Planted: lane 0 waits in a shuffle while the others wait at __syncthreads: a deadlock.
extern "C" __global__ void divergent_deadlock(int* out) {
    if (threadIdx.x == 0) out[0] = __shfl_sync(0xffffffffu, 1, 1);
    else __syncthreads();
}

extern "C" __global__ void atomic_count(unsigned long long* counter, float* total) {
    atomicAdd(counter, 1ull);
    atomicAdd(total, 0.5f);
}

extern "C" __global__ void typed_args(const double* x, double* y, long long n, float scale) {
    GRID_STRIDE(i, n) y[i] = x[i] * scale;
}

// Planted for the sanitizers.
extern "C" __global__ void read_past_end(const float* x, float* out, int n) {
    out[threadIdx.x] = x[threadIdx.x + n];
}

extern "C" __global__ void block_sum(const float* x, float* out, int racy) {
    __shared__ float buf[64];
    buf[threadIdx.x] = x[threadIdx.x];
    if (!racy) __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0;
        for (int i = 0; i < 64; ++i) s += buf[i];
        out[0] = s;
    }
}
