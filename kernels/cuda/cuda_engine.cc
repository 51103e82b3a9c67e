// The CUDA backend's model runner (sm_90): the same forward pass as engine/cpu_engine.cc with bf16
// weights and GEMM inputs, an fp32 residual stream, fp32 SSM/conv state and a bf16 paged KV cache.
// Projections go through cuBLASLt; residual adds are fused into the output projections (beta = 1).
//
// Prefill sequences go through the chunked SSD kernel, decode tokens through the recurrence; tokens
// are sampled on the device, and logits rows come back to the host only when a sequence asks.
// The MoE layer runs on the device without host synchronisation: router, device-side plan
// (expert-major order and row tiles), one grouped GEMM launch per projection over all experts, and
// the weighted combine.
//
// Decode steps (every sequence feeds one token at a position > 0) are padded to a batch-size bucket
// (1, 2, 4, ... up to max_slots) and replayed from a CUDA graph captured once per bucket: the batch
// description goes through pinned staging into a fixed device buffer before the launch, every grid
// depends only on the bucket, padding rows run on a reserved scratch slot and scratch KV block that
// no sequence owns, and the sampled token ids are the only device→host copy (plus logits rows a
// sequence asked for). The first step of a bucket runs the same padded work eagerly (sizing the
// scratch buffers), then captures; a scratch reallocation re-captures. EngineOptions::cuda_graphs
// "off" turns this off (every step eager and unpadded); "padded" runs the padded decode eagerly
// without capture (the bitwise reference for replay).
//
// Decode steps (every sequence at most DECODE_STEP_MAX_LEN rows: plain decode and MTP verify) choose
// kernels by their sequence count, not their row count (choose_kernels): the skinny GEMM or
// cuBLASLt, the attention split count, the MoE path. The kernels chosen compute each row alone, so
// a verify step's k + 1 rows per sequence equal, bit for bit, the rows the plain decode steps of
// the same batch compute — greedy speculation is token-for-token exact — wherever the plain step's
// kernels are the row-independent ones: up to skinny_max_m (2) sequences (above, cuBLASLt's
// results follow M) and, for the MoE, up to 4 sequences with at most MOE_DECODE_MAX_ROWS rows.
// Decode steps of at most 4 sequences (moe_decode_rows_) take the small-batch MoE path
// (moe_decode.cu: router + shared up, routed up, routed + shared down with the combine: three
// launches), the conv and its state shift in in_proj's epilogue where in_proj takes the skinny
// kernel (else one launch after it), and one launch for attention's q, k and v; the decode kernels
// use programmatic dependent launch (launch.cuh). Developer switches, read once per engine for A/B
// timing: LM_CUDA_PDL=0 (plain launches), LM_CUDA_MOE_DECODE=N (moe_decode.cu for decode steps of
// at most N ≤ MOE_DECODE_MAX_ROWS sequences and rows; 0: the MoE through moe_plan and the grouped
// GEMM at every batch size), LM_CUDA_CONV_IN_PROJ=0 (the decode conv as its own launch),
// LM_CUDA_MOE_SPLIT_TAIL=0 (the grouped expert GEMM without its split last round),
// LM_CUDA_BEGIN_STEP=0 (a decode graph replayed on the pool thread, not the caller's).
// LM_CUDA_DEV_OMIT=stage,... leaves stages out of every step for leave-one-out timing of graph
// replays (the outputs are then wrong; the engine says so on stderr): norm (the blocks' input
// norms), gnorm (Mamba's gated norm), ssm (the state update / scan), kvw (the KV cache write),
// attn (the attention kernel), sample (device sampling).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>

#include "cuda/common.cuh"
#include "cuda/gemm.h"
#include "cuda/ops.h"
#include "engine/validate.h"
#include "engine/weights.h"

namespace lm {

std::unique_ptr<Engine> create_cuda_engine(const EngineOptions& options);

namespace {

using cuda::bf16;

/**
 * Device memory kept free after weights, state and KV for the scratch buffers, which grow on demand
 * (an 8K-token prefill at the Nano shape takes them to about 1.7 GiB, by their sizes; a step that
 * outgrows the free memory fails with the scratch allocation's error).
 */
constexpr uint64_t MEMORY_RESERVE_BYTES = 1ull << 30;

/** A developer switch: on unless the variable is set to "0". */
bool env_switch(const char* name) {
  const char* v = std::getenv(name);
  return !(v && std::strcmp(v, "0") == 0);
}

/** Appends v to *packed and returns where it starts (batch descriptions go up as one int32 array). */
size_t append(std::vector<int32_t>* packed, const std::vector<int32_t>& v) {
  const size_t at = packed->size();
  packed->insert(packed->end(), v.begin(), v.end());
  return at;
}

/** Device memory owned by the engine, freed on destruction; failures name what was being allocated. */
class DeviceArena {
 public:
  ~DeviceArena() {
    for (void* p : blocks_) cudaFree(p);
  }
  void* alloc(size_t bytes, const std::string& what) {
    void* p = nullptr;
    if (bytes == 0) bytes = 16;
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      throw Error("out of device memory allocating " + what + " (" + std::to_string(bytes >> 20) + " MiB; " + std::to_string(total_ >> 20) + " MiB allocated so far, " + std::to_string(free_b >> 20) + " MiB free of " + std::to_string(total_b >> 20) + " MiB)");
    }
    blocks_.push_back(p);
    total_ += bytes;
    return p;
  }
  template <class T>
  T* alloc_n(int64_t n, const std::string& what) {
    return static_cast<T*>(alloc(static_cast<size_t>(n) * sizeof(T), what));
  }
  size_t total() const { return total_; }

 private:
  std::vector<void*> blocks_;
  size_t total_ = 0;
};

/**
 * Grow-only scratch buffers, one per name. Every reallocation bumps generation(): captured decode
 * graphs hold raw pointers into these buffers and are re-captured when the generation moved.
 */
class Scratch {
 public:
  ~Scratch() {
    for (auto& [k, v] : bufs_) cudaFree(v.first);
  }
  template <class T>
  T* get(const char* name, int64_t n) {
    auto& b = bufs_[name];
    const size_t bytes = std::max<size_t>(16, static_cast<size_t>(n) * sizeof(T));
    if (b.second < bytes) {
      if (b.first) LM_CUDA_CHECK(cudaFree(b.first));
      b.first = nullptr;
      LM_CUDA_CHECK(cudaMalloc(&b.first, bytes));
      b.second = bytes;
      ++generation_;
    }
    return static_cast<T*>(b.first);
  }
  uint64_t generation() const { return generation_; }

 private:
  std::map<std::string, std::pair<void*, size_t>> bufs_;
  uint64_t generation_ = 0;
};

/**
 * Per-component step timing (EngineOptions::profile): hold() stops the stream while the host
 * enqueues the step, so the kernels then run back to back as in a graph replay instead of waiting
 * for the host's launches; mark(name) records an event where a component starts; finish() waits
 * for the step and charges each interval to the component that opened it (the gaps between its
 * kernels included, so the components sum to the step's device time).
 */
class Profiler {
 public:
  ~Profiler() {
    for (cudaEvent_t e : pool_) cudaEventDestroy(e);
    if (flag_) cudaFreeHost(flag_);
  }
  /** Holds the stream until release(), so the step's kernels run back to back (hold.cu). */
  void hold(cudaStream_t s) {
    if (!on) return;
    if (!flag_) {
      LM_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&flag_), sizeof(int), cudaHostAllocMapped));
      LM_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&dflag_), flag_, 0));
    }
    *reinterpret_cast<volatile int*>(flag_) = 0;
    cuda::hold_stream(dflag_, 100'000'000, s);  // 100 ms at most
  }
  void release() {
    if (flag_) *reinterpret_cast<volatile int*>(flag_) = 1;
  }
  bool on = false;
  std::string prefix;  // prepended to the names (the MTP head's blocks: "mtp.")
  void mark(const char* name, cudaStream_t s) {
    if (!on) return;
    if (used_ == pool_.size()) {
      cudaEvent_t e;
      LM_CUDA_CHECK(cudaEventCreate(&e));
      pool_.push_back(e);
    }
    LM_CUDA_CHECK(cudaEventRecord(pool_[used_], s));
    names_.push_back(prefix + name);
    ++used_;
  }
  void finish(cudaStream_t s) {
    if (!on || used_ == 0) return;
    mark("", s);
    LM_CUDA_CHECK(cudaEventSynchronize(pool_[used_ - 1]));
    for (size_t i = 0; i + 1 < used_; ++i) {
      float ms = 0.f;
      LM_CUDA_CHECK(cudaEventElapsedTime(&ms, pool_[i], pool_[i + 1]));
      auto it = std::find_if(sums_.begin(), sums_.end(), [&](const auto& p) { return p.first == names_[i]; });
      if (it == sums_.end()) sums_.emplace_back(names_[i], ms);
      else it->second += ms;
    }
    ++steps_;
    used_ = 0;
    names_.clear();
  }
  StepProfile take() {
    StepProfile p;
    p.steps = steps_;
    p.ms = std::move(sums_);
    sums_.clear();
    steps_ = 0;
    return p;
  }

 private:
  int* flag_ = nullptr;   // mapped pinned
  int* dflag_ = nullptr;  // its device address
  std::vector<cudaEvent_t> pool_;
  std::vector<std::string> names_;
  size_t used_ = 0;
  std::vector<std::pair<std::string, double>> sums_;
  int steps_ = 0;
};

struct Mamba {
  bf16 *in_proj, *out_proj;
  float *in_b, *out_b, *conv_w, *conv_b, *dt_bias, *A, *D, *norm;
  int index;
};
struct Attention {
  bf16 *q, *k, *v, *o;
  int index;
};
struct Mlp {
  bf16 *up, *down;
  float *up_b, *down_b;
};
struct Moe {
  bf16 *gate, *fc1, *fc2;
  float *bias, *fc1_b, *fc2_b;
  std::vector<bf16*> up, down;
  const bf16* const* up_table;    // (E) device array of the up pointers, for grouped_gemm
  const bf16* const* down_table;  // (E) likewise for down
  // All experts' up (E, inter, Din) and down (E, Din, inter) matrices are one array each, so the
  // grouped GEMM reads weight tiles by tensor copies (GroupedGemmParams::w_base).
  const bf16 *up_all, *down_all;
  Mlp shared;
};
struct Layer {
  BlockKind kind;
  float* norm;
  Mamba mamba{};
  Attention attn{};
  Mlp mlp{};
  Moe moe{};
};
/** The MTP head: u = eh_proj([enorm(embed(next token)) ; hnorm(hidden)]), its blocks, final_layernorm; lm_head shared. */
struct MtpHead {
  float *enorm = nullptr, *hnorm = nullptr, *final_norm = nullptr;
  bf16* eh_proj = nullptr;
  std::vector<Layer> blocks;
};

class CudaEngine final : public Engine {
 public:
  explicit CudaEngine(const EngineOptions& o) : spec_(o.spec), opts_(o) {
    validate_spec(spec_, opts_);
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
      cudaGetLastError();
      throw Error("no CUDA device is visible");
    }
    const std::string& g = o.cuda_graphs;
    if (g != "replay" && g != "padded" && g != "off") throw Error("cuda_graphs must be replay, padded or off (got '" + g + "')");
    prof_.on = o.profile;
    cuda::set_programmatic_launch(env_switch("LM_CUDA_PDL"));
    if (const char* rows = std::getenv("LM_CUDA_MOE_DECODE")) moe_decode_rows_ = std::clamp(std::atoi(rows), 0, cuda::MOE_DECODE_MAX_ROWS);
    conv_in_proj_ = env_switch("LM_CUDA_CONV_IN_PROJ");
    moe_split_tail_ = env_switch("LM_CUDA_MOE_SPLIT_TAIL");
    begin_on_caller_ = env_switch("LM_CUDA_BEGIN_STEP");
    if (const char* o = std::getenv("LM_CUDA_DEV_OMIT"); o && *o) {
      const char* names[] = {"norm", "gnorm", "ssm", "kvw", "attn", "sample"};  // bit i: the Omit values in order
      std::string list = o;
      for (size_t at = 0; at <= list.size();) {
        const size_t end = std::min(list.find(',', at), list.size());
        const std::string name = list.substr(at, end - at);
        if (name.empty()) {
          at = end + 1;
          continue;
        }
        const auto* hit = std::find_if(std::begin(names), std::end(names), [&](const char* n) { return name == n; });
        if (hit == std::end(names)) throw Error("LM_CUDA_DEV_OMIT: unknown stage '" + name + "' (norm, gnorm, ssm, kvw, attn, sample)");
        omit_ |= 1u << (hit - std::begin(names));
        at = end + 1;
      }
      std::fprintf(stderr, "cuda engine: LM_CUDA_DEV_OMIT=%s: stages left out for timing, outputs are wrong\n", o);
    }
    if (const char* t = std::getenv("LM_CUDA_GRAPH_TIMING"); t && std::strcmp(t, "1") == 0) {
      graph_timing_.on = true;
      LM_CUDA_CHECK(cudaEventCreate(&graph_timing_.start));
      LM_CUDA_CHECK(cudaEventCreate(&graph_timing_.end));
    }
    graph_mode_ = o.profile || g == "off" ? GraphMode::Off : g == "padded" ? GraphMode::PaddedEager : GraphMode::Replay;
    LM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    for (const auto& r : o.tensors) refs_[r.name] = r;
    load();
    allocate_state();
    allocate_decode_batch();
    LM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  ~CudaEngine() override {
    cudaStreamSynchronize(stream_);
    for (auto& [bucket, graph] : graphs_)
      if (graph.exec) cudaGraphExecDestroy(graph.exec);  // a null exec would leave cudaErrorInvalidValue behind
    if (h_decode_) cudaFreeHost(h_decode_);
    if (h_sampled_) cudaFreeHost(h_sampled_);
    cudaStreamDestroy(stream_);
  }

