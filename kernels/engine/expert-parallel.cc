// MoE dispatch/combine across the ranks of an expert-parallel group (see expert-parallel.h).
#include "engine/expert-parallel.h"

#include <algorithm>
#include <cstring>

namespace lm {

namespace {

uint64_t fnv(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

template <class T>
uint64_t fnv_value(uint64_t h, T v) {
  return fnv(h, &v, sizeof v);
}

struct CountsMsg {
  uint64_t step;
  uint32_t layer;
  uint32_t rows;
};

}  // namespace

ExpertParallel::ExpertParallel(const ModelSpec& spec, const GroupOptions& group) : spec_(spec), group_(group) {
  const int W = group.world_size, nE = spec.n_routed_experts;
  if (W < 1) throw Error("group: world_size must be >= 1");
  if (group.rank < 0 || group.rank >= W) throw Error("group: rank " + std::to_string(group.rank) + " outside [0, " + std::to_string(W) + ")");
  held_.assign(static_cast<size_t>(std::max(nE, 0)), W == 1 ? 1 : 0);
  if (W > 1) {
    if (group.collective_timeout_ms < 1 || group.rendezvous_timeout_ms < 1) throw Error("group: timeouts must be >= 1 ms");
    if (group.leader_address.empty()) throw Error("group: a leader address (host:port of rank 0) is required when world_size > 1");
    if (spec.count(BlockKind::MoE) > 0 && static_cast<int>(group.expert_ranks.size()) != nE)
      throw Error("group: the shard plan places " + std::to_string(group.expert_ranks.size()) + " experts, the model has " + std::to_string(nE));
    for (size_t e = 0; e < group.expert_ranks.size(); ++e) {
      const auto& holders = group.expert_ranks[e];
      if (holders.empty()) throw Error("group: expert " + std::to_string(e) + " has no rank in the shard plan");
      for (size_t i = 0; i < holders.size(); ++i) {
        if (holders[i] < 0 || holders[i] >= W) throw Error("group: expert " + std::to_string(e) + " placed on rank " + std::to_string(holders[i]) + " outside [0, " + std::to_string(W) + ")");
        if (std::find(holders.begin(), holders.begin() + static_cast<std::ptrdiff_t>(i), holders[i]) != holders.begin() + static_cast<std::ptrdiff_t>(i))
          throw Error("group: expert " + std::to_string(e) + " placed twice on rank " + std::to_string(holders[i]));
        if (holders[i] == group.rank && e < held_.size()) held_[e] = 1;
      }
    }
  }
  // ranks must agree on everything that decides where a token goes and how wide it is
  uint64_t h = 1469598103934665603ull;
  h = fnv_value(h, W);
  h = fnv_value(h, nE);
  h = fnv_value(h, spec.num_experts_per_tok);
  h = fnv_value(h, spec.moe_input_size());
  h = fnv_value(h, spec.hidden_size);
  h = fnv(h, spec.pattern.data(), spec.pattern.size());
  for (const auto& holders : group.expert_ranks) {
    h = fnv_value(h, static_cast<int>(holders.size()));
    for (int r : holders) h = fnv_value(h, r);
  }
  fingerprint_ = h;
  num_counts_ = static_cast<size_t>(spec.count(BlockKind::MoE)) * static_cast<size_t>(std::max(nE, 0));
  counts_ = std::make_unique<std::atomic<uint64_t>[]>(num_counts_);
  for (size_t i = 0; i < num_counts_; ++i) counts_[i].store(0, std::memory_order_relaxed);
}

std::vector<uint64_t> ExpertParallel::token_counts() const {
  std::vector<uint64_t> out(num_counts_);
  for (size_t i = 0; i < num_counts_; ++i) out[i] = counts_[i].load(std::memory_order_relaxed);
  return out;
}

void ExpertParallel::connect() {
  if (group_.world_size > 1 && !transport_) transport_ = std::make_unique<Transport>(group_, fingerprint_);
}

void ExpertParallel::abort(const std::string& reason) {
  if (transport_) transport_->close(reason);
}

int ExpertParallel::owner(int expert, int64_t row) const {
  if (held_[static_cast<size_t>(expert)]) return group_.rank;
  const auto& holders = group_.expert_ranks[static_cast<size_t>(expert)];
  return holders[static_cast<size_t>((group_.rank + row) % static_cast<int64_t>(holders.size()))];
}

void ExpertParallel::exchange(std::vector<std::vector<char>>& send, std::vector<std::vector<char>>& recv, const std::string& what) {
  const int me = group_.rank;
  recv[me] = std::move(send[me]);
  if (group_.world_size == 1) return;
  if (!transport_) throw Error("group: " + what + " before connect()");
  transport_->exchange(send, recv, what);
}

int64_t ExpertParallel::begin_step(int64_t num_tokens) {
  ++step_;
  const int W = group_.world_size;
  if (W == 1) return num_tokens;
  const int64_t header[2] = {static_cast<int64_t>(step_), num_tokens};
  std::vector<std::vector<char>> send(static_cast<size_t>(W)), recv(static_cast<size_t>(W), std::vector<char>(sizeof header));
  for (auto& b : send) b.assign(reinterpret_cast<const char*>(header), reinterpret_cast<const char*>(header) + sizeof header);
  exchange(send, recv, "step " + std::to_string(step_) + " header");
  int64_t total = 0;
  for (int p = 0; p < W; ++p) {
    int64_t got[2];
    std::memcpy(got, recv[p].data(), sizeof got);
    if (got[0] != static_cast<int64_t>(step_)) {
      const std::string msg = "rank " + std::to_string(p) + " is at step " + std::to_string(got[0]) + ", this rank at step " + std::to_string(step_) + " (out of lockstep)";
      abort(msg);
      throw Error("expert-parallel group: rank " + std::to_string(group_.rank) + ": " + msg);
    }
    total += got[1];
  }
  return total;
}

void ExpertParallel::dispatch_combine(int moe_index, const float* v, int64_t R, const int32_t* chosen, const float* weight, const ExpertFn& run, float* routed) {
  const int W = group_.world_size, me = group_.rank;
  const int64_t k = spec_.num_experts_per_tok, D = spec_.moe_input_size(), nE = spec_.n_routed_experts;
  const size_t row_bytes = static_cast<size_t>(k) * sizeof(int32_t) + static_cast<size_t>(D) * sizeof(float);
  const std::string where = "MoE layer " + std::to_string(moe_index) + " of step " + std::to_string(step_);
  std::vector<uint64_t> counts(static_cast<size_t>(nE), 0);

  // 1. owners; pair_slot = the pair's index in its owner's return stream (row order, then k order)
  std::vector<int32_t> pair_rank(static_cast<size_t>(R * k)), pair_slot(static_cast<size_t>(R * k));
  std::vector<int64_t> pairs_to(static_cast<size_t>(W), 0);
  std::vector<std::vector<char>> send(static_cast<size_t>(W)), recv(static_cast<size_t>(W));
  std::vector<uint32_t> rows_to(static_cast<size_t>(W), 0);
  std::vector<int32_t> hdr(static_cast<size_t>(k));
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t j = 0; j < k; ++j) {
      ++counts[chosen[r * k + j]];
      pair_rank[r * k + j] = owner(chosen[r * k + j], r);
    }
    for (int64_t j = 0; j < k; ++j) {
      const int o = pair_rank[r * k + j];
      bool first = true;
      for (int64_t i = 0; i < j; ++i) first = first && pair_rank[r * k + i] != o;
      if (!first) continue;  // this row already went to o with an earlier expert
      for (int64_t i = 0; i < k; ++i) {
        hdr[i] = pair_rank[r * k + i] == o ? chosen[r * k + i] : -1;
        if (hdr[i] >= 0) pair_slot[r * k + i] = static_cast<int32_t>(pairs_to[o]++);
      }
      auto& b = send[o];
      const char* h = reinterpret_cast<const char*>(hdr.data());
      const char* x = reinterpret_cast<const char*>(v + r * D);
      b.insert(b.end(), h, h + k * sizeof(int32_t));
      b.insert(b.end(), x, x + D * sizeof(float));
      ++rows_to[o];
    }
  }

