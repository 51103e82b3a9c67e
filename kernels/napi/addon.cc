// Node-API glue only: converts arguments, runs slow engine calls on the libuv pool as Promises,
// and turns C++ exceptions into JS errors whose message names the call ("Engine.step: ...").
// No engine logic and no exception ever crosses into Node.
#include <node_api.h>

#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine.h"

namespace {

struct JsError {
  std::string message;
};

#define NAPI_OK(call)                                                     \
  do {                                                                    \
    if ((call) != napi_ok) throw JsError{std::string("N-API call failed: ") + #call}; \
  } while (0)

napi_value get_prop(napi_env env, napi_value obj, const char* key, const std::string& where) {
  bool has = false;
  NAPI_OK(napi_has_named_property(env, obj, key, &has));
  if (!has) throw JsError{where + "." + key + " is required"};
  napi_value v;
  NAPI_OK(napi_get_named_property(env, obj, key, &v));
  return v;
}

double get_number(napi_env env, napi_value obj, const char* key, const std::string& where) {
  napi_value v = get_prop(env, obj, key, where);
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) throw JsError{where + "." + key + " must be a number"};
  return d;
}

int get_int(napi_env env, napi_value obj, const char* key, const std::string& where) {
  return static_cast<int>(get_number(env, obj, key, where));
}

bool has_prop(napi_env env, napi_value obj, const char* key) {
  bool has = false;
  NAPI_OK(napi_has_named_property(env, obj, key, &has));
  if (!has) return false;
  napi_value v;
  napi_valuetype t;
  NAPI_OK(napi_get_named_property(env, obj, key, &v));
  NAPI_OK(napi_typeof(env, v, &t));
  return t != napi_undefined;
}

/** An optional integer field (absent or undefined: `fallback`). */
int get_int_or(napi_env env, napi_value obj, const char* key, const std::string& where, int fallback) {
  return has_prop(env, obj, key) ? get_int(env, obj, key, where) : fallback;
}

bool get_bool(napi_env env, napi_value obj, const char* key, const std::string& where) {
  napi_value v = get_prop(env, obj, key, where);
  bool b;
  if (napi_get_value_bool(env, v, &b) != napi_ok) throw JsError{where + "." + key + " must be a boolean"};
  return b;
}

std::string to_string(napi_env env, napi_value v, const std::string& what) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, nullptr, 0, &len) != napi_ok) throw JsError{what + " must be a string"};
  std::string s(len, '\0');
  NAPI_OK(napi_get_value_string_utf8(env, v, s.data(), len + 1, &len));
  return s;
}

std::string get_string(napi_env env, napi_value obj, const char* key, const std::string& where) {
  return to_string(env, get_prop(env, obj, key, where), where + "." + key);
}

uint32_t array_length(napi_env env, napi_value arr, const std::string& what) {
  bool is_array = false;
  NAPI_OK(napi_is_array(env, arr, &is_array));
  if (!is_array) throw JsError{what + " must be an array"};
  uint32_t n;
  NAPI_OK(napi_get_array_length(env, arr, &n));
  return n;
}

std::vector<int32_t> get_int32_array(napi_env env, napi_value obj, const char* key, const std::string& where) {
  napi_value v = get_prop(env, obj, key, where);
  bool is_typed = false;
  NAPI_OK(napi_is_typedarray(env, v, &is_typed));
  if (!is_typed) throw JsError{where + "." + key + " must be an Int32Array"};
  napi_typedarray_type type;
  size_t length;
  void* data;
  napi_value buf;
  size_t offset;
  NAPI_OK(napi_get_typedarray_info(env, v, &type, &length, &data, &buf, &offset));
  if (type != napi_int32_array) throw JsError{where + "." + key + " must be an Int32Array"};
  const auto* p = static_cast<const int32_t*>(data);
  return std::vector<int32_t>(p, p + length);
}

