// A small fixed thread pool: the CPU backend's GEMMs use every core through parallel_for.
#include <condition_variable>
#include <mutex>

#include "cpu/ops.h"

namespace lm::cpu {

struct ThreadPool::State {
  std::mutex mu;
  std::condition_variable work_cv, done_cv;
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0, chunk = 0;
  int64_t next = 0;     // next range start to hand out
  int active = 0;       // workers still running the current job
  uint64_t generation = 0;
  bool stop = false;
};

ThreadPool::ThreadPool(int threads) : state_(std::make_unique<State>()) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < threads; ++i) {
    workers_.emplace_back([this] {
      State& s = *state_;
      uint64_t seen = 0;
      for (;;) {
        std::unique_lock<std::mutex> lock(s.mu);
        s.work_cv.wait(lock, [&] { return s.stop || s.generation != seen; });
        if (s.stop) return;
        seen = s.generation;
        while (s.next < s.n) {
          int64_t b = s.next, e = std::min(s.n, b + s.chunk);
          s.next = e;
          lock.unlock();
          (*s.fn)(b, e);
          lock.lock();
        }
        if (--s.active == 0) s.done_cv.notify_all();
      }
    });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stop = true;
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
  std::unique_lock<std::mutex> lock(s.mu);
  s.fn = &fn;
  s.n = n;
  s.chunk = (n + parts * 4 - 1) / (parts * 4);  // a few ranges per thread to even out imbalance
  if (s.chunk < min_chunk) s.chunk = min_chunk;
  s.next = 0;
  s.active = static_cast<int>(workers_.size());
  ++s.generation;
  s.work_cv.notify_all();
  while (s.next < s.n) {
    int64_t b = s.next, e = std::min(s.n, b + s.chunk);
    s.next = e;
    lock.unlock();
    fn(b, e);
    lock.lock();
  }
  s.done_cv.wait(lock, [&] { return s.active == 0; });
  s.fn = nullptr;
}

}  // namespace lm::cpu
