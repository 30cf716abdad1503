// vector_f32.h: float32 row primitives in explicit AVX-512 (16 lanes) or AVX2 (8 lanes) vectors, for rows.cpp.
//
// Why not leave it to the compiler, as the double path does: the auto-vectorised loops spent more time on each
// row's scalar tail and on libmvec's call than on the work, and lost to PyTorch at C = 100 (the numbers:
// docs/measurements/, the CPU notes). Here a row's tail is one masked load and store, exp is inlined (a degree-6
// polynomial, within 1.05 ulp), and sums stay in float over chunks of SUM_CHUNK elements (SUM_CHUNK / W a lane, as
// PyTorch's float sums) before going into a double, so a row of 10^5 sums about as accurately as one of 10^3.
#pragma once
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

namespace vf32 {

#if defined(__AVX512F__)
constexpr int W = 16;
typedef float vec __attribute__((vector_size(64)));
typedef int32_t ivec __attribute__((vector_size(64)));
struct Tail {  // the first n < W lanes
    __mmask16 k;
    explicit Tail(int64_t n) : k((__mmask16)((1u << n) - 1)) {}
};
static inline vec load(const float* p, Tail t, float fill) { return (vec)_mm512_mask_loadu_ps(_mm512_set1_ps(fill), t.k, p); }
static inline void store(float* p, vec v, Tail t) { _mm512_mask_storeu_ps(p, t.k, (__m512)v); }
static inline vec max_keep_nan_b(vec a, vec b) { return (vec)_mm512_max_ps((__m512)a, (__m512)b); }
#else
constexpr int W = 8;
typedef float vec __attribute__((vector_size(32)));
typedef int32_t ivec __attribute__((vector_size(32)));
struct Tail {
    __m256i k;
    explicit Tail(int64_t n) : k(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))) {}
};
static inline vec load(const float* p, Tail t, float fill) {
    return (vec)_mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, t.k), _mm256_castsi256_ps(t.k));
}
static inline void store(float* p, vec v, Tail t) { _mm256_maskstore_ps(p, t.k, (__m256)v); }
static inline vec max_keep_nan_b(vec a, vec b) { return (vec)_mm256_max_ps((__m256)a, (__m256)b); }
#endif

struct Full {};  // all W lanes
static inline vec load(const float* p, Full, float) {
    vec v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}
static inline void store(float* p, vec v, Full) { __builtin_memcpy(p, &v, sizeof v); }
static inline vec splat(float a) { return (vec){} + a; }

constexpr int64_t SUM_CHUNK = 2048;  // elements summed in float before the double: a multiple of 2 W

// body(j, lanes) for each vector of a row: lanes is Full, or the Tail past the last whole vector.
template <class Body>
static inline void over_row(int64_t n, Body&& body) {
    int64_t j = 0;
    for (; j + W <= n; j += W) body(j, Full{});
    if (j < n) body(j, Tail(n - j));
}

