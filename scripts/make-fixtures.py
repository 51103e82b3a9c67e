#!/usr/bin/env python3
"""Make tiny random Nemotron-H checkpoints and record transformers' logits for them.

Usage (GPU machine; it also runs on CPU):
    python3 scripts/make-fixtures.py --out test/fixtures [--device cuda] [--only NAME ...]
                                     [--src-out DIR]
    python3 scripts/make-fixtures.py --verify [test/fixtures]     # numpy only, no torch needed

Needs: torch, transformers (5.17 was used), safetensors, tokenizers, numpy.
This is deterministic: every tensor is drawn from a generator seeded by (fixture seed, tensor name).

Each fixture directory holds:
  config.json, model.safetensors (or model-0000k-of-0000n.safetensors + model.safetensors.index.json),
  generation_config.json, reference/{prompt_ids.json, feed_ids.json, prefill_logits.f32,
  decode_logits.f32, [prefill_logits.bf16arith.f32], meta.json}
and tiny-chat also has tokenizer.json and tokenizer_config.json.

The reference logits come from transformers' NemotronHForCausalLM, loaded back from the written files
with from_pretrained (float32 weights, so bf16 files are upcast), eager attention, eager experts,
float32 matmul precision 'highest' and TF32 off. The script also runs an independent float64 numpy
implementation of the model (written from kernels/dev/REFERENCE.md, sequential SSM recurrence) on the
files. It compares that with transformers and records the difference in meta.json.
"""

import argparse
import hashlib
import json
import math
import os
import shutil
import struct
import sys
import tempfile
import time
import traceback
import zlib

import numpy as np

# ----------------------------------------------------------------------------------------------
# Fixture specifications
# ----------------------------------------------------------------------------------------------

PATTERN_TO_TYPE = {"M": "linear_attention", "E": "moe", "*": "full_attention", "-": "mlp"}
LEGACY_TYPE = {"linear_attention": "mamba", "full_attention": "attention", "moe": "moe", "mlp": "mlp"}

FIXTURES = [
    {
        "name": "nh-f32-gqa-groups",
        "seed": 1001,
        "storage": "f32",
        "config_spelling": "layers_block_type",  # transformers 5 spelling, kept as save_pretrained wrote it
        "pattern": "M*EM-E*M",
        "config": dict(
            vocab_size=320, hidden_size=64,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32,
            mamba_num_heads=8, mamba_head_dim=16, n_groups=2, ssm_state_size=16, conv_kernel=4,
            chunk_size=8, intermediate_size=96,
            n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
            moe_shared_expert_intermediate_size=48, n_group=2, topk_group=1,
            norm_topk_prob=True, routed_scaling_factor=1.5,
        ),
        "prompt_len": 45,
        "feed_len": 6,
        "eos_token_id": 2,
        "exercises": [
            "all four block types (M, *, E, -), 8 layers",
            "float32 weights, single model.safetensors",
            "GQA: 4 query heads, 2 KV heads, head_dim 32 (nq*hd = 128 != hidden 64)",
            "Mamba n_groups = 2 (4 heads per B/C group), gated-norm group size 64",
            "prompt 45 tokens with chunk_size 8 (5 full chunks + 5)",
            "MoE n_group = 2, topk_group = 1, top-2 of 8, routed_scaling_factor 1.5, no latent",
            "config.json in transformers-5 spelling (layers_block_type list), as save_pretrained wrote it",
        ],
    },
    {
        "name": "nh-bf16-latent-sharded",
        "seed": 2002,
        "storage": "bf16",
        "config_spelling": "hybrid_override_pattern",  # released checkpoints' spelling
        "pattern": "ME*MEM-E",
        "config": dict(
            vocab_size=384, hidden_size=96,
            num_attention_heads=6, num_key_value_heads=2, head_dim=16,
            mamba_num_heads=12, mamba_head_dim=8, n_groups=3, ssm_state_size=16, conv_kernel=4,
            chunk_size=16, intermediate_size=128,
            n_routed_experts=16, num_experts_per_tok=4, moe_intermediate_size=32,
            moe_shared_expert_intermediate_size=64, moe_latent_size=48, n_group=4, topk_group=2,
            norm_topk_prob=True, routed_scaling_factor=2.5,
        ),
        "prompt_len": 67,
        "feed_len": 6,
        "eos_token_id": [2, 11],
        "shards": 3,
        "exercises": [
            "all four block types, 8 layers",
            "bfloat16 weights (e_score_correction_bias stored in float32, as in released checkpoints)",
            "sharded: 3 safetensors shards + model.safetensors.index.json",
            "LatentMoE: moe_latent_size 48 (hidden 96): fc1_latent_proj -> experts -> fc2_latent_proj",
            "MoE n_group = 4, topk_group = 2, top-4 of 16, routed_scaling_factor 2.5",
            "GQA 6 query heads / 2 KV heads (3 q heads per KV head), head_dim 16",
            "Mamba 12 heads, n_groups = 3 (4 heads per group), head_dim 8, state 16",
            "prompt 67 tokens with chunk_size 16 (4 full chunks + 3)",
            "config.json rewritten to the released spelling: hybrid_override_pattern string, torch_dtype, no layers_block_type",
            "generation_config.json eos_token_id list [2, 11]",
        ],
    },
    {
        "name": "nh-bf16-fp16experts",
        "seed": 3003,
        "storage": "bf16",
        "expert_storage": "f16",
        "config_spelling": "legacy_layers_block_type",
        "pattern": "M*E-ME",
        "config": dict(
            vocab_size=256, hidden_size=64,
            num_attention_heads=4, num_key_value_heads=1, head_dim=16,
            mamba_num_heads=4, mamba_head_dim=16, n_groups=1, ssm_state_size=8, conv_kernel=4,
            chunk_size=8, intermediate_size=64,
            n_routed_experts=6, num_experts_per_tok=3, moe_intermediate_size=24,
            moe_shared_expert_intermediate_size=32, moe_latent_size=32, n_group=3, topk_group=2,
            norm_topk_prob=False, routed_scaling_factor=1.0,
        ),
        "prompt_len": 41,
        "feed_len": 6,
        "eos_token_id": [2, 11],
        "exercises": [
            "mixed storage dtypes in one file: bf16 weights, float16 routed experts, float32 router bias",
            "norm_topk_prob = false (weights are the raw sigmoids times routed_scaling_factor 1.0)",
            "MQA: 4 query heads, 1 KV head",
            "Mamba n_groups = 1, LatentMoE (latent 32), n_group 3 / topk_group 2 with 2 experts per group",
            "config.json layers_block_type with the legacy names ['mamba', 'attention', 'moe', 'mlp']",
            "prompt 41 tokens, chunk_size 8",
        ],
    },
    {
        "name": "tiny-chat",
        "seed": 4004,
        "storage": "f32",
        "config_spelling": "hybrid_override_pattern",
        "pattern": "M*EME-",
        "tokenizer": True,
        "config": dict(
            vocab_size=512, hidden_size=64,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            mamba_num_heads=8, mamba_head_dim=8, n_groups=2, ssm_state_size=16, conv_kernel=4,
            chunk_size=16, intermediate_size=96,
            n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
            moe_shared_expert_intermediate_size=48, moe_latent_size=32, n_group=1, topk_group=1,
            norm_topk_prob=True, routed_scaling_factor=2.0,
            bos_token_id=1, eos_token_id=4, pad_token_id=0,
        ),
        "feed_len": 6,
        "feed_greedy": True,
        "exercises": [
            "real byte-level BPE tokenizer (tokenizer.json, vocab 512) with ChatML chat_template",
            "prompt = chat template rendered for a system + user message, add_generation_prompt",
            "feed = greedy continuation of the float32 model (a greedy-generation check)",
            "all four block types, LatentMoE (latent 32), float32 weights",
            "generation_config.json eos_token_id [</s>, <|im_end|>] = [2, 4]",
        ],
    },
]

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

