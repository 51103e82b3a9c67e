// Flash-attention prefill at head dim 128 on Hopper (sm_90a), warp-specialized in the manner of
// FlashAttention-3: the path flash_prefill (attention_prefill.cu) takes for head dim 128.
//
//   out[r, h] = Σ_p softmax_p(q[r, h] · K[p, h / (nq/nkv)] / sqrt(128)) V[p, ·],  p ≤ pos(r)
//
// Work: items of BM = 128 query rows of one (sequence, query head), heaviest first: the item of row
// tile T − 1 − i / nq (from the top) of head i % nq comes i-th, so every head's long causal rows
// start before the short ones and the tail is short tiles. The default (config 4) is a persistent
// grid of one block per SM: round r takes items r·G + b, b reversed in odd rounds so that the blocks'
// shares even out; configs 0–2 launch one block per item instead.
//
// Warp roles (3 warpgroups, 384 threads, one block per SM): warpgroup 0 produces, lowering its
// registers to 56 (setmaxnreg); warpgroups 1 and 2 each own 64 query rows, raising theirs to 224.
// The producer copies each BN = 128-key K tile and V tile from the paged cache (any block size) with
// 16-byte cp.async into a STAGES-deep ring, zero-filled past the last key, each thread's copies
// completing on the tile's full barrier (cp.async.mbarrier.arrive.noinc, 128 arrivals); K and V have
// their own full and empty barriers, so K of the next tile loads while V of this one is still read.
// Each producer thread reads the block-table entries of its 8 keys one tile ahead (a table read
// before every copy serialized the producer: 1.47 → 0.94 ms at 8K). Tiles sit in the 128-byte
// swizzled layout: a 128×128 bf16 tile is two 16 KB halves of 64 columns, each 128 rows of 128
// bytes. A consumer warpgroup converts its 64 Q rows (fp32 → bf16) into the same layout, then per
// key tile j:
//   S_j = Q·K_jᵀ            8 × wgmma m64n128k16, both operands K-major in shared memory
//   O  += P_{j−1}·V_{j−1}   8 × wgmma m64n128k16, P in registers (the S accumulator layout is the
//                           mma.sync A fragment), V read MN-major (transposed) from shared memory
// issued together; the online softmax of S_j (fp32, exp2 with the scale folded into one FMA) runs
// while P_{j−1}·V_{j−1} is in flight, and O is rescaled once it has landed. Key tiles past the row
// tile's last row are never visited; tiles that reach past a row's last key are masked. With
// PINGPONG the two consumer warpgroups take turns issuing their MMAs (named barriers 3 and 4), so
// one's softmax overlaps the other's MMAs. Every consumer warp releases a stage on its empty
// barrier (8 arrivals) once its MMAs reading the stage are done. PROFILE builds count cycles per
// phase (flash_prefill_sm90_profile).
#include "cuda/attention_mma.cuh"
#include "cuda/attention_sm90.cuh"