  EngineInfo info() const override {
    EngineInfo i;
    i.backend = "cuda";
    i.max_slots = opts_.max_slots;
    i.kv_block_size = opts_.kv_block_size;
    i.num_kv_blocks = kv_layers() > 0 ? opts_.num_kv_blocks : 0;
    i.num_parameters = num_parameters_;
    i.state_bytes_per_slot = static_cast<uint64_t>(n_mamba_) * (conv_state_size() + ssm_state_size()) * sizeof(float);
    return i;
  }

  std::vector<float> slot_state(int slot) const override {
    if (slot < 0 || slot >= opts_.max_slots) throw Error("slot_state: slot out of range");
    std::vector<float> out;
    for (int l = 0; l < n_mamba_; ++l) {
      std::vector<float> c(conv_state_size()), s(ssm_state_size());
      LM_CUDA_CHECK(cudaMemcpyAsync(c.data(), conv_state_ + (static_cast<int64_t>(l) * state_slots() + slot) * conv_state_size(), c.size() * 4, cudaMemcpyDeviceToHost, stream_));
      LM_CUDA_CHECK(cudaMemcpyAsync(s.data(), ssm_state_ + (static_cast<int64_t>(l) * state_slots() + slot) * ssm_state_size(), s.size() * 4, cudaMemcpyDeviceToHost, stream_));
      LM_CUDA_CHECK(cudaStreamSynchronize(stream_));
      out.insert(out.end(), c.begin(), c.end());
      out.insert(out.end(), s.begin(), s.end());
    }
    return out;
  }

  StepOutput step(const std::vector<StepSeq>& batch) override;
  bool begin_step(const std::vector<StepSeq>& batch) override;
  StepProfile take_profile() override { return prof_.take(); }

 private:
  enum class GraphMode { Off, PaddedEager, Replay };
  /** One captured decode step of a bucket; valid while the scratch generation is unchanged. */
  struct DecodeGraph {
    cudaGraphExec_t exec = nullptr;
    uint64_t scratch_generation = 0;
  };

  const ModelSpec spec_;
  const EngineOptions opts_;
  cudaStream_t stream_ = nullptr;
  DeviceArena arena_;
  Scratch scratch_;
  cuda::Gemm gemm_;
  std::map<std::string, TensorRef> refs_;
  uint64_t num_parameters_ = 0;
  uint64_t dummy_counter_ = 0;
  std::vector<Layer> layers_;
  bf16 *embed_ = nullptr, *lm_head_ = nullptr;
  float* norm_f_ = nullptr;
  int n_mamba_ = 0, n_attn_ = 0, n_mtp_attn_ = 0;
  /** Attention layers with a KV pool: the main model's, then the MTP head's. */
  int kv_layers() const { return n_attn_ + n_mtp_attn_; }
  MtpHead mtp_;
  // Per slot, the main model's last accepted position whose hidden state (after norm_f) the MTP head
  // has seen (-1: none), and the next token its MTP row was computed with (-1: not computed yet);
  // the hidden rows themselves stay on the device (mtp_hidden_, bf16, one row per state slot).
  std::vector<int64_t> mtp_pos_;
  std::vector<int32_t> mtp_token_;
  bf16* mtp_hidden_ = nullptr;
  float *conv_state_ = nullptr, *ssm_state_ = nullptr;
  bf16 *k_cache_ = nullptr, *v_cache_ = nullptr;

  Profiler prof_;
  GraphMode graph_mode_ = GraphMode::Replay;
  std::map<int, DecodeGraph> graphs_;  // bucket → captured decode step
  // The fixed decode batch description (decode_layout()): pinned host staging and its device copy,
  // written before every padded decode step; the graphs read it through fixed pointers.
  char* h_decode_ = nullptr;
  char* d_decode_ = nullptr;
  int32_t* d_sampled_ = nullptr;  // (max bucket) sampled token of each padded row
  // Decode steps of at most this many sequences (and MOE_DECODE_MAX_ROWS rows; other steps: of at
  // most this many rows) take moe_decode.cu's MoE. 4: on the H100 (Nano shape, kernels/dev/NOTES.md)
  // it beats moe_plan + the grouped GEMM by 0.6 / 0.9 / 0.3 ms per step at batch 1 / 2 / 4 (fewer
  // launches) and loses by 1.0 ms at batch 8, where ~40 distinct experts' weights dominate and the
  // grouped GEMM streams them faster.
  int moe_decode_rows_ = 4;
  // The sequence count kernel choices follow in this pass (choose_kernels), 0: its row count.
  int step_seqs_ = 0;
  // Decode rows on the skinny in_proj run the conv in its epilogue (one launch less per Mamba
  // layer); LM_CUDA_CONV_IN_PROJ=0: conv1d_silu_step after it.
  bool conv_in_proj_ = true;
  unsigned* moe_counters_ = nullptr;  // moe_decode's arrival counters (zeroed once, left zero by every launch)
  // The grouped expert GEMM's split last round (GroupedGemmParams::split_ws); LM_CUDA_MOE_SPLIT_TAIL=0: off.
  bool moe_split_tail_ = true;
  float* moe_split_ws_ = nullptr;
  unsigned* moe_split_counters_ = nullptr;  // zeroed once, left zero by every launch

  int32_t* h_sampled_ = nullptr;  // pinned
  /**
   * LM_CUDA_GRAPH_TIMING=1 (developer switch): device time of each decode graph replay, between
   * events around cudaGraphLaunch, and the host's time in the engine call (from its start to the
   * graph launch, and in all); the means per bucket go to stderr when the engine closes, to tell the
   * device's share of a step from the host's (a caller's wall time per step less the engine call is
   * the binding's and the caller's).
   */
  struct GraphTiming {
    bool on = false;
    cudaEvent_t start = nullptr, end = nullptr;
    std::chrono::steady_clock::time_point call_start, launched;
    struct Sums {
      int replays = 0;
      double device_ms = 0, enqueue_ms = 0, call_ms = 0;
    };
    std::map<int, Sums> per_bucket;
    void add(int bucket) {
      float ms = 0.f;
      LM_CUDA_CHECK(cudaEventElapsedTime(&ms, start, end));
      const auto now = std::chrono::steady_clock::now();
      auto& e = per_bucket[bucket];
      ++e.replays;
      e.device_ms += ms;
      e.enqueue_ms += std::chrono::duration<double, std::milli>(launched - call_start).count();
      e.call_ms += std::chrono::duration<double, std::milli>(now - call_start).count();
    }
    ~GraphTiming() {
      for (const auto& [bucket, e] : per_bucket)
        std::fprintf(stderr, "cuda engine: decode graph bucket %d: %d replays, %.4f ms of device time each; host %.4f ms from the call's start to the launch, %.4f ms in the call\n", bucket,
                     e.replays, e.device_ms / e.replays, e.enqueue_ms / e.replays, e.call_ms / e.replays);
      if (start) cudaEventDestroy(start);
      if (end) cudaEventDestroy(end);
    }
  } graph_timing_;
  int decode_table_capacity_ = 0;  // int32 entries of the block-table region

  /** Slot max_slots and KV block num_kv_blocks are reserved for padding rows. */
  int state_slots() const { return opts_.max_slots + 1; }
  int scratch_slot() const { return opts_.max_slots; }
  int scratch_kv_block() const { return opts_.num_kv_blocks; }
  int max_bucket() const { return opts_.max_slots; }
  int bucket_of(int nseq) const {
    int b = 1;
    while (b < nseq) b *= 2;
    return std::min(b, max_bucket());
  }
  int64_t conv_state_size() const { return spec_.conv_state_floats(); }
  int64_t ssm_state_size() const { return spec_.ssm_state_floats(); }
  /** Elements of one attention layer's K (or V) pool, the padding rows' scratch block included. */
  int64_t kv_layer_size() const { return static_cast<int64_t>(opts_.num_kv_blocks + 1) * opts_.kv_block_size * spec_.num_key_value_heads * spec_.head_dim; }

  /** Byte offsets of the fixed decode description: SampleRow[MB], then int32 arrays of MB, then the tables. */
  struct DecodeLayout {
    size_t sample_rows, tokens, slot, row0, len, pos0, bt0, row_seq, logit_rows, tables, bytes;
  };
  DecodeLayout decode_layout() const {
    const size_t mb = static_cast<size_t>(max_bucket()), ints = mb * sizeof(int32_t);
    DecodeLayout l{};
    l.sample_rows = 0;
    l.tokens = mb * sizeof(cuda::SampleRow);
    l.slot = l.tokens + ints;
    l.row0 = l.slot + ints;
    l.len = l.row0 + ints;
    l.pos0 = l.len + ints;
    l.bt0 = l.pos0 + ints;
    l.row_seq = l.bt0 + ints;
    l.logit_rows = l.row_seq + ints;
    l.tables = l.logit_rows + ints;
    l.bytes = l.tables + static_cast<size_t>(decode_table_capacity_) * sizeof(int32_t);
    return l;
  }

  static int dtype_code(DType d) { return d == DType::F32 ? 0 : d == DType::BF16 ? 1 : 2; }

  /** Uploads a checkpoint tensor's raw bytes to a staging buffer; returns it with its dtype code. */
  std::pair<void*, int> upload(const std::string& name, const std::vector<int64_t>& shape) {
    auto it = refs_.find(name);
    if (it == refs_.end()) throw Error("missing tensor " + name + " (expected shape " + shape_str(shape) + ")");
    const std::vector<char> raw = read_tensor_bytes(it->second, shape);
    void* staging = scratch_.get<char>("load-staging", static_cast<int64_t>(raw.size()));
    // On the engine's stream: a plain cudaMemcpy from pageable memory may return before its DMA
    // lands, on the legacy stream, which the non-blocking stream_ does not wait for — the
    // conversion kernel then read a partly copied staging buffer (weights differing run to run).
    LM_CUDA_CHECK(cudaMemcpyAsync(staging, raw.data(), raw.size(), cudaMemcpyHostToDevice, stream_));
    LM_CUDA_CHECK(cudaStreamSynchronize(stream_));  // `raw` goes out of scope here
    return {staging, dtype_code(it->second.dtype)};
  }

  static int64_t numel(const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }

  bf16* mat(const std::string& name, const std::vector<int64_t>& shape, float dummy_bound = 0.f) { return mat_at(arena_.alloc_n<bf16>(numel(shape), name), name, shape, dummy_bound); }

  /** Tensor `name` (bf16 on the device) written to d, which holds numel(shape) values. */
  bf16* mat_at(bf16* d, const std::string& name, const std::vector<int64_t>& shape, float dummy_bound = 0.f) {
    const int64_t n = numel(shape);
    if (opts_.dummy) {
      const float b = dummy_bound > 0.f ? dummy_bound : 1.f / std::sqrt(static_cast<float>(shape.back()));
      cuda::fill_dummy_bf16(d, n, opts_.dummy_seed * 1000003ull + ++dummy_counter_, -b, b, stream_);
    } else {
      auto [raw, code] = upload(name, shape);
      cuda::convert_to_bf16(raw, code, n, d, stream_);
      LM_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the staging buffer is reused
    }
    num_parameters_ += static_cast<uint64_t>(n);
    return d;
  }

