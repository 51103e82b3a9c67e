#!/usr/bin/env python3
"""PyTorch baselines for bench/kernels.ts (issue 9), printed as `BENCH {json}` lines (kernels/bench/README.md).

Run on the GPU machine in the same session as kernels/build/bench-kernels:
  baseline_copy         device-to-device copy as torch measures it (bytes read + written), GB/s
  baseline_matmul       bf16 8192^3 matmul through torch (cuBLAS), TFLOP/s
  baseline_sdpa_8k      scaled_dot_product_attention, GQA 32 query / 2 KV heads, head 128, causal,
                        8192 tokens, batch 1: the fastest backend (one line per backend too)
  baseline_grouped_mm_8k / _64k   torch._grouped_mm on the moe_gemm_8k / _64k shapes: 8,192 / 65,536
                        rows in 128 equal groups, (rows, 2688) x (128, 2688, 1856) bf16
Inputs are random; each time is the median of per-call CUDA-event timings after warm-up calls.
Needs only torch; every case that fails prints a `# skipped` line instead of stopping the rest.
"""
import json
import statistics
import sys

import torch


def bench_line(key, value, unit, ms, **extra):
    print("BENCH " + json.dumps({"key": key, "value": value, "unit": unit, "ms": ms, **extra}), flush=True)


def median_ms(fn, reps=20, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1))
    return statistics.median(times)


def copy_bandwidth():
    n = 1 << 30  # 2 GiB of bf16 per buffer
    bufs = [torch.randn(n, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
    ms = median_ms(lambda: bufs[1].copy_(bufs[0]), reps=10)
    gbps = 2 * n * 2 / (ms * 1e-3) / 1e9
    bench_line("baseline_copy", gbps, "GB/s", ms, bytes=4.0 * n)
    del bufs


def matmul_rate():
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = median_ms(lambda: a @ b, reps=10)
    flops = 2.0 * n ** 3
    bench_line("baseline_matmul", flops / (ms * 1e-3) / 1e12, "TFLOP/s", ms, flops=flops)


def sdpa():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    T, nq, nkv, hd = 8192, 32, 2, 128
    q = torch.randn(1, nq, T, hd, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, nkv, T, hd, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, nkv, T, hd, device="cuda", dtype=torch.bfloat16)
    # K/V expanded to the query heads, for backends without GQA support (the expansion is not timed)
    ke, ve = k.repeat_interleave(nq // nkv, dim=1), v.repeat_interleave(nq // nkv, dim=1)
    flops = 4.0 * nq * hd * T * T / 2  # causal: half of the QK^T and PV products
    F = torch.nn.functional.scaled_dot_product_attention
    best = None
    for name in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"):
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            continue
        for gqa in (True, False):
            try:
                with sdpa_kernel(backend):
                    fn = (lambda: F(q, k, v, is_causal=True, enable_gqa=True)) if gqa else (lambda: F(q, ke, ve, is_causal=True))
                    ms = median_ms(fn)
            except Exception as e:  # noqa: BLE001 - a backend that refuses the shape is skipped
                print(f"# skipped sdpa {name} gqa={gqa}: {str(e).splitlines()[0][:160]}", flush=True)
                continue
            tflops = flops / (ms * 1e-3) / 1e12
            bench_line(f"baseline_sdpa_8k_{name.lower()}{'' if gqa else '_expanded_kv'}", tflops, "TFLOP/s", ms, flops=flops)
            if best is None or ms < best[0]:
                best = (ms, name + ("" if gqa else " (K/V expanded)"))
            break  # GQA worked for this backend: the expanded form is not needed
    if best is not None:
        bench_line("baseline_sdpa_8k", flops / (best[0] * 1e-3) / 1e12, "TFLOP/s", best[0], flops=flops, backend=best[1])


def grouped_mm(rows, key):
    E, K, N = 128, 2688, 1856
    x = torch.randn(rows, K, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(E, N, K, device="cuda", dtype=torch.bfloat16) * 0.02  # (experts, out, in) as stored
    offs = torch.arange(rows // E, rows + 1, rows // E, device="cuda", dtype=torch.int32)
    flops, nbytes = 2.0 * rows * N * K, 2.0 * E * N * K
    best = None
    for layout, b in (("weights (E, N, K) transposed", w.transpose(-2, -1)), ("weights (E, K, N) contiguous", w.transpose(-2, -1).contiguous())):
        try:
            ms = median_ms(lambda: torch._grouped_mm(x, b, offs=offs))
        except Exception as e:  # noqa: BLE001
            print(f"# skipped grouped_mm {key} {layout}: {str(e).splitlines()[0][:160]}", flush=True)
            continue
        if best is None or ms < best[0]:
            best = (ms, layout)
    if best is not None:
        bench_line(key, flops / (best[0] * 1e-3) / 1e12, "TFLOP/s", best[0], flops=flops, bytes=nbytes, layout=best[1])


def main():
    if not torch.cuda.is_available():
        print("torch-baselines: no CUDA device", file=sys.stderr)
        return 1
    print(f"# torch {torch.__version__}, {torch.cuda.get_device_name(0)}", flush=True)
    for name, fn in (("copy", copy_bandwidth), ("matmul", matmul_rate), ("sdpa", sdpa),
                     ("grouped_mm 8k", lambda: grouped_mm(8192, "baseline_grouped_mm_8k")),
                     ("grouped_mm 64k", lambda: grouped_mm(65536, "baseline_grouped_mm_64k"))):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one failed baseline must not hide the others
            print(f"# skipped {name}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}", flush=True)
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