namespace lm::cuda::attn {

namespace {

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LM_ATTN_SM90 1
#endif

using namespace sm90;

constexpr int HD = 128, BM = 128, BNK = 128, THREADS = 384;
constexpr int HALF_BYTES = 128 * 128;  // 128 rows × 64 bf16: one swizzled half of a 128×128 tile
constexpr int TILE_BYTES = BNK * HD * 2;
static_assert(TILE_BYTES == 2 * HALF_BYTES, "a 128-key tile is two 64-column swizzled halves");
constexpr int PRODUCER_REGS = 56, CONSUMER_REGS = 224;
// setmaxnreg.inc waits for registers the other warpgroups released: the totals must match the launch's.
static_assert((PRODUCER_REGS + 2 * CONSUMER_REGS) * 128 == 65536 / THREADS / 8 * 8 * THREADS, "register split of the block's allocation at launch");

template <int STAGES>
struct Sm90Shape {
  static constexpr int Q_OFF = 0, K_OFF = TILE_BYTES, V_OFF = K_OFF + STAGES * TILE_BYTES;
  static constexpr int SMEM = V_OFF + STAGES * TILE_BYTES + 1024;  // + slack to align on 1024 bytes
  static_assert(SMEM <= 227 * 1024, "shared memory per block");
  static_assert(Q_OFF % 1024 == 0 && K_OFF % 1024 == 0 && V_OFF % 1024 == 0, "tiles on whole 1024-byte swizzle atoms");
};

#ifdef LM_ATTN_SM90
/** Online softmax of one 64×128 tile (this thread: 2 rows × 32 keys) that leaves O alone: corr[hf] rescales it later. */
__device__ __forceinline__ void softmax_tile(float (&s)[64], float (&m)[2], float (&l)[2], float (&corr)[2], float sl2) {
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    float mx = m[hf];
#pragma unroll
    for (int nb = 0; nb < 16; ++nb) mx = fmaxf(mx, fmaxf(s[4 * nb + 2 * hf], s[4 * nb + 2 * hf + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    // A row with no unmasked key yet keeps max −inf: exponents then use 0 so that nothing is NaN.
    const float mb = (mx == -INFINITY ? 0.f : mx) * sl2;
    corr[hf] = exp2_approx(m[hf] * sl2 - mb);
    m[hf] = mx;
    float sum = 0.f;
#pragma unroll
    for (int nb = 0; nb < 16; ++nb)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float p = exp2_approx(fmaf(s[4 * nb + 2 * hf + e], sl2, -mb));
        s[4 * nb + 2 * hf + e] = p;
        sum += p;
      }
    l[hf] = l[hf] * corr[hf] + sum;
  }
}

/** P as bf16 A fragments, one per 16-key step, from the probabilities in the S accumulator layout. */
__device__ __forceinline__ void pack_p(const float (&s)[64], uint32_t (&p)[8][4]) {
#pragma unroll
  for (int kk = 0; kk < 8; ++kk)
#pragma unroll
    for (int e = 0; e < 4; ++e) p[kk][e] = pack_bf16(s[8 * kk + 2 * e], s[8 * kk + 2 * e + 1]);
}
#endif

/** Cycle counters of the PROFILE instances (see flash_prefill_sm90_profile). */
__device__ unsigned long long g_profile[8];

/** One work item: rows [t0, t0 + nrows) of sequence seq, query head h, reading keys [0, key_end). */
struct Item {
  int seq, h, t0, nrows, row0, p_first, key_end, n_tiles;
};

#ifdef LM_ATTN_SM90
/** The item of row tile `from_top` (0 = the last, longest tile) of (seq, h); false when it has no rows for this kernel. */
__device__ __forceinline__ bool make_item(const BatchView& b, int from_top, int seq, int h, int row_tiles, Item& it) {
  const int len = b.seq_len[seq];
  it.t0 = (row_tiles - 1 - from_top) * BM;
  if (len <= DECODE_MAX_LEN || it.t0 >= len) return false;
  it.seq = seq, it.h = h;
  it.row0 = b.seq_row0[seq];
  it.nrows = min(BM, len - it.t0);
  it.p_first = b.seq_pos0[seq] + it.t0;
  it.key_end = it.p_first + it.nrows;
  it.n_tiles = (it.key_end + BNK - 1) / BNK;
  return true;
}
#endif

/**
 * POW2: the KV block size is a power of two (shifts instead of divisions). PROFILE: consumer and
 * producer threads 0 add the cycles of each phase to g_profile (a development build of config 0).
 * PERSIST: one block per SM walks the items (row tile from the top, sequence, head) in that order,
 * round r of the grid taking items r·G + b, snaking (b reversed in odd rounds) so that blocks get
 * equal shares of the long and short tiles; the producer runs on into the next item's tiles.
 */
template <int STAGES, bool PINGPONG, bool POW2, bool PROFILE, bool PERSIST>
__global__ void __launch_bounds__(THREADS, 1) flash_prefill_sm90_kernel(BatchView b, const float* __restrict__ q, int nq, int nkv, const bf16* __restrict__ kc, const bf16* __restrict__ vc,
                                                                        bf16* __restrict__ out, float sl2, int row_tiles) {
#ifdef LM_ATTN_SM90
  using S = Sm90Shape<STAGES>;
  // Items in order: r counts the rounds taken (persistent) or whether the block's one item was.
  int round = 0;
  auto fetch = [&](Item& it) -> bool {
    if constexpr (!PERSIST) {
      if (round++ > 0) return false;
      return make_item(b, static_cast<int>(blockIdx.x) / nq, blockIdx.y, blockIdx.x % nq, row_tiles, it);
    } else {
      const int G = gridDim.x, bid = blockIdx.x, total = row_tiles * b.nseq * nq;
      for (;;) {
        const int i = round * G + ((round & 1) ? G - 1 - bid : bid);
        ++round;
        if (i >= total) return false;  // every later round starts past i
        if (make_item(b, i / (b.nseq * nq), (i / nq) % b.nseq, i % nq, row_tiles, it)) return true;
      }
    }
  };
  Item it;
  if (!fetch(it)) return;

  extern __shared__ __align__(1024) unsigned char smem_raw[];
  __shared__ __align__(8) uint64_t full_k[STAGES], full_v[STAGES], empty_k[STAGES], empty_v[STAGES];
  const uint32_t base = (smem_addr(smem_raw) + 1023) & ~1023u;
  const uint32_t sq = base + S::Q_OFF, sk = base + S::K_OFF, sv = base + S::V_OFF;
  const int tid = threadIdx.x % 128, wg = threadIdx.x / 128, group = nq / nkv;

  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(smem_addr(&full_k[s]), 128);
      mbar_init(smem_addr(&full_v[s]), 128);
      mbar_init(smem_addr(&empty_k[s]), 8);
      mbar_init(smem_addr(&empty_v[s]), 8);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (wg == 0) {
    // Producer: this thread copies chunks c (columns 8c..8c+7 of each half) of tile rows r0 + 16·j.
    // The page of each of its 8 keys comes from the block table one tile ahead, so that the table
    // reads of a tile are in flight together and never stall the copies. Tiles count across items
    // (g): tile u of the block sits in stage u % STAGES.
    setmaxnreg_dec<PRODUCER_REGS>();
    const int c = tid & 7, r0 = tid >> 3;
    const uint32_t dst = r0 * 128 + ((c ^ (r0 & 7)) << 4);  // (r0 + 16·j) % 8 == r0 % 8
    const int bs = b.block_size, shift = POW2 ? __ffs(bs) - 1 : 0;
    const int row_stride = nkv * HD;  // elements between consecutive cache rows (block · bs + offset)
    long long t_wait = 0, t_begin = PROFILE ? clock64() : 0;
    int g = 0;
    do {
      const int* bt = b.block_tables + b.seq_bt0[it.seq];
      const int key_end = it.key_end, kvh = it.h / group;
      const bf16* k_base = kc + kvh * HD + c * 8;
      const bf16* v_base = vc + kvh * HD + c * 8;
      auto load_pages = [&](int t, int (&pg)[BNK / 16]) {
#pragma unroll
        for (int j = 0; j < BNK / 16; ++j) {
          const int pos = t * BNK + r0 + 16 * j;
          pg[j] = pos < key_end ? __ldg(bt + (POW2 ? pos >> shift : pos / bs)) : 0;
        }
      };
      auto copy_tile = [&](uint32_t stage, const bf16* src_base, int t, const int (&pg)[BNK / 16]) {
#pragma unroll
        for (int j = 0; j < BNK / 16; ++j) {
          const int pos = t * BNK + r0 + 16 * j;
          const bool valid = pos < key_end;
          const int row = pg[j] * bs + (POW2 ? pos & (bs - 1) : pos % bs);
          const bf16* src = src_base + static_cast<int64_t>(row) * row_stride;  // pg[j] = 0 past the end: a harmless address, nothing read
          cp_async16(stage + dst + j * 2048, src, valid);
          cp_async16(stage + HALF_BYTES + dst + j * 2048, src + 64, valid);
        }
      };
      int page[BNK / 16], next[BNK / 16];
      load_pages(0, page);
      for (int t = 0; t < it.n_tiles; ++t, ++g) {
        if (t + 1 < it.n_tiles) load_pages(t + 1, next);
        const int s = g % STAGES;
        const uint32_t parity = ((g / STAGES) & 1) ^ 1;
        long long t0w = PROFILE ? clock64() : 0;
        mbar_wait(smem_addr(&empty_k[s]), parity);
        if constexpr (PROFILE) t_wait += clock64() - t0w;
        copy_tile(sk + s * TILE_BYTES, k_base, t, page);
        mbar_arrive_cp_async(smem_addr(&full_k[s]));
        if constexpr (PROFILE) t0w = clock64();
        mbar_wait(smem_addr(&empty_v[s]), parity);
        if constexpr (PROFILE) t_wait += clock64() - t0w;
        copy_tile(sv + s * TILE_BYTES, v_base, t, page);
        mbar_arrive_cp_async(smem_addr(&full_v[s]));
#pragma unroll
        for (int j = 0; j < BNK / 16; ++j) page[j] = next[j];
      }
    } while (fetch(it));
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    if constexpr (PROFILE) {
      if (tid == 0) {
        atomicAdd(&g_profile[6], static_cast<unsigned long long>(t_wait));
        atomicAdd(&g_profile[7], static_cast<unsigned long long>(clock64() - t_begin));
      }
    }
    return;
  }

  // Consumers: warpgroup w = wg − 1 owns tile rows [64w, 64w + 64).
  setmaxnreg_inc<CONSUMER_REGS>();
  const int w = wg - 1, warp = tid >> 5, lane = tid & 31, c = lane & 3;
  const int wrow = 64 * w + 16 * warp + (lane >> 2);
  const uint64_t q_desc = sw128_desc(sq + w * 64 * 128, 16, 1024);
  // Tile kt of the current item is the block's tile g + kt: stage (g + kt) % STAGES.
  int g = 0;
  auto stage = [&](int kt) { return (g + kt) % STAGES; };
  auto parity = [&](int kt) { return static_cast<uint32_t>(((g + kt) / STAGES) & 1); };
  auto issue_qk = [&](float (&s)[64], int kt) {
    const uint64_t k_desc = sw128_desc(sk + stage(kt) * TILE_BYTES, 16, 1024);
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      const uint32_t off = ((kk >> 2) * HALF_BYTES + (kk & 3) * 32) >> 4;
      wgmma_ss_m64n128(s, q_desc + off, k_desc + off, kk > 0 ? 1 : 0);
    }
    wgmma_commit();
  };
  float o[64];
  auto issue_pv = [&](const uint32_t (&p)[8][4], int kt) {
    const uint64_t v_desc = sw128_desc(sv + stage(kt) * TILE_BYTES, HALF_BYTES, 1024);
#pragma unroll
    for (int kk = 0; kk < BNK / 16; ++kk) wgmma_rs_m64n128_tb(o, p[kk], v_desc + ((kk * 16 * 128) >> 4));
    wgmma_commit();
  };
  auto release = [&](uint64_t* bars, int kt) {
    if (lane == 0) mbar_arrive(smem_addr(&bars[stage(kt)]));
  };
  // Ping-pong: warpgroup w issues after barrier 3 + w completes and lets the other one go after.
  auto my_turn = [&] {
    if constexpr (PINGPONG) bar_sync(3 + w, 256);
  };
  auto your_turn = [&] {
    if constexpr (PINGPONG) bar_arrive(4 - w, 256);
  };
  // PROFILE: cycles waiting for K/V, issuing and waiting for S, in the softmax, waiting for P·V, rescaling.
  long long prof[5] = {0, 0, 0, 0, 0}, t_prev = 0, t_loop = 0;
  auto lap = [&](int i) {
    if constexpr (PROFILE) {
      const long long now = clock64();
      prof[i] += now - t_prev;
      t_prev = now;
    }
  };

  do {
    const int h = it.h, nrows = it.nrows, p_first = it.p_first, n_tiles = it.n_tiles;
    // Q rows → bf16, swizzled: float4 i of row r holds columns 4i..4i+3, half (4i)/64, chunk (4i % 64)/8.
#pragma unroll
    for (int i = tid; i < 64 * HD / 4; i += 128) {
      const int r = 64 * w + i / (HD / 4), c4 = i % (HD / 4);
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (r < nrows) v = __ldg(reinterpret_cast<const float4*>(q + (static_cast<int64_t>(it.row0 + it.t0 + r) * nq + h) * HD) + c4);
      const int col = 4 * c4, chunk = (col & 63) >> 3;
      const uint32_t a = sq + (col >> 6) * HALF_BYTES + r * 128 + ((chunk ^ (r & 7)) << 4) + (col & 7) * 2;
      asm volatile("st.shared.v2.b32 [%0], {%1, %2};\n" ::"r"(a), "r"(pack_bf16(v.x, v.y)), "r"(pack_bf16(v.z, v.w)) : "memory");
    }
    fence_proxy_async();  // ordinary stores that wgmma (the async proxy) reads next
    bar_sync(1 + w, 128);

    const int lim0 = p_first + min(wrow, nrows - 1), lim1 = p_first + min(wrow + 8, nrows - 1);
    auto mask = [&](float (&s)[64], int kt) {
      if (kt * BNK + BNK - 1 > p_first + 64 * w) {  // the tile reaches past some row's last key
#pragma unroll
        for (int nb = 0; nb < 16; ++nb)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (kt * BNK + 8 * nb + 2 * c + (e & 1) > ((e >> 1) ? lim1 : lim0)) s[4 * nb + e] = -INFINITY;
      }
    };
    if constexpr (PINGPONG) {
      if (w == 1) bar_arrive(3, 256);  // warpgroup 1 (rows 0..63) issues first
    }

    // P alternates between two register sets (tile j − 1's is read by the MMAs in flight while tile
    // j's is packed): one set copied into the other would let the compiler merge them and serialize.
    float s[64], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, corr[2];
    uint32_t pa[8][4], pb[8][4];
#pragma unroll
    for (int i = 0; i < 64; ++i) o[i] = 0.f;

    mbar_wait(smem_addr(&full_k[stage(0)]), parity(0));
    fence_proxy_async();  // cp.async wrote the stage through the generic proxy
    my_turn();
    fence_regs(s);
    wgmma_fence();
    issue_qk(s, 0);
    your_turn();
    wgmma_wait<0>();
    fence_regs(s);
    release(empty_k, 0);
    mask(s, 0);
    softmax_tile(s, m, l, corr, sl2);
    pack_p(s, pa);

    // Tile kt: S_kt and P_{kt−1}·V_{kt−1} (P_{kt−1} in p), softmax of S_kt into pn, then O rescaled.
    auto step = [&](int kt, uint32_t (&p)[8][4], uint32_t (&pn)[8][4]) {
      lap(4);
      mbar_wait(smem_addr(&full_k[stage(kt)]), parity(kt));
      mbar_wait(smem_addr(&full_v[stage(kt - 1)]), parity(kt - 1));
      fence_proxy_async();
      my_turn();
      lap(0);
      fence_regs(s);
      fence_regs(o);
      fence_regs(p);
      wgmma_fence();
      issue_qk(s, kt);
      issue_pv(p, kt - 1);
      your_turn();
      wgmma_wait<1>();  // S_kt is in; P·V may run on
      fence_regs(s);
      lap(1);
      release(empty_k, kt);
      mask(s, kt);
      softmax_tile(s, m, l, corr, sl2);
      pack_p(s, pn);
      lap(2);
      wgmma_wait<0>();
      fence_regs(o);
      fence_regs(p);
      lap(3);
      release(empty_v, kt - 1);
      // Rows whose maximum did not move keep O as it is (corr = 1 exactly); the warp decides as one.
      if (!__all_sync(0xffffffffu, corr[0] == 1.f && corr[1] == 1.f)) {
#pragma unroll
        for (int i = 0; i < 64; ++i) o[i] *= corr[(i >> 1) & 1];
      }
    };
    auto last_pv = [&](uint32_t (&p)[8][4]) {
      mbar_wait(smem_addr(&full_v[stage(n_tiles - 1)]), parity(n_tiles - 1));
      fence_proxy_async();
      my_turn();
      fence_regs(o);
      fence_regs(p);
      wgmma_fence();
      issue_pv(p, n_tiles - 1);
      if (w == 0) your_turn();  // warpgroup 2's last turn goes unanswered: it must not arrive again
      wgmma_wait<0>();
      fence_regs(o);
      fence_regs(p);
      release(empty_v, n_tiles - 1);
    };
    if constexpr (PROFILE) t_prev = clock64(), t_loop -= t_prev;
    int kt = 1;
    for (; kt + 1 < n_tiles; kt += 2) {
      step(kt, pa, pb);
      step(kt + 1, pb, pa);
    }
    if (kt < n_tiles) {
      step(kt, pa, pb);
      last_pv(pb);
    } else {
      last_pv(pa);
    }
    if constexpr (PROFILE) lap(4), t_loop += t_prev;
    g += n_tiles;

#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float L = l[hf];
      L += __shfl_xor_sync(0xffffffffu, L, 1);
      L += __shfl_xor_sync(0xffffffffu, L, 2);
      const float inv = 1.f / L;
      const int r = wrow + 8 * hf;
      if (r >= nrows) continue;
      bf16* dst = out + (static_cast<int64_t>(it.row0 + it.t0 + r) * nq + h) * HD + 2 * c;
#pragma unroll
      for (int nb = 0; nb < 16; ++nb) *reinterpret_cast<uint32_t*>(dst + nb * 8) = pack_bf16(o[4 * nb + 2 * hf] * inv, o[4 * nb + 2 * hf + 1] * inv);
    }
  } while (fetch(it));
  if constexpr (PROFILE) {
    if (tid == 0) {
      for (int i = 0; i < 5; ++i) atomicAdd(&g_profile[i], static_cast<unsigned long long>(prof[i]));
      atomicAdd(&g_profile[5], static_cast<unsigned long long>(t_loop));
    }
  }
#else
  __trap();  // built without the sm_90a features: fail loudly rather than leave out unwritten
#endif
}

/** Multiprocessors of the current device, asked once per process. */
int sm_count() {
  static const int n = [] {
    int device = 0, sms = 0;
    check(cudaGetDevice(&device), "paged_attention: cudaGetDevice");
    check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "paged_attention: cudaDeviceGetAttribute");
    return sms;
  }();
  return n;
}