// Lanes folded in halves, log2 W dependent steps. A chunk's lanes are folded in float (log2 W more roundings on
// top of the up to SUM_CHUNK / W in each lane); the chunks' totals add up in double.
#if defined(__AVX512F__)
static inline float sum_lanes(vec v) { return _mm512_reduce_add_ps((__m512)v); }
static inline float max_lanes(vec v) { return _mm512_reduce_max_ps((__m512)v); }
#else
static inline float sum_lanes(vec v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128((__m256)v), _mm256_extractf128_ps((__m256)v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}
static inline float max_lanes(vec v) {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128((__m256)v), _mm256_extractf128_ps((__m256)v, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
}
#endif

// The sum over a row of term(j, lanes), a vector whose lanes past the row are 0. Two accumulators, so that
// consecutive additions do not wait for each other; one fold per chunk (a row's tail is in its last chunk).
template <class Term>
static inline double sum_over_row(int64_t n, Term&& term) {
    double total = 0;
    int64_t j = 0;
    do {
        const int64_t end = n - j > SUM_CHUNK ? j + SUM_CHUNK : n;
        vec s0 = {}, s1 = {};
        for (; j + 2 * W <= end; j += 2 * W) {
            s0 += term(j, Full{});
            s1 += term(j + W, Full{});
        }
        if (j + W <= end) {
            s0 += term(j, Full{});
            j += W;
        }
        if (j < end) {
            s1 += term(j, Tail(end - j));
            j = end;
        }
        total += sum_lanes(s0 + s1);
    } while (j < n);
    return total;
}

// exp, lane by lane: x = n ln2 + r with n = round(x / ln2), |r| <= ln2 / 2, exp(r) by a degree-6 polynomial,
// times 2^n. NaN stays NaN, exp(-inf) = 0, exp(+inf) = inf. The polynomial is the minimax fit of exp's relative
// error on [-ln2/2, ln2/2] with exp(0) = 1 exactly, in Horner form: six FMAs, two fewer operations than Cephes'
// form (degree 7) at the same accuracy (within 1.1 ulp against 1.0 over float32's range; a softmax row's exp
// pass is bound by these operations, docs/measurements/, the CPU notes of 2026-12-01).
#if defined(__AVX512F__)
// AVX-512 rounds and scales in one instruction each (vrndscaleps, vscalefps: overflow to inf and underflow
// through the subnormals to 0 as the true value does), so only infinities need clamping.
template <bool BIG>
static inline vec exp_lanes(vec x) {
    x = (vec)_mm512_max_ps(_mm512_set1_ps(-104.0f), (__m512)x);  // max(a, NaN) = NaN
    if (BIG) x = (vec)_mm512_min_ps(_mm512_set1_ps(104.0f), (__m512)x);  // else x <= 0 (or NaN)
    const vec nf = (vec)_mm512_roundscale_ps((__m512)(x * 1.44269504088896341f), _MM_FROUND_TO_NEAREST_INT);
#else
// AVX2 builds powers of two in the exponent bits, which holds only normal exponents: 2^n is applied as 2^(n/2) *
// 2^(n - n/2), both normal for every n from -150 to 128, and the last multiply rounds once, through the subnormals
// to 0 and up to inf as the true value does. Below -104 exp is 0 in float32 (the clamp keeps n in range). BIG: x
// may exceed 0 (any float); else x <= 0, as softmax's x - max is, one compare fewer (on either ISA).
template <bool BIG>
static inline vec exp_lanes(vec x) {
    const ivec tiny = x < -104.0f;
    x = x < -104.0f ? splat(-104.0f) : x;
    if (BIG) x = x > 89.0f ? splat(89.0f) : x;
    const vec t = x * 1.44269504088896341f + 0.5f;
    ivec n = __builtin_convertvector(t, ivec);      // toward zero,
    n += (__builtin_convertvector(n, vec) > t);       // then floor: -1 (true) where that rounded up
    const vec nf = __builtin_convertvector(n, vec);
#endif
    vec r = x - nf * 0.693359375f;
    r = r + nf * 2.12194440e-4f;
    vec p = r * 1.3893820578232408e-3f + 8.376353420317173e-3f;
    p = p * r + 4.1667141020298004e-2f;
    p = p * r + 1.666640043258667e-1f;
    p = p * r + 4.999999701976776e-1f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
#if defined(__AVX512F__)
    return (vec)_mm512_scalef_ps((__m512)p, (__m512)nf);
#else
    const ivec n_half = n >> 1;  // floor(n / 2)
    const vec e = p * (vec)((n_half + 127) << 23) * (vec)((n - n_half + 127) << 23);
    return (vec)((ivec)e & ~tiny);
#endif
}

static inline float row_max(const float* x, int64_t n) {
    // max(a, b) gives b where either is NaN: the running max stays a number, as the generic path's compare does.
    vec m0 = splat(-INFINITY), m1 = m0;
    int64_t j = 0;
    for (; j + 2 * W <= n; j += 2 * W) {
        m0 = max_keep_nan_b(load(x + j, Full{}, 0), m0);
        m1 = max_keep_nan_b(load(x + j + W, Full{}, 0), m1);
    }
    over_row(n - j, [&](int64_t k, auto lanes) { m0 = max_keep_nan_b(load(x + j + k, lanes, -INFINITY), m0); });
    return max_lanes(max_keep_nan_b(m1, m0));
}

// out[j] = exp(x[j] - m) (out may be null: the sum only); returns the sum.
static inline double exp_shifted(const float* x, float* out, int64_t n, float m) {
    return sum_over_row(n, [&](int64_t j, auto lanes) {
        const vec e = exp_lanes<false>(load(x + j, lanes, -INFINITY) - m);
        if (out) store(out + j, e, lanes);
        return e;
    });
}

static inline void scale(float* y, int64_t n, float a) {
    over_row(n, [&](int64_t j, auto lanes) { store(y + j, load(y + j, lanes, 0) * a, lanes); });
}

// y = (x - m) - c, in that order.
static inline void shift(const float* x, float* y, int64_t n, float m, float c) {
    over_row(n, [&](int64_t j, auto lanes) { store(y + j, (load(x + j, lanes, 0) - m) - c, lanes); });
}

static inline double dot(const float* a, const float* b, int64_t n) {
    return sum_over_row(n, [&](int64_t j, auto lanes) { return load(a + j, lanes, 0) * load(b + j, lanes, 0); });
}

static inline double sum(const float* a, int64_t n) {
    return sum_over_row(n, [&](int64_t j, auto lanes) { return load(a + j, lanes, 0); });
}

// dx = y * (dy - d)
static inline void softmax_grad(const float* y, const float* dy, float* dx, int64_t n, float d) {
    over_row(n, [&](int64_t j, auto lanes) { store(dx + j, load(y + j, lanes, 0) * (load(dy + j, lanes, 0) - d), lanes); });
}

// dx = dy - exp(logy) * d
static inline void log_softmax_grad(const float* logy, const float* dy, float* dx, int64_t n, float d) {
    over_row(n, [&](int64_t j, auto lanes) {
        store(dx + j, load(dy + j, lanes, 0) - exp_lanes<true>(load(logy + j, lanes, 0)) * d, lanes);
    });
}

// ---- outputs written around the cache ----------------------------------------------------------------------
// An output too large to stay in the cache until it is read is written with streaming stores: no read of each
// line before it is written, so a copy-like op moves two bytes per byte of output instead of three. A row's head
// up to the vector alignment and its tail go through ordinary (masked) stores; the caller fences after its rows.
#if defined(__AVX512F__)
static inline void stream(float* p, vec v) { _mm512_stream_ps(p, (__m512)v); }
#else
static inline void stream(float* p, vec v) { _mm256_stream_ps(p, (__m256)v); }
#endif

// out[j] = value(j, lanes) over a row of n, streamed where aligned.
template <class Value>
static inline void stream_row(float* out, int64_t n, Value&& value) {
    int64_t head = (int64_t)((-(uintptr_t)out) % (W * sizeof(float)) / sizeof(float));
    if (head > n) head = n;
    if (head > 0) store(out, value(0, Tail(head)), Tail(head));
    int64_t j = head;
    for (; j + W <= n; j += W) stream(out + j, value(j, Full{}));
    if (j < n) store(out + j, value(j, Tail(n - j)), Tail(n - j));
}

static inline void shift_stream(const float* x, float* y, int64_t n, float m, float c) {
    stream_row(y, n, [&](int64_t j, auto lanes) { return (load(x + j, lanes, 0) - m) - c; });
}

static inline void softmax_grad_stream(const float* y, const float* dy, float* dx, int64_t n, float d) {
    stream_row(dx, n, [&](int64_t j, auto lanes) { return load(y + j, lanes, 0) * (load(dy + j, lanes, 0) - d); });
}

static inline void log_softmax_grad_stream(const float* logy, const float* dy, float* dx, int64_t n, float d) {
    stream_row(dx, n, [&](int64_t j, auto lanes) {
        return load(dy + j, lanes, 0) - exp_lanes<true>(load(logy + j, lanes, 0)) * d;
    });
}

}  // namespace vf32