CHAT_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Where do the rivers go when the snow melts in spring?"},
]

TRAINING_TEXT = """
The river starts high in the mountains, where the snow melts in the spring and runs down the
rocks in thin bright streams. By the time it reaches the valley it is wide and slow, and the
farmers along its banks use the water for their fields. In the summer the children swim in the
shallow places, and in the autumn the leaves float on the surface like small brown boats.

A good assistant listens carefully, answers the question that was asked, and says so when it does
not know. It is helpful, honest and kind. When a user asks for help with a problem, the assistant
first makes sure it understands the problem, then explains the answer step by step. If there are
several ways to solve the problem, it describes the simplest one first.

The library opens at nine in the morning and closes at six in the evening. On Saturdays it closes
at noon. Visitors can borrow up to ten books at a time for three weeks. The reading room on the
second floor is quiet, and the chairs by the windows are the most popular seats in the building.
People come to read newspapers, to study for their exams, and to write letters to their friends.

Cooking rice is simple. Rinse one cup of rice in cold water until the water runs clear. Put the
rice in a pot with two cups of water and a pinch of salt. Bring it to a boil, then turn the heat
down low, cover the pot, and let it cook for about fifteen minutes. Turn off the heat and let it
rest for five more minutes before you lift the lid. Fluff the rice with a fork and serve it warm.

The city has a long history. It was founded on the banks of the river more than a thousand years
ago, and for centuries it was a small market town. Traders came from the north with furs and wood,
and from the south with wine, salt and cloth. The old bridge, built of grey stone, still stands in
the centre of the town, and the market is still held every Thursday in the square beside the church.

Numbers are everywhere: 1, 2, 3, 10, 42, 100, 2024, 3.14, 0.5 and 99%. A train leaves the station
at 7:45 and arrives at 10:30. The ticket costs 12 dollars, or 8 dollars for students. What is the
capital of France? The capital of France is Paris. What is two plus two? Two plus two is four.

Learning a new language takes time and patience. Start with the most common words and simple
sentences. Listen to people speak, read short stories, and practise a little every day. Do not be
afraid of making mistakes, because every mistake teaches you something. After a few months you
will be surprised how much you understand, and after a year you will be able to hold a real
conversation with a native speaker about the weather, your work, your family and your plans.

The weather today is cloudy with a chance of rain in the afternoon. Tomorrow will be sunny and
warm, with a light wind from the west. At night the temperature will drop, so bring a jacket if
you are going out. The forecast for the weekend is uncertain: it may rain on Saturday, but Sunday
should be dry and bright, a good day for a walk in the park or a trip to the sea.

Computers follow instructions exactly. A program is a list of instructions, and a programmer writes
them in a language the computer can understand. Good programs are clear and simple; they are tested
carefully, and they handle errors without crashing. When something goes wrong, the programmer reads
the error message, finds the cause, fixes it, and runs the tests again until everything passes.

Thank you for your question. Here is a short answer, followed by a longer explanation. First, the
short answer: yes. Now the explanation. There are three reasons, and I will describe each of them
in turn. The first reason is time, the second is cost, and the third is quality. Is there anything
else you would like to know? I am happy to help with anything else you need.
"""


# ----------------------------------------------------------------------------------------------
# safetensors, numpy only (so that the float64 reference is independent of torch)
# ----------------------------------------------------------------------------------------------