napi_value make_error(napi_env env, const std::string& msg) {
  napi_value m, e;
  napi_create_string_utf8(env, msg.c_str(), msg.size(), &m);
  napi_create_error(env, nullptr, m, &e);
  return e;
}

void throw_js(napi_env env, const std::string& msg) { napi_throw(env, make_error(env, msg)); }

lm::ModelSpec read_spec(napi_env env, napi_value o) {
  const std::string w = "options.spec";
  lm::ModelSpec s;
  s.vocab_size = get_int(env, o, "vocabSize", w);
  s.hidden_size = get_int(env, o, "hiddenSize", w);
  s.pattern = get_string(env, o, "pattern", w);
  s.mtp_pattern = get_string(env, o, "mtpPattern", w);
  s.num_nextn_predict_layers = get_int_or(env, o, "numNextnPredictLayers", w, 0);
  s.norm_eps = static_cast<float>(get_number(env, o, "normEps", w));
  s.tie_word_embeddings = get_bool(env, o, "tieWordEmbeddings", w);
  s.mamba_num_heads = get_int(env, o, "mambaNumHeads", w);
  s.mamba_head_dim = get_int(env, o, "mambaHeadDim", w);
  s.ssm_state_size = get_int(env, o, "ssmStateSize", w);
  s.n_groups = get_int(env, o, "nGroups", w);
  s.conv_kernel = get_int(env, o, "convKernel", w);
  s.chunk_size = get_int(env, o, "chunkSize", w);
  s.time_step_min = static_cast<float>(get_number(env, o, "timeStepMin", w));
  s.time_step_max = static_cast<float>(get_number(env, o, "timeStepMax", w));
  s.use_conv_bias = get_bool(env, o, "useConvBias", w);
  s.mamba_proj_bias = get_bool(env, o, "mambaProjBias", w);
  s.num_attention_heads = get_int(env, o, "numAttentionHeads", w);
  s.num_key_value_heads = get_int(env, o, "numKeyValueHeads", w);
  s.head_dim = get_int(env, o, "headDim", w);
  s.attention_bias = get_bool(env, o, "attentionBias", w);
  s.intermediate_size = get_int(env, o, "intermediateSize", w);
  s.moe_intermediate_size = get_int(env, o, "moeIntermediateSize", w);
  s.moe_shared_expert_intermediate_size = get_int(env, o, "moeSharedExpertIntermediateSize", w);
  s.n_routed_experts = get_int(env, o, "nRoutedExperts", w);
  s.num_experts_per_tok = get_int(env, o, "numExpertsPerTok", w);
  s.n_group = get_int(env, o, "nGroup", w);
  s.topk_group = get_int(env, o, "topkGroup", w);
  s.norm_topk_prob = get_bool(env, o, "normTopkProb", w);
  s.routed_scaling_factor = static_cast<float>(get_number(env, o, "routedScalingFactor", w));
  s.moe_latent_size = get_int(env, o, "moeLatentSize", w);
  s.mlp_bias = get_bool(env, o, "mlpBias", w);
  return s;
}

