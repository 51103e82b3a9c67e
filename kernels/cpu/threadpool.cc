// A small fixed thread pool: the CPU backend's GEMMs use every core through parallel_for.
//
// A step calls parallel_for dozens of times a few microseconds apart, and waking a thread blocked
// on a condition variable takes tens of microseconds (more than a small model's whole GEMM), so
// workers spin on the job counter for a while after each job (SPIN_US: longer than the gaps inside
// a step and most between steps, short enough not to hold a core on a shared machine) and only then
// sleep; the caller hands out ranges through an atomic cursor. A worker joins a job only while it is
// open; the caller closes it once the ranges are gone and waits only for workers that joined, so a
// worker the OS has not scheduled (a busy machine) never holds up a step that the caller finished
// alone. An exception thrown by a range (on the caller or a worker) stops the hand-out and is rethrown by
// parallel_for once every worker has left the job, so it reaches the step's caller instead of ending the
// process.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>

#include "cpu/ops.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LM_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define LM_CPU_RELAX() asm volatile("yield" ::: "memory")
#else
#define LM_CPU_RELAX() ((void)0)
#endif

namespace lm::cpu {

namespace {
/** How long an idle worker polls for the next job before sleeping. */
constexpr auto SPIN_US = std::chrono::microseconds(500);
}  // namespace

struct ThreadPool::State {
  std::mutex mu;
  std::condition_variable work_cv;
  int sleepers = 0;  // workers waiting on work_cv (guarded by mu)
  std::atomic<bool> stop{false};  // set (under mu) before the last `generation` bump; read after seeing a bump
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0, chunk = 0;
  std::atomic<int64_t> next{0};        // next range start to hand out
  std::atomic<bool> open{false};       // workers may join the current job
  std::atomic<int> busy{0};            // workers inside the current job
  std::atomic<uint64_t> generation{0};  // bumped once per job (and on stop)
  std::mutex error_mu;
  std::exception_ptr error;  // the job's first exception (guarded by error_mu), rethrown by the caller

  /** Takes ranges of the current job until none is left; an exception ends the job's hand-out and is kept. */
  void drain() {
    for (;;) {
      const int64_t b = next.fetch_add(chunk, std::memory_order_relaxed);
      if (b >= n) return;
      try {
        (*fn)(b, std::min(n, b + chunk));
      } catch (...) {
        next.store(n, std::memory_order_relaxed);
        std::lock_guard<std::mutex> lock(error_mu);
        if (!error) error = std::current_exception();
        return;
      }
    }
  }
};

ThreadPool::ThreadPool(int threads) : state_(std::make_unique<State>()) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < threads; ++i) {
    workers_.emplace_back([this] {
      State& s = *state_;
      uint64_t seen = 0;
      for (;;) {
        uint64_t g = s.generation.load(std::memory_order_acquire);
        if (g == seen) {
          const auto until = std::chrono::steady_clock::now() + SPIN_US;
          for (int spins = 0; (g = s.generation.load(std::memory_order_acquire)) == seen; ++spins) {
            LM_CPU_RELAX();
            if ((spins & 255) == 255 && std::chrono::steady_clock::now() > until) break;
          }
        }
        if (g == seen) {
          std::unique_lock<std::mutex> lock(s.mu);
          ++s.sleepers;
          s.work_cv.wait(lock, [&] { return s.stop.load(std::memory_order_acquire) || s.generation.load(std::memory_order_acquire) != seen; });
          --s.sleepers;
          g = s.generation.load(std::memory_order_acquire);
        }
        // no lock here: the caller holds mu while it opens a job, and a worker that saw the bump would block on it
        if (s.stop.load(std::memory_order_acquire)) return;
        seen = g;
        // join only an open job (seq_cst pairs with the caller's close-then-check in parallel_for)
        s.busy.fetch_add(1, std::memory_order_seq_cst);
        if (s.open.load(std::memory_order_seq_cst)) s.drain();
        s.busy.fetch_sub(1, std::memory_order_release);
      }
    });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stop.store(true, std::memory_order_release);
    state_->generation.fetch_add(1, std::memory_order_acq_rel);
  }
  state_->work_cv.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t min_chunk) {
  if (n <= 0) return;
  const int64_t parts = std::min<int64_t>(size(), (n + min_chunk - 1) / min_chunk);
  if (parts <= 1 || workers_.empty()) {
    fn(0, n);
    return;
  }
  State& s = *state_;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.fn = &fn;
    s.n = n;
    s.chunk = std::max(min_chunk, (n + parts * 4 - 1) / (parts * 4));  // a few ranges per thread to even out imbalance
    s.next.store(0, std::memory_order_relaxed);
    s.open.store(true, std::memory_order_seq_cst);
    s.generation.fetch_add(1, std::memory_order_acq_rel);
    if (s.sleepers > 0) s.work_cv.notify_all();
  }
  s.drain();
  // no worker joins from now on; those that did must leave before `fn` goes out of scope
  s.open.store(false, std::memory_order_seq_cst);
  for (int spins = 0; s.busy.load(std::memory_order_seq_cst) != 0; ++spins) {
    if (spins < 256) LM_CPU_RELAX();
    else std::this_thread::yield();
  }
  // a range that threw (on any thread) fails the call here, after every worker has left the job
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lock(s.error_mu);
    std::swap(error, s.error);
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace lm::cpu