  float* vec(const std::string& name, const std::vector<int64_t>& shape, Init init) {
    const int64_t n = numel(shape);
    float* d = arena_.alloc_n<float>(n, name);
    if (opts_.dummy) {
      const uint64_t seed = opts_.dummy_seed * 1000003ull + ++dummy_counter_;
      switch (init) {
        case Init::Norm: cuda::fill_dummy_f32(d, n, seed, 0.8f, 1.2f, 0, stream_); break;
        case Init::Ones: cuda::fill_dummy_f32(d, n, seed, 1.f, 1.f, 0, stream_); break;
        case Init::DtBias: cuda::fill_dummy_f32(d, n, seed, 0.f, 0.f, 1, stream_); break;
        case Init::ALog: cuda::fill_dummy_f32(d, n, seed, 0.f, 0.f, 2, stream_); break;
        case Init::Zero: cuda::fill_dummy_f32(d, n, seed, 0.f, 0.f, 0, stream_); break;
        default: {
          const float b = init == Init::Linear ? 1.f / std::sqrt(static_cast<float>(shape.back())) : 0.02f;
          cuda::fill_dummy_f32(d, n, seed, -b, b, 0, stream_);
        }
      }
    } else {
      auto [raw, code] = upload(name, shape);
      cuda::convert_to_f32(raw, code, n, d, stream_);
      LM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    }
    num_parameters_ += static_cast<uint64_t>(n);
    return d;
  }

  float* opt_vec(bool present, const std::string& name, const std::vector<int64_t>& shape) { return present ? vec(name, shape, Init::Bias) : nullptr; }

  Mlp load_mlp(const std::string& p, int64_t in, int64_t inter) {
    return {mat(p + "up_proj.weight", {inter, in}), mat(p + "down_proj.weight", {in, inter}), opt_vec(spec_.mlp_bias, p + "up_proj.bias", {inter}), opt_vec(spec_.mlp_bias, p + "down_proj.bias", {in})};
  }

  /** One block's weights under prefix `p` ("backbone.layers.{i}." or "mtp.layers.{j}."); `layer` seeds skewed dummy routing. */
  Layer load_block(BlockKind kind, const std::string& p, int layer) {
    const int64_t H = spec_.hidden_size;
    const std::string m = p + "mixer.";
    Layer L;
    L.kind = kind;
    L.norm = vec(p + "norm.weight", {H}, Init::Norm);
    switch (L.kind) {
      case BlockKind::Mamba: {
        const int64_t I = spec_.mamba_inner(), CD = spec_.conv_dim(), nh = spec_.mamba_num_heads, proj = I + CD + nh;
        auto& M = L.mamba;
        M.in_proj = mat(m + "in_proj.weight", {proj, H});
        M.in_b = opt_vec(spec_.mamba_proj_bias, m + "in_proj.bias", {proj});
        M.conv_w = vec(m + "conv1d.weight", {CD, 1, spec_.conv_kernel}, Init::Linear);
        M.conv_b = opt_vec(spec_.use_conv_bias, m + "conv1d.bias", {CD});
        M.dt_bias = vec(m + "dt_bias", {nh}, Init::DtBias);
        M.A = vec(m + "A_log", {nh}, Init::ALog);
        cuda::neg_exp(M.A, nh, stream_);
        M.D = vec(m + "D", {nh}, Init::Ones);
        M.norm = vec(m + "norm.weight", {I}, Init::Norm);
        M.out_proj = mat(m + "out_proj.weight", {H, I});
        M.out_b = opt_vec(spec_.mamba_proj_bias, m + "out_proj.bias", {H});
        M.index = n_mamba_++;
        break;
      }
      case BlockKind::Attention: {
        const int64_t qd = int64_t(spec_.num_attention_heads) * spec_.head_dim, kvd = int64_t(spec_.num_key_value_heads) * spec_.head_dim;
        auto& A = L.attn;
        A.q = mat(m + "q_proj.weight", {qd, H});
        A.k = mat(m + "k_proj.weight", {kvd, H});
        A.v = mat(m + "v_proj.weight", {kvd, H});
        A.o = mat(m + "o_proj.weight", {H, qd});
        A.index = n_attn_ + n_mtp_attn_;  // the MTP head's pools follow the main model's (loaded after it)
        if (p.rfind("mtp.", 0) == 0) ++n_mtp_attn_;
        else ++n_attn_;
        break;
      }
      case BlockKind::MLP:
        L.mlp = load_mlp(m, H, spec_.intermediate_size);
        break;
      case BlockKind::MoE: {
        auto& E = L.moe;
        const int64_t nE = spec_.n_routed_experts, Din = spec_.moe_input_size(), inter = spec_.moe_intermediate_size;
        E.gate = mat(m + "gate.weight", {nE, H});
        E.bias = vec(m + "gate.e_score_correction_bias", {nE}, Init::Bias);
        if (opts_.dummy && opts_.dummy_route_skew > 0.f) skew_routing(E.bias, static_cast<int>(nE), layer);
        E.fc1 = E.fc2 = nullptr;
        E.fc1_b = E.fc2_b = nullptr;
        if (spec_.moe_latent_size > 0) {
          const int64_t Lt = spec_.moe_latent_size;
          E.fc1 = mat(m + "fc1_latent_proj.weight", {Lt, H});
          E.fc1_b = opt_vec(spec_.mlp_bias, m + "fc1_latent_proj.bias", {Lt});
          E.fc2 = mat(m + "fc2_latent_proj.weight", {H, Lt});
          E.fc2_b = opt_vec(spec_.mlp_bias, m + "fc2_latent_proj.bias", {H});
        }
        bf16* up_all = arena_.alloc_n<bf16>(nE * inter * Din, m + "experts up");
        bf16* down_all = arena_.alloc_n<bf16>(nE * Din * inter, m + "experts down");
        for (int64_t e = 0; e < nE; ++e) {
          const std::string ep = m + "experts." + std::to_string(e) + ".";
          E.up.push_back(mat_at(up_all + e * inter * Din, ep + "up_proj.weight", {inter, Din}));
          E.down.push_back(mat_at(down_all + e * Din * inter, ep + "down_proj.weight", {Din, inter}));
        }
        E.up_all = up_all;
        E.down_all = down_all;
        E.up_table = pointer_table(E.up, m + "experts up pointers");
        E.down_table = pointer_table(E.down, m + "experts down pointers");
        E.shared = load_mlp(m + "shared_experts.", H, spec_.moe_shared_expert_intermediate_size);
        break;
      }
    }
    return L;
  }

  void load() {
    const int64_t H = spec_.hidden_size, V = spec_.vocab_size;
    embed_ = mat("backbone.embeddings.weight", {V, H}, 1.f);
    for (size_t i = 0; i < spec_.pattern.size(); ++i) layers_.push_back(load_block(static_cast<BlockKind>(spec_.pattern[i]), "backbone.layers." + std::to_string(i) + ".", static_cast<int>(i)));
    norm_f_ = vec("backbone.norm_f.weight", {H}, Init::Norm);
    lm_head_ = (opts_.dummy || refs_.count("lm_head.weight") || !spec_.tie_word_embeddings) ? mat("lm_head.weight", {V, H}) : embed_;
    if (opts_.mtp) load_mtp();
  }

  /** The released layout (kernels/dev/REFERENCE.md §10): mtp.layers.{j} for each char of the MTP pattern. */
  void load_mtp() {
    const int64_t H = spec_.hidden_size;
    const std::string first = "mtp.layers.0.", last = "mtp.layers." + std::to_string(spec_.mtp_pattern.size() - 1) + ".";
    mtp_.enorm = vec(first + "enorm.weight", {H}, Init::Norm);
    mtp_.hnorm = vec(first + "hnorm.weight", {H}, Init::Norm);
    mtp_.eh_proj = mat(first + "eh_proj.weight", {H, 2 * H});
    for (size_t j = 0; j < spec_.mtp_pattern.size(); ++j)
      mtp_.blocks.push_back(load_block(static_cast<BlockKind>(spec_.mtp_pattern[j]), "mtp.layers." + std::to_string(j) + ".", static_cast<int>(spec_.pattern.size() + j)));
    mtp_.final_norm = vec(last + "final_layernorm.weight", {H}, Init::Norm);
    mtp_pos_.assign(static_cast<size_t>(opts_.max_slots), -1);
    mtp_token_.assign(static_cast<size_t>(opts_.max_slots), -1);
  }