lm::EngineOptions read_options(napi_env env, napi_value o) {
  const std::string w = "options";
  lm::EngineOptions opts;
  opts.spec = read_spec(env, get_prop(env, o, "spec", w));
  napi_value tensors = get_prop(env, o, "tensors", w);
  const uint32_t n = array_length(env, tensors, "options.tensors");
  for (uint32_t i = 0; i < n; ++i) {
    napi_value t;
    NAPI_OK(napi_get_element(env, tensors, i, &t));
    const std::string tw = "options.tensors[" + std::to_string(i) + "]";
    lm::TensorRef r;
    r.name = get_string(env, t, "name", tw);
    r.file = get_string(env, t, "file", tw);
    r.offset = static_cast<uint64_t>(get_number(env, t, "offset", tw));
    r.nbytes = static_cast<uint64_t>(get_number(env, t, "nbytes", tw));
    const std::string dt = get_string(env, t, "dtype", tw);
    if (dt == "F32") r.dtype = lm::DType::F32;
    else if (dt == "BF16") r.dtype = lm::DType::BF16;
    else if (dt == "F16") r.dtype = lm::DType::F16;
    else throw JsError{tw + ".dtype must be F32, BF16 or F16"};
    napi_value shape = get_prop(env, t, "shape", tw);
    const uint32_t nd = array_length(env, shape, tw + ".shape");
    for (uint32_t d = 0; d < nd; ++d) {
      napi_value x;
      double v;
      NAPI_OK(napi_get_element(env, shape, d, &x));
      if (napi_get_value_double(env, x, &v) != napi_ok) throw JsError{tw + ".shape must hold numbers"};
      r.shape.push_back(static_cast<int64_t>(v));
    }
    opts.tensors.push_back(std::move(r));
  }
  const std::string lf = get_string(env, o, "loadFormat", w);
  if (lf != "safetensors" && lf != "dummy") throw JsError{"options.loadFormat must be 'safetensors' or 'dummy'"};
  opts.dummy = lf == "dummy";
  opts.dummy_seed = static_cast<uint64_t>(get_number(env, o, "dummySeed", w));
  opts.backend = get_string(env, o, "backend", w);
  opts.max_slots = get_int(env, o, "maxSlots", w);
  opts.kv_block_size = get_int(env, o, "kvBlockSize", w);
  opts.num_kv_blocks = get_int(env, o, "numKvBlocks", w);
  opts.threads = get_int(env, o, "threads", w);
  opts.mtp = has_prop(env, o, "mtp") && get_bool(env, o, "mtp", w);
  if (has_prop(env, o, "cudaGraphs")) {
    opts.cuda_graphs = get_string(env, o, "cudaGraphs", w);
    if (opts.cuda_graphs != "replay" && opts.cuda_graphs != "padded" && opts.cuda_graphs != "off") throw JsError{"options.cudaGraphs must be 'replay', 'padded' or 'off'"};
  }
  opts.profile = has_prop(env, o, "profile") && get_bool(env, o, "profile", w);
  if (has_prop(env, o, "dummyRouteSkew")) opts.dummy_route_skew = static_cast<float>(get_number(env, o, "dummyRouteSkew", w));
  napi_value g = get_prop(env, o, "group", w);
  const std::string gw = "options.group";
  opts.group.rank = get_int(env, g, "rank", gw);
  opts.group.world_size = get_int(env, g, "worldSize", gw);
  opts.group.leader_address = get_string(env, g, "leaderAddress", gw);
  opts.group.collective_timeout_ms = get_int(env, g, "collectiveTimeoutMs", gw);
  opts.group.rendezvous_timeout_ms = get_int(env, g, "rendezvousTimeoutMs", gw);
  napi_value experts = get_prop(env, g, "expertRanks", gw);
  const uint32_t ne = array_length(env, experts, gw + ".expertRanks");
  for (uint32_t e = 0; e < ne; ++e) {
    napi_value holders;
    NAPI_OK(napi_get_element(env, experts, e, &holders));
    const std::string hw = gw + ".expertRanks[" + std::to_string(e) + "]";
    std::vector<int> ranks;
    const uint32_t nh = array_length(env, holders, hw);
    for (uint32_t i = 0; i < nh; ++i) {
      napi_value x;
      double v;
      NAPI_OK(napi_get_element(env, holders, i, &x));
      if (napi_get_value_double(env, x, &v) != napi_ok) throw JsError{hw + " must hold numbers"};
      ranks.push_back(static_cast<int>(v));
    }
    opts.group.expert_ranks.push_back(std::move(ranks));
  }
  return opts;
}

// ---- Promises over the libuv pool --------------------------------------------------------------

/** One call run off the JS thread: `work` on the pool, `done` back on the JS thread. */
template <class R>
struct AsyncCall {
  std::string name;
  std::function<R()> work;
  std::function<napi_value(napi_env, R&)> done;
  std::function<void()> after;  // always runs on the JS thread once the call settles
  R result{};
  std::string error;
  napi_deferred deferred = nullptr;
  napi_async_work handle = nullptr;
};

