// Expert parallelism for the CPU backend: which routed experts this rank holds, the per-step
// lockstep header, and the MoE dispatch/combine over the group's transport.
//
// Per MoE layer, after the router and fc1_latent_proj ran locally on this rank's R rows:
//   1. each (row, chosen expert) pair gets an owner: this rank when it holds the expert, else one
//      of the expert's holders picked deterministically, (rank + row) mod #holders;
//   2. counts: every rank tells every other how many rows it will send (with the step number and
//      layer, so ranks that fell out of step fail loudly instead of mixing layers);
//   3. dispatch: each row goes once to each owner, as k int32 expert ids (-1 padded) + the
//      moe_input_size()-wide vector (the latent width for LatentMoE, not hidden);
//   4. owners run each expert once over all rows it received (from every rank, itself included);
//   5. combine: owners send back one unweighted output vector per pair, and the source adds
//      weight × output per row in ascending expert order — the single-process order, so results
//      are bit-for-bit those of one process, whatever the placement and arrival order.
// fc2_latent_proj and the shared expert then run locally (cpu_engine.cc).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "engine.h"
#include "engine/transport.h"

namespace lm {

class ExpertParallel {
 public:
  /** Validates the placement; does not connect yet (weights load first, then connect()). */
  ExpertParallel(const ModelSpec& spec, const GroupOptions& group);

  /** Rendezvous with the other ranks (no-op for a group of one). */
  void connect();

  int rank() const { return group_.rank; }
  int world_size() const { return group_.world_size; }
  /** True when this rank holds a copy of `expert` (always, for a group of one). */
  bool holds(int expert) const { return held_[static_cast<size_t>(expert)] != 0; }

  /**
   * Lockstep header of one step: all ranks exchange their token counts. Returns the group's
   * total; 0 means nobody has work and the step ends on every rank.
   */
  int64_t begin_step(int64_t num_tokens);

  /** y (m, D) = expert(x (m, D)) for an expert this rank holds. */
  using ExpertFn = std::function<void(int expert, const float* x, int64_t m, float* y)>;

  /**
   * Steps 1–5 above for MoE layer `moe_index` (ordinal among MoE layers). v (R, D), chosen and
   * weight (R, k); routed (R, D) receives Σ weight × expert output (it is overwritten).
   */
  void dispatch_combine(int moe_index, const float* v, int64_t R, const int32_t* chosen, const float* weight, const ExpertFn& run, float* routed);

  /** Tokens of this rank's rows routed to each expert, (MoE layers, experts), since load; safe during a step. */
  std::vector<uint64_t> token_counts() const;

  /** Breaks the group (peers fail at once); later collectives throw `reason`. */
  void abort(const std::string& reason);

 private:
  const ModelSpec spec_;
  const GroupOptions group_;
  std::vector<char> held_;  // per expert
  uint64_t fingerprint_ = 0;
  uint64_t step_ = 0;
  size_t num_counts_ = 0;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // read by the addon while a step runs
  std::unique_ptr<Transport> transport_;

  int owner(int expert, int64_t row) const;
  void exchange(std::vector<std::vector<char>>& send, std::vector<std::vector<char>>& recv, const std::string& what);
};

}  // namespace lm
