// row_pool.h: the threads rows.cpp and updates.cpp split a call's rows over.
//
// Why not Python's thread pool: handing parts to workers and collecting them under the GIL costs more than a
// whole small row op; here the split happens inside one ctypes call, which has released the GIL.
//
// Parts are claimed, not assigned: the caller claims parts itself until none is left, and waits only for parts
// a worker has claimed. In training, OpenBLAS's threads spin on every core for a while after each matrix
// product; a worker that the scheduler does not run then simply claims nothing instead of holding up the
// caller. Idle workers sleep on a condition variable after SPIN_US, so the pool takes little from the BLAS
// products between row ops; but where jobs come back to back (row ops one after another, nothing between them
// that needs the cores), they spin for BACK_TO_BACK_US, since waking a sleeping thread takes about as long as a
// row op of a few MB. (The numbers behind these choices: docs/measurements/, the CPU notes.)
#pragma once
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <system_error>
#include <thread>

// In an unnamed namespace: each library that includes this has a pool of its own (two builds loaded in one
// process, as scripts/compare_cpu_kernels.py does, would otherwise share the first one's, whatever its layout).
namespace {
namespace row_pool {

constexpr int64_t MIN_PART_ELEMENTS = 1 << 17;  // fewer, and waking a thread costs more than it saves
constexpr int64_t PARTS_PER_THREAD = 4;          // claimed as they come: a slow thread holds up less
constexpr int SPIN_US = 5;
constexpr int BACK_TO_BACK_US = 100;  // a job started within this of the last one's end: the next may be as near

class Pool {
  public:
    // body(r0, r1) over rows [0, rows) in contiguous parts of at least MIN_PART_ELEMENTS, on the calling thread
    // and up to threads - 1 workers. A second caller while a job runs does its rows in its own thread.
    template <class Body>
    void run(int64_t rows, int64_t cols, int threads, Body& body) {
        int64_t parts = threads * PARTS_PER_THREAD;
        const int64_t by_size = rows * cols / MIN_PART_ELEMENTS;
        if (parts > by_size) parts = by_size;
        if (parts > rows) parts = rows;
        if (parts > 0xffff) parts = 0xffff;
        if (parts > threads) parts -= parts % threads;  // equal shares: of 3 parts on 2 threads one takes 2/3
        std::unique_lock<std::mutex> busy(call_, std::try_to_lock);
        if (threads <= 1 || parts <= 1 || !busy.owns_lock()) {
            body(0, rows);
            return;
        }
        grow(threads - 1);
        const int64_t started = now_us();
        spin_us_.store(started - last_end_us_ < BACK_TO_BACK_US ? BACK_TO_BACK_US : SPIN_US,
                       std::memory_order_relaxed);
        rows_ = rows;
        job_ = &body;
        call_part_ = [](void* job, int64_t r0, int64_t r1) { (*static_cast<Body*>(job))(r0, r1); };
        done_.store(0, std::memory_order_relaxed);
        const uint64_t generation = (ticket_.load(std::memory_order_relaxed) >> 32) + 1;
        {
            std::lock_guard<std::mutex> lock(wake_);
            ticket_.store(generation << 32 | uint64_t(parts) << 16, std::memory_order_release);
        }
        sleeping_.notify_all();
        claim_parts(generation);
        while (done_.load(std::memory_order_acquire) != parts) pause();
        last_end_us_ = now_us();
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
    // The ticket packs (generation << 32 | parts << 16 | next unclaimed part): one compare-and-swap claims a
    // part of exactly that job, so a worker that wakes late cannot claim from the next one. The job's fields
    // stay valid while any of its parts runs: the caller waits for all of them before it writes the next.
    void claim_parts(uint64_t generation) {
        uint64_t ticket = ticket_.load(std::memory_order_acquire);
        for (;;) {
            const int64_t parts = int64_t(ticket >> 16 & 0xffff), next = int64_t(ticket & 0xffff);
            if (ticket >> 32 != generation || next >= parts) return;
            if (!ticket_.compare_exchange_weak(ticket, ticket + 1, std::memory_order_acq_rel,
                                               std::memory_order_acquire))
                continue;
            call_part_(job_, rows_ * next / parts, rows_ * (next + 1) / parts);
            done_.fetch_add(1, std::memory_order_release);
            ticket = ticket_.load(std::memory_order_acquire);
        }
    }

    // Start workers up to `workers`; where the system refuses a thread (a container's process limit), go on with
    // those there are (parts are claimed, so the caller alone can finish a job) rather than abort the process.
    void grow(int64_t workers) {
        while (workers_ < workers) {
            try {
                std::thread([this, seen = ticket_.load() >> 32] { work(seen); }).detach();
            } catch (const std::system_error&) {
                return;
            }
            ++workers_;
        }
    }

    void work(uint64_t seen) {
        for (;;) {
            const auto until = std::chrono::steady_clock::now() +
                               std::chrono::microseconds(spin_us_.load(std::memory_order_relaxed));
            while (generation() == seen && std::chrono::steady_clock::now() < until) pause();
            if (generation() == seen) {
                std::unique_lock<std::mutex> lock(wake_);
                sleeping_.wait(lock, [&] { return generation() != seen; });
            }
            seen = generation();
            claim_parts(seen);
        }
    }

    uint64_t generation() const { return ticket_.load(std::memory_order_acquire) >> 32; }

    static int64_t now_us() {
        return std::chrono::duration_cast<std::chrono::microseconds>(
                   std::chrono::steady_clock::now().time_since_epoch()).count();
    }

    static inline void pause() {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }

    std::mutex call_, wake_;
    std::condition_variable sleeping_;
    std::atomic<uint64_t> ticket_{0};
    std::atomic<int64_t> done_{0};
    std::atomic<int> spin_us_{SPIN_US};
    int64_t last_end_us_ = INT64_MIN / 2;  // the last job's end (written under call_)
    int64_t workers_ = 0;  // threads started
    int64_t rows_ = 0;
    void* job_ = nullptr;
    void (*call_part_)(void*, int64_t, int64_t) = nullptr;
};

}  // namespace row_pool
}  // namespace
