#!/usr/bin/env python3
"""Fixture logits for the MTP head (issue 7), from a reference independent of the engine.

Writes test/fixtures/<name>/: config.json, model.safetensors (a tiny random NemotronH with one MTP
layer of pattern "*E", LatentMoE, fp32, every tensor under its released name: kernels/dev/REFERENCE.md
§10) and reference/{prompt_ids.json, mtp_prefill_logits.f32, main_prefill_logits.f32, meta.json}.

mtp_prefill_logits.f32 (rows x V, float32 LE) is what `latentmesh logits --decode 0
--speculative-tokens K` writes to mtp_prefill_logits.f32: the MTP head over the prompt — row j < T-1
reads (h_j, prompt[j+1]), row T-1 reads (h_{T-1}, g) with g the greedy token after the prompt —
then K-1 draft rows, each reading (the head's previous output, the previous greedy draft).

The reference is float64 numpy: the main model is scripts/make-fixtures.py's numpy_reference (written
from REFERENCE.md, checked against transformers); the MTP blocks reuse it on a pseudo-checkpoint whose
"embeddings" are the head's input rows (eh_proj([enorm(embed(next)) ; hnorm(h)])), whose layers are
the mtp.layers.* blocks, whose norm_f is final_layernorm — so causal attention over those rows is the
MTP attention's KV over the whole context. Hidden states come out by swapping lm_head for the identity.
No torch is needed: `python3 scripts/make-mtp-fixtures.py` runs anywhere with numpy.
With --torch, the MTP rows are recomputed in float64 torch eager from the same files (a second,
separately written implementation of the head's math) and compared; the difference goes to meta.json.
"""
import argparse
import importlib.util
import json
import math
import os
import shutil
import struct
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("make_fixtures", os.path.join(HERE, "make-fixtures.py"))
mf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mf)

CONFIG = {
    "architectures": ["NemotronHForCausalLM"], "model_type": "nemotron_h",
    "vocab_size": 48, "hidden_size": 32, "hybrid_override_pattern": "M*EME",
    "mtp_hybrid_override_pattern": "*E", "num_nextn_predict_layers": 1,
    "mamba_num_heads": 4, "mamba_head_dim": 8, "ssm_state_size": 8, "n_groups": 2, "conv_kernel": 4, "chunk_size": 8,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
    "intermediate_size": 40, "moe_intermediate_size": 16, "moe_shared_expert_intermediate_size": 24,
    "n_routed_experts": 8, "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1, "moe_latent_size": 16,
    "norm_topk_prob": True, "routed_scaling_factor": 1.5, "layer_norm_epsilon": 1e-5,
    "time_step_min": 0.001, "time_step_max": 0.1, "use_conv_bias": True, "mamba_proj_bias": False, "mlp_bias": False,
    "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32",
}
PROMPT = [1, 7, 30, 11, 4, 42, 19, 5, 27, 13]
DRAFTS = 3


def block_tensors(kind, p, cfg):
    H = cfg["hidden_size"]
    m = p + "mixer."
    out = {p + "norm.weight": [H]}
    if kind == "M":
        nh, P, G, N, K = cfg["mamba_num_heads"], cfg["mamba_head_dim"], cfg["n_groups"], cfg["ssm_state_size"], cfg["conv_kernel"]
        I = nh * P
        cd = I + 2 * G * N
        out.update({m + "in_proj.weight": [I + cd + nh, H], m + "conv1d.weight": [cd, 1, K], m + "conv1d.bias": [cd],
                    m + "dt_bias": [nh], m + "A_log": [nh], m + "D": [nh], m + "norm.weight": [I], m + "out_proj.weight": [H, I]})
    elif kind == "*":
        q, kv = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"]
        out.update({m + "q_proj.weight": [q, H], m + "k_proj.weight": [kv, H], m + "v_proj.weight": [kv, H], m + "o_proj.weight": [H, q]})
    elif kind == "-":
        out.update({m + "up_proj.weight": [cfg["intermediate_size"], H], m + "down_proj.weight": [H, cfg["intermediate_size"]]})
    elif kind == "E":
        E, L, inter, sh = cfg["n_routed_experts"], cfg["moe_latent_size"], cfg["moe_intermediate_size"], cfg["moe_shared_expert_intermediate_size"]
        out.update({m + "gate.weight": [E, H], m + "gate.e_score_correction_bias": [E],
                    m + "fc1_latent_proj.weight": [L, H], m + "fc2_latent_proj.weight": [H, L],
                    m + "shared_experts.up_proj.weight": [sh, H], m + "shared_experts.down_proj.weight": [H, sh]})
        for e in range(E):
            out.update({m + f"experts.{e}.up_proj.weight": [inter, L], m + f"experts.{e}.down_proj.weight": [L, inter]})
    return out