  for (int64_t e = 0; e < nE; ++e)
    if (counts[e]) counts_[static_cast<size_t>(moe_index * nE + e)].fetch_add(counts[e], std::memory_order_relaxed);

  // 2. counts first, so every receiver sizes its buffers
  std::vector<uint32_t> rows_from(static_cast<size_t>(W), 0);
  if (W > 1) {
    std::vector<std::vector<char>> cs(static_cast<size_t>(W)), cr(static_cast<size_t>(W), std::vector<char>(sizeof(CountsMsg)));
    for (int p = 0; p < W; ++p) {
      const CountsMsg m{step_, static_cast<uint32_t>(moe_index), rows_to[p]};
      cs[p].assign(reinterpret_cast<const char*>(&m), reinterpret_cast<const char*>(&m) + sizeof m);
    }
    exchange(cs, cr, where + " counts");
    for (int p = 0; p < W; ++p) {
      if (p == me) continue;
      CountsMsg m;
      std::memcpy(&m, cr[p].data(), sizeof m);
      if (m.step != step_ || m.layer != static_cast<uint32_t>(moe_index)) {
        const std::string msg = "rank " + std::to_string(p) + " is at MoE layer " + std::to_string(m.layer) + " of step " + std::to_string(m.step) + ", this rank at " + where + " (out of lockstep)";
        abort(msg);
        throw Error("expert-parallel group: rank " + std::to_string(me) + ": " + msg);
      }
      rows_from[p] = m.rows;
    }
  }
  rows_from[me] = rows_to[me];