  /**
   * Dummy skewed routing: the correction bias of expert e becomes -skew · 0.1 · ln(1 + rank(e)) with
   * the experts in a per-layer shuffled order. 0.1 is about the spread of the dummy router's sigmoid
   * scores, so skew 1 gives a Zipf-like popularity (every expert still chosen), larger skew steeper.
   */
  void skew_routing(float* bias, int nE, int layer) {
    std::vector<int> order(static_cast<size_t>(nE));
    std::iota(order.begin(), order.end(), 0);
    uint64_t x = opts_.dummy_seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(layer) + 1;
    for (int i = nE - 1; i > 0; --i) {  // Fisher-Yates with splitmix64
      x += 0x9E3779B97F4A7C15ull;
      uint64_t z = x;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      z ^= z >> 31;
      std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(z % static_cast<uint64_t>(i + 1))]);
    }
    std::vector<float> b(static_cast<size_t>(nE));
    for (int r = 0; r < nE; ++r) b[static_cast<size_t>(order[static_cast<size_t>(r)])] = -opts_.dummy_route_skew * 0.1f * std::log(1.f + static_cast<float>(r));
    LM_CUDA_CHECK(cudaMemcpyAsync(bias, b.data(), b.size() * sizeof(float), cudaMemcpyHostToDevice, stream_));  // after the dummy fill on stream_
    LM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  /** A device copy of a list of device pointers (grouped kernels index experts through it). */
  const bf16* const* pointer_table(const std::vector<bf16*>& ptrs, const std::string& what) {
    bf16** table = arena_.alloc_n<bf16*>(static_cast<int64_t>(ptrs.size()), what);
    LM_CUDA_CHECK(cudaMemcpyAsync(table, ptrs.data(), ptrs.size() * sizeof(bf16*), cudaMemcpyHostToDevice, stream_));
    LM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return table;
  }

  /**
   * The memory budget: after the weights, the state slots and KV blocks asked for (one more of each
   * for padding rows) must fit in the free device memory less a reserve for scratch buffers (the
   * largest prefill's activations and MoE buffers) and cuBLASLt; otherwise one error names the numbers.
   */
  void check_memory_budget() const {
    size_t free_b = 0, total_b = 0;
    LM_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    const double MiB = 1024.0 * 1024.0;
    const uint64_t reserve = MEMORY_RESERVE_BYTES;
    const uint64_t slot_bytes = static_cast<uint64_t>(n_mamba_) * (conv_state_size() + ssm_state_size()) * sizeof(float);
    const uint64_t block_bytes = 2ull * kv_layers() * opts_.kv_block_size * spec_.num_key_value_heads * spec_.head_dim * sizeof(bf16);
    const uint64_t need = (opts_.max_slots + 1ull) * slot_bytes + (opts_.num_kv_blocks + 1ull) * block_bytes;
    const uint64_t budget = free_b > reserve ? free_b - reserve : 0;
    if (need <= budget) return;
    auto fmt = [&](double v) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.1f", v / MiB);
      return std::string(buf);
    };
    const uint64_t blocks_part = (opts_.num_kv_blocks + 1ull) * block_bytes, slots_part = (opts_.max_slots + 1ull) * slot_bytes;
    const int64_t max_slots = slot_bytes == 0 ? -1 : budget > blocks_part + slot_bytes ? static_cast<int64_t>((budget - blocks_part) / slot_bytes) - 1 : 0;
    const int64_t max_blocks = block_bytes == 0 ? -1 : budget > slots_part + block_bytes ? static_cast<int64_t>((budget - slots_part) / block_bytes) - 1 : 0;
    throw Error("device memory: " + std::to_string(opts_.max_slots) + " state slots × " + fmt(slot_bytes) + " MiB + " + std::to_string(opts_.num_kv_blocks) + " KV blocks × " + fmt(block_bytes) +
                " MiB = " + fmt(need) + " MiB do not fit in " + fmt(free_b) + " MiB free after " + fmt(arena_.total()) + " MiB of weights, less a " + fmt(reserve) +
                " MiB reserve for scratch; fits at most " + (max_slots < 0 ? std::string("any number of") : std::to_string(max_slots)) + " slots with these blocks, or " +
                (max_blocks < 0 ? std::string("any number of") : std::to_string(max_blocks)) + " KV blocks with these slots");
  }

  void allocate_state() {
    check_memory_budget();
    conv_state_ = arena_.alloc_n<float>(int64_t(n_mamba_) * state_slots() * conv_state_size(), "conv state");
    ssm_state_ = arena_.alloc_n<float>(int64_t(n_mamba_) * state_slots() * ssm_state_size(), "SSM state");
    k_cache_ = arena_.alloc_n<bf16>(int64_t(kv_layers()) * kv_layer_size(), "K cache");
    v_cache_ = arena_.alloc_n<bf16>(int64_t(kv_layers()) * kv_layer_size(), "V cache");
    if (opts_.mtp) mtp_hidden_ = arena_.alloc_n<bf16>(int64_t(state_slots()) * spec_.hidden_size, "MTP hidden rows");
    LM_CUDA_CHECK(cudaMemsetAsync(conv_state_, 0, sizeof(float) * int64_t(n_mamba_) * state_slots() * conv_state_size(), stream_));
    LM_CUDA_CHECK(cudaMemsetAsync(ssm_state_, 0, sizeof(float) * int64_t(n_mamba_) * state_slots() * ssm_state_size(), stream_));
    const int counters = cuda::moe_decode_counters(std::max(spec_.hidden_size, spec_.moe_input_size()));
    moe_counters_ = arena_.alloc_n<unsigned>(counters, "MoE decode counters");
    LM_CUDA_CHECK(cudaMemsetAsync(moe_counters_, 0, counters * sizeof(unsigned), stream_));
    if (moe_split_tail_ && spec_.n_routed_experts > 0) {
      const int split_counters = cuda::grouped_gemm_split_counters();
      moe_split_ws_ = arena_.alloc_n<float>(cuda::grouped_gemm_split_floats(), "MoE split-tail workspace");
      moe_split_counters_ = arena_.alloc_n<unsigned>(split_counters, "MoE split-tail counters");
      LM_CUDA_CHECK(cudaMemsetAsync(moe_split_counters_, 0, split_counters * sizeof(unsigned), stream_));
    }
  }

  void allocate_decode_batch() {
    // Distinct blocks of all sequences plus the padding rows' scratch block; a step whose tables
    // need more (shared prefix blocks counted per sequence) runs eagerly.
    decode_table_capacity_ = opts_.num_kv_blocks + max_bucket() + 1;
    const DecodeLayout l = decode_layout();
    d_decode_ = static_cast<char*>(arena_.alloc(l.bytes, "decode batch description"));
    d_sampled_ = arena_.alloc_n<int32_t>(max_bucket(), "decode sampled tokens");
    LM_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&h_decode_), l.bytes, cudaHostAllocDefault));
    LM_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&h_sampled_), max_bucket() * sizeof(int32_t), cudaHostAllocDefault));
  }

  /**
   * Kernel choices for a pass over batch b: a decode step's (every sequence at most
   * DECODE_STEP_MAX_LEN rows) follow its sequence count, so MTP verify rows take the kernels of the
   * plain decode step of the same batch; other steps' follow each call's rows.
   */
  void choose_kernels(const cuda::BatchView& b) {
    step_seqs_ = b.max_len <= cuda::DECODE_STEP_MAX_LEN ? b.nseq : 0;
    gemm_.choice_rows = step_seqs_;
  }
  /** Embedding, every layer and, for NL > 0 rows listed in logit_rows, the final norm and LM head. */
  float* forward(const cuda::BatchView& b, const int32_t* tokens, const int32_t* logit_rows, int NL);
  /** One block (pre-norm, mixer, residual add into h) over the batch's R rows; u is (R, H) bf16 scratch. */
  void run_block(const Layer& L, const cuda::BatchView& b, float* h, bf16* u, int R);
  StepOutput step_eager(const std::vector<StepSeq>& batch);
  /** Rolls verify sequences that rejected drafts back to their last accepted token (snapshot + replay of the stashed inputs). */
  void rollback(const std::vector<int>& seqs, const std::vector<StepSeq>& batch, const std::vector<int>& snap_index, const std::vector<int>& stash_row0, const std::vector<int>& keep,
                float* snap_conv, float* snap_ssm);
  /** The MTP head after the main model: its rows over the accepted positions, then the drafting passes. */
  void mtp_step(const std::vector<StepSeq>& batch, const std::vector<int32_t>& row0, const std::vector<int>& last, const bf16* hn_all, StepOutput& out);
  /** One pass of the MTP head over R rows (tokens and hidden rows on the device); returns its (R, H) bf16 output after final_layernorm. */
  bf16* mtp_pass(const cuda::BatchView& b, const int32_t* tokens, const bf16* hidden, int R);
  /** A batch description on the device: the view, the fed tokens in row order, and the caller's extra int32 array. */
  struct Uploaded {
    cuda::BatchView view;
    const int32_t* tokens = nullptr;
    const int32_t* extra = nullptr;
  };
  /** Packs and uploads (one copy, into scratch buffer `name`) the description of `seqs` and `extra`. */
  Uploaded upload_batch(const char* name, const std::vector<StepSeq>& seqs, const std::vector<int32_t>& extra);
  /** Verify steps stash each Mamba layer's in_proj output and conv output rows of the verify sequences (for rollback). */
  struct VerifyStash {
    const int32_t* rows = nullptr;  // (n) step rows to keep
    int n = 0;
    float* zx = nullptr;   // (mamba layers, n, in_proj width)
    float* xbc = nullptr;  // (mamba layers, n, conv_dim)
  } stash_;
  bool decode_fits(const std::vector<StepSeq>& batch) const;
  StepOutput step_decode(const std::vector<StepSeq>& batch);
  /** The first half of step_decode: the batch description up, then the graph replayed (or the bucket's first step run and captured); whether timed. */
  bool enqueue_decode(const std::vector<StepSeq>& batch);
  /** The second half: sampled tokens (and asked-for logits) back, once the step is done. */
  StepOutput finish_decode(const std::vector<StepSeq>& batch, bool timed);
  bool begun_ = false, begun_timed_ = false;  // begin_step replayed this step's graph
  bool begin_on_caller_ = true;                // LM_CUDA_BEGIN_STEP=0: begin_step starts nothing
  enum Omit : unsigned { OmitNorm = 1, OmitGnorm = 2, OmitSsm = 4, OmitKvw = 8, OmitAttn = 16, OmitSample = 32 };
  unsigned omit_ = 0;                          // LM_CUDA_DEV_OMIT (timing only)
  bool omit(Omit o) const { return (omit_ & o) != 0; }
  /** The padded decode step of a bucket from the fixed description: forward and sampling. */
  void decode_body(int bucket);

  void mlp(const Mlp& W, int64_t in, int64_t inter, const bf16* u, int R, float* h) {
    float* a = scratch_.get<float>("mlp-act", int64_t(R) * inter);
    bf16* a16 = scratch_.get<bf16>("mlp-act16", int64_t(R) * inter);
    if (!W.up_b) {  // relu² in the projection's epilogue where the skinny kernel runs it
      const cuda::SkinnyOut up{W.up, static_cast<int>(inter), nullptr, a16};
      gemm_.run_multi(u, R, in, &up, 1, a, stream_);
    } else {
      gemm_.run(u, R, in, W.up, inter, a, 0.f, stream_);
      cuda::add_bias(a, W.up_b, R, static_cast<int>(inter), stream_);
      cuda::relu2_bf16(a, int64_t(R) * inter, a16, stream_);
    }
    gemm_.run(a16, R, inter, W.down, in, h, 1.f, stream_);
    cuda::add_bias(h, W.down_b, R, static_cast<int>(in), stream_);
  }

  void moe(const Moe& E, const bf16* u, int R, float* h);
  /** The small-batch MoE path (moe_decode.cu); false (nothing enqueued) where its shapes do not fit. */
  bool moe_small(const Moe& E, const bf16* u, int R, float* h);
};

bool CudaEngine::moe_small(const Moe& E, const bf16* u, int R, float* h) {
  if ((step_seqs_ > 0 ? step_seqs_ : R) > moe_decode_rows_ || R > cuda::MOE_DECODE_MAX_ROWS || spec_.mlp_bias) return false;
  const int H = spec_.hidden_size, nE = spec_.n_routed_experts, k = spec_.num_experts_per_tok, Din = spec_.moe_input_size();
  const int inter = spec_.moe_intermediate_size, S = spec_.moe_shared_expert_intermediate_size;
  const bool latent = spec_.moe_latent_size > 0;
  cuda::MoeDecodeParams p{};
  p.R = R;
  p.x = u;
  p.H = H;
  p.gate = E.gate;
  p.correction_bias = E.bias;
  p.E = nE;
  p.n_group = spec_.n_group;
  p.topk_group = spec_.topk_group;
  p.k = k;
  p.norm_topk = spec_.norm_topk_prob;
  p.scaling = spec_.routed_scaling_factor;
  bf16* lat16 = latent ? scratch_.get<bf16>("moe-latent16", int64_t(R) * Din) : nullptr;
  p.v = latent ? lat16 : u;
  p.Din = Din;
  p.up = E.up_table;
  p.down = E.down_table;
  p.inter = inter;
  p.shared_up = latent ? nullptr : E.shared.up;  // a latent layer's shared expert writes H, not Din, columns: mlp() runs it
  p.shared_down = latent ? nullptr : E.shared.down;
  p.S = S;
  p.out = latent ? scratch_.get<float>("moe-routed", int64_t(R) * Din) : h;
  p.accumulate = !latent;
  p.logits = scratch_.get<float>("moe-logits", int64_t(R) * nE);
  p.ids = scratch_.get<int32_t>("moe-ids", int64_t(R) * k);
  p.weights = scratch_.get<float>("moe-weights", int64_t(R) * k);
  p.act = scratch_.get<bf16>("moe-act16", int64_t(R) * k * inter);
  p.shared_act = latent ? nullptr : scratch_.get<bf16>("mlp-act16", int64_t(R) * S);
  p.expert_out = scratch_.get<float>("moe-out", int64_t(R) * k * Din);
  p.shared_out = latent ? nullptr : scratch_.get<float>("moe-shared-out", int64_t(R) * Din);
  p.counters = moe_counters_;
  if (!cuda::moe_decode_supported(p)) return false;
  prof_.mark(latent ? "moe.router" : "moe.router+shared_up", stream_);
  cuda::moe_decode_route(p, stream_);
  if (latent) {
    float* lat = scratch_.get<float>("moe-latent", int64_t(R) * Din);
    prof_.mark("moe.latent_proj", stream_);
    gemm_.run(u, R, H, E.fc1, Din, lat, 0.f, stream_);
    cuda::add_bias(lat, E.fc1_b, R, Din, stream_);
    cuda::f32_to_bf16(lat, int64_t(R) * Din, lat16, stream_);
  }
  prof_.mark("moe.experts_up", stream_);
  cuda::moe_decode_up(p, stream_);
  prof_.mark(latent ? "moe.experts_down" : "moe.experts_down+shared_down", stream_);
  cuda::moe_decode_down(p, stream_);
  if (latent) {
    bf16* routed16 = scratch_.get<bf16>("moe-routed16", int64_t(R) * Din);
    prof_.mark("moe.combine", stream_);
    cuda::f32_to_bf16(p.out, int64_t(R) * Din, routed16, stream_);
    gemm_.run(routed16, R, Din, E.fc2, H, h, 1.f, stream_);
    cuda::add_bias(h, E.fc2_b, R, H, stream_);
    prof_.mark("moe.shared_expert", stream_);
    mlp(E.shared, H, S, u, R, h);
  }
  return true;
}

