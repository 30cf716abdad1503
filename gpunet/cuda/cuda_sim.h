// cuda_sim.h: runs unchanged CUDA C kernels on the CPU, one std::thread per CUDA thread.
//
// What it models, and how:
// - threadIdx/blockIdx/blockDim/gridDim are thread_local, set per simulated thread;
// - the threads of one block are real threads; blocks run one after another, so `static` storage stands in for
//   `__shared__` (one copy, used by one block at a time); `extern __shared__` is rewritten (by the Python
//   builder) into a bounds-checked view of a buffer of the launch's size, poisoned with 0xFF (NaN) per block;
// - __syncthreads is a barrier over the threads that have not returned (as on Volta and later);
// - warp shuffles, ballots and votes exchange values through per-warp buffers with real mask semantics: a lane
//   reading a lane outside the mask, a mask without the caller, or a mask naming a lane that has returned are
//   errors, reported to Python, never silent values; disjoint sub-warp groups run their collectives
//   independently, and lanes that disagree on a mask end in a reported deadlock;
// - when every live thread of a block waits and nothing moves, that is a deadlock, reported as such.
// Synchronisation goes through one mutex per block barrier and one per warp, and the simulator's own
// bookkeeping adds no other happens-before edge, so ThreadSanitizer sees the edges the CUDA program states and a
// missing __syncthreads shows up as a data race.
#pragma once