/**
 * Queues `work` and returns a Promise; an exception from `work` or `done` rejects it with
 * "<name>: <message>".
 */
template <class R>
napi_value queue_promise(napi_env env, const char* name, std::function<R()> work, std::function<napi_value(napi_env, R&)> done, std::function<void()> after = {}) {
  auto call = std::make_unique<AsyncCall<R>>();
  call->name = name;
  call->work = std::move(work);
  call->done = std::move(done);
  call->after = std::move(after);
  napi_value promise, resource;
  NAPI_OK(napi_create_promise(env, &call->deferred, &promise));
  NAPI_OK(napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource));
  NAPI_OK(napi_create_async_work(
      env, nullptr, resource,
      [](napi_env, void* data) {
        auto* c = static_cast<AsyncCall<R>*>(data);
        try {
          c->result = c->work();
        } catch (const std::exception& e) {
          c->error = e.what();
        }
      },
      [](napi_env env, napi_status, void* data) {
        std::unique_ptr<AsyncCall<R>> c(static_cast<AsyncCall<R>*>(data));
        if (c->after) c->after();
        if (c->error.empty()) {
          try {
            napi_resolve_deferred(env, c->deferred, c->done(env, c->result));
          } catch (const JsError& e) {
            c->error = e.message;
          } catch (const std::exception& e) {
            c->error = e.what();
          }
        }
        if (!c->error.empty()) napi_reject_deferred(env, c->deferred, make_error(env, c->name + ": " + c->error));
        napi_delete_async_work(env, c->handle);
      },
      call.get(), &call->handle));
  NAPI_OK(napi_queue_async_work(env, call->handle));
  call.release();
  return promise;
}

napi_value typed_array(napi_env env, napi_typedarray_type type, const void* src, size_t count, size_t elem) {
  napi_value buf, arr;
  void* raw = nullptr;
  NAPI_OK(napi_create_arraybuffer(env, count * elem, &raw, &buf));
  if (count) std::memcpy(raw, src, count * elem);
  NAPI_OK(napi_create_typedarray(env, type, count, buf, 0, &arr));
  return arr;
}

// ---- Engine object -------------------------------------------------------------------------

struct EngineBox {
  std::shared_ptr<lm::Engine> engine;
  /** Shared with a step in flight, which may outlive this wrapper if JS drops it mid-step. */
  std::shared_ptr<bool> busy = std::make_shared<bool>(false);
};

napi_value make_info(napi_env env, const lm::EngineInfo& i) {
  napi_value o, v;
  NAPI_OK(napi_create_object(env, &o));
  NAPI_OK(napi_create_string_utf8(env, i.backend.c_str(), i.backend.size(), &v));
  NAPI_OK(napi_set_named_property(env, o, "backend", v));
  auto num = [&](const char* k, double d) {
    napi_value x;
    NAPI_OK(napi_create_double(env, d, &x));
    NAPI_OK(napi_set_named_property(env, o, k, x));
  };
  num("maxSlots", i.max_slots);
  num("kvBlockSize", i.kv_block_size);
  num("numKvBlocks", i.num_kv_blocks);
  num("numParameters", static_cast<double>(i.num_parameters));
  num("stateBytesPerSlot", static_cast<double>(i.state_bytes_per_slot));
  return o;
}

EngineBox* unwrap_box(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv) {
  napi_value self;
  NAPI_OK(napi_get_cb_info(env, info, argc, argv, &self, nullptr));
  void* p = nullptr;
  NAPI_OK(napi_unwrap(env, self, &p));
  return static_cast<EngineBox*>(p);
}

lm::LogitsMode logits_mode(const std::string& s, const std::string& where) {
  if (s == "none") return lm::LogitsMode::None;
  if (s == "last") return lm::LogitsMode::Last;
  if (s == "all") return lm::LogitsMode::All;
  throw JsError{where + ".logits must be 'none', 'last' or 'all'"};
}

