// CUDA backend ops (sm_90): launchers callable from host C++. Same op names and math as cpu/ops.h;
// bf16 weights and GEMM activations, fp32 residual stream, accumulation and SSM state.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace lm::cuda {

using bf16 = __nv_bfloat16;

/** The batch as kernels see it: per sequence and per row, all device pointers. */
struct BatchView {
  int nseq = 0;
  int rows = 0;
  const int* seq_slot = nullptr;   // (nseq)
  const int* seq_row0 = nullptr;   // (nseq) first row of the sequence in the step
  const int* seq_len = nullptr;    // (nseq) tokens fed this step
  const int* seq_pos0 = nullptr;   // (nseq) position of its first fed token
  const int* seq_bt0 = nullptr;    // (nseq) offset of its block table in block_tables
  const int* block_tables = nullptr;
  int block_size = 16;
  const int* row_seq = nullptr;    // (rows) sequence of each row
  int max_len = 0;                 // host-side: the longest seq_len (sizes per-chunk grids)
};

/**
 * A step whose sequences feed at most this many rows each is a decode step (plain, or MTP verify
 * with k + 1 ≤ 8 rows per sequence): its kernel choices and partitions (GEMM kernel, attention
 * splits, MoE path) follow its sequence count, not its row count, and those kernels compute each
 * row alone, so a verify row equals the row of the plain decode step of the same batch bit for bit
 * (where the plain step's kernels are the row-independent ones: CudaEngine). The attention decode
 * path and the SSM recurrence take sequences of up to this many rows.
 */
constexpr int DECODE_STEP_MAX_LEN = 8;

/** h (R, H) fp32 = table[tokens] (bf16 rows). */
void embedding_gather(const int32_t* tokens, int R, const bf16* table, int H, float* h, cudaStream_t s);

/**
 * Programmatic dependent launch (launch.cuh) for the kernels of the decode path: on (the default),
 * a kernel may launch while its predecessor in the stream finishes; off, every launch is plain.
 */
void set_programmatic_launch(bool on);

/** out (R, H) bf16 = rmsnorm(h[rows[i]]) * w; rows == nullptr means row i. */
void rmsnorm_bf16(const float* h, const int32_t* rows, int R, int H, const float* w, float eps, bf16* out, cudaStream_t s);

/** Causal depthwise conv + bias + SiLU over each sequence's rows, reading the slot's conv state. */
void conv1d_silu(const BatchView& b, const float* x, int64_t x_stride, int C, int K, const float* w, const float* bias, const float* conv_state, float* out, cudaStream_t s);
/** After conv1d_silu: the slot's conv state becomes its last K-1 inputs (state rows then x rows). */
void conv_state_update(const BatchView& b, const float* x, int64_t x_stride, int C, int K, float* conv_state, cudaStream_t s);
/**
 * conv1d_silu then conv_state_update in one launch, for steps where every sequence feeds exactly
 * one row (b.rows == b.nseq, decode): the same values, each thread reading its channel's state
 * before shifting it.
 */
void conv1d_silu_step(const BatchView& b, const float* x, int64_t x_stride, int C, int K, const float* w, const float* bias, float* conv_state, float* out, cudaStream_t s);

struct SsmParams {
  int nheads, head_dim, ngroups, dstate;
  const float* xbc;      // (R, conv_dim): x | B | C after the conv
  int64_t xbc_stride;
  const float* dt_raw;   // (R, ...) raw dt of head h at dt_raw[r * dt_stride + h]
  int64_t dt_stride;
  const float* dt_bias;  // (nheads)
  const float* A;        // (nheads) = -exp(A_log)
  const float* D;        // (nheads)
  float dt_min, dt_max;
  float* state;          // (slots, nheads, head_dim, dstate)
  float* y;              // (R, nheads*head_dim)
};
/**
 * Sequences of at most this many rows in a step go through the per-token recurrence (ssm_scan),
 * longer ones through the chunked SSD (ssd_chunked_scan): decode, MTP verify steps (k + 1 ≤ 8
 * rows) and their replays use the same arithmetic as a plain decode step.
 */
