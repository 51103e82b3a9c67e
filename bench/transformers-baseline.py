#!/usr/bin/env python3
"""transformers baseline for `latentmesh bench engine --transformers` (issues 4 and 9).

Builds NemotronHForCausalLM from a config.json (the Nano 30B-A3B one by default) with random bf16
weights created directly on the GPU (no download, no checkpoint), then measures, as transformers
runs by default (experts_implementation and attention as it picks them; the torch Mamba-2 path,
since mamba_ssm is not installed), and prints `BENCH {json}` lines (kernels/bench/README.md):

  transformers_decode_b{B}_ctx{C}   ms per decode step (greedy, logits of the last row, host clock
                                    around each step after synchronising), batch B at context C
  transformers_prefill_{T}          tokens/s prefilling one T-token sequence (use_cache, last logits)

A case that runs out of GPU memory prints its line with "oom": true and value null: that is a
result too (the issue records an out-of-memory at 2,048 prefill tokens on 80 GB).

Decode needs a cache at context C. For B·C ≤ --max-real-prefill tokens it comes from a real
prefill; beyond that (the torch Mamba-2 path materialises (chunks, 128, 128, heads, state) tensors
and runs out of memory) it is built directly: each attention layer's K/V of length C and each Mamba
layer's conv and SSM state filled with random values, which costs a decode step exactly what a
prefilled cache of that length costs (the line says which: "cache": "prefill" | "synthesized").
"""
import argparse
import gc
import json
import sys
import time


def size_key(n):
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def bench_line(key, value, unit, **extra):
    print("BENCH " + json.dumps({"key": key, "value": value, "unit": unit, **extra}), flush=True)


def log(msg):
    print(f"# {msg}", file=sys.stderr, flush=True)


def build_model(config_path, experts_implementation):
    import torch
    from transformers import NemotronHConfig, NemotronHForCausalLM

    with open(config_path) as f:
        raw = json.load(f)
    for k in ("architectures", "auto_map", "torch_dtype", "dtype", "transformers_version"):
        raw.pop(k, None)
    raw["use_mamba_kernels"] = False  # no hub kernels: the machine has no network
    cfg = NemotronHConfig(**raw)
    kw = {"dtype": torch.bfloat16}
    if experts_implementation:
        kw["experts_implementation"] = experts_implementation
    t0 = time.time()
    with torch.device("cuda"):
        model = NemotronHForCausalLM._from_config(cfg, **kw)
    model.eval()
    torch.cuda.synchronize()
    n = sum(p.numel() for p in model.parameters())
    log(f"model built on the GPU in {time.time() - t0:.1f} s: {n / 1e9:.2f} B parameters, "
        f"{torch.cuda.memory_allocated() / 2**30:.1f} GiB allocated; experts "
        f"{getattr(model.config, '_experts_implementation', '?')}, attention {getattr(model.config, '_attn_implementation', '?')}")
    return model, n


def free():
    import torch

    gc.collect()
    torch.cuda.empty_cache()