std::vector<lm::StepSeq> read_batch(napi_env env, napi_value arr) {
  std::vector<lm::StepSeq> batch;
  const uint32_t n = array_length(env, arr, "sequences");
  for (uint32_t i = 0; i < n; ++i) {
    napi_value s;
    NAPI_OK(napi_get_element(env, arr, i, &s));
    const std::string w = "sequences[" + std::to_string(i) + "]";
    lm::StepSeq q;
    q.slot = get_int(env, s, "slotId", w);
    q.tokens = get_int32_array(env, s, "tokens", w);
    q.position = get_int(env, s, "position", w);
    q.block_table = get_int32_array(env, s, "blockTable", w);
    q.sample = get_bool(env, s, "sample", w);
    q.logits = logits_mode(get_string(env, s, "logits", w), w);
    napi_value sp = get_prop(env, s, "sampling", w);
    q.sampling.temperature = static_cast<float>(get_number(env, sp, "temperature", w + ".sampling"));
    q.sampling.top_k = get_int(env, sp, "topK", w + ".sampling");
    q.sampling.top_p = static_cast<float>(get_number(env, sp, "topP", w + ".sampling"));
    q.sampling.seed = static_cast<uint64_t>(get_number(env, sp, "seed", w + ".sampling"));
    q.num_drafts = get_int_or(env, s, "numDrafts", w, 0);
    q.draft_tokens = get_int_or(env, s, "draftTokens", w, 0);
    q.mtp_logits = has_prop(env, s, "mtpLogits") && get_bool(env, s, "mtpLogits", w);
    q.mtp_skip = has_prop(env, s, "mtpSkip") && get_bool(env, s, "mtpSkip", w);
    batch.push_back(std::move(q));
  }
  return batch;
}

napi_value EngineStep(napi_env env, napi_callback_info info) {
  try {
    size_t argc = 1;
    napi_value argv[1];
    EngineBox* box = unwrap_box(env, info, &argc, argv);
    if (!box->engine) throw JsError{"engine is closed"};
    if (*box->busy) throw JsError{"a step is already running (never call step again before it settles)"};
    if (argc < 1) throw JsError{"expected an array of sequences"};
    auto batch = std::make_shared<std::vector<lm::StepSeq>>(read_batch(env, argv[0]));
    std::shared_ptr<lm::Engine> engine = box->engine;  // kept alive while the step runs, even if closed meanwhile
    std::shared_ptr<bool> busy = box->busy;
    auto local_tokens = std::make_shared<int64_t>(0);
    for (const auto& q : *batch) *local_tokens += static_cast<int64_t>(q.tokens.size());
    *busy = true;
    // The step's device work starts here where the backend can (a CUDA decode graph replay), so the
    // hand-over to the pool thread overlaps it; an error is left for step() on the pool to report.
    try {
      engine->begin_step(*batch);
    } catch (const std::exception&) {
    }
    return queue_promise<lm::StepOutput>(
        env, "Engine.step", [engine, batch] { return engine->step(*batch); },
        [local_tokens](napi_env env, lm::StepOutput& out) {
          napi_value result;
          NAPI_OK(napi_create_object(env, &result));
          NAPI_OK(napi_set_named_property(env, result, "tokens", typed_array(env, napi_int32_array, out.tokens.data(), out.tokens.size(), 4)));
          NAPI_OK(napi_set_named_property(env, result, "logits", typed_array(env, napi_float32_array, out.logits.data(), out.logits.size(), 4)));
          if (out.num_accepted.size() < out.tokens.size()) out.num_accepted.resize(out.tokens.size(), 0);  // backends without MTP
          NAPI_OK(napi_set_named_property(env, result, "numAccepted", typed_array(env, napi_int32_array, out.num_accepted.data(), out.num_accepted.size(), 4)));
          NAPI_OK(napi_set_named_property(env, result, "drafts", typed_array(env, napi_int32_array, out.drafts.data(), out.drafts.size(), 4)));
          NAPI_OK(napi_set_named_property(env, result, "mtpLogits", typed_array(env, napi_float32_array, out.mtp_logits.data(), out.mtp_logits.size(), 4)));
          napi_value group_tokens;
          NAPI_OK(napi_create_double(env, static_cast<double>(out.group_tokens >= 0 ? out.group_tokens : *local_tokens), &group_tokens));
          NAPI_OK(napi_set_named_property(env, result, "groupTokens", group_tokens));
          return result;
        },
        [busy] { *busy = false; });
  } catch (const JsError& e) {
    throw_js(env, "Engine.step: " + e.message);
    return nullptr;
  }
}