  // 3. dispatch
  for (int p = 0; p < W; ++p)
    if (p != me) recv[p].resize(rows_from[p] * row_bytes);
  exchange(send, recv, where + " dispatch");

  // 4. run each held expert once over every row it received
  struct Pair {
    int src;
    int64_t row, out;
  };
  std::vector<std::vector<Pair>> by_expert(static_cast<size_t>(nE));
  std::vector<int64_t> out_pairs(static_cast<size_t>(W), 0);
  for (int s = 0; s < W; ++s) {
    for (int64_t i = 0; i < rows_from[s]; ++i) {
      const auto* h = reinterpret_cast<const int32_t*>(recv[s].data() + i * row_bytes);
      for (int64_t j = 0; j < k; ++j) {
        const int32_t e = h[j];
        if (e < 0) continue;
        if (e >= nE || !holds(e)) {
          const std::string msg = "rank " + std::to_string(s) + " sent a token for expert " + std::to_string(e) + ", which this rank does not hold (" + where + "; shard plans differ)";
          abort(msg);
          throw Error("expert-parallel group: rank " + std::to_string(me) + ": " + msg);
        }
        by_expert[e].push_back({s, i, out_pairs[s]++});
      }
    }
  }
  std::vector<std::vector<char>> ret(static_cast<size_t>(W)), back(static_cast<size_t>(W));
  for (int s = 0; s < W; ++s) ret[s].resize(static_cast<size_t>(out_pairs[s] * D) * sizeof(float));
  std::vector<float> xin, y;
  for (int64_t e = 0; e < nE; ++e) {
    const auto& list = by_expert[e];
    if (list.empty()) continue;
    const int64_t m = static_cast<int64_t>(list.size());
    xin.resize(static_cast<size_t>(m * D));
    y.resize(static_cast<size_t>(m * D));
    for (int64_t i = 0; i < m; ++i) std::memcpy(xin.data() + i * D, recv[list[i].src].data() + list[i].row * row_bytes + k * sizeof(int32_t), D * sizeof(float));
    run(static_cast<int>(e), xin.data(), m, y.data());
    for (int64_t i = 0; i < m; ++i) std::memcpy(ret[list[i].src].data() + list[i].out * D * sizeof(float), y.data() + i * D, D * sizeof(float));
  }

  // 5. combine: outputs come back per pair; weights applied here in ascending expert order
  for (int p = 0; p < W; ++p)
    if (p != me) back[p].resize(static_cast<size_t>(pairs_to[p] * D) * sizeof(float));
  exchange(ret, back, where + " combine");
  std::fill_n(routed, R * D, 0.f);
  std::vector<int64_t> order(static_cast<size_t>(k));
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t j = 0; j < k; ++j) order[j] = j;
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return chosen[r * k + a] < chosen[r * k + b]; });
    float* dst = routed + r * D;
    for (int64_t j : order) {
      const float* out = reinterpret_cast<const float*>(back[pair_rank[r * k + j]].data()) + static_cast<int64_t>(pair_slot[r * k + j]) * D;
      const float w = weight[r * k + j];
      for (int64_t d = 0; d < D; ++d) dst[d] += w * out[d];
    }
  }
}

}  // namespace lm
