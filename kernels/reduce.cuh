// reduce.cuh: warp-group and block reductions (max, sum, and the (max, sum) pair of the online softmax).
//
// A "group" is `width` consecutive lanes (a power of two dividing 32): rows shorter than a warp are handled by
// sub-warp groups, several rows per warp. The xor butterfly leaves the result in every lane of the group.
// Block reductions need blockDim.x to be a multiple of 32 (the launch rule guarantees it).
#pragma once
#include "common.cuh"

// A NaN on either side wins: `a > b ? a : b` alone returns b for a NaN a, so a NaN followed by a finite value (or
// the -inf padding) would vanish from a row's max, and with it from the row's sum (a NaN logit must make the row
// NaN, as on the CPU and in PyTorch).
struct MaxOp {
    __device__ static acc_t identity() { return neg_inf(); }
    __device__ static acc_t apply(acc_t a, acc_t b) { return a > b || a != a ? a : b; }
};
struct SumOp {
    __device__ static acc_t identity() { return acc_t(0); }
    __device__ static acc_t apply(acc_t a, acc_t b) { return a + b; }
};

template <class Op>
__device__ __forceinline__ acc_t group_reduce(acc_t v, int width) {
#pragma unroll
    for (int offset = width / 2; offset > 0; offset /= 2)
        v = Op::apply(v, __shfl_xor_sync(GPUNET_FULL_MASK, v, offset, width));
    return v;
}

template <class Op>
__device__ __forceinline__ acc_t block_reduce(acc_t v) {
    __shared__ acc_t partial[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = group_reduce<Op>(v, 32);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = group_reduce<Op>(lane < warps ? partial[lane] : Op::identity(), 32);
    __syncthreads();  // `partial` is reused by the next reduction
    return v;
}

// Online softmax statistics: a running max m and sum s of exp(x - m), merged pairwise. NaN and +inf propagate to
// NaN, as in the NumPy path; -inf entries contribute 0. The max is MaxOp's (a NaN wins), and a side whose max is
// the top keeps its sum as it is (no exp(-inf - -inf) = NaN for a part of nothing but -inf), never dropped by a
// branch: `m > m2 ? m : m2` let a NaN max lose to the padding's -inf, and a `m == -inf ? 0` branch then dropped its
// NaN sum (a NaN at column 31 of 1025 gave a finite loss; tests/ops/test_special_positions.py).
__device__ __forceinline__ void online_merge(acc_t& m, acc_t& s, acc_t m2, acc_t s2) {
    const acc_t top = MaxOp::apply(m, m2);
    const acc_t a = m == top ? s : s * gp_exp(m - top);
    const acc_t b = m2 == top ? s2 : s2 * gp_exp(m2 - top);
    s = a + b;
    m = top;
}

__device__ __forceinline__ void group_reduce_online(acc_t& m, acc_t& s, int width) {
#pragma unroll
    for (int offset = width / 2; offset > 0; offset /= 2) {
        const acc_t m2 = __shfl_xor_sync(GPUNET_FULL_MASK, m, offset, width);
        const acc_t s2 = __shfl_xor_sync(GPUNET_FULL_MASK, s, offset, width);
        online_merge(m, s, m2, s2);
    }
}

__device__ __forceinline__ void block_reduce_online(acc_t& m, acc_t& s) {
    __shared__ acc_t partial_m[32];
    __shared__ acc_t partial_s[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    group_reduce_online(m, s, 32);
    if (lane == 0) {
        partial_m[warp] = m;
        partial_s[warp] = s;
    }
    __syncthreads();
    m = lane < warps ? partial_m[lane] : neg_inf();
    s = lane < warps ? partial_s[lane] : acc_t(0);
    group_reduce_online(m, s, 32);
    __syncthreads();
}