napi_value EngineExpertTokenCounts(napi_env env, napi_callback_info info) {
  try {
    size_t argc = 0;
    EngineBox* box = unwrap_box(env, info, &argc, nullptr);
    if (!box->engine) throw JsError{"engine is closed"};
    // the counters are atomics: reading while a step runs is fine
    const std::vector<uint64_t> counts = box->engine->expert_token_counts();
    std::vector<double> d(counts.begin(), counts.end());
    return typed_array(env, napi_float64_array, d.data(), d.size(), 8);
  } catch (const JsError& e) {
    throw_js(env, "Engine.expertTokenCounts: " + e.message);
    return nullptr;
  }
}

napi_value EngineTakeProfile(napi_env env, napi_callback_info info) {
  try {
    size_t argc = 0;
    EngineBox* box = unwrap_box(env, info, &argc, nullptr);
    if (!box->engine) throw JsError{"engine is closed"};
    if (*box->busy) throw JsError{"a step is running"};
    const lm::StepProfile p = box->engine->take_profile();
    napi_value result, steps, list;
    NAPI_OK(napi_create_object(env, &result));
    NAPI_OK(napi_create_double(env, p.steps, &steps));
    NAPI_OK(napi_set_named_property(env, result, "steps", steps));
    NAPI_OK(napi_create_array_with_length(env, p.ms.size(), &list));
    for (size_t i = 0; i < p.ms.size(); ++i) {
      napi_value item, name, ms;
      NAPI_OK(napi_create_object(env, &item));
      NAPI_OK(napi_create_string_utf8(env, p.ms[i].first.c_str(), NAPI_AUTO_LENGTH, &name));
      NAPI_OK(napi_create_double(env, p.ms[i].second, &ms));
      NAPI_OK(napi_set_named_property(env, item, "name", name));
      NAPI_OK(napi_set_named_property(env, item, "ms", ms));
      NAPI_OK(napi_set_element(env, list, static_cast<uint32_t>(i), item));
    }
    NAPI_OK(napi_set_named_property(env, result, "components", list));
    return result;
  } catch (const JsError& e) {
    throw_js(env, "Engine.takeProfile: " + e.message);
    return nullptr;
  }
}

napi_value EngineClose(napi_env env, napi_callback_info info) {
  try {
    size_t argc = 0;
    EngineBox* box = unwrap_box(env, info, &argc, nullptr);
    box->engine.reset();  // a step in flight holds its own reference and frees the engine when done
  } catch (const JsError& e) {
    throw_js(env, "Engine.close: " + e.message);
  }
  return nullptr;
}