def st_read_numpy(path):
    """Read a .safetensors file into {name: float64 ndarray} plus {name: dtype string}."""
    with open(path, "rb") as f:
        data = f.read()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen].decode("utf-8"))
    base = 8 + hlen
    out, dtypes = {}, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = data[base + a:base + b]
        dt = info["dtype"]
        shape = info["shape"]
        if dt == "F32":
            arr = np.frombuffer(raw, dtype="<f4").astype(np.float64)
        elif dt == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float64)
        elif dt == "BF16":
            u16 = np.frombuffer(raw, dtype="<u2").astype(np.uint32)
            arr = (u16 << 16).view(np.float32).astype(np.float64)
        elif dt == "F64":
            arr = np.frombuffer(raw, dtype="<f8").astype(np.float64)
        else:
            raise ValueError(f"unsupported dtype {dt} for {name}")
        out[name] = arr.reshape(shape)
        dtypes[name] = dt
    return out, dtypes


def load_checkpoint_numpy(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    files = []
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    w, dts = {}, {}
    for fn in files:
        a, b = st_read_numpy(os.path.join(d, fn))
        w.update(a)
        dts.update(b)
    return w, dts


# ----------------------------------------------------------------------------------------------
# Independent float64 reference (numpy), written from kernels/dev/REFERENCE.md
# ----------------------------------------------------------------------------------------------

def _rmsnorm(x, w, eps):
    var = np.mean(x * x, axis=-1, keepdims=True)
    return x / np.sqrt(var + eps) * w


def _silu(x):
    return x / (1.0 + np.exp(-x))


def _softplus(x):
    return np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x, 20.0))))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def config_layer_types(cfg):
    if "hybrid_override_pattern" in cfg and not cfg.get("layers_block_type"):
        return [PATTERN_TO_TYPE[c] for c in cfg["hybrid_override_pattern"]]
    remap = {"mamba": "linear_attention", "attention": "full_attention"}
    return [remap.get(t, t) for t in cfg["layers_block_type"]]