#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(GPUNET_HALF) && GPUNET_HALF
// float16: CUDA's own cuda_fp16.h, compiled for the host (it brings CUDA's uint3 and dim3 along).
#include <cuda_fp16.h>
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __noinline__
#undef __launch_bounds__
#undef __shared__
#undef __constant__
#undef __align__
#else
struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
    dim3() = default;
    dim3(unsigned int x_, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static
#define __constant__ static
#define __align__(n) alignas(n)

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;
constexpr int warpSize = 32;

namespace sim {

struct Abort {};  // thrown in every simulated thread once the launch has failed

// One warp collective in flight: the lanes of `mask` deposit, then each reads, then it is dropped.
struct Collective {
    unsigned mask = 0, arrived = 0, readers = 0;
    int kind = 0;
    bool complete = false;
    unsigned long long value[32];
};

struct Warp {
    std::mutex mu;              // guards this warp's collectives: warps never synchronise with each other
    std::condition_variable cv;
    unsigned exited = 0;        // lanes that returned (or never existed: a partial last warp)
    // Collectives in flight, oldest first. Lanes run collectives in program order, so a lane joins the oldest
    // one of its mask and kind that it has not joined yet; disjoint sub-warp groups proceed independently.
    std::list<Collective> pending;
};

struct Launch {
    std::mutex mu;              // guards the block barrier
    std::condition_variable barrier_cv;
    unsigned barrier_arrived = 0;
    unsigned long long barrier_generation = 0;
    // Bookkeeping for deadlock detection: relaxed atomics, so they add no happens-before edge that a
    // ThreadSanitizer build would take for synchronisation the CUDA program does not have.
    std::atomic<unsigned> live{0}, waiting{0};
    std::atomic<unsigned long long> progress{0};
    std::vector<Warp> warps;
    unsigned char* dynamic_shared = nullptr;
    size_t dynamic_shared_bytes = 0;
    std::atomic<bool> failed{false};
    std::mutex message_mu;
    std::string message;
};

struct ThreadState {
    Launch* launch = nullptr;
    unsigned linear = 0, lane = 0, warp = 0;
};
thread_local ThreadState self;

constexpr auto relaxed = std::memory_order_relaxed;

inline std::string where() {
    char buf[160];
    std::snprintf(buf, sizeof buf, "block (%u,%u,%u) thread (%u,%u,%u)", blockIdx.x, blockIdx.y, blockIdx.z,
                  threadIdx.x, threadIdx.y, threadIdx.z);
    return buf;
}

// Record the first failure, wake everybody, and unwind this thread (any lock held is released by unwinding).
[[noreturn]] inline void fail_launch(Launch& l, const std::string& msg) {
    {
        std::lock_guard<std::mutex> guard(l.message_mu);
        if (!l.failed.load()) {
            l.message = msg;
            l.failed.store(true);
        }
    }
    l.barrier_cv.notify_all();
    for (auto& w : l.warps) w.cv.notify_all();
    throw Abort{};
}

[[noreturn]] inline void fail(const std::string& msg) { fail_launch(*self.launch, where() + ": " + msg); }

// Wait on `cv` until `done()`; detect deadlock (every live thread waiting, no progress for about 2 seconds).
template <class Done>
inline void wait_until(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, Done done, const char* what) {
    Launch& l = *self.launch;
    if (done()) return;
    l.waiting.fetch_add(1, relaxed);
    unsigned long long seen = l.progress.load(relaxed);
    int still = 0;
    while (!done()) {
        if (l.failed.load()) { l.waiting.fetch_sub(1, relaxed); throw Abort{}; }
        if (cv.wait_for(lock, std::chrono::milliseconds(20)) == std::cv_status::timeout) {
            const unsigned long long now = l.progress.load(relaxed);
            if (now != seen) { seen = now; still = 0; continue; }
            if (l.waiting.load(relaxed) >= l.live.load(relaxed) && ++still > 100) {
                l.waiting.fetch_sub(1, relaxed);
                fail(std::string("deadlock: every live thread of the block waits and none can proceed (waiting "
                                 "in ") + what + "; divergent __syncthreads, or a warp collective whose mask "
                                 "names lanes that never arrive?)");
            }
        }
    }
    l.waiting.fetch_sub(1, relaxed);
    l.progress.fetch_add(1, relaxed);
}

inline void syncthreads() {
    Launch& l = *self.launch;
    std::unique_lock<std::mutex> lock(l.mu);
    if (l.failed.load()) throw Abort{};
    l.progress.fetch_add(1, relaxed);
    unsigned long long gen = l.barrier_generation;
    if (++l.barrier_arrived == l.live.load(relaxed)) {
        l.barrier_arrived = 0;
        ++l.barrier_generation;
        l.barrier_cv.notify_all();
        return;
    }
    wait_until(lock, l.barrier_cv, [&] { return l.barrier_generation != gen; }, "__syncthreads");
}

enum Kind { SHFL = 1, BALLOT, SYNCWARP };

// One warp collective: every lane of `mask` deposits `v`; `read` turns the 32 deposited values into a result.
template <class Read>
inline auto collective(unsigned mask, int kind, unsigned long long v, const char* name, Read read) {
    Launch& l = *self.launch;
    Warp& w = l.warps[self.warp];
    const unsigned bit = 1u << self.lane;
    std::unique_lock<std::mutex> lock(w.mu);
    if (l.failed.load()) throw Abort{};
    if (!(mask & bit)) {
        char buf[128];
        std::snprintf(buf, sizeof buf, "%s with mask 0x%08x that does not include the calling lane %u", name, mask,
                      self.lane);
        fail(buf);
    }
    auto it = w.pending.begin();
    while (it != w.pending.end() && !(it->mask == mask && it->kind == kind && !it->complete && !(it->arrived & bit)))
        ++it;
    if (it == w.pending.end()) {
        it = w.pending.emplace(w.pending.end());
        it->mask = mask;
        it->kind = kind;
    }
    Collective& c = *it;
    c.value[self.lane] = v;
    c.arrived |= bit;
    l.progress.fetch_add(1, relaxed);
    auto check_exited = [&] {
        if (mask & w.exited) {
            char buf[160];
            std::snprintf(buf, sizeof buf, "%s with mask 0x%08x names lane(s) 0x%08x that have returned", name,
                          mask, mask & w.exited);
            fail(buf);
        }
    };
    check_exited();
    if (c.arrived == mask) {
        c.complete = true;
        c.readers = mask;
        w.cv.notify_all();
    } else {
        wait_until(lock, w.cv, [&] {
            if (!c.complete) check_exited();
            return c.complete;
        }, name);
    }
    auto result = read(c.value, mask);
    c.readers &= ~bit;
    if (c.readers == 0) w.pending.erase(it);
    return result;
}

inline unsigned source_lane_bounds_check(unsigned src, unsigned mask, const char* name) {
    if (!((mask >> src) & 1u)) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "%s: lane %u reads lane %u, which is not in the mask 0x%08x", name,
                      self.lane, src, mask);
        fail(buf);
    }
    return src;
}

template <class T>
inline unsigned long long to_bits(T v) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    return bits;
}

template <class T>
inline T from_bits(unsigned long long bits) {
    T v;
    std::memcpy(&v, &bits, sizeof(T));
    return v;
}

// Shuffle: `source(lane)` gives the lane to read, or -1 for "keep my own value" (outside the width segment).
template <class T, class Source>
inline T shuffle(unsigned mask, T var, const char* name, Source source) {
    const unsigned lane = self.lane;
    int src = source(lane);
    unsigned long long bits = collective(mask, SHFL, to_bits(var), name, [&](const unsigned long long* values,
                                                                               unsigned m) {
        if (src < 0) return values[lane];
        if (!((m >> src) & 1u)) return ~0ull;  // reported below, outside the lock
        return values[src];
    });
    if (src >= 0) source_lane_bounds_check(unsigned(src), mask, name);
    return from_bits<T>(bits);
}