napi_value wrap_engine(napi_env env, std::unique_ptr<lm::Engine> engine) {
  napi_value obj;
  NAPI_OK(napi_create_object(env, &obj));
  auto* box = new EngineBox();
  const lm::EngineInfo info = engine->info();
  box->engine = std::move(engine);
  NAPI_OK(napi_wrap(env, obj, box, [](napi_env, void* data, void*) { delete static_cast<EngineBox*>(data); }, nullptr, nullptr));
  napi_value step_fn, close_fn, counts_fn, profile_fn;
  NAPI_OK(napi_create_function(env, "takeProfile", NAPI_AUTO_LENGTH, EngineTakeProfile, nullptr, &profile_fn));
  NAPI_OK(napi_create_function(env, "step", NAPI_AUTO_LENGTH, EngineStep, nullptr, &step_fn));
  NAPI_OK(napi_create_function(env, "expertTokenCounts", NAPI_AUTO_LENGTH, EngineExpertTokenCounts, nullptr, &counts_fn));
  NAPI_OK(napi_create_function(env, "close", NAPI_AUTO_LENGTH, EngineClose, nullptr, &close_fn));
  napi_property_descriptor props[] = {
      {"step", nullptr, nullptr, nullptr, nullptr, step_fn, napi_default, nullptr},
      {"close", nullptr, nullptr, nullptr, nullptr, close_fn, napi_default, nullptr},
      {"expertTokenCounts", nullptr, nullptr, nullptr, nullptr, counts_fn, napi_default, nullptr},
      {"takeProfile", nullptr, nullptr, nullptr, nullptr, profile_fn, napi_default, nullptr},
      {"info", nullptr, nullptr, nullptr, nullptr, make_info(env, info), napi_enumerable, nullptr},
  };
  NAPI_OK(napi_define_properties(env, obj, 5, props));
  return obj;
}

napi_value CreateEngine(napi_env env, napi_callback_info info) {
  try {
    size_t argc = 1;
    napi_value argv[1];
    NAPI_OK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
    if (argc < 1) throw JsError{"expected an options object"};
    auto options = std::make_shared<lm::EngineOptions>(read_options(env, argv[0]));
    return queue_promise<std::unique_ptr<lm::Engine>>(
        env, "createEngine", [options] { return lm::create_engine(*options); },
        [](napi_env env, std::unique_ptr<lm::Engine>& engine) { return wrap_engine(env, std::move(engine)); });
  } catch (const JsError& e) {
    throw_js(env, "createEngine: " + e.message);
    return nullptr;
  }
}

napi_value MeasureRoofline(napi_env env, napi_callback_info info) {
  try {
    size_t argc = 2;
    napi_value argv[2];
    NAPI_OK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
    if (argc < 2) throw JsError{"expected (backend, threads)"};
    const std::string backend = to_string(env, argv[0], "backend");
    double threads = 0;
    if (napi_get_value_double(env, argv[1], &threads) != napi_ok) throw JsError{"threads must be a number"};
    return queue_promise<lm::Roofline>(
        env, "measureRoofline", [backend, threads] { return lm::measure_roofline(backend, static_cast<int>(threads)); },
        [](napi_env env, lm::Roofline& r) {
          napi_value o, a, b;
          NAPI_OK(napi_create_object(env, &o));
          NAPI_OK(napi_create_double(env, r.copy_gbps, &a));
          NAPI_OK(napi_create_double(env, r.matmul_tflops, &b));
          NAPI_OK(napi_set_named_property(env, o, "copyGBps", a));
          NAPI_OK(napi_set_named_property(env, o, "matmulTflops", b));
          return o;
        });
  } catch (const JsError& e) {
    throw_js(env, "measureRoofline: " + e.message);
    return nullptr;
  }
}

napi_value Version(napi_env env, napi_callback_info) {
  napi_value out;
  napi_create_string_utf8(env, lm::engine_version(), NAPI_AUTO_LENGTH, &out);
  return out;
}

napi_value Backends(napi_env env, napi_callback_info) {
  auto names = lm::available_backends();
  napi_value arr;
  napi_create_array_with_length(env, names.size(), &arr);
  for (size_t i = 0; i < names.size(); ++i) {
    napi_value s;
    napi_create_string_utf8(env, names[i].c_str(), names[i].size(), &s);
    napi_set_element(env, arr, static_cast<uint32_t>(i), s);
  }
  return arr;
}

napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"version", nullptr, Version, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"backends", nullptr, Backends, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"createEngine", nullptr, CreateEngine, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"measureRoofline", nullptr, MeasureRoofline, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