void CudaEngine::moe(const Moe& E, const bf16* u, int R, float* h) {
  const int H = spec_.hidden_size, nE = spec_.n_routed_experts, k = spec_.num_experts_per_tok, Din = spec_.moe_input_size();
  const int inter = spec_.moe_intermediate_size;
  if (moe_small(E, u, R, h)) return;
  float* logits = scratch_.get<float>("moe-logits", int64_t(R) * nE);
  prof_.mark("moe.router", stream_);
  gemm_.run(u, R, H, E.gate, nE, logits, 0.f, stream_);
  int32_t* ids = scratch_.get<int32_t>("moe-ids", int64_t(R) * k);
  float* weights = scratch_.get<float>("moe-weights", int64_t(R) * k);
  cuda::moe_route(logits, E.bias, R, nE, spec_.n_group, spec_.topk_group, k, spec_.norm_topk_prob, spec_.routed_scaling_factor, ids, weights, stream_);
  const bf16* v = u;
  if (spec_.moe_latent_size > 0) {
    float* lat = scratch_.get<float>("moe-latent", int64_t(R) * Din);
    bf16* lat16 = scratch_.get<bf16>("moe-latent16", int64_t(R) * Din);
    prof_.mark("moe.latent_proj", stream_);
    gemm_.run(u, R, H, E.fc1, Din, lat, 0.f, stream_);
    cuda::add_bias(lat, E.fc1_b, R, Din, stream_);
    cuda::f32_to_bf16(lat, int64_t(R) * Din, lat16, stream_);
    v = lat16;
  }
  // Expert-major plan, up projection with relu² (gathering token rows through the plan), down
  // projection: three launches whose grids depend only on R, so no host synchronisation.
  const int M = R * k, tile_rows = cuda::moe_tile_rows(M, nE), max_tiles = cuda::moe_plan_max_tiles(M, nE, tile_rows);
  cuda::MoePlan plan{scratch_.get<int32_t>("moe-src-row", M), scratch_.get<int32_t>("moe-slot-of", M), scratch_.get<int32_t>("moe-offsets", nE + 1),
                     scratch_.get<int4>("moe-tiles", max_tiles), scratch_.get<int32_t>("moe-num-tiles", 1)};
  prof_.mark("moe.plan", stream_);
  cuda::moe_plan(ids, R, k, nE, tile_rows, plan, stream_);
  prof_.mark("moe.experts", stream_);
  bf16* act16 = scratch_.get<bf16>("moe-act16", int64_t(M) * inter);  // (M, inter) expert-major
  float* xo = scratch_.get<float>("moe-out", int64_t(M) * Din);        // (M, Din) expert-major
  cuda::GroupedGemmParams up{v, Din, plan.src_row, E.up_table, inter, Din, plan.tiles, plan.num_tiles, max_tiles, tile_rows, act16, nullptr, moe_split_ws_, moe_split_counters_, E.up_all, int64_t(inter) * Din, nE};
  cuda::grouped_gemm(up, stream_);
  cuda::GroupedGemmParams down{act16, inter, nullptr, E.down_table, Din, inter, plan.tiles, plan.num_tiles, max_tiles, tile_rows, nullptr, xo, moe_split_ws_, moe_split_counters_, E.down_all, int64_t(Din) * inter, nE};
  cuda::grouped_gemm(down, stream_);
  if (spec_.moe_latent_size > 0) {
    float* routed = scratch_.get<float>("moe-routed", int64_t(R) * Din);
    bf16* routed16 = scratch_.get<bf16>("moe-routed16", int64_t(R) * Din);
    prof_.mark("moe.combine", stream_);
    cuda::moe_combine(xo, plan.slot_of, weights, R, k, Din, routed, false, stream_);
    cuda::f32_to_bf16(routed, int64_t(R) * Din, routed16, stream_);
    gemm_.run(routed16, R, Din, E.fc2, H, h, 1.f, stream_);
    cuda::add_bias(h, E.fc2_b, R, H, stream_);
  } else {
    prof_.mark("moe.combine", stream_);
    cuda::moe_combine(xo, plan.slot_of, weights, R, k, Din, h, true, stream_);
  }
  prof_.mark("moe.shared_expert", stream_);
  mlp(E.shared, H, spec_.moe_shared_expert_intermediate_size, u, R, h);
}

void CudaEngine::run_block(const Layer& L, const cuda::BatchView& b, float* h, bf16* u, int R) {
  const int H = spec_.hidden_size;
  prof_.mark("block_norm", stream_);
  if (!omit(OmitNorm)) cuda::rmsnorm_bf16(h, nullptr, R, H, L.norm, spec_.norm_eps, u, stream_);
  switch (L.kind) {
    case BlockKind::Mamba: {
      const auto& M = L.mamba;
      const int I = spec_.mamba_inner(), CD = spec_.conv_dim(), nh = spec_.mamba_num_heads, K = spec_.conv_kernel;
      const int proj = I + CD + nh;
      float* zx = scratch_.get<float>("mamba-zxbcdt", int64_t(R) * proj);
      float* xbc = scratch_.get<float>("mamba-xbc", int64_t(R) * CD);
      float* y = scratch_.get<float>("mamba-y", int64_t(R) * I);
      bf16* y16 = scratch_.get<bf16>("mamba-y16", int64_t(R) * I);
      float* cstate = conv_state_ + int64_t(M.index) * state_slots() * conv_state_size();
      prof_.mark("mamba.in_proj", stream_);
      // Decode rows on the skinny kernel: the conv and its state shift ride in in_proj's epilogue
      // (the xBC columns go to xbc, not zx; a verify step's stash needs them in zx).
      const bool conv_in_proj = conv_in_proj_ && b.rows == b.nseq && stash_.n == 0 && !M.in_b && K >= 1 && K <= 4 && gemm_.skinny(R, H, u, M.in_proj);
      if (conv_in_proj) {
        const cuda::SkinnyConv cv{I, CD, K, M.conv_w, M.conv_b, cstate, b.seq_slot, xbc};
        cuda::skinny_gemm_conv(u, R, H, M.in_proj, proj, zx, cv, stream_);
      } else {
        gemm_.run(u, R, H, M.in_proj, proj, zx, 0.f, stream_);
        cuda::add_bias(zx, M.in_b, R, proj, stream_);
      }
      if (!conv_in_proj) {
        prof_.mark("mamba.conv1d", stream_);
        if (b.rows == b.nseq) {  // one row per sequence: conv and state shift in one launch
          cuda::conv1d_silu_step(b, zx + I, proj, CD, K, M.conv_w, M.conv_b, cstate, xbc, stream_);
        } else {
          cuda::conv1d_silu(b, zx + I, proj, CD, K, M.conv_w, M.conv_b, cstate, xbc, stream_);
          cuda::conv_state_update(b, zx + I, proj, CD, K, cstate, stream_);
        }
      }
      if (stash_.n > 0) {
        cuda::gather_rows_f32(zx, proj, stash_.rows, stash_.n, proj, stash_.zx + int64_t(M.index) * stash_.n * proj, stream_);
        cuda::gather_rows_f32(xbc, CD, stash_.rows, stash_.n, CD, stash_.xbc + int64_t(M.index) * stash_.n * CD, stream_);
      }
      cuda::SsmParams sp{nh, spec_.mamba_head_dim, spec_.n_groups, spec_.ssm_state_size, xbc, CD, zx + I + CD, proj, M.dt_bias, M.A, M.D,
                         spec_.time_step_min, spec_.time_step_max, ssm_state_ + int64_t(M.index) * state_slots() * ssm_state_size(), y};
      prof_.mark("mamba.ssm", stream_);
      if (omit(OmitSsm)) {
        // timing only: the state update left out
      } else if (b.max_len > cuda::SSM_RECURRENT_MAX_LEN && cuda::ssd_chunked_supported(sp.head_dim, sp.dstate, spec_.chunk_size)) {
        float* cb = scratch_.get<float>("ssd-cb", cuda::ssd_chunked_workspace_floats(R, spec_.n_groups, spec_.chunk_size));
        cuda::ssd_chunked_scan(b, sp, spec_.chunk_size, cb, stream_);  // long sequences
        cuda::ssm_scan(b, sp, stream_, /*short_only=*/true);
      } else {
        cuda::ssm_scan(b, sp, stream_);
      }
      prof_.mark("mamba.gated_norm", stream_);
      if (!omit(OmitGnorm)) cuda::gated_rmsnorm(y, zx, proj, M.norm, R, I, I / spec_.n_groups, spec_.norm_eps, y16, stream_);
      prof_.mark("mamba.out_proj", stream_);
      gemm_.run(y16, R, I, M.out_proj, H, h, 1.f, stream_);
      cuda::add_bias(h, M.out_b, R, H, stream_);
      break;
    }
    case BlockKind::Attention: {
      const auto& A = L.attn;
      const int nq = spec_.num_attention_heads, nkv = spec_.num_key_value_heads, hd = spec_.head_dim;
      float* q = scratch_.get<float>("attn-q", int64_t(R) * nq * hd);
      float* k = scratch_.get<float>("attn-k", int64_t(R) * nkv * hd);
      float* v = scratch_.get<float>("attn-v", int64_t(R) * nkv * hd);
      bf16* o = scratch_.get<bf16>("attn-o", int64_t(R) * nq * hd);
      prof_.mark("attn.qkv_proj", stream_);
      const cuda::SkinnyOut qkv[3] = {{A.q, nq * hd, q, nullptr}, {A.k, nkv * hd, k, nullptr}, {A.v, nkv * hd, v, nullptr}};
      gemm_.run_multi(u, R, H, qkv, 3, nullptr, stream_);
      bf16* kc = k_cache_ + A.index * kv_layer_size();
      bf16* vc = v_cache_ + A.index * kv_layer_size();
      prof_.mark("attn.core", stream_);
      if (!omit(OmitKvw)) cuda::kv_write(b, k, v, nkv, hd, kc, vc, stream_);
      float* ws = scratch_.get<float>("attn-workspace", cuda::paged_attention_workspace_floats(b, nq, hd));
      if (!omit(OmitAttn)) cuda::paged_attention(b, q, nq, nkv, hd, kc, vc, o, ws, stream_);
      prof_.mark("attn.o_proj", stream_);
      gemm_.run(o, R, int64_t(nq) * hd, A.o, H, h, 1.f, stream_);
      break;
    }
    case BlockKind::MLP:
      prof_.mark("mlp", stream_);
      mlp(L.mlp, H, spec_.intermediate_size, u, R, h);
      break;
    case BlockKind::MoE:
      moe(L.moe, u, R, h);
      break;
  }
}

float* CudaEngine::forward(const cuda::BatchView& b, const int32_t* tokens, const int32_t* logit_rows, int NL) {
  const int H = spec_.hidden_size, V = spec_.vocab_size, R = b.rows;
  choose_kernels(b);
  float* h = scratch_.get<float>("h", int64_t(R) * H);
  bf16* u = scratch_.get<bf16>("u", int64_t(R) * H);
  prof_.mark("embedding", stream_);
  cuda::embedding_gather(tokens, R, embed_, H, h, stream_);
  if (omit(OmitNorm)) LM_CUDA_CHECK(cudaMemsetAsync(u, 0, int64_t(R) * H * sizeof(bf16), stream_));  // timing only: finite inputs
  if (omit(OmitGnorm) && n_mamba_ > 0) {
    const int64_t I = spec_.mamba_inner();
    LM_CUDA_CHECK(cudaMemsetAsync(scratch_.get<bf16>("mamba-y16", int64_t(R) * I), 0, int64_t(R) * I * sizeof(bf16), stream_));
  }
  for (const Layer& L : layers_) run_block(L, b, h, u, R);
  if (NL == 0) return nullptr;
  bf16* hn = scratch_.get<bf16>("final-norm", int64_t(NL) * H);
  float* logits = scratch_.get<float>("logits", int64_t(NL) * V);
  prof_.mark("lm_head", stream_);
  cuda::rmsnorm_bf16(h, logit_rows, NL, H, norm_f_, spec_.norm_eps, hn, stream_);
  gemm_.run(hn, NL, H, lm_head_, V, logits, 0.f, stream_);
  return logits;
}

bool CudaEngine::begin_step(const std::vector<StepSeq>& batch) {
  begun_ = false;
  if (!begin_on_caller_ || graph_mode_ != GraphMode::Replay || batch.empty()) return false;
  if (graph_timing_.on) graph_timing_.call_start = std::chrono::steady_clock::now();
  validate_batch(spec_, opts_, kv_layers() > 0, batch);
  if (!decode_fits(batch)) return false;
  const auto g = graphs_.find(bucket_of(static_cast<int>(batch.size())));
  if (g == graphs_.end() || !g->second.exec || g->second.scratch_generation != scratch_.generation()) return false;  // the bucket's first step captures: in step()
  begun_timed_ = enqueue_decode(batch);
  begun_ = true;
  return true;
}