def numpy_reference(d, ids, clamp_dt_min=None, stats=None):
    """float64 logits [T, V] for token ids, computed from the files in directory d."""
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    w, _ = load_checkpoint_numpy(d)
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    types = config_layer_types(cfg)
    H = cfg["hidden_size"]
    T = len(ids)
    h = w["backbone.embeddings.weight"][np.asarray(ids)]
    if stats is None:
        stats = {}
    stats.setdefault("min_dt", float("inf"))
    stats.setdefault("router", [])
    for i, t in enumerate(types):
        p = f"backbone.layers.{i}."
        u = _rmsnorm(h, w[p + "norm.weight"], eps)
        m = p + "mixer."
        if t == "linear_attention":
            nh, P = cfg["mamba_num_heads"], cfg["mamba_head_dim"]
            G, N, K = cfg["n_groups"], cfg["ssm_state_size"], cfg["conv_kernel"]
            I = nh * P
            convdim = I + 2 * G * N
            zxbcdt = u @ w[m + "in_proj.weight"].T
            if m + "in_proj.bias" in w:
                zxbcdt = zxbcdt + w[m + "in_proj.bias"]
            assert zxbcdt.shape[1] == I + convdim + nh
            z = zxbcdt[:, :I]
            xBC = zxbcdt[:, I:I + convdim]
            dtr = zxbcdt[:, I + convdim:]
            cw = w[m + "conv1d.weight"][:, 0, :]  # [convdim, K]
            pad = np.concatenate([np.zeros((K - 1, convdim)), xBC], axis=0)
            conv = np.zeros_like(xBC)
            for j in range(K):
                conv += pad[j:j + T] * cw[:, j]
            if m + "conv1d.bias" in w:
                conv += w[m + "conv1d.bias"]
            conv = _silu(conv)
            x = conv[:, :I].reshape(T, nh, P)
            Bm = conv[:, I:I + G * N].reshape(T, G, N)
            Cm = conv[:, I + G * N:].reshape(T, G, N)
            dt = _softplus(dtr + w[m + "dt_bias"])  # [T, nh]
            stats["min_dt"] = min(stats["min_dt"], float(dt.min()))
            if clamp_dt_min is not None:
                dt = np.maximum(dt, clamp_dt_min)
            A = -np.exp(w[m + "A_log"])
            Dp = w[m + "D"]
            hpg = nh // G
            gidx = np.arange(nh) // hpg
            S = np.zeros((nh, P, N))
            y = np.zeros((T, nh, P))
            for tt in range(T):
                a = np.exp(dt[tt] * A)  # [nh]
                Bh = Bm[tt][gidx]  # [nh, N]
                Ch = Cm[tt][gidx]
                S = a[:, None, None] * S + (dt[tt][:, None, None] * x[tt][:, :, None]) * Bh[:, None, :]
                y[tt] = np.einsum("hpn,hn->hp", S, Ch) + Dp[:, None] * x[tt]
            y = y.reshape(T, I) * _silu(z)
            yg = y.reshape(T, G, I // G)
            yg = yg / np.sqrt(np.mean(yg * yg, axis=-1, keepdims=True) + eps)
            y = yg.reshape(T, I) * w[m + "norm.weight"]
            out = y @ w[m + "out_proj.weight"].T
            if m + "out_proj.bias" in w:
                out = out + w[m + "out_proj.bias"]
        elif t == "full_attention":
            nq, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
            hd = cfg.get("head_dim", 128)
            q = (u @ w[m + "q_proj.weight"].T).reshape(T, nq, hd)
            k = (u @ w[m + "k_proj.weight"].T).reshape(T, nkv, hd)
            v = (u @ w[m + "v_proj.weight"].T).reshape(T, nkv, hd)
            rep = nq // nkv
            o = np.zeros((T, nq, hd))
            mask = np.triu(np.full((T, T), -np.inf), k=1)
            for j in range(nq):
                kv = j // rep
                s = (q[:, j, :] @ k[:, kv, :].T) / math.sqrt(hd) + mask
                s = s - s.max(axis=-1, keepdims=True)
                pr = np.exp(s)
                pr = pr / pr.sum(axis=-1, keepdims=True)
                o[:, j, :] = pr @ v[:, kv, :]
            out = o.reshape(T, nq * hd) @ w[m + "o_proj.weight"].T
        elif t == "mlp":
            a = u @ w[m + "up_proj.weight"].T
            if m + "up_proj.bias" in w:
                a = a + w[m + "up_proj.bias"]
            a = np.maximum(a, 0.0) ** 2
            out = a @ w[m + "down_proj.weight"].T
            if m + "down_proj.bias" in w:
                out = out + w[m + "down_proj.bias"]
        elif t == "moe":
            E, k = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
            ng, tg = cfg.get("n_group", 1), cfg.get("topk_group", 1)
            s = _sigmoid(u @ w[m + "gate.weight"].T)  # [T, E]
            bias = w[m + "gate.e_score_correction_bias"]
            lat = cfg.get("moe_latent_size")
            v = u @ w[m + "fc1_latent_proj.weight"].T if lat else u
            if lat and m + "fc1_latent_proj.bias" in w:
                v = v + w[m + "fc1_latent_proj.bias"]
            r = np.zeros_like(v)
            layer_stats = {"layer": i, "min_expert_margin": float("inf"), "min_group_margin": float("inf"),
                           "tokens_where_bias_changes_choice": 0, "tokens": T}

            def choose(sc):
                gs = np.sort(sc.reshape(ng, E // ng), axis=-1)[:, -2:].sum(-1)
                gorder = np.argsort(-gs, kind="stable")
                keep = gorder[:tg]
                gm = float(gs[gorder[tg - 1]] - gs[gorder[tg]]) if tg < ng else float("inf")
                allowed = np.zeros(E, bool)
                for g in keep:
                    allowed[g * (E // ng):(g + 1) * (E // ng)] = True
                masked = np.where(allowed, sc, -np.inf)
                order = np.argsort(-masked, kind="stable")
                chosen = order[:k]
                em = float(masked[order[k - 1]] - masked[order[k]]) if np.isfinite(masked[order[k]]) else float("inf")
                return chosen, gm, em

            for tt in range(T):
                chosen, gm, em = choose(s[tt] + bias)
                unb, _, _ = choose(s[tt])
                if set(chosen.tolist()) != set(unb.tolist()):
                    layer_stats["tokens_where_bias_changes_choice"] += 1
                layer_stats["min_group_margin"] = min(layer_stats["min_group_margin"], gm)
                layer_stats["min_expert_margin"] = min(layer_stats["min_expert_margin"], em)
                wts = s[tt][chosen]
                if cfg.get("norm_topk_prob", True):
                    wts = wts / (wts.sum() + 1e-20)
                wts = wts * cfg.get("routed_scaling_factor", 1.0)
                for e, we in zip(chosen, wts):
                    a = v[tt] @ w[m + f"experts.{e}.up_proj.weight"].T
                    a = np.maximum(a, 0.0) ** 2
                    r[tt] += we * (a @ w[m + f"experts.{e}.down_proj.weight"].T)
            if lat:
                r = r @ w[m + "fc2_latent_proj.weight"].T
                if m + "fc2_latent_proj.bias" in w:
                    r = r + w[m + "fc2_latent_proj.bias"]
            a = u @ w[m + "shared_experts.up_proj.weight"].T
            if m + "shared_experts.up_proj.bias" in w:
                a = a + w[m + "shared_experts.up_proj.bias"]
            a = np.maximum(a, 0.0) ** 2
            sh = a @ w[m + "shared_experts.down_proj.weight"].T
            if m + "shared_experts.down_proj.bias" in w:
                sh = sh + w[m + "shared_experts.down_proj.bias"]
            out = r + sh
            stats["router"].append(layer_stats)
        else:
            raise ValueError(t)
        h = h + out
    h = _rmsnorm(h, w["backbone.norm_f.weight"], eps)
    return h @ w["lm_head.weight"].T


# ----------------------------------------------------------------------------------------------
# torch side
# ----------------------------------------------------------------------------------------------

def log(*a):
    print(*a, flush=True)


def gen_for(seed, name):
    import torch
    g = torch.Generator(device="cpu")
    g.manual_seed((seed * 1000003 + zlib.crc32(name.encode())) % (2**63))
    return g


def init_value(seed, name, shape, cfg):
    """Deterministic, realistic-ish random value for the parameter `name` (transformers' in-memory name)."""
    import torch
    g = gen_for(seed, name)

    def randn(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64)

    def unif(lo, hi, *s):
        return lo + (hi - lo) * torch.rand(*s, generator=g, dtype=torch.float64)

    H = cfg["hidden_size"]
    leaf = name.split(".")[-1]
    if name.endswith("embeddings.weight"):
        return randn(*shape)
    if name == "lm_head.weight":
        return randn(*shape) * (2.0 / math.sqrt(H))
    if leaf == "weight" and (name.endswith(".norm.weight") or name.endswith("norm_f.weight")):
        return unif(0.6, 1.4, *shape)
    if leaf == "A_log":
        return torch.log(unif(0.3, 6.0, *shape))
    if leaf == "D":
        return 1.0 + 0.5 * randn(*shape)
    if leaf == "dt_bias":
        dt = unif(0.03, 0.6, *shape)
        return dt + torch.log(-torch.expm1(-dt))  # inverse softplus
    if name.endswith("conv1d.weight"):
        return randn(*shape) * 0.5
    if name.endswith("conv1d.bias"):
        return randn(*shape) * 0.2
    if name.endswith("in_proj.weight"):
        v = randn(*shape) / math.sqrt(shape[1])
        nh = cfg["mamba_num_heads"]
        v[-nh:] *= 0.3  # dt rows: keep softplus(dt_raw + dt_bias) well above time_step_min
        return v
    if name.endswith("e_score_correction_bias"):
        return unif(-0.15, 0.15, *shape)
    if name.endswith("gate.weight"):
        return randn(*shape) / math.sqrt(shape[1])
    if name.endswith("q_proj.weight") or name.endswith("k_proj.weight"):
        return randn(*shape) * (1.3 / math.sqrt(shape[1]))
    if name.endswith("experts.up_proj"):  # [E, inter, Din]
        return randn(*shape) / math.sqrt(shape[2])
    if name.endswith("experts.down_proj"):  # [E, Din, inter]
        return randn(*shape) * (0.7 / math.sqrt(shape[2]))
    if leaf == "bias":
        return randn(*shape) * 0.1
    if leaf == "weight" and len(shape) == 2:  # other linears: in_features = shape[1]
        scale = 0.7 if (name.endswith("down_proj.weight") or name.endswith("out_proj.weight")
                        or name.endswith("o_proj.weight")) else 1.0
        return randn(*shape) * (scale / math.sqrt(shape[1]))
    raise ValueError(f"no init rule for {name} {tuple(shape)}")


def canonical_name(name):
    if name.startswith("model."):
        name = "backbone." + name[len("model."):]
    return name


def canonicalize(sd):
    """transformers state dict (any naming) -> released-checkpoint naming, experts one by one."""
    out = {}
    for name, t in sd.items():
        name = canonical_name(name)
        if name.endswith("mixer.experts.up_proj") or name.endswith("mixer.experts.down_proj"):
            base, which = name.rsplit(".", 1)
            for e in range(t.shape[0]):
                out[f"{base}.{e}.{which}.weight"] = t[e].clone().contiguous()
        else:
            out[name] = t.contiguous()
    return out


def storage_cast(sd, spec):
    import torch
    dt = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
    out = {}
    for name, t in sd.items():
        if name.endswith("e_score_correction_bias"):
            out[name] = t.to(torch.float32)
        elif ".experts." in name and spec.get("expert_storage"):
            out[name] = t.to(dt[spec["expert_storage"]])
        else:
            out[name] = t.to(dt[spec["storage"]])
    return out


def write_weights(sd, d, shards):
    from safetensors.torch import save_file
    names = sorted(sd)
    if shards <= 1:
        save_file({n: sd[n] for n in names}, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        return ["model.safetensors"]
    sizes = [sd[n].numel() * sd[n].element_size() for n in names]
    total = sum(sizes)
    groups, cur, acc = [], [], 0
    for n, s in zip(names, sizes):
        cur.append(n)
        acc += s
        if acc >= total * (len(groups) + 1) / shards and len(groups) < shards - 1:
            groups.append(cur)
            cur = []
    if cur:
        groups.append(cur)
    files, wmap = [], {}
    for i, grp in enumerate(groups):
        fn = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        save_file({n: sd[n] for n in grp}, os.path.join(d, fn), metadata={"format": "pt"})
        files.append(fn)
        for n in grp:
            wmap[n] = fn
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(wmap.items()))}, f, indent=2)
        f.write("\n")
    return files


def train_tokenizer(d):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, min_frequency=2, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator([TRAINING_TEXT], trainer=trainer)
    tok.save(os.path.join(d, "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    tcfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "<|im_end|>",
        "unk_token": "<unk>",
        "pad_token": "<unk>",
        "add_bos_token": False,
        "add_eos_token": False,
        "model_max_length": 4096,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(ids[t]): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                          "single_word": False, "special": True}
            for t in SPECIAL_TOKENS
        },
    }
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(tcfg, f, indent=2)
        f.write("\n")
    return tok, ids


def render_chat(messages, add_generation_prompt=True):
    s = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    if add_generation_prompt:
        s += "<|im_start|>assistant\n"
    return s


def rel_l2_rows(got, want):
    """Worst per-row relative L2 error (the metric of test/parity/parity.test.ts) and argmax mismatches."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    err = np.sqrt(((got - want) ** 2).sum(-1) / np.maximum((want ** 2).sum(-1), 1e-30))
    return float(err.max()), [int(i) for i in np.nonzero(got.argmax(-1) != want.argmax(-1))[0]]


def top_margin(a):
    s = np.sort(np.asarray(a, np.float64), axis=-1)
    return float((s[:, -1] - s[:, -2]).min())


def maxabs(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def write_f32(path, arr):
    np.ascontiguousarray(np.asarray(arr, dtype="<f4")).tofile(path)


def make_fixture(spec, out_root, device, versions):
    import torch
    from transformers import NemotronHConfig, NemotronHForCausalLM

    name = spec["name"]
    seed = spec["seed"]
    d = os.path.join(out_root, name)
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(os.path.join(d, "reference"))
    meta = {"name": name, "seed": seed, "versions": versions, "exercises": spec["exercises"],
            "storage_dtype": spec["storage"], "expert_storage_dtype": spec.get("expert_storage", spec["storage"]),
            "router_bias_dtype": "float32", "device": device}
    t0 = time.time()

    # --- tokenizer (tiny-chat) ---
    tok = None
    cfg_kw = dict(spec["config"])
    if spec.get("tokenizer"):
        tok, sp_ids = train_tokenizer(d)
        vs = tok.get_vocab_size()
        meta["tokenizer_vocab_size"] = vs
        meta["special_token_ids"] = sp_ids
        assert sp_ids == {"<unk>": 0, "<s>": 1, "</s>": 2, "<|im_start|>": 3, "<|im_end|>": 4}, sp_ids
        cfg_kw["vocab_size"] = vs if vs != cfg_kw["vocab_size"] else cfg_kw["vocab_size"]

    # --- config + model ---
    layer_types = [PATTERN_TO_TYPE[c] for c in spec["pattern"]]
    cfg = NemotronHConfig(
        layers_block_type=layer_types,
        use_mamba_kernels=False,
        layer_norm_epsilon=1e-5,
        time_step_min=0.001,
        tie_word_embeddings=False,
        **cfg_kw,
    )
    model = NemotronHForCausalLM(cfg).eval()
    with torch.no_grad():
        sd = model.state_dict()
        for pname in sorted(sd):
            t = sd[pname]
            t.copy_(init_value(seed, pname, tuple(t.shape), cfg_kw).to(t.dtype))
    meta["num_params"] = int(sum(t.numel() for t in model.state_dict().values()))

    # --- save_pretrained, then canonical naming + storage dtypes ---
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        from safetensors.torch import load_file
        saved = {}
        for fn in sorted(os.listdir(tmp)):
            if fn.endswith(".safetensors"):
                saved.update(load_file(os.path.join(tmp, fn)))
        meta["save_pretrained_key_sample"] = sorted(saved)[:3] + [k for k in sorted(saved) if "experts" in k][:2]
        with open(os.path.join(tmp, "config.json")) as f:
            saved_cfg_text = f.read()
    canon = storage_cast(canonicalize(saved), spec)
    files = write_weights(canon, d, spec.get("shards", 1))
    meta["weight_files"] = files
    meta["tensors"] = {n: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
                       for n, t in sorted(canon.items())}

    # config.json
    ccfg = json.loads(saved_cfg_text)
    ccfg.pop("use_mamba_kernels", None)
    ccfg["use_mamba_kernels"] = False
    dtname = {"f32": "float32", "bf16": "bfloat16"}[spec["storage"]]
    if spec["config_spelling"] == "hybrid_override_pattern":
        ccfg.pop("layers_block_type", None)
        ccfg.pop("layer_types", None)
        ccfg.pop("mtp_layers_block_type", None)
        ccfg.pop("dtype", None)
        ccfg.pop("time_step_limit", None)
        ccfg["hybrid_override_pattern"] = spec["pattern"]
        ccfg["num_hidden_layers"] = len(spec["pattern"])
        ccfg["torch_dtype"] = dtname
        ccfg["norm_eps"] = 1e-5
        ccfg["mamba_proj_bias"] = False
        ccfg["use_mamba_kernels"] = True  # as in the released configs; the loader below forces False
    else:
        ccfg["dtype"] = dtname
        if spec["config_spelling"] == "legacy_layers_block_type":
            ccfg["layers_block_type"] = [LEGACY_TYPE[t] for t in layer_types]
    ccfg = dict(sorted(ccfg.items()))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(ccfg, f, indent=2)
        f.write("\n")
    meta["config_spelling"] = spec["config_spelling"]
    meta["hybrid_override_pattern"] = spec["pattern"]
    meta["config_as_written_by_save_pretrained"] = json.loads(saved_cfg_text)

    # generation_config.json
    eos = [sp_ids["</s>"], sp_ids["<|im_end|>"]] if tok is not None else spec["eos_token_id"]
    gcfg = {"bos_token_id": 1, "eos_token_id": eos, "pad_token_id": 0, "transformers_version": versions["transformers"]}
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump(gcfg, f, indent=2)
        f.write("\n")

    # --- prompt / feed ids ---
    V = ccfg["vocab_size"]
    rng = np.random.default_rng(seed)
    if tok is not None:
        text = render_chat(CHAT_MESSAGES, True)
        prompt = tok.encode(text).ids
        meta["prompt_text"] = text
        with open(os.path.join(d, "reference", "chat_messages.json"), "w") as f:
            json.dump({"messages": CHAT_MESSAGES, "add_generation_prompt": True, "rendered": text}, f, indent=2)
            f.write("\n")
        cases = []
        for s in [text, "Hello, world!", "The capital of France is Paris.", "  two  spaces\tand a tab\n",
                  "caf\u00e9 \u2014 na\u00efve \u65e5\u672c 123 4567", "<|im_start|>user\nhi<|im_end|>", "</s><s><unk>"]:
            e = tok.encode(s)
            cases.append({"text": s, "ids": e.ids, "tokens": e.tokens, "decoded": tok.decode(e.ids, skip_special_tokens=False)})
        with open(os.path.join(d, "reference", "tokenizer_cases.json"), "w") as f:
            json.dump(cases, f, indent=2, ensure_ascii=False)
            f.write("\n")
        # check the template with jinja through transformers, if it can
        try:
            from transformers import AutoTokenizer
            at = AutoTokenizer.from_pretrained(d)
            r = at.apply_chat_template(CHAT_MESSAGES, add_generation_prompt=True, tokenize=False)
            meta["chat_template_check"] = {"transformers_render_equal": r == text}
            ids2 = at.apply_chat_template(CHAT_MESSAGES, add_generation_prompt=True, tokenize=True)
            if isinstance(ids2, dict) or hasattr(ids2, "keys"):
                ids2 = ids2["input_ids"]
            meta["chat_template_check"]["transformers_ids_equal"] = list(ids2) == list(prompt)
        except Exception as ex:  # noqa: BLE001
            meta["chat_template_check"] = {"error": repr(ex)}
    else:
        prompt = rng.integers(3, V, size=spec["prompt_len"]).tolist()
    T = len(prompt)

    # --- load back with transformers, float32 ---
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    load_kw = dict(attn_implementation="eager", use_mamba_kernels=False)

    def load(dtype):
        try:
            m, info = NemotronHForCausalLM.from_pretrained(d, dtype=dtype, output_loading_info=True,
                                                           experts_implementation="eager", **load_kw)
        except TypeError:
            m, info = NemotronHForCausalLM.from_pretrained(d, dtype=dtype, output_loading_info=True, **load_kw)
        bad = {k: [str(x) for x in v] for k, v in info.items() if v}
        return m.to(device).eval(), bad

    m32, bad = load(torch.float32)
    meta["load_info_problems"] = bad
    if bad:
        log(f"[{name}] LOADING PROBLEMS: {bad}")
    assert not bad.get("missing_keys") and not bad.get("unexpected_keys"), bad
    assert m32.model.layers[0].mixer.__class__.__name__ is not None

    def logits(m, ids):
        with torch.no_grad():
            return m(input_ids=torch.tensor([ids], device=device)).logits[0].double().cpu().numpy()

    def incremental(m, ids, feed):
        with torch.no_grad():
            out = m(input_ids=torch.tensor([ids], device=device), use_cache=True)
            pkv = out.past_key_values
            rows = [out.logits[0].double().cpu().numpy()]
            dec = []
            for tkn in feed:
                out = m(input_ids=torch.tensor([[tkn]], device=device), past_key_values=pkv, use_cache=True)
                pkv = out.past_key_values
                dec.append(out.logits[0, -1].double().cpu().numpy())
            return rows[0], np.stack(dec) if dec else np.zeros((0, V))

    # feed tokens
    N = spec["feed_len"]
    if spec.get("feed_greedy"):
        feed, margins = [], []
        with torch.no_grad():
            out = m32(input_ids=torch.tensor([prompt], device=device), use_cache=True)
            pkv = out.past_key_values
            last = out.logits[0, -1].double().cpu().numpy()
            for _ in range(N):
                order = np.argsort(-last)
                feed.append(int(order[0]))
                margins.append(float(last[order[0]] - last[order[1]]))
                out = m32(input_ids=torch.tensor([[feed[-1]]], device=device), past_key_values=pkv, use_cache=True)
                pkv = out.past_key_values
                last = out.logits[0, -1].double().cpu().numpy()
        meta["feed_is_greedy"] = True
        meta["greedy_top1_top2_margins"] = margins
        if tok is not None:
            meta["greedy_text"] = tok.decode(feed, skip_special_tokens=False)
    else:
        feed = rng.integers(3, V, size=N).tolist()
        meta["feed_is_greedy"] = False

    prefill = logits(m32, prompt)
    full = logits(m32, prompt + feed)
    inc_prefill, inc_dec = incremental(m32, prompt, feed)
    # chunked continuation: first part, then the rest of the prompt in one call with the cache
    try:
        cut = T // 2 + 1
        with torch.no_grad():
            o1 = m32(input_ids=torch.tensor([prompt[:cut]], device=device), use_cache=True)
            o2 = m32(input_ids=torch.tensor([prompt[cut:]], device=device), past_key_values=o1.past_key_values,
                     use_cache=True)
        cont = np.concatenate([o1.logits[0].double().cpu().numpy(), o2.logits[0].double().cpu().numpy()])
        meta["check_chunked_continuation_vs_prefill_max_abs"] = maxabs(cont, prefill)
    except Exception as ex:  # noqa: BLE001
        meta["check_chunked_continuation_vs_prefill_max_abs"] = repr(ex)

    decode = full[T:]
    write_f32(os.path.join(d, "reference", "prefill_logits.f32"), prefill)
    write_f32(os.path.join(d, "reference", "decode_logits.f32"), decode)
    with open(os.path.join(d, "reference", "prompt_ids.json"), "w") as f:
        json.dump(prompt, f)
        f.write("\n")
    with open(os.path.join(d, "reference", "feed_ids.json"), "w") as f:
        json.dump(feed, f)
        f.write("\n")

    scale = float(np.max(np.abs(full)))
    meta["shapes"] = {"prefill_logits": [T, V], "decode_logits": [N, V]}
    meta["logits_stats"] = {"max_abs": scale, "std": float(full.std()),
                            "distinct_argmax_over_positions": int(len(set(np.argmax(full, -1).tolist())))}
    meta["min_top1_top2_margin"] = {"prefill": top_margin(prefill), "decode": top_margin(decode)}
    meta["check_prefill_vs_full_rows_max_abs"] = maxabs(prefill, full[:T])
    meta["check_incremental_decode_vs_full_max_abs"] = maxabs(inc_dec, decode)
    meta["check_cached_prefill_vs_prefill_max_abs"] = maxabs(inc_prefill, prefill)
    log(f"[{name}] T={T} N={N} V={V} |logits|max={scale:.3f} incremental-vs-full={meta['check_incremental_decode_vs_full_max_abs']:.3e}"
        f" prefill-vs-fullrows={meta['check_prefill_vs_full_rows_max_abs']:.3e}")

    # CPU float32 for comparison
    if device != "cpu":
        try:
            mc = m32.to("cpu")
            with torch.no_grad():
                fc = mc(input_ids=torch.tensor([prompt + feed])).logits[0].double().numpy()
            meta["check_cpu_f32_vs_device_f32_max_abs"] = maxabs(fc, full)
            m32 = mc.to(device)
        except Exception as ex:  # noqa: BLE001
            meta["check_cpu_f32_vs_device_f32_max_abs"] = repr(ex)

    # transformers float64 (partial: transformers casts some things to float32 internally)
    try:
        m64 = m32.double()
        f64 = logits(m64, prompt + feed)
        meta["check_transformers_f64_vs_f32_max_abs"] = maxabs(f64, full)
        m32 = m64.float()
    except Exception as ex:  # noqa: BLE001
        meta["check_transformers_f64_vs_f32_max_abs"] = repr(ex)
    del m32

    # bf16 arithmetic, as transformers runs a bf16 checkpoint
    if spec["storage"] == "bf16":
        mb, bad_b = load(torch.bfloat16)
        pb = logits(mb, prompt)
        write_f32(os.path.join(d, "reference", "prefill_logits.bf16arith.f32"), pb)
        fb = logits(mb, prompt + feed)
        _, decb = incremental(mb, prompt, feed)
        meta["bf16arith"] = {
            "prefill_vs_f32_reference_max_abs": maxabs(pb, prefill),
            "prefill_vs_f32_reference_rel_to_max": maxabs(pb, prefill) / scale,
            "incremental_decode_vs_full_max_abs_bf16": maxabs(decb, fb[T:]),
            "argmax_agreement_prefill": float(np.mean(np.argmax(pb, -1) == np.argmax(prefill, -1))),
        }
        del mb

    # independent float64 numpy reference from the files
    st = {}
    ref = numpy_reference(d, prompt + feed, stats=st)
    worst, mism = rel_l2_rows(ref, full)
    meta["numpy_f64_reference"] = {
        "max_abs_vs_transformers_f32": maxabs(ref, full),
        "rel_to_max_logit": maxabs(ref, full) / scale,
        "worst_row_rel_l2_vs_transformers_f32": worst,
        "argmax_mismatch_rows": mism,
        "note": "independent float64 numpy implementation of kernels/dev/REFERENCE.md, sequential SSM, no dt clamp",
    }
    meta["min_dt"] = st["min_dt"]
    meta["time_step_min"] = 0.001
    meta["dt_clamp_can_matter"] = bool(st["min_dt"] <= 0.001)
    meta["router"] = st["router"]
    log(f"[{name}] numpy-f64 vs transformers-f32 max abs {meta['numpy_f64_reference']['max_abs_vs_transformers_f32']:.3e}"
        f" (rel {meta['numpy_f64_reference']['rel_to_max_logit']:.3e}); min dt {st['min_dt']:.4f};"
        f" f64 {meta.get('check_transformers_f64_vs_f32_max_abs')}")
    meta["elapsed_s"] = round(time.time() - t0, 2)
    meta["files_sha256"] = {}
    for root, _, fns in os.walk(d):
        for fn in sorted(fns):
            if fn == "meta.json":
                continue
            p = os.path.join(root, fn)
            with open(p, "rb") as f:
                meta["files_sha256"][os.path.relpath(p, d)] = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(d, "reference", "meta.json"), "w") as f:
        json.dump(meta, f, indent=2, default=str)
        f.write("\n")
    return meta


def verify(root, tol=1e-4):
    """numpy only: recompute every fixture under root with the float64 reference and compare with the
    stored logits (worst per-row relative L2, argmax). Returns the number of failures."""
    fails = 0
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if not os.path.exists(os.path.join(d, "reference", "prefill_logits.f32")):
            continue
        with open(os.path.join(d, "config.json")) as f:
            V = json.load(f)["vocab_size"]
        with open(os.path.join(d, "reference", "prompt_ids.json")) as f:
            prompt = json.load(f)
        with open(os.path.join(d, "reference", "feed_ids.json")) as f:
            feed = json.load(f)
        pre = np.fromfile(os.path.join(d, "reference", "prefill_logits.f32"), "<f4").reshape(-1, V)
        dec = np.fromfile(os.path.join(d, "reference", "decode_logits.f32"), "<f4").reshape(-1, V)
        st = {}
        ref = numpy_reference(d, prompt + feed, stats=st)
        T = len(prompt)
        wp, mp = rel_l2_rows(ref[:T], pre)
        wd, md = rel_l2_rows(ref[T:], dec)
        ok = wp <= tol and wd <= tol and not mp and not md
        fails += not ok
        log(f"{'ok  ' if ok else 'FAIL'} {name}: prefill worst rel L2 {wp:.2e}, decode {wd:.2e}, argmax mismatches "
            f"{mp}/{md}, min dt {st['min_dt']:.4f}, min top1-top2 margin {top_margin(pre):.2e}/{top_margin(dec):.2e}")
    return fails


def main():
    if "--verify" in sys.argv:
        i = sys.argv.index("--verify")
        root = sys.argv[i + 1] if len(sys.argv) > i + 1 else "test/fixtures"
        sys.exit(1 if verify(root) else 0)
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="test/fixtures")
    ap.add_argument("--device", default=None)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--src-out", default=None, help="copy transformers' nemotron_h sources here")
    args = ap.parse_args()

    import torch
    import transformers
    import safetensors
    import tokenizers
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "safetensors": safetensors.__version__, "tokenizers": tokenizers.__version__,
                "numpy": np.__version__, "python": sys.version.split()[0],
                "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"}
    log("versions:", versions)
    if args.src_out:
        import transformers.models.nemotron_h.modeling_nemotron_h as mm
        import transformers.models.nemotron_h.configuration_nemotron_h as cm
        os.makedirs(args.src_out, exist_ok=True)
        shutil.copy(mm.__file__, args.src_out)
        shutil.copy(cm.__file__, args.src_out)

    os.makedirs(args.out, exist_ok=True)
    summary, failed = {}, []
    for spec in FIXTURES:
        if args.only and spec["name"] not in args.only:
            continue
        try:
            meta = make_fixture(spec, args.out, device, versions)
            summary[spec["name"]] = {
                k: meta.get(k) for k in ["check_incremental_decode_vs_full_max_abs", "check_prefill_vs_full_rows_max_abs",
                                         "check_cached_prefill_vs_prefill_max_abs",
                                         "check_chunked_continuation_vs_prefill_max_abs",
                                         "check_transformers_f64_vs_f32_max_abs", "check_cpu_f32_vs_device_f32_max_abs",
                                         "numpy_f64_reference", "min_dt", "bf16arith", "load_info_problems"]}
            summary[spec["name"]]["router_bias_changes"] = [
                (r["layer"], r["tokens_where_bias_changes_choice"], r["tokens"], r["min_expert_margin"])
                for r in meta["router"]]
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            failed.append(spec["name"])
    log(json.dumps(summary, indent=1, default=str))
    if failed:
        log("FAILED:", failed)
        sys.exit(1)


if __name__ == "__main__":
    main()
