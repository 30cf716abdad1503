// common.cuh: the element types, loads/stores and math overloads every gpunet kernel shares.
//
// Each module is compiled once per dtype with -DSCALAR_T=<storage type> -DACC_T=<accumulation type>:
// float/float, double/double, and __half/float (-DGPUNET_HALF=1): narrow inputs accumulate in float32.
// Loads and stores are the only place that knows the storage type.
#pragma once

#ifndef SCALAR_T
#error "compile with -DSCALAR_T=<float|double|__half> -DACC_T=<float|double>"
#endif
#if defined(GPUNET_HALF) && GPUNET_HALF
#include <cuda_fp16.h>
#endif

typedef SCALAR_T scalar_t;
typedef ACC_T acc_t;

#define GPUNET_FULL_MASK 0xffffffffu

__device__ __forceinline__ acc_t load(const scalar_t* p, long long i) { return static_cast<acc_t>(p[i]); }
__device__ __forceinline__ void store(scalar_t* p, long long i, acc_t v) { p[i] = static_cast<scalar_t>(v); }

__device__ __forceinline__ float gp_exp(float x) { return expf(x); }
__device__ __forceinline__ double gp_exp(double x) { return exp(x); }
__device__ __forceinline__ float gp_log(float x) { return logf(x); }
__device__ __forceinline__ double gp_log(double x) { return log(x); }
__device__ __forceinline__ float gp_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double gp_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float gp_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double gp_sqrt(double x) { return sqrt(x); }

// -inf without <math.h>'s INFINITY, which NVRTC does not define.
__device__ __forceinline__ acc_t neg_inf() { return -static_cast<acc_t>(__int_as_float(0x7f800000)); }
__device__ __forceinline__ acc_t quiet_nan() { return static_cast<acc_t>(__int_as_float(0x7fc00000)); }

// A grid-stride loop over [0, n) with 64-bit indices: correct for any grid size and any n.
#define GRID_STRIDE(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)