constexpr int SSM_RECURRENT_MAX_LEN = 8;
/**
 * The Mamba-2 SSM by the per-token recurrence over each sequence's rows from its slot's state,
 * state updated in place. short_only: sequences longer than SSM_RECURRENT_MAX_LEN rows are left
 * alone (they go through ssd_chunked_scan). Its short-sequence kernel reads the slots' state and
 * the batch description before waiting for the kernel launched right before it (launch.cuh): that
 * kernel must not write them.
 */
void ssm_scan(const BatchView& b, const SsmParams& p, cudaStream_t s, bool short_only = false);

/** Whether ssd_chunked_scan handles this shape (its shared-memory tiles fit). */
bool ssd_chunked_supported(int head_dim, int dstate, int chunk_size);
/** Floats of the workspace ssd_chunked_scan needs: CB tiles (ngroups, rows, chunk rounded up to 16), then ngroups·rows chain flags and a 32-float work counter. */
int64_t ssd_chunked_workspace_floats(int rows, int ngroups, int chunk_size);
/**
 * The same SSM by the chunked SSD algorithm (cpu::ssd_chunked_scan) for every sequence of more
 * than SSM_RECURRENT_MAX_LEN rows; shorter ones are left alone (ssm_scan with short_only does them).
 * Reads each slot's state, writes the final state back; needs b.max_len and a workspace.
 */
void ssd_chunked_scan(const BatchView& b, const SsmParams& p, int chunk_size, float* workspace, cudaStream_t s);

/** out (R, I) bf16 = group-rmsnorm(y * silu(z)) * w, groups of `group` channels. */
void gated_rmsnorm(const float* y, const float* z, int64_t z_stride, const float* w, int R, int I, int group, float eps, bf16* out, cudaStream_t s);

/** Writes this step's k, v rows (R, nkv*hd) into the paged caches (blocks, block_size, nkv, hd). */
void kv_write(const BatchView& b, const float* k, const float* v, int nkv, int hd, bf16* k_cache, bf16* v_cache, cudaStream_t s);
/**
 * Floats of workspace paged_attention needs for batch b (split-K partial results of decode rows:
 * b.rows × the split count, which follows b.nseq where b.max_len ≤ DECODE_STEP_MAX_LEN, else
 * b.rows); depends only on the shape, so a captured graph keeps one buffer for every context length.
 */
int64_t paged_attention_workspace_floats(const BatchView& b, int nq, int hd);
/** Enough workspace for any batch of `rows` rows (tests and benchmarks): every split rule's most. */
int64_t paged_attention_workspace_floats(int rows, int nq, int hd);
/**
 * Causal GQA attention of each row over its sequence's cached keys (this step's keys already
 * written by kv_write); out (R, nq*hd) bf16. Grids depend only on b.rows, b.nseq and b.max_len.
 * A decode step's split count follows its sequence count (DECODE_STEP_MAX_LEN) and each row's
 * result depends only on its context: a verify row equals a plain decode row bitwise.
 */
void paged_attention(const BatchView& b, const float* q, int nq, int nkv, int hd, const bf16* k_cache, const bf16* v_cache, bf16* out, float* workspace, cudaStream_t s);

/** Router: ids/weights (R, k) from logits (R, E), as cpu::moe_route. */
void moe_route(const float* logits, const float* correction_bias, int R, int E, int n_group, int topk_group, int k, bool norm_topk, float scaling, int32_t* ids, float* weights, cudaStream_t s);
/** dst (M, D) = src[idx[i]] rows. */
void gather_rows(const bf16* src, const int32_t* idx, int M, int D, bf16* dst, cudaStream_t s);
/**
 * Expert-major layout of a step's M = R·k routing choices, built on the device by moe_plan: the
 * positions of expert 0's choices, then expert 1's, ...; each expert's positions cut into row tiles
 * of tile_rows for grouped_gemm. All buffers are device memory sized for the worst case.
 */
