#!/usr/bin/env python3
"""All-to-all over NCCL between the GPUs of one host, at the sizes expert-parallel MoE dispatch moves
(issue 8): decode (128 tokens per rank) and prefill (4,096 per rank), for the Super latent width (1024),
the Nano hidden width (2688) and the Super hidden width (4096), bf16. Each rank sends every one of its
token vectors to every rank (the worst case of top-k routing over few ranks), so the bytes crossing to
each peer per step are tokens x width x 2.

The ceiling is measured in the same run: a peer-to-peer copy of 256 MiB from GPU 0 to GPU 1 (bytes per
second one way). Prints a table with time per all-to-all, the one-way bytes per peer divided by that time,
its ratio to the copy ceiling, and the latent-vs-full-width time ratio (what LatentMoE saves).

    python3 bench/alltoall-nccl.py [--ranks 2] [--iters 50]

Runs on a machine with >= 2 GPUs (the device tool's nvidia-h200-x2); no Node.js needed. NVLink
multicast stays off (NCCL_NVLS_ENABLE=0, set by .carry/env.sh).
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WIDTHS = [("Super latent", 1024), ("Nano hidden", 2688), ("Super hidden", 4096)]
TOKENS = [("decode", 128), ("prefill", 4096)]


def p2p_ceiling(iters):
    """One-way GPU0 -> GPU1 copy bandwidth (bytes/s) of a 256 MiB buffer."""
    n = 256 << 20
    src = torch.empty(n, dtype=torch.uint8, device="cuda:0")
    dst = torch.empty(n, dtype=torch.uint8, device="cuda:1")
    for _ in range(3):
        dst.copy_(src, non_blocking=True)
    torch.cuda.synchronize(0)
    torch.cuda.synchronize(1)
    t0 = time.perf_counter()
    for _ in range(iters):
        dst.copy_(src, non_blocking=True)
    torch.cuda.synchronize(0)
    torch.cuda.synchronize(1)
    return n * iters / (time.perf_counter() - t0)


def worker(rank, world, port, iters, out_path):
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    rows = []
    for phase, tokens in TOKENS:
        for name, width in WIDTHS:
            send = torch.randn(world * tokens, width, device="cuda", dtype=torch.bfloat16)
            recv = torch.empty_like(send)
            for _ in range(5):
                dist.all_to_all_single(recv, send)
            torch.cuda.synchronize()
            dist.barrier()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                dist.all_to_all_single(recv, send)
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end) / iters
            # check the exchange itself once: rank r's block j came from rank j's block r
            ref = [torch.empty_like(send) for _ in range(world)] if rank == 0 else None
            dist.gather(send, ref, dst=0)
            if rank == 0:
                for j in range(world):
                    want = ref[j][rank * tokens:(rank + 1) * tokens]
                    got = recv[j * tokens:(j + 1) * tokens]
                    if not torch.equal(want, got):
                        raise SystemExit(f"all-to-all check failed: block from rank {j} ({phase}, width {width})")
            t = torch.tensor([ms], device="cuda")
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            rows.append({"phase": phase, "tokens": tokens, "name": name, "width": width, "ms": t.item(), "peer_bytes": tokens * width * 2})
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(rows, f)
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "/tmp"), "alltoall.json"))
    args = ap.parse_args()
    if torch.cuda.device_count() < args.ranks:
        print(f"alltoall-nccl: needs {args.ranks} GPUs, found {torch.cuda.device_count()}", file=sys.stderr)
        sys.exit(2)
    ceiling = p2p_ceiling(20)
    port = 29500 + os.getpid() % 1000
    mp.spawn(worker, args=(args.ranks, port, args.iters, args.out + ".rows"), nprocs=args.ranks, join=True)
    with open(args.out + ".rows") as f:
        rows = json.load(f)
    print(f"{torch.cuda.get_device_name(0)} x {args.ranks}; NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}; "
          f"ceiling: GPU0 -> GPU1 copy {ceiling / 1e9:.1f} GB/s one way (same run)")
    print("| phase | tokens per rank | width | ms per all-to-all | GB/s per peer, one way | ratio to copy | time vs the Super latent width |")
    print("|---|---|---|---|---|---|---|")
    for phase, tokens in TOKENS:
        base = next(r["ms"] for r in rows if r["phase"] == phase and r["width"] == 1024)
        for r in (r for r in rows if r["phase"] == phase):
            gbs = r["peer_bytes"] / (r["ms"] / 1e3) / 1e9
            print(f"| {phase} | {tokens} | {r['width']} ({r['name']}) | {r['ms']:.4f} | {gbs:.1f} | {gbs * 1e9 / ceiling:.3f} | {r['ms'] / base:.2f}x |")
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(0), "ranks": args.ranks, "copy_gbs": ceiling / 1e9, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