inline void check_width(int width, const char* name) {
    if (width <= 0 || width > 32 || (width & (width - 1))) fail(std::string(name) + ": width must be a power of 2 in [1, 32]");
}

template <class T>
struct SharedArray {
    T* base;
    size_t count;
    T& operator[](long long i) const {
        if (i < 0 || size_t(i) >= count) {
            char buf[160];
            std::snprintf(buf, sizeof buf, "extern __shared__ access at index %lld, past the %zu element(s) the "
                          "launch allocated (%zu bytes)", i, count, count * sizeof(T));
            fail(buf);
        }
        return base[i];
    }
};

template <class T>
inline SharedArray<T> dynamic_shared() {
    Launch& l = *self.launch;
    return SharedArray<T>{reinterpret_cast<T*>(l.dynamic_shared), l.dynamic_shared_bytes / sizeof(T)};
}

// Run `kernel` over the grid; returns 0, or 1 with the error message in `err`.
inline int launch(const unsigned* grid, const unsigned* block, unsigned long long shared_bytes, char* err,
                  int err_len, const std::function<void()>& kernel) {
    const unsigned nthreads = block[0] * block[1] * block[2];
    const unsigned long long nblocks = (unsigned long long)grid[0] * grid[1] * grid[2];
    if (nthreads == 0 || nthreads > 1024 || nblocks == 0) {
        std::snprintf(err, err_len, "invalid launch: grid (%u,%u,%u) block (%u,%u,%u)", grid[0], grid[1], grid[2],
                      block[0], block[1], block[2]);
        return 1;
    }
    Launch l;
    l.warps = std::vector<Warp>((nthreads + 31) / 32);
    std::vector<unsigned char> shared(shared_bytes ? shared_bytes : 1);
    l.dynamic_shared = shared.data();
    l.dynamic_shared_bytes = shared_bytes;
    // Block b starts when thread 0, having seen every thread finish block b-1, resets the block state. Starting
    // and finishing use two mutexes, so that a fast thread finishing the block creates no happens-before edge
    // to a slow thread that has not started it yet (which would hide a missing __syncthreads from TSan).
    std::mutex start_mu, finish_mu;
    std::condition_variable start_cv, finish_cv;
    unsigned long long started_block = ~0ull;
    unsigned finished = nthreads;  // threads done with the previous block

    auto begin_block = [&](unsigned long long b) {
        std::memset(shared.data(), 0xFF, shared.size());  // poison: unwritten shared memory reads as NaN
        l.live.store(nthreads, relaxed);
        l.barrier_arrived = 0;
        l.waiting.store(0, relaxed);
        for (size_t i = 0; i < l.warps.size(); ++i) {
            Warp& w = l.warps[i];
            unsigned lanes = std::min(32u, nthreads - unsigned(i) * 32u);
            w.exited = lanes == 32 ? 0u : ~((1u << lanes) - 1u);
            w.pending.clear();
        }
        started_block = b;
    };

    auto body = [&](unsigned linear) {
        self.launch = &l;
        self.linear = linear;
        self.lane = linear % 32;
        self.warp = linear / 32;
        threadIdx = uint3{linear % block[0], (linear / block[0]) % block[1], linear / (block[0] * block[1])};
        blockDim = dim3(block[0], block[1], block[2]);
        gridDim = dim3(grid[0], grid[1], grid[2]);
        for (unsigned long long b = 0; b < nblocks; ++b) {
            if (linear == 0) {
                {
                    std::unique_lock<std::mutex> lock(finish_mu);
                    finish_cv.wait(lock, [&] { return finished == nthreads; });
                    finished = 0;
                }
                std::lock_guard<std::mutex> lock(start_mu);
                begin_block(b);
                start_cv.notify_all();
            } else {
                std::unique_lock<std::mutex> lock(start_mu);
                start_cv.wait(lock, [&] { return started_block == b; });
            }
            if (l.failed.load()) break;
            blockIdx = uint3{unsigned(b % grid[0]), unsigned((b / grid[0]) % grid[1]), unsigned(b / (grid[0] * grid[1]))};
            try {
                kernel();
            } catch (Abort&) {
            } catch (std::exception& e) {
                try { fail(std::string("C++ exception: ") + e.what()); } catch (Abort&) {}
            }
            {
                std::lock_guard<std::mutex> lock(l.mu);  // a thread that returns no longer holds up __syncthreads
                l.progress.fetch_add(1, relaxed);
                l.live.fetch_sub(1, relaxed);
                if (l.barrier_arrived > 0 && l.barrier_arrived == l.live.load(relaxed)) {
                    l.barrier_arrived = 0;
                    ++l.barrier_generation;
                }
                l.barrier_cv.notify_all();
            }
            {
                Warp& w = l.warps[self.warp];
                std::lock_guard<std::mutex> lock(w.mu);
                w.exited |= 1u << self.lane;
                w.cv.notify_all();
            }
            {
                std::lock_guard<std::mutex> lock(finish_mu);
                if (++finished == nthreads) finish_cv.notify_all();
            }
        }
    };

    std::vector<std::thread> threads;
    threads.reserve(nthreads);
    for (unsigned t = 0; t < nthreads; ++t) threads.emplace_back(body, t);
    for (auto& t : threads) t.join();
    if (l.failed.load()) {
        std::snprintf(err, err_len, "%s", l.message.c_str());
        return 1;
    }
    return 0;
}

}  // namespace sim