struct MoePlan {
  int32_t* src_row;    // (M) token row of each expert-major position
  int32_t* slot_of;    // (M) expert-major position of choice (r, j), at r * k + j
  int32_t* offsets;    // (E + 1) first position of each expert; offsets[E] = M
  int4* tiles;         // (moe_plan_max_tiles) {expert, first position, end of the expert's positions, 0}
  int32_t* num_tiles;  // (1) tiles in use
};
/** Rows per tile for a step of M choices over E experts (16 when fewer than 32 choices or experts, else 64: the wgmma path). */
int moe_tile_rows(int M, int E);
/** The most row tiles M choices over E experts can need: ceil(M / tile_rows) + min(E, M). */
int moe_plan_max_tiles(int M, int E, int tile_rows);
/** Histogram of ids (R, k) per expert, exclusive scan, tile table and scatter; one block, E ≤ 1024. */
void moe_plan(const int32_t* ids, int R, int k, int E, int tile_rows, const MoePlan& plan, cudaStream_t s);

/** One grouped expert projection (moe_gemm.cu): out[p] = A[row(p)] · W_e(p)ᵀ for every planned position. */
struct GroupedGemmParams {
  const bf16* a;             // activations, rows of lda elements
  int64_t lda;
  const int32_t* a_rows;     // (M) row of a for each position (plan.src_row), or nullptr: row p
  const bf16* const* w;      // (E) device array of device pointers to each expert's (N, K) weights
  int N, K;
  const int4* tiles;         // plan.tiles
  const int32_t* num_tiles;  // plan.num_tiles
  int max_tiles;             // moe_plan_max_tiles(M, E, tile_rows): the grid's row-tile extent
  int tile_rows;             // moe_tile_rows(M, E), as given to moe_plan
  bf16* out_relu2;           // (M, N) relu(acc)² in bf16 (the up projection), or nullptr
  float* out;                // (M, N) fp32 (the down projection), or nullptr
  // Optional (the wgmma path): the items of a last, partly filled round of the persistent grid are
  // split along K over the blocks that would idle through it, each part's fp32 sums added in part
  // order (deterministic). split_ws holds grouped_gemm_split_floats() floats; split_counters
  // grouped_gemm_split_counters() unsigneds, zero before the first launch (every launch leaves them
  // zero). nullptr: no split.
  float* split_ws = nullptr;
  unsigned* split_counters = nullptr;
  // Optional (the wgmma path): the experts' weights as one (w_experts, N, K) array, w[e] = w_base +
  // e · w_stride (elements; a multiple of 8): the weight tiles then come by tensor copies (TMA)
  // instead of per-thread 16-byte copies. nullptr: through w.
  const bf16* w_base = nullptr;
  int64_t w_stride = 0;
  int w_experts = 0;
};
/** One launch for all experts; grid sized by max_tiles, blocks past the plan's tiles exit. */
void grouped_gemm(const GroupedGemmParams& p, cudaStream_t s);
/** Workspace sizes of GroupedGemmParams::split_ws and split_counters on the current device. */
int64_t grouped_gemm_split_floats();
int grouped_gemm_split_counters();
/** Whether grouped_gemm takes p's weight tiles by tensor copies (p.w_base; see GroupedGemmParams). */
bool grouped_gemm_takes_tma(const GroupedGemmParams& p);

/** out (R, D) fp32 (+)= Σ_j weight[r, j] · expert_out[slot_of[r, j]]. */
void moe_combine(const float* expert_out, const int32_t* slot_of, const float* weights, int R, int k, int D, float* out, bool accumulate, cudaStream_t s);

/**
 * The most token rows the small-batch MoE path (moe_decode.cu) takes; the engine takes it for decode
 * steps of up to 4 sequences (where it wins), their verify rows included up to this many.
 */
constexpr int MOE_DECODE_MAX_ROWS = 8;
/**
 * The MoE layer of a step of at most MOE_DECODE_MAX_ROWS rows in three launches, without moe_plan
 * (moe_decode.cu): moe_decode_route (router logits, routing by the last gate block; the shared
 * expert's up projection beside it), moe_decode_up (each distinct chosen expert once, for every row
 * that chose it, relu² in bf16), moe_decode_down (each distinct expert's and the shared expert's
 * down projection; per slice of output columns the last block sums them per token into out).
 */
