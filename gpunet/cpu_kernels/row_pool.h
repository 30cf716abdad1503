// row_pool.h: the threads rows.cpp splits a call's rows over.
//
// Why not Python's thread pool: handing a part to a worker and its result back under the GIL cost 0.1 ms a
// call (measured: a two-row op took 100 us through it, 7 us in one thread), as long as the whole backward of
// 16384 x 100 float32 rows on two cores. Here the caller runs the first part itself, workers spin for
// SPIN_US after a job (back-to-back ops find them awake) and then sleep on a condition variable, so an idle
// pool takes no CPU from the BLAS products between row ops.
#pragma once
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace row_pool {

constexpr int64_t MIN_PART_ELEMENTS = 1 << 15;  // fewer a thread, and waking it costs more than it saves
constexpr int SPIN_US = 30;

class Pool {
  public:
    // body(r0, r1) over rows [0, rows) in up to `threads` contiguous parts of at least MIN_PART_ELEMENTS;
    // the calling thread runs part 0. A second caller while a job runs gets the rows done in its own thread.
    template <class Body>
    void run(int64_t rows, int64_t cols, int threads, Body& body) {
        int64_t parts = threads;
        const int64_t by_size = rows * cols / MIN_PART_ELEMENTS;
        if (parts > by_size) parts = by_size;
        if (parts > rows) parts = rows;
        std::unique_lock<std::mutex> busy(call_, std::try_to_lock);
        if (parts <= 1 || !busy.owns_lock()) {
            body(0, rows);
            return;
        }
        grow(parts - 1);
        rows_ = rows;
        parts_ = parts;
        job_ = &body;
        call_part_ = [](void* job, int64_t r0, int64_t r1) { (*static_cast<Body*>(job))(r0, r1); };
        remaining_.store(workers_, std::memory_order_relaxed);
        {
            std::lock_guard<std::mutex> lock(wake_);
            generation_.fetch_add(1, std::memory_order_release);
        }
        sleeping_.notify_all();
        run_part(0);
        while (remaining_.load(std::memory_order_acquire) != 0) pause();
    }

    static Pool& instance() {
        // Never destroyed (its threads run until the process ends); a forked child, which has none of the
        // parent's threads, makes its own.
        static Pool* pool = nullptr;
        static pid_t owner = 0;
        static std::mutex made;
        std::lock_guard<std::mutex> lock(made);
        if (pool == nullptr || owner != getpid()) {
            pool = new Pool();
            owner = getpid();
        }
        return *pool;
    }

  private:
    void run_part(int64_t part) {
        if (part >= parts_) return;
        const int64_t r0 = rows_ * part / parts_, r1 = rows_ * (part + 1) / parts_;
        call_part_(job_, r0, r1);
    }

    void grow(int64_t workers) {
        while (workers_ < workers) {
            ++workers_;
            std::thread([this, part = workers_, seen = generation_.load()] { work(part, seen); }).detach();
        }
    }

    void work(int64_t part, uint64_t seen) {
        for (;;) {
            const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(SPIN_US);
            while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < until)
                pause();
            if (generation_.load(std::memory_order_acquire) == seen) {
                std::unique_lock<std::mutex> lock(wake_);
                sleeping_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
            }
            seen = generation_.load(std::memory_order_acquire);
            run_part(part);
            remaining_.fetch_sub(1, std::memory_order_acq_rel);
        }
    }

    static inline void pause() {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }

    std::mutex call_, wake_;
    std::condition_variable sleeping_;
    std::atomic<uint64_t> generation_{0};
    std::atomic<int64_t> remaining_{0};
    int64_t workers_ = 0;  // threads started, each running part 1, 2, ... of every job
    int64_t rows_ = 0, parts_ = 0;
    void* job_ = nullptr;
    void (*call_part_)(void*, int64_t, int64_t) = nullptr;
};

}  // namespace row_pool