def synthesized_cache(model, B, C):
    """A DynamicCache as after prefilling B sequences of C tokens, filled with random values."""
    import torch
    from transformers.cache_utils import DynamicCache

    cfg = model.config
    cache = DynamicCache(config=cfg)
    types = list(cfg.layers_block_type)
    conv_dim = cfg.mamba_num_heads * cfg.mamba_head_dim + 2 * cfg.n_groups * cfg.ssm_state_size
    kvh, hd = cfg.num_key_value_heads, cfg.head_dim
    for i, layer in enumerate(cache.layers):
        if types[i] == "linear_attention":
            conv = torch.rand(B, conv_dim, cfg.conv_kernel, device="cuda", dtype=torch.bfloat16) - 0.5
            rec = torch.randn(B, cfg.mamba_num_heads, cfg.mamba_head_dim, cfg.ssm_state_size, device="cuda", dtype=torch.float32) * 0.1
            layer.lazy_initialization(conv_states=conv, recurrent_states=rec, conv_kernel_size=cfg.conv_kernel)
            layer.conv_states[0].copy_(conv)
            layer.recurrent_states[0].copy_(rec)
            layer.has_previous_state[0] = True
        elif types[i] == "full_attention":
            k = torch.randn(B, kvh, C, hd, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(B, kvh, C, hd, device="cuda", dtype=torch.bfloat16)
            layer.update(k, v)
    if cache.get_seq_length() != C:
        raise RuntimeError(f"synthesized cache reports length {cache.get_seq_length()}, expected {C}")
    return cache


def decode_case(model, B, C, steps, max_real_prefill):
    import torch

    key = f"transformers_decode_b{B}_ctx{size_key(C)}"
    V = model.config.vocab_size
    g = torch.Generator(device="cuda").manual_seed(B)
    try:
        with torch.inference_mode():
            if B * C <= max_real_prefill:
                ids = torch.randint(3, V, (B, C), device="cuda", generator=g)
                out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
                cache, how = out.past_key_values, "prefill"
                tok = out.logits[:, -1].argmax(-1, keepdim=True)
                del out
            else:
                cache, how = synthesized_cache(model, B, C), "synthesized"
                tok = torch.randint(3, V, (B, 1), device="cuda", generator=g)
            times = []
            for step in range(steps + 2):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                out = model(input_ids=tok, past_key_values=cache, use_cache=True, logits_to_keep=1)
                tok = out.logits[:, -1].argmax(-1, keepdim=True)
                torch.cuda.synchronize()
                if step >= 2:
                    times.append((time.perf_counter() - t0) * 1e3)
                del out
        times.sort()
        ms = times[len(times) // 2]
        log(f"decode batch {B}, context {C} ({how} cache): {ms:.1f} ms/step")
        bench_line(key, ms, "ms/step", batch=B, context=C, steps=steps, cache=how, peak_gib=torch.cuda.max_memory_allocated() / 2**30)
    except torch.OutOfMemoryError as e:
        log(f"decode batch {B}, context {C}: out of memory")
        bench_line(key, None, "ms/step", batch=B, context=C, oom=True, error=str(e).splitlines()[0][:200])
    except Exception as e:  # noqa: BLE001 - one failed case must not hide the others
        log(f"decode batch {B}, context {C}: {type(e).__name__}: {e}")
        bench_line(key, None, "ms/step", batch=B, context=C, error=f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    finally:
        cache = out = None
        free()
        torch.cuda.reset_peak_memory_stats()


def prefill_case(model, T, reps):
    import torch

    key = f"transformers_prefill_{size_key(T)}"
    V = model.config.vocab_size
    ids = torch.randint(3, V, (1, T), device="cuda", generator=torch.Generator(device="cuda").manual_seed(T))
    out = None
    try:
        times = []
        with torch.inference_mode():
            for _ in range(reps + 1):  # the first is a warm-up
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
                torch.cuda.synchronize()
                times.append((time.perf_counter() - t0) * 1e3)
                out = None
                free()
        ms = min(times[1:])
        log(f"prefill {T} tokens: {ms:.1f} ms = {T * 1e3 / ms:.0f} tok/s")
        bench_line(key, T * 1e3 / ms, "tok/s", ms=ms, tokens=T, peak_gib=torch.cuda.max_memory_allocated() / 2**30)
    except torch.OutOfMemoryError as e:
        log(f"prefill {T} tokens: out of memory")
        bench_line(key, None, "tok/s", tokens=T, oom=True, error=str(e).splitlines()[0][:200])
    except Exception as e:  # noqa: BLE001
        log(f"prefill {T} tokens: {type(e).__name__}: {e}")
        bench_line(key, None, "tok/s", tokens=T, error=f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    finally:
        out = None
        free()
        torch.cuda.reset_peak_memory_stats()


def int_list(s):
    return [int(x) for x in s.split(",") if x.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="test/fixtures/configs/nemotron-3-nano-30b-a3b.config.json")
    ap.add_argument("--batches", type=int_list, default=[1, 8, 32])
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--prefill", type=int_list, default=[512, 2048, 8192])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--prefill-reps", type=int, default=2)
    ap.add_argument("--max-real-prefill", type=int, default=1024, help="largest batch x context prefilled for real before decode")
    ap.add_argument("--experts-implementation", default="", help="eager | grouped_mm | batched_mm (default: what transformers picks)")
    a = ap.parse_args()
    try:
        import torch
        import transformers
    except ImportError as e:
        print(f"transformers-baseline: {e}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("transformers-baseline: no CUDA device", file=sys.stderr)
        return 2
    print(f"# transformers {transformers.__version__}, torch {torch.__version__}, {torch.cuda.get_device_name(0)}", flush=True)
    bench_line("transformers_version", 0, "", version=transformers.__version__, torch=torch.__version__, device=torch.cuda.get_device_name(0))
    try:
        model, n = build_model(a.config, a.experts_implementation)
    except torch.OutOfMemoryError as e:
        bench_line("transformers_load", None, "", oom=True, error=str(e).splitlines()[0][:200])
        return 0
    bench_line("transformers_load", n / 1e9, "B parameters", experts=getattr(model.config, "_experts_implementation", None),
               attention=getattr(model.config, "_attn_implementation", None), gib=torch.cuda.memory_allocated() / 2**30)
    for B in a.batches:
        decode_case(model, B, a.context, a.steps, a.max_real_prefill)
    for T in a.prefill:
        prefill_case(model, T, a.prefill_reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