template <int STAGES, bool PINGPONG, bool POW2, bool PROFILE, bool PERSIST>
void launch(const BatchView& b, const float* q, int nq, int nkv, const bf16* kc, const bf16* vc, bf16* out, float sl2, cudaStream_t s) {
  using S = Sm90Shape<STAGES>;
  auto kernel = flash_prefill_sm90_kernel<STAGES, PINGPONG, POW2, PROFILE, PERSIST>;
  static bool smem_set = false;
  allow_smem(kernel, S::SMEM, smem_set);
  const int row_tiles = ceil_div(b.max_len, BM);
  const dim3 grid = PERSIST ? dim3(static_cast<unsigned>(std::min<int64_t>(sm_count(), int64_t(row_tiles) * nq * b.nseq))) : dim3(row_tiles * nq, b.nseq);
  kernel<<<grid, THREADS, S::SMEM, s>>>(b, q, nq, nkv, kc, vc, out, sl2, row_tiles);
  LM_LAUNCH_CHECK("paged_attention (prefill, sm90 warp-specialized)");
}

template <int STAGES, bool PINGPONG, bool PROFILE = false, bool PERSIST = false>
void launch_bs(const BatchView& b, const float* q, int nq, int nkv, const bf16* kc, const bf16* vc, bf16* out, float sl2, cudaStream_t s) {
  if ((b.block_size & (b.block_size - 1)) == 0) return launch<STAGES, PINGPONG, true, PROFILE, PERSIST>(b, q, nq, nkv, kc, vc, out, sl2, s);
  launch<STAGES, PINGPONG, false, PROFILE, PERSIST>(b, q, nq, nkv, kc, vc, out, sl2, s);
}

}  // namespace