StepOutput CudaEngine::step(const std::vector<StepSeq>& batch) {
  const bool begun = begun_;
  begun_ = false;
  if (!begun) {
    if (graph_timing_.on) graph_timing_.call_start = std::chrono::steady_clock::now();
    validate_batch(spec_, opts_, kv_layers() > 0, batch);
  }
  if (batch.empty()) return {};
  StepOutput out;
  if (begun || (graph_mode_ != GraphMode::Off && decode_fits(batch))) {
    out = begun ? finish_decode(batch, begun_timed_) : step_decode(batch);
    if (opts_.mtp) {  // the graph stored each sequence's hidden row (decode_body)
      for (const auto& q : batch) {
        mtp_pos_[q.slot] = q.position;
        mtp_token_[q.slot] = -1;
      }
    }
  } else {
    out = step_eager(batch);
  }
  if (out.num_accepted.empty()) out.num_accepted.assign(batch.size(), 0);
  return out;
}

bool CudaEngine::decode_fits(const std::vector<StepSeq>& batch) const {
  int64_t table_entries = 1;  // the scratch block
  for (const auto& s : batch) {
    if (s.tokens.size() != 1 || s.position == 0) return false;  // prefill, or a state reset
    if (opts_.mtp && (!s.mtp_skip || s.num_drafts > 0 || s.draft_tokens > 0 || s.mtp_logits)) return false;  // the MTP head runs eagerly
    if (kv_layers() > 0) table_entries += (static_cast<int64_t>(s.position) + 1 + opts_.kv_block_size - 1) / opts_.kv_block_size;
  }
  return static_cast<int>(batch.size()) <= max_bucket() && table_entries <= decode_table_capacity_;
}

void CudaEngine::decode_body(int bucket) {
  const DecodeLayout l = decode_layout();
  const auto* d = reinterpret_cast<const int32_t*>(d_decode_);
  auto at = [&](size_t off) { return d + off / sizeof(int32_t); };
  cuda::BatchView b;
  b.nseq = bucket;
  b.rows = bucket;
  b.seq_slot = at(l.slot);
  b.seq_row0 = at(l.row0);
  b.seq_len = at(l.len);
  b.seq_pos0 = at(l.pos0);
  b.seq_bt0 = at(l.bt0);
  b.block_tables = at(l.tables);
  b.block_size = opts_.kv_block_size;
  b.row_seq = at(l.row_seq);
  b.max_len = 1;
  float* logits = forward(b, at(l.tokens), at(l.logit_rows), bucket);
  if (!omit(OmitSample)) cuda::sample_tokens(logits, spec_.vocab_size, reinterpret_cast<const cuda::SampleRow*>(d_decode_ + l.sample_rows), bucket, d_sampled_, stream_);
  if (opts_.mtp) {
    // Every sequence of a decode-graph step skips the MTP head (decode_fits): keep each one's hidden
    // row (the final-norm rows, in batch order) for its next drafting step's first MTP row. Inside
    // the graph, so a step that speculates nothing costs what a plain engine's step costs (padding
    // rows write the scratch slot's row).
    cuda::move_rows_bf16(scratch_.get<bf16>("final-norm", int64_t(bucket) * spec_.hidden_size), nullptr, at(l.slot), bucket, spec_.hidden_size, mtp_hidden_, stream_);
  }
}

StepOutput CudaEngine::step_decode(const std::vector<StepSeq>& batch) { return finish_decode(batch, enqueue_decode(batch)); }

bool CudaEngine::enqueue_decode(const std::vector<StepSeq>& batch) {
  const int nseq = static_cast<int>(batch.size()), bucket = bucket_of(nseq);
  const DecodeLayout l = decode_layout();
  auto arr = [&](size_t off) { return reinterpret_cast<int32_t*>(h_decode_ + off); };
  auto* rows = reinterpret_cast<cuda::SampleRow*>(h_decode_ + l.sample_rows);
  int32_t* tables = arr(l.tables);
  int32_t n_tables = 0;
  tables[n_tables++] = scratch_kv_block();
  for (int i = 0; i < bucket; ++i) {
    const bool real = i < nseq;
    arr(l.row0)[i] = i;
    arr(l.len)[i] = 1;
    arr(l.row_seq)[i] = i;
    arr(l.logit_rows)[i] = i;
    if (!real) {  // padding: token 0 at position 0 of the scratch slot and block; greedy, ignored
      arr(l.tokens)[i] = 0;
      arr(l.slot)[i] = scratch_slot();
      arr(l.pos0)[i] = 0;
      arr(l.bt0)[i] = 0;
      rows[i] = {i, 1, 0.f, 1.f, 0, 1};
      continue;
    }
    const StepSeq& s = batch[i];
    arr(l.tokens)[i] = s.tokens[0];
    arr(l.slot)[i] = s.slot;
    arr(l.pos0)[i] = s.position;
    arr(l.bt0)[i] = n_tables;
    if (kv_layers() > 0) {
      const int need = (s.position + 1 + opts_.kv_block_size - 1) / opts_.kv_block_size;
      std::copy(s.block_table.begin(), s.block_table.begin() + need, tables + n_tables);
      n_tables += need;
    }
    const Sampling& sm = s.sampling;
    rows[i] = {i, sm.top_k, sm.temperature, sm.top_p, sm.seed, static_cast<int64_t>(s.position) + 1};
  }
  LM_CUDA_CHECK(cudaMemcpyAsync(d_decode_, h_decode_, l.tables + static_cast<size_t>(n_tables) * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));

  DecodeGraph& graph = graphs_[bucket];
  if (graph.exec && graph.scratch_generation != scratch_.generation()) {  // a scratch buffer moved
    LM_CUDA_CHECK(cudaGraphExecDestroy(graph.exec));
    graph.exec = nullptr;
  }
  const bool timed = graph_timing_.on && graph.exec;
  if (graph.exec) {
    if (timed) LM_CUDA_CHECK(cudaEventRecord(graph_timing_.start, stream_));
    LM_CUDA_CHECK(cudaGraphLaunch(graph.exec, stream_));
    if (timed) {
      graph_timing_.launched = std::chrono::steady_clock::now();
      LM_CUDA_CHECK(cudaEventRecord(graph_timing_.end, stream_));
    }
  } else {
    // This step runs eagerly (sizing every scratch buffer for the bucket), then the same work is
    // captured, not executed, for the next steps of this bucket.
    decode_body(bucket);
    if (graph_mode_ == GraphMode::Replay) {
      const uint64_t generation = scratch_.generation();
      cudaGraph_t captured = nullptr;
      LM_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
      try {
        decode_body(bucket);
      } catch (...) {
        cudaStreamEndCapture(stream_, &captured);
        if (captured) cudaGraphDestroy(captured);
        cudaGetLastError();
        throw;
      }
      LM_CUDA_CHECK(cudaStreamEndCapture(stream_, &captured));
      if (scratch_.generation() != generation) {
        cudaGraphDestroy(captured);
        throw Error("decode graph capture of bucket " + std::to_string(bucket) + ": a scratch buffer was reallocated while capturing");
      }
      const cudaError_t e = cudaGraphInstantiate(&graph.exec, captured, 0);
      cudaGraphDestroy(captured);
      LM_CUDA_CHECK(e);
      graph.scratch_generation = generation;
    }
  }

  return timed;
}