def all_tensors(cfg):
    H, V = cfg["hidden_size"], cfg["vocab_size"]
    t = {"backbone.embeddings.weight": [V, H], "backbone.norm_f.weight": [H], "lm_head.weight": [V, H]}
    for i, kind in enumerate(cfg["hybrid_override_pattern"]):
        t.update(block_tensors(kind, f"backbone.layers.{i}.", cfg))
    pat = cfg["mtp_hybrid_override_pattern"]
    t.update({"mtp.layers.0.enorm.weight": [H], "mtp.layers.0.hnorm.weight": [H], "mtp.layers.0.eh_proj.weight": [H, 2 * H]})
    for j, kind in enumerate(pat):
        t.update(block_tensors(kind, f"mtp.layers.{j}.", cfg))
    t[f"mtp.layers.{len(pat) - 1}.final_layernorm.weight"] = [H]
    return t


def init(rng, name, shape):
    if name.endswith("norm.weight") or name.endswith("final_layernorm.weight") or name.endswith(".D"):
        return 1.0 + 0.2 * rng.uniform(-1, 1, shape)
    if name.endswith("A_log"):
        return np.log(rng.uniform(1, 8, shape))
    if name.endswith("dt_bias"):
        dt = rng.uniform(0.03, 0.1, shape)
        return dt + np.log(-np.expm1(-dt))
    if name.endswith("e_score_correction_bias") or name.endswith("conv1d.bias"):
        return 0.1 * rng.uniform(-1, 1, shape)
    if name == "backbone.embeddings.weight":
        return rng.normal(0, 1, shape)
    fan_in = shape[-1]
    return rng.uniform(-1, 1, shape) * (1.7 / math.sqrt(fan_in))


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def pseudo_run(w, cfg, pattern, prefix, rows, final_norm, head):
    """numpy_reference over `rows` as the input embeddings, through blocks `prefix`{j}, final norm, `head`."""
    d = tempfile.mkdtemp(prefix="mtp-pseudo-")
    try:
        c = dict(cfg, hybrid_override_pattern=pattern, vocab_size=rows.shape[0])
        c.pop("layers_block_type", None)
        t = {"backbone.embeddings.weight": rows, "backbone.norm_f.weight": final_norm, "lm_head.weight": head}
        for j in range(len(pattern)):
            for name in block_tensors(pattern[j], f"{prefix}{j}.", cfg):
                t[f"backbone.layers.{j}." + name[len(f"{prefix}{j}."):]] = w[name]
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(c, f)
        write_f64_safetensors(os.path.join(d, "model.safetensors"), t)
        return mf.numpy_reference(d, list(range(rows.shape[0])), clamp_dt_min=cfg["time_step_min"])
    finally:
        shutil.rmtree(d)