// ---- the CUDA device API, as far as gpunet's kernels and their tests use it --------------------------------
inline void __syncthreads() { sim::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    sim::collective(mask, sim::SYNCWARP, 0, "__syncwarp", [](const unsigned long long*, unsigned) { return 0; });
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
[[noreturn]] inline void __trap() { sim::fail("__trap() called"); }

template <class T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
    sim::check_width(width, "__shfl_sync");
    return sim::shuffle(mask, var, "__shfl_sync", [&](unsigned lane) {
        return int((lane & ~unsigned(width - 1)) + (unsigned(src_lane) & unsigned(width - 1)));
    });
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
    sim::check_width(width, "__shfl_xor_sync");
    return sim::shuffle(mask, var, "__shfl_xor_sync", [&](unsigned lane) {
        unsigned src = lane ^ unsigned(lane_mask);
        return (src / unsigned(width)) == (lane / unsigned(width)) && src < 32 ? int(src) : -1;
    });
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    sim::check_width(width, "__shfl_down_sync");
    return sim::shuffle(mask, var, "__shfl_down_sync", [&](unsigned lane) {
        return (lane % unsigned(width)) + delta < unsigned(width) ? int(lane + delta) : -1;
    });
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    sim::check_width(width, "__shfl_up_sync");
    return sim::shuffle(mask, var, "__shfl_up_sync", [&](unsigned lane) {
        return (lane % unsigned(width)) >= delta ? int(lane - delta) : -1;
    });
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
    return sim::collective(mask, sim::BALLOT, predicate != 0, "__ballot_sync",
                           [](const unsigned long long* v, unsigned m) {
        unsigned out = 0;
        for (unsigned i = 0; i < 32; ++i)
            if (((m >> i) & 1u) && v[i]) out |= 1u << i;
        return out;
    });
}
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) == mask; }
inline unsigned __activemask() {
    sim::Warp& w = sim::self.launch->warps[sim::self.warp];
    std::lock_guard<std::mutex> lock(w.mu);
    return ~w.exited;
}

// Atomics (std::atomic_ref makes them real atomics for ThreadSanitizer too).
template <class T> inline T atomicAdd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_add(v); }
template <class T> inline T atomicSub(T* p, T v) { return std::atomic_ref<T>(*p).fetch_sub(v); }
template <class T> inline T atomicExch(T* p, T v) { return std::atomic_ref<T>(*p).exchange(v); }
template <class T> inline T atomicOr(T* p, T v) { return std::atomic_ref<T>(*p).fetch_or(v); }
template <class T> inline T atomicAnd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_and(v); }
template <class T> inline T atomicCAS(T* p, T expected, T desired) {
    std::atomic_ref<T>(*p).compare_exchange_strong(expected, desired);
    return expected;
}
template <class T> inline T atomicMin(T* p, T v) {
    std::atomic_ref<T> a(*p);
    T old = a.load();
    while (v < old && !a.compare_exchange_weak(old, v)) {}
    return old;
}
template <class T> inline T atomicMax(T* p, T v) {
    std::atomic_ref<T> a(*p);
    T old = a.load();
    while (v > old && !a.compare_exchange_weak(old, v)) {}
    return old;
}

// Intrinsics: the fast-math ones map to the accurate functions (agreement is checked with tolerances anyway).
template <class T> inline T __ldg(const T* p) { return *p; }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
inline long long __double_as_longlong(double d) { long long i; std::memcpy(&i, &d, 8); return i; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
using std::exp; using std::log; using std::sqrt; using std::tanh; using std::fabs; using std::fmax; using std::fmin;
using std::isnan; using std::isinf; using std::isfinite;