struct MoeDecodeParams {
  int R;                         // token rows, 1 ≤ R ≤ MOE_DECODE_MAX_ROWS
  const bf16* x;                 // (R, H) normed input of the router and the shared expert
  int H;
  const bf16* gate;              // (E, H)
  const float* correction_bias;  // (E) or nullptr
  int E, n_group, topk_group, k;
  bool norm_topk;
  float scaling;
  const bf16* v;                 // (R, Din) the routed experts' input: x, or its latent projection
  int Din;
  const bf16* const* up;         // (E) device array of device pointers to (inter, Din)
  const bf16* const* down;       // (E) likewise to (Din, inter)
  int inter;
  const bf16* shared_up;         // (S, H), or nullptr: the shared expert runs elsewhere
  const bf16* shared_down;       // (Din, S), Din == H
  int S;
  float* out;                    // (R, Din): out (+)= Σ_j w_j · expert_j(v) (+ shared(x))
  bool accumulate;
  float* logits;                 // scratch (R, E)
  int32_t* ids;                  // (R, k) chosen experts (written by moe_decode_route)
  float* weights;                // (R, k) their weights
  bf16* act;                     // scratch (R·k, inter)
  bf16* shared_act;              // scratch (R, S)
  float* expert_out;             // scratch (R·k, Din)
  float* shared_out;             // scratch (R, Din)
  unsigned* counters;            // (moe_decode_counters(Din)) zeroed once; every launch leaves them zero
};
/** Counters MoeDecodeParams::counters needs for Din output columns. */
int moe_decode_counters(int Din);
/** Whether the path takes these shapes: R ≤ 8, E ≤ 1024, k ≤ 32, group routing as moe_route, H, Din, inter, S multiples of 8, 16-byte aligned rows. */
bool moe_decode_supported(const MoeDecodeParams& p);
void moe_decode_route(const MoeDecodeParams& p, cudaStream_t s);
void moe_decode_up(const MoeDecodeParams& p, cudaStream_t s);
void moe_decode_down(const MoeDecodeParams& p, cudaStream_t s);

/** One row to sample: its logits row and its sampling parameters (see engine.h Sampling). */
struct SampleRow {
  int row;              // row of the logits matrix
  int top_k;            // 0: off; 1: greedy
  float temperature;    // <= 0: greedy
  float top_p;          // 1: off
  uint64_t seed;
  int64_t position;     // keys the uniform draw with the seed, as lm::keyed_uniform
};
/** tokens[i] = lm::sample_token(logits + rows[i].row * vocab, ...) on the device; rows on the device. */
void sample_tokens(const float* logits, int vocab, const SampleRow* rows, int n, int32_t* tokens, cudaStream_t s);

/** Row counts up to this go through skinny_gemm in one launch (gemv.cu). */
constexpr int SKINNY_MAX_M = 16;
/** Whether skinny_gemm takes this shape: 1 ≤ M ≤ SKINNY_MAX_M, K a multiple of 8, 16-byte aligned x and W. */
bool skinny_gemm_supported(int64_t M, int64_t K, const void* x, const void* W);
/** y (M, N) fp32 = x (M, K) bf16 · W (N, K)ᵀ (+ beta · y): the weight-streaming kernel for decode-sized M. */
void skinny_gemm(const bf16* x, int M, int K, const bf16* W, int N, float* y, float beta, cudaStream_t s);
/** One projection of a skinny_gemm_multi launch: W (N, K) 16-byte aligned; exactly one of y (fp32, + beta · y) and y16 (relu(·)², bf16). */
struct SkinnyOut {
  const bf16* W;
  int N;
  float* y;
  bf16* y16;
};
constexpr int SKINNY_MAX_OUTS = 3;
/**
 * The conv1d epilogue of a decode step's in_proj (skinny_gemm_conv): output columns [col0, col0 + C)
 * of row m are the conv inputs of sequence m (one row per sequence); instead of y they give
 * xbc (M, C) = silu(conv) and shift the slot's conv state, with conv1d_silu_step's arithmetic.
 */