def write_f64_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f8").tobytes()
        header[name] = {"dtype": "F64", "shape": list(np.shape(a)), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def rms(x, wt, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * wt


def mtp_reference(d, prompt, k):
    """float64 (main prefill logits, MTP rows, greedy token, drafts) for checkpoint directory d."""
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    w, _ = mf.load_checkpoint_numpy(d)
    H, eps = cfg["hidden_size"], cfg["layer_norm_epsilon"]
    main = mf.numpy_reference(d, prompt, clamp_dt_min=cfg["time_step_min"])
    g = int(np.argmax(main[-1]))
    # hidden after norm_f: the same model with lm_head = identity
    hd = tempfile.mkdtemp(prefix="mtp-hidden-")
    try:
        shutil.copy(os.path.join(d, "config.json"), hd)
        t = dict(w)
        t["lm_head.weight"] = np.eye(H)
        t = {n: a for n, a in t.items() if not n.startswith("mtp.")}
        write_f64_safetensors(os.path.join(hd, "model.safetensors"), t)
        hidden = mf.numpy_reference(hd, prompt, clamp_dt_min=cfg["time_step_min"])
    finally:
        shutil.rmtree(hd)
    pat = cfg["mtp_hybrid_override_pattern"]
    last = f"mtp.layers.{len(pat) - 1}."
    emb = w["backbone.embeddings.weight"]

    def head_input(tok, h):
        cat = np.concatenate([rms(emb[tok], w["mtp.layers.0.enorm.weight"], eps), rms(h, w["mtp.layers.0.hnorm.weight"], eps)], axis=-1)
        return cat @ w["mtp.layers.0.eh_proj.weight"].T

    nxt = list(prompt[1:]) + [g]
    rows = np.stack([head_input(nxt[j], hidden[j]) for j in range(len(prompt))])
    drafts = []
    for r in range(k):
        y = pseudo_run(w, cfg, pat, "mtp.layers.", rows, w[last + "final_layernorm.weight"], np.eye(H))
        logits = y @ w["lm_head.weight"].T
        drafts.append(int(np.argmax(logits[-1])))
        if r + 1 < k:
            rows = np.concatenate([rows, head_input(drafts[-1], y[-1])[None, :]], axis=0)
    return main, logits, g, drafts


def torch_check(d, prompt, k, want):
    """The MTP rows again in float64 torch eager, written separately from the numpy path."""
    import torch
    from safetensors.torch import load_file
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    w = {n: t.double() for n, t in load_file(os.path.join(d, "model.safetensors")).items()}
    eps = cfg["layer_norm_epsilon"]

    def norm(x, wt):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * wt

    import transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float64, attn_implementation="eager", experts_implementation="eager", use_mamba_kernels=False)
    model.eval()
    with torch.no_grad():
        out = model(torch.tensor([prompt]), output_hidden_states=True)
    pre = out.hidden_states[-1][0]
    # transformers' last hidden state may or may not be after norm_f; take the one whose lm_head gives the logits
    cand = [pre, norm(pre, w["backbone.norm_f.weight"])]
    logits_main = out.logits[0].double()
    hidden = min(cand, key=lambda h: float((h @ w["lm_head.weight"].T - logits_main).abs().max()))
    g = int(logits_main[-1].argmax())
    emb = w["backbone.embeddings.weight"]

    def attn(x, p):
        T = x.shape[0]
        nq, nkv, hdim = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
        q = (x @ w[p + "q_proj.weight"].T).view(T, nq, hdim).transpose(0, 1)
        kk = (x @ w[p + "k_proj.weight"].T).view(T, nkv, hdim).transpose(0, 1).repeat_interleave(nq // nkv, 0)
        v = (x @ w[p + "v_proj.weight"].T).view(T, nkv, hdim).transpose(0, 1).repeat_interleave(nq // nkv, 0)
        s = q @ kk.transpose(1, 2) / math.sqrt(hdim) + torch.triu(torch.full((T, T), float("-inf"), dtype=torch.float64), 1)
        return (s.softmax(-1) @ v).transpose(0, 1).reshape(T, nq * hdim) @ w[p + "o_proj.weight"].T

    def moe(x, p):
        E, kk, ng, tg = cfg["n_routed_experts"], cfg["num_experts_per_tok"], cfg["n_group"], cfg["topk_group"]
        s = (x @ w[p + "gate.weight"].T).sigmoid()
        sc = s + w[p + "gate.e_score_correction_bias"]
        gs = sc.view(-1, ng, E // ng).topk(2, -1)[0].sum(-1)
        gi = gs.topk(tg, -1)[1]
        mask = torch.zeros_like(gs).scatter_(1, gi, 1.0).repeat_interleave(E // ng, 1).bool()
        idx = sc.masked_fill(~mask, float("-inf")).topk(kk, -1)[1]
        wt = s.gather(1, idx)
        wt = wt / (wt.sum(-1, keepdim=True) + 1e-20) * cfg["routed_scaling_factor"]
        lat = x @ w[p + "fc1_latent_proj.weight"].T
        r = torch.zeros_like(lat)
        for t in range(x.shape[0]):
            for j in range(kk):
                e = int(idx[t, j])
                r[t] += wt[t, j] * (torch.relu(lat[t] @ w[p + f"experts.{e}.up_proj.weight"].T) ** 2 @ w[p + f"experts.{e}.down_proj.weight"].T)
        sh = torch.relu(x @ w[p + "shared_experts.up_proj.weight"].T) ** 2 @ w[p + "shared_experts.down_proj.weight"].T
        return r @ w[p + "fc2_latent_proj.weight"].T + sh

    def head(rows):
        x = rows
        for j, kind in enumerate(cfg["mtp_hybrid_override_pattern"]):
            p = f"mtp.layers.{j}."
            u = norm(x, w[p + "norm.weight"])
            x = x + (attn(u, p + "mixer.") if kind == "*" else moe(u, p + "mixer."))
        return norm(x, w[f"mtp.layers.{len(cfg['mtp_hybrid_override_pattern']) - 1}.final_layernorm.weight"])

    def inp(tok, h):
        return torch.cat([norm(emb[tok], w["mtp.layers.0.enorm.weight"]), norm(h, w["mtp.layers.0.hnorm.weight"])], -1) @ w["mtp.layers.0.eh_proj.weight"].T

    nxt = list(prompt[1:]) + [g]
    rows = torch.stack([inp(nxt[j], hidden[j]) for j in range(len(prompt))])
    for r in range(k):
        y = head(rows)
        if r + 1 < k:
            rows = torch.cat([rows, inp(int((y[-1] @ w["lm_head.weight"].T).argmax()), y[-1])[None]], 0)
    got = (y @ w["lm_head.weight"].T).numpy()
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "..", "test", "fixtures"))
    ap.add_argument("--name", default="mtp-tiny-latent")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--torch", action="store_true", help="also recompute in float64 torch and record the difference")
    a = ap.parse_args()
    d = os.path.join(a.out, a.name)
    os.makedirs(os.path.join(d, "reference"), exist_ok=True)
    rng = np.random.default_rng(a.seed)
    tensors = {n: init(rng, n, s) for n, s in all_tensors(CONFIG).items()}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    write_safetensors(os.path.join(d, "model.safetensors"), tensors)
    main_logits, mtp_logits, g, drafts = mtp_reference(d, PROMPT, DRAFTS)

    def margin(rows):
        s = np.sort(rows, axis=-1)
        return float(np.min(s[:, -1] - s[:, -2]))

    meta = {
        "generator": "scripts/make-mtp-fixtures.py (float64 numpy; main model = make-fixtures.py numpy_reference)",
        "seed": a.seed, "prompt_ids": PROMPT, "speculative_tokens": DRAFTS, "first_token": g, "drafts": drafts,
        "mtp_rows": int(mtp_logits.shape[0]), "min_top2_margin_mtp": margin(mtp_logits), "min_top2_margin_main_last": margin(main_logits[-1:]),
        "command": f"latentmesh logits --model test/fixtures/{a.name} --prompt-ids {','.join(map(str, PROMPT))} --decode 0 --speculative-tokens {DRAFTS} --out OUT",
    }
    if a.torch:
        meta["torch_float64_max_rel_diff"] = torch_check(d, PROMPT, DRAFTS, mtp_logits)
    with open(os.path.join(d, "reference", "prompt_ids.json"), "w") as f:
        json.dump(PROMPT, f)
    mf.write_f32(os.path.join(d, "reference", "mtp_prefill_logits.f32"), mtp_logits)
    mf.write_f32(os.path.join(d, "reference", "main_prefill_logits.f32"), main_logits)
    with open(os.path.join(d, "reference", "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    sys.exit(main())