StepOutput CudaEngine::finish_decode(const std::vector<StepSeq>& batch, bool timed) {
  const int nseq = static_cast<int>(batch.size()), bucket = bucket_of(nseq), V = spec_.vocab_size;
  StepOutput out;
  out.tokens.assign(batch.size(), -1);
  LM_CUDA_CHECK(cudaMemcpyAsync(h_sampled_, d_sampled_, nseq * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
  int64_t wanted = 0;
  for (const auto& s : batch) wanted += s.logits != LogitsMode::None ? 1 : 0;
  if (wanted > 0) {
    const float* logits = scratch_.get<float>("logits", int64_t(bucket) * V);  // sized by decode_body: no reallocation
    out.logits.resize(static_cast<size_t>(wanted) * V);
    float* dst = out.logits.data();
    for (int i = 0; i < nseq; ++i)
      if (batch[i].logits != LogitsMode::None) {
        LM_CUDA_CHECK(cudaMemcpyAsync(dst, logits + int64_t(i) * V, V * sizeof(float), cudaMemcpyDeviceToHost, stream_));
        dst += V;
      }
  }
  LM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (timed) graph_timing_.add(bucket);
  for (int i = 0; i < nseq; ++i)
    if (batch[i].sample) out.tokens[i] = h_sampled_[i];
  return out;
}

StepOutput CudaEngine::step_eager(const std::vector<StepSeq>& batch) {
  const int H = spec_.hidden_size, V = spec_.vocab_size, nseq = static_cast<int>(batch.size());
  StepOutput out;
  out.tokens.assign(batch.size(), -1);
  out.num_accepted.assign(batch.size(), 0);
  std::vector<int32_t> slot(nseq), row0(nseq), len(nseq);
  int R = 0;
  for (int i = 0; i < nseq; ++i) {
    slot[i] = batch[i].slot;
    row0[i] = R;
    len[i] = static_cast<int32_t>(batch[i].tokens.size());
    R += len[i];
  }
  // Rows whose logits are needed, per sequence a block [lo, T): every row when asked for all, the
  // k+1 verified positions with k drafts, else the last row of a sampling sequence.
  std::vector<int32_t> logit_rows;
  std::vector<int> lo(nseq, -1), first_row(nseq, 0);
  for (int i = 0; i < nseq; ++i) {
    const StepSeq& q = batch[i];
    const int T = len[i];
    if (q.logits == LogitsMode::All) lo[i] = 0;
    else if (q.num_drafts > 0) lo[i] = T - 1 - q.num_drafts;
    else if (q.sample || q.logits == LogitsMode::Last) lo[i] = T - 1;
    first_row[i] = static_cast<int>(logit_rows.size());
    if (lo[i] >= 0)
      for (int t = lo[i]; t < T; ++t) logit_rows.push_back(row0[i] + t);
  }
  // Sampled rows: the last row, or with k drafts the k+1 verified rows, each keyed by the position
  // of the token it draws (lm::verify_drafts: accept while the target's draw equals the draft).
  std::vector<cuda::SampleRow> sample_rows;
  std::vector<int> sample0(nseq, -1);
  for (int i = 0; i < nseq; ++i) {
    const StepSeq& q = batch[i];
    if (!q.sample) continue;
    const int T = len[i], k = q.num_drafts;
    sample0[i] = static_cast<int>(sample_rows.size());
    for (int j = 0; j <= k; ++j)
      sample_rows.push_back({first_row[i] + (T - 1 - k - lo[i]) + j, q.sampling.top_k, q.sampling.temperature, q.sampling.top_p, q.sampling.seed, static_cast<int64_t>(q.position) + T - k + j});
  }
  // Verify sequences: Mamba state snapshot before the step, stashed inputs for the rollback.
  std::vector<int> verify, snap_index(nseq, -1), stash_row0(nseq, -1);
  std::vector<int32_t> stash_rows, verify_slots, verify_snaps;
  for (int i = 0; i < nseq; ++i)
    if (batch[i].num_drafts > 0 && batch[i].sample && n_mamba_ > 0) {
      snap_index[i] = static_cast<int>(verify.size());
      stash_row0[i] = static_cast<int>(stash_rows.size());
      verify.push_back(i);
      verify_slots.push_back(slot[i]);
      verify_snaps.push_back(snap_index[i]);
      for (int t = 0; t < len[i]; ++t) stash_rows.push_back(row0[i] + t);
    }
  const int NL = static_cast<int>(logit_rows.size());
  std::vector<int32_t> extra;  // logit rows, stash rows, verify slots, verify snapshot indices
  auto add = [&](const std::vector<int32_t>& v) { return append(&extra, v); };
  const size_t o_lr = add(logit_rows), o_stash = add(stash_rows), o_vslot = add(verify_slots), o_vsnap = add(verify_snaps);
  const Uploaded up = upload_batch("batch", batch, extra);
  const cuda::BatchView& b = up.view;
  const int32_t* d = up.extra;
  for (int i = 0; i < nseq; ++i)
    if (batch[i].position == 0) {
      for (int l = 0; l < n_mamba_; ++l) {
        LM_CUDA_CHECK(cudaMemsetAsync(conv_state_ + (int64_t(l) * state_slots() + slot[i]) * conv_state_size(), 0, conv_state_size() * 4, stream_));
        LM_CUDA_CHECK(cudaMemsetAsync(ssm_state_ + (int64_t(l) * state_slots() + slot[i]) * ssm_state_size(), 0, ssm_state_size() * 4, stream_));
      }
      if (opts_.mtp) mtp_pos_[slot[i]] = -1;
    }
  prof_.hold(stream_);  // released before the first copy back to the host
  const int NV = static_cast<int>(verify.size()), NST = static_cast<int>(stash_rows.size());
  float *snap_conv = nullptr, *snap_ssm = nullptr;
  if (NV > 0) {
    prof_.mark("mtp.snapshot", stream_);
    const int proj = spec_.mamba_inner() + spec_.conv_dim() + spec_.mamba_num_heads;
    snap_conv = scratch_.get<float>("verify-snap-conv", int64_t(NV) * n_mamba_ * conv_state_size());
    snap_ssm = scratch_.get<float>("verify-snap-ssm", int64_t(NV) * n_mamba_ * ssm_state_size());
    cuda::slot_states(conv_state_, state_slots(), n_mamba_, conv_state_size(), d + o_vslot, d + o_vsnap, NV, snap_conv, false, stream_);
    cuda::slot_states(ssm_state_, state_slots(), n_mamba_, ssm_state_size(), d + o_vslot, d + o_vsnap, NV, snap_ssm, false, stream_);
    stash_ = {d + o_stash, NST, scratch_.get<float>("verify-stash-zx", int64_t(n_mamba_) * NST * proj), scratch_.get<float>("verify-stash-xbc", int64_t(n_mamba_) * NST * spec_.conv_dim())};
  }
  float* logits = nullptr;
  try {
    logits = forward(b, up.tokens, d + o_lr, NL);
  } catch (...) {
    stash_ = {};
    prof_.release();
    throw;
  }
  stash_ = {};
  bf16* hn_all = nullptr;
  if (opts_.mtp) {  // every row's hidden state after norm_f, for the MTP head
    prof_.mark("mtp.head", stream_);
    hn_all = scratch_.get<bf16>("mtp-hn", int64_t(R) * H);
    cuda::rmsnorm_bf16(scratch_.get<float>("h", int64_t(R) * H), nullptr, R, H, norm_f_, spec_.norm_eps, hn_all, stream_);
  }
  const int NS = static_cast<int>(sample_rows.size());
  std::vector<int32_t> sampled(NS);
  if (NS > 0) {
    prof_.mark("sampling", stream_);
    auto* d_rows = scratch_.get<cuda::SampleRow>("sample-rows", NS);
    int32_t* d_tokens = scratch_.get<int32_t>("sample-tokens", NS);
    LM_CUDA_CHECK(cudaMemcpyAsync(d_rows, sample_rows.data(), NS * sizeof(cuda::SampleRow), cudaMemcpyHostToDevice, stream_));
    cuda::sample_tokens(logits, V, d_rows, NS, d_tokens, stream_);
    prof_.release();
    LM_CUDA_CHECK(cudaMemcpyAsync(sampled.data(), d_tokens, NS * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
  }
  prof_.release();
  // Logits blocks of the sequences that asked, straight into host memory (a verify sequence's
  // `Last` row depends on its verdict: its whole block comes back and one row is kept).
  std::vector<float> blocks;
  std::vector<int64_t> block_at(nseq, -1);
  for (int i = 0; i < nseq; ++i)
    if (batch[i].logits != LogitsMode::None && lo[i] >= 0) {
      block_at[i] = static_cast<int64_t>(blocks.size());
      blocks.resize(blocks.size() + static_cast<size_t>(len[i] - lo[i]) * V);
    }
  prof_.mark("logits_out", stream_);
  for (int i = 0; i < nseq; ++i)
    if (block_at[i] >= 0) LM_CUDA_CHECK(cudaMemcpyAsync(blocks.data() + block_at[i], logits + int64_t(first_row[i]) * V, static_cast<size_t>(len[i] - lo[i]) * V * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  LM_CUDA_CHECK(cudaStreamSynchronize(stream_));

  std::vector<int> last(nseq), rolled, keep(nseq, 0);
  for (int i = 0; i < nseq; ++i) {
    const StepSeq& q = batch[i];
    const int T = len[i], k = q.num_drafts;
    last[i] = T - 1;
    if (!q.sample) continue;
    int a = 0;
    while (a < k && sampled[sample0[i] + a] == q.tokens[T - k + a]) ++a;
    out.tokens[i] = sampled[sample0[i] + a];
    out.num_accepted[i] = a;
    last[i] = T - 1 - k + a;
    if (a < k && snap_index[i] >= 0) {
      rolled.push_back(i);
      keep[i] = T - k + a;  // rows of the step the state must have consumed
    }
  }
  for (int i = 0; i < nseq; ++i) {
    if (block_at[i] < 0) continue;
    const float* blk = blocks.data() + block_at[i];
    if (batch[i].logits == LogitsMode::All) out.logits.insert(out.logits.end(), blk, blk + static_cast<int64_t>(len[i]) * V);
    else out.logits.insert(out.logits.end(), blk + static_cast<int64_t>(last[i] - lo[i]) * V, blk + static_cast<int64_t>(last[i] - lo[i] + 1) * V);
  }
  if (!rolled.empty()) {
    prof_.mark("mtp.rollback", stream_);
    rollback(rolled, batch, snap_index, stash_row0, keep, snap_conv, snap_ssm);
  }
  if (opts_.mtp) mtp_step(batch, row0, last, hn_all, out);
  prof_.finish(stream_);
  return out;
}

void CudaEngine::rollback(const std::vector<int>& seqs, const std::vector<StepSeq>& batch, const std::vector<int>& snap_index, const std::vector<int>& stash_row0, const std::vector<int>& keep,
                          float* snap_conv, float* snap_ssm) {
  // Restore the snapshot of each rolled-back sequence, then replay its first `keep` rows through
  // the conv state update and the SSM recurrence from the stashed inputs (the stash lays the verify
  // sequences' rows out one after the other: stash row = stash_row0 + t).
  const int n = static_cast<int>(seqs.size());
  const int I = spec_.mamba_inner(), CD = spec_.conv_dim(), nh = spec_.mamba_num_heads, proj = I + CD + nh;
  std::vector<int32_t> slots, snaps, row0, lens, pos0, bt0(n, 0), row_seq;
  int rows = 0, max_len = 0, stash_n = 0;
  for (int i : seqs) {
    slots.push_back(batch[i].slot);
    snaps.push_back(snap_index[i]);
    row0.push_back(stash_row0[i]);
    lens.push_back(keep[i]);
    pos0.push_back(batch[i].position);
    rows = std::max(rows, stash_row0[i] + keep[i]);
    max_len = std::max(max_len, keep[i]);
  }
  for (size_t i = 0; i < batch.size(); ++i)
    if (stash_row0[i] >= 0) stash_n = std::max(stash_n, stash_row0[i] + static_cast<int>(batch[i].tokens.size()));
  for (int r = 0; r < rows; ++r) row_seq.push_back(0);  // unused by conv_state_update and ssm_scan
  std::vector<int32_t> packed;
  auto put = [&](const std::vector<int32_t>& v) { return append(&packed, v); };
  const size_t o_slot = put(slots), o_snap = put(snaps), o_row0 = put(row0), o_len = put(lens), o_pos0 = put(pos0), o_bt0 = put(bt0), o_rs = put(row_seq);
  int32_t* d = scratch_.get<int32_t>("rollback-batch", static_cast<int64_t>(packed.size()));
  LM_CUDA_CHECK(cudaMemcpyAsync(d, packed.data(), packed.size() * 4, cudaMemcpyHostToDevice, stream_));
  // SSM state first: ssm_scan reads its state before waiting for the launch right before it
  // (ops.h), which must not be the restore of that state.
  cuda::slot_states(ssm_state_, state_slots(), n_mamba_, ssm_state_size(), d + o_slot, d + o_snap, n, snap_ssm, true, stream_);
  cuda::slot_states(conv_state_, state_slots(), n_mamba_, conv_state_size(), d + o_slot, d + o_snap, n, snap_conv, true, stream_);
  cuda::BatchView rb;
  rb.nseq = n;
  rb.rows = rows;
  rb.seq_slot = d + o_slot;
  rb.seq_row0 = d + o_row0;
  rb.seq_len = d + o_len;
  rb.seq_pos0 = d + o_pos0;
  rb.seq_bt0 = d + o_bt0;
  rb.block_tables = d + o_bt0;
  rb.block_size = opts_.kv_block_size;
  rb.row_seq = d + o_rs;
  rb.max_len = max_len;
  float* y = scratch_.get<float>("rollback-y", int64_t(rows) * I);
  float* stash_zx = scratch_.get<float>("verify-stash-zx", int64_t(n_mamba_) * stash_n * proj);
  float* stash_xbc = scratch_.get<float>("verify-stash-xbc", int64_t(n_mamba_) * stash_n * CD);
  for (const Layer& L : layers_) {
    if (L.kind != BlockKind::Mamba) continue;
    const auto& M = L.mamba;
    const float* zx = stash_zx + int64_t(M.index) * stash_n * proj;
    const float* xbc = stash_xbc + int64_t(M.index) * stash_n * CD;
    cuda::conv_state_update(rb, zx + I, proj, CD, spec_.conv_kernel, conv_state_ + int64_t(M.index) * state_slots() * conv_state_size(), stream_);
    cuda::SsmParams sp{nh, spec_.mamba_head_dim, spec_.n_groups, spec_.ssm_state_size, xbc, CD, zx + I + CD, proj, M.dt_bias, M.A, M.D,
                       spec_.time_step_min, spec_.time_step_max, ssm_state_ + int64_t(M.index) * state_slots() * ssm_state_size(), y};
    cuda::ssm_scan(rb, sp, stream_);
  }
}

bf16* CudaEngine::mtp_pass(const cuda::BatchView& b, const int32_t* tokens, const bf16* hidden, int R) {
  const int H = spec_.hidden_size;
  bf16* cat = scratch_.get<bf16>("mtp-cat", int64_t(R) * 2 * H);
  float* x = scratch_.get<float>("mtp-x", int64_t(R) * H);
  bf16* u = scratch_.get<bf16>("mtp-u", int64_t(R) * H);
  bf16* y = scratch_.get<bf16>("mtp-y", int64_t(R) * H);
  choose_kernels(b);
  prof_.mark("mtp.input", stream_);
  cuda::mtp_input(tokens, hidden, R, embed_, mtp_.enorm, mtp_.hnorm, H, spec_.norm_eps, cat, stream_);
  gemm_.run(cat, R, 2 * H, mtp_.eh_proj, H, x, 0.f, stream_);
  prof_.prefix = "mtp.";
  for (const Layer& L : mtp_.blocks) run_block(L, b, x, u, R);
  prof_.prefix.clear();
  prof_.mark("mtp.final_norm", stream_);
  cuda::rmsnorm_bf16(x, nullptr, R, H, mtp_.final_norm, spec_.norm_eps, y, stream_);
  prof_.mark("mtp.drafting", stream_);
  return y;
}

CudaEngine::Uploaded CudaEngine::upload_batch(const char* name, const std::vector<StepSeq>& seqs, const std::vector<int32_t>& extra) {
  const int n = static_cast<int>(seqs.size());
  std::vector<int32_t> tokens, slot(n), row0(n), len(n), pos0(n), bt0(n), tables, row_seq;
  for (int i = 0; i < n; ++i) {
    const auto& q = seqs[i];
    slot[i] = q.slot;
    row0[i] = static_cast<int32_t>(tokens.size());
    len[i] = static_cast<int32_t>(q.tokens.size());
    pos0[i] = q.position;
    bt0[i] = static_cast<int32_t>(tables.size());
    tables.insert(tables.end(), q.block_table.begin(), q.block_table.end());
    tokens.insert(tokens.end(), q.tokens.begin(), q.tokens.end());
    row_seq.insert(row_seq.end(), q.tokens.size(), i);
  }
  std::vector<int32_t> packed;
  auto put = [&](const std::vector<int32_t>& v) { return append(&packed, v); };
  const size_t o_tok = put(tokens), o_slot = put(slot), o_row0 = put(row0), o_len = put(len), o_pos0 = put(pos0), o_bt0 = put(bt0), o_tab = put(tables), o_rs = put(row_seq), o_extra = put(extra);
  int32_t* d = scratch_.get<int32_t>(name, static_cast<int64_t>(packed.size()));
  LM_CUDA_CHECK(cudaMemcpyAsync(d, packed.data(), packed.size() * 4, cudaMemcpyHostToDevice, stream_));
  Uploaded u;
  cuda::BatchView& v = u.view;
  v.nseq = n;
  v.rows = static_cast<int>(tokens.size());
  v.seq_slot = d + o_slot;
  v.seq_row0 = d + o_row0;
  v.seq_len = d + o_len;
  v.seq_pos0 = d + o_pos0;
  v.seq_bt0 = d + o_bt0;
  v.block_tables = d + o_tab;
  v.block_size = opts_.kv_block_size;
  v.row_seq = d + o_rs;
  v.max_len = n > 0 ? *std::max_element(len.begin(), len.end()) : 0;
  u.tokens = d + o_tok;
  u.extra = d + o_extra;
  return u;
}

// The MTP head reads (hidden h_j after norm_f, token j+1) for every accepted position j of every
// sequence, so its attention KV covers the whole context; the row of the last accepted position
// pairs with the token sampled now and yields the first draft, and each further draft feeds the
// head its own output with the previous draft (KV at the following positions, overwritten by the
// true rows in the next step). A position whose next token is not known yet (the end of a prefill
// chunk, or a step that skipped the head) is kept per slot (mtp_hidden_) and completed by the next
// step's first token. The same bookkeeping as CpuEngine::mtp_step; tokens, hidden rows and drafts
// stay on the device, the drafts come back once at the end.
void CudaEngine::mtp_step(const std::vector<StepSeq>& batch, const std::vector<int32_t>& row0, const std::vector<int>& last, const bf16* hn_all, StepOutput& out) {
  const int H = spec_.hidden_size, V = spec_.vocab_size, nseq = static_cast<int>(batch.size());
  std::vector<StepSeq> mb;
  std::vector<int> seq_of, mrow0;
  std::vector<int32_t> from_step_src, from_step_dst, from_slot_src, from_slot_dst, store_src, store_dst;
  int MR = 0;
  for (int i = 0; i < nseq; ++i) {
    const StepSeq& s = batch[i];
    StepSeq q;
    q.slot = s.slot;
    q.position = s.position;
    q.block_table = s.block_table;
    const int64_t P = s.position;
    std::vector<int32_t> src;  // hidden source of each row: a step row, or -1 - slot
    if (P > 0 && mtp_pos_[s.slot] == P - 1 && mtp_token_[s.slot] != s.tokens[0]) {
      q.position = static_cast<int>(P - 1);
      q.tokens.push_back(s.tokens[0]);
      src.push_back(-1 - s.slot);
    }
    for (int t = 0; t < last[i]; ++t) {
      q.tokens.push_back(s.tokens[t + 1]);
      src.push_back(row0[i] + t);
    }
    if (s.sample) {
      q.tokens.push_back(out.tokens[i]);
      src.push_back(row0[i] + last[i]);
    }
    mtp_pos_[s.slot] = P + last[i];
    store_src.push_back(row0[i] + last[i]);
    store_dst.push_back(s.slot);
    mtp_token_[s.slot] = s.sample && !s.mtp_skip ? out.tokens[i] : -1;
    if (q.tokens.empty() || s.mtp_skip) continue;
    for (size_t r = 0; r < src.size(); ++r) {
      if (src[r] >= 0) {
        from_step_src.push_back(src[r]);
        from_step_dst.push_back(MR + static_cast<int>(r));
      } else {
        from_slot_src.push_back(-1 - src[r]);
        from_slot_dst.push_back(MR + static_cast<int>(r));
      }
    }
    mrow0.push_back(MR);
    MR += static_cast<int>(q.tokens.size());
    seq_of.push_back(i);
    mb.push_back(std::move(q));
  }
  // Index arrays and the first pass's tokens go up with its batch description.
  std::vector<int32_t> extra;
  auto add = [&](const std::vector<int32_t>& v) { return append(&extra, v); };
  const size_t e_fs = add(from_step_src), e_fd = add(from_step_dst), e_ss = add(from_slot_src), e_sd = add(from_slot_dst), e_ts = add(store_src), e_td = add(store_dst);
  const Uploaded up = upload_batch("mtp-batch", mb, extra);
  const cuda::BatchView& b = up.view;
  const int32_t* dx = up.extra;
  bf16* hid = scratch_.get<bf16>("mtp-hidden-in", int64_t(std::max(MR, 1)) * H);
  // Read the slot rows before they are overwritten with this step's last accepted rows.
  cuda::move_rows_bf16(hn_all, dx + e_fs, dx + e_fd, static_cast<int>(from_step_src.size()), H, hid, stream_);
  cuda::move_rows_bf16(mtp_hidden_, dx + e_ss, dx + e_sd, static_cast<int>(from_slot_src.size()), H, hid, stream_);
  cuda::move_rows_bf16(hn_all, dx + e_ts, dx + e_td, static_cast<int>(store_src.size()), H, mtp_hidden_, stream_);
  if (MR == 0) return;
  const bf16* y = mtp_pass(b, up.tokens, hid, MR);

  // Logits of the head: every row of the first pass when a sequence asks for them, else only the
  // drafting rows; round r samples draft r greedily from the rows of the pass before it.
  bool want_logits = false;
  for (int m = 0; m < static_cast<int>(mb.size()); ++m) want_logits |= batch[seq_of[m]].mtp_logits;
  std::vector<int> drafting;  // batch indices, in order
  std::vector<int32_t> draft_rows;  // their rows in the pass output
  for (int m = 0; m < static_cast<int>(mb.size()); ++m)
    if (batch[seq_of[m]].draft_tokens > 0) {
      drafting.push_back(seq_of[m]);
      draft_rows.push_back(mrow0[m] + static_cast<int>(mb[m].tokens.size()) - 1);
    }
  std::vector<std::vector<float>> mtp_rows(nseq);
  std::vector<std::vector<int32_t>> drafts(nseq);
  auto head_logits = [&](const bf16* rows_in, int n) {
    float* lg = scratch_.get<float>("mtp-logits", int64_t(std::max(n, 1)) * V);
    gemm_.run(rows_in, n, H, lm_head_, V, lg, 0.f, stream_);
    return lg;
  };
  if (want_logits) {
    const float* lg = head_logits(y, MR);
    for (int m = 0; m < static_cast<int>(mb.size()); ++m) {
      const int i = seq_of[m];
      if (!batch[i].mtp_logits) continue;
      const int n = static_cast<int>(mb[m].tokens.size());
      mtp_rows[i].resize(static_cast<size_t>(n) * V);
      LM_CUDA_CHECK(cudaMemcpyAsync(mtp_rows[i].data(), lg + int64_t(mrow0[m]) * V, static_cast<size_t>(n) * V * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    }
  }
  int max_drafts = 0;
  for (int i : drafting) max_drafts = std::max(max_drafts, batch[i].draft_tokens);
  int32_t* d_drafts = scratch_.get<int32_t>("mtp-drafts", int64_t(std::max<size_t>(drafting.size(), 1)) * std::max(max_drafts, 1));
  std::vector<std::vector<int32_t>> round_drafts;  // host copies, per round, in `drafting` order of that round
  std::vector<std::vector<int>> round_seqs;
  const float* lg_all = want_logits ? scratch_.get<float>("mtp-logits", int64_t(MR) * V) : nullptr;
  std::vector<int> cur = drafting;
  std::vector<int32_t> cur_rows = draft_rows;  // rows of `y` holding each drafting sequence's last output
  for (int round = 1; !cur.empty(); ++round) {
    const int n = static_cast<int>(cur.size());
    // greedy draws of this round's drafts
    std::vector<cuda::SampleRow> rows(static_cast<size_t>(n));
    const float* lg;
    if (round == 1 && lg_all) {
      lg = lg_all;
      for (int j = 0; j < n; ++j) rows[j] = {cur_rows[j], 1, 0.f, 1.f, 0, 0};
    } else {
      bf16* sel = scratch_.get<bf16>("mtp-sel", int64_t(n) * H);
      std::vector<int32_t> idx(cur_rows.begin(), cur_rows.end());
      int32_t* d_idx = scratch_.get<int32_t>("mtp-sel-idx", n);
      LM_CUDA_CHECK(cudaMemcpyAsync(d_idx, idx.data(), idx.size() * 4, cudaMemcpyHostToDevice, stream_));
      cuda::move_rows_bf16(y, d_idx, nullptr, n, H, sel, stream_);
      lg = head_logits(sel, n);
      for (int j = 0; j < n; ++j) rows[j] = {j, 1, 0.f, 1.f, 0, 0};
      if (round > 1)
        for (int j = 0; j < n; ++j)
          if (batch[cur[j]].mtp_logits) {
            auto& mr = mtp_rows[cur[j]];
            const size_t at = mr.size();
            mr.resize(at + static_cast<size_t>(V));
            LM_CUDA_CHECK(cudaMemcpyAsync(mr.data() + at, lg + int64_t(j) * V, V * sizeof(float), cudaMemcpyDeviceToHost, stream_));
          }
    }
    auto* d_rows = scratch_.get<cuda::SampleRow>("mtp-sample-rows", n);
    LM_CUDA_CHECK(cudaMemcpyAsync(d_rows, rows.data(), n * sizeof(cuda::SampleRow), cudaMemcpyHostToDevice, stream_));
    int32_t* round_out = d_drafts + int64_t(round - 1) * drafting.size();
    cuda::sample_tokens(lg, V, d_rows, n, round_out, stream_);
    round_drafts.emplace_back(static_cast<size_t>(n));
    round_seqs.push_back(cur);
    LM_CUDA_CHECK(cudaMemcpyAsync(round_drafts.back().data(), round_out, n * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
    // the next pass: each sequence wanting more feeds its draft with its own output row
    std::vector<StepSeq> nb;
    std::vector<int> next;
    std::vector<int32_t> pick;  // index into this round's drafts / cur_rows
    for (int j = 0; j < n; ++j) {
      const StepSeq& s = batch[cur[j]];
      if (s.draft_tokens <= round) continue;
      StepSeq q;
      q.slot = s.slot;
      q.tokens = {0};  // the draft, gathered on the device
      q.position = s.position + last[cur[j]] + round;
      q.block_table = s.block_table;
      nb.push_back(std::move(q));
      next.push_back(cur[j]);
      pick.push_back(j);
    }
    if (next.empty()) break;
    std::vector<int32_t> src_rows;
    for (int32_t j : pick) src_rows.push_back(cur_rows[static_cast<size_t>(j)]);
    std::vector<int32_t> ex = pick;
    ex.insert(ex.end(), src_rows.begin(), src_rows.end());
    const Uploaded nup = upload_batch("mtp-round-batch", nb, ex);
    const cuda::BatchView& nbv = nup.view;
    const int32_t* dex = nup.extra;
    const int nn = static_cast<int>(next.size());
    int32_t* ntok = scratch_.get<int32_t>("mtp-round-tokens", nn);
    bf16* nhid = scratch_.get<bf16>("mtp-round-hidden", int64_t(nn) * H);
    cuda::gather_ints(round_out, dex, nn, ntok, stream_);
    cuda::move_rows_bf16(y, dex + nn, nullptr, nn, H, nhid, stream_);
    y = mtp_pass(nbv, ntok, nhid, nn);
    cur = next;
    cur_rows.assign(static_cast<size_t>(nn), 0);
    std::iota(cur_rows.begin(), cur_rows.end(), 0);
  }
  LM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (size_t r = 0; r < round_drafts.size(); ++r)
    for (size_t j = 0; j < round_seqs[r].size(); ++j) drafts[static_cast<size_t>(round_seqs[r][j])].push_back(round_drafts[r][j]);
  for (const auto& dr : drafts) out.drafts.insert(out.drafts.end(), dr.begin(), dr.end());
  for (const auto& r : mtp_rows) out.mtp_logits.insert(out.mtp_logits.end(), r.begin(), r.end());
}

}  // namespace

std::unique_ptr<Engine> create_cuda_engine(const EngineOptions& options) { return std::make_unique<CudaEngine>(options); }

}  // namespace lm