struct SkinnyConv {
  int col0 = 0, C = 0, K = 0;     // first column, channels, conv_kernel (≤ 4)
  const float* w = nullptr;       // (C, K) taps
  const float* bias = nullptr;    // (C) or nullptr
  float* state = nullptr;         // (slots, K - 1, C)
  const int* seq_slot = nullptr;  // (M) slot of row m
  float* xbc = nullptr;           // (M, C)
};
/** skinny_gemm (beta 0) of one projection with the conv epilogue on columns [col0, col0 + C); y keeps the other columns. */
void skinny_gemm_conv(const bf16* x, int M, int K, const bf16* W, int N, float* y, const SkinnyConv& conv, cudaStream_t s);
/** Up to SKINNY_MAX_OUTS projections of the same x (M, K) in one launch (attention's q, k, v), each output as skinny_gemm's. */
void skinny_gemm_multi(const bf16* x, int M, int K, const SkinnyOut* outs, int n, float beta, cudaStream_t s);

/** MTP (mtp.cu): out (R, 2H) bf16 = [rmsnorm(embed[tokens[r]]) · enorm ; rmsnorm(hidden[r]) · hnorm]. */
void mtp_input(const int32_t* tokens, const bf16* hidden, int R, const bf16* embed, const float* enorm, const float* hnorm, int H, float eps, bf16* out, cudaStream_t s);
/** dst[dst_idx[i]] = src[src_idx[i]] for i < M, rows of D (a null index array means i). */
void move_rows_bf16(const bf16* src, const int32_t* src_idx, const int32_t* dst_idx, int M, int D, bf16* dst, cudaStream_t s);
/** dst (M, D) = the first D values of rows idx[i] of src (rows of ld floats). */
void gather_rows_f32(const float* src, int64_t ld, const int32_t* idx, int M, int D, float* dst, cudaStream_t s);
/** dst[i] = src[idx[i]]. */
void gather_ints(const int32_t* src, const int32_t* idx, int n, int32_t* dst, cudaStream_t s);
/**
 * Per-slot state of every layer, (layers, slots_per_layer, size) floats, to or from a snapshot
 * (entries, layers, size): entry i is slot slots[i] at snapshot index snap[i]. restore: snapshot → state.
 */
void slot_states(float* state, int slots_per_layer, int layers, int64_t size, const int32_t* slots, const int32_t* snap, int n, float* snapshot, bool restore, cudaStream_t s);

/** Holds the stream until *flag (mapped pinned memory, set by the host) is non-zero or timeout_ns pass (hold.cu). */
void hold_stream(const int* flag, int64_t timeout_ns, cudaStream_t s);

/** Elementwise helpers. */
void relu2_bf16(const float* in, int64_t n, bf16* out, cudaStream_t s);
void f32_to_bf16(const float* in, int64_t n, bf16* out, cudaStream_t s);
void add_inplace(float* h, const float* x, int64_t n, cudaStream_t s);
/** Converts raw checkpoint data (0 = F32, 1 = BF16, 2 = F16) to bf16 or fp32 on the device. */
void convert_to_bf16(const void* raw, int dtype, int64_t n, bf16* out, cudaStream_t s);
void convert_to_f32(const void* raw, int dtype, int64_t n, float* out, cudaStream_t s);
/** Deterministic dummy values: uniform in [lo, hi) from (seed, index); kind 1 = dt_bias, 2 = A_log. */
void fill_dummy_bf16(bf16* p, int64_t n, uint64_t seed, float lo, float hi, cudaStream_t s);
void fill_dummy_f32(float* p, int64_t n, uint64_t seed, float lo, float hi, int kind, cudaStream_t s);

}  // namespace lm::cuda

namespace lm::cuda {
/** y (R, N) += bias (N). */
void add_bias(float* y, const float* bias, int R, int N, cudaStream_t s);
/** p = -exp(p), elementwise (A from A_log). */
void neg_exp(float* p, int64_t n, cudaStream_t s);
}  // namespace lm::cuda