void flash_prefill_sm90(int config, const BatchView& b, const float* q, int nq, int nkv, const bf16* kc, const bf16* vc, bf16* out, float sl2, cudaStream_t s) {
  switch (config) {
    case 1: return launch_bs<3, false>(b, q, nq, nkv, kc, vc, out, sl2, s);
    case 2: return launch_bs<2, true>(b, q, nq, nkv, kc, vc, out, sl2, s);
    case 3: return launch_bs<2, false, true>(b, q, nq, nkv, kc, vc, out, sl2, s);
    case 4: return launch_bs<2, false, false, true>(b, q, nq, nkv, kc, vc, out, sl2, s);
    case 5: return launch_bs<2, false, true, true>(b, q, nq, nkv, kc, vc, out, sl2, s);
    default: return launch_bs<2, false>(b, q, nq, nkv, kc, vc, out, sl2, s);
  }
}

void flash_prefill_sm90_profile(unsigned long long (&cycles)[8]) {
  check(cudaMemcpyFromSymbol(cycles, g_profile, sizeof(cycles)), "flash_prefill_sm90_profile");
  const unsigned long long zero[8] = {};
  check(cudaMemcpyToSymbol(g_profile, zero, sizeof(zero)), "flash_prefill_sm90_profile");
}

}  // namespace lm::cuda::attn
