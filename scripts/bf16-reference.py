#!/usr/bin/env python3
"""transformers' own bf16 arithmetic on a fixture (GPU machine; transformers 5.17).

Loads FIXTURE with NemotronHForCausalLM in bfloat16 (eager attention, eager experts, the PyTorch
Mamba path, as scripts/make-fixtures.py loads its references), runs the reference prompt
(reference/prompt_ids.json) and writes reference/prefill_logits.bf16arith.f32 — the yardstick
scripts/gpu-parity.mjs holds our bf16 CUDA logits against — and prints its worst per-row relative L2
error and top-3 closeness against the f32 reference (reference/prefill_logits.f32).

    python3 scripts/bf16-reference.py test/fixtures/demo-chat
"""
import json
import os
import sys

import numpy as np
import torch
from transformers import NemotronHForCausalLM


def main() -> int:
    if len(sys.argv) != 2 or not os.path.isfile(os.path.join(sys.argv[1], "config.json")):
        print("usage: bf16-reference.py FIXTURE_DIR", file=sys.stderr)
        return 2
    d = sys.argv[1]
    vocab = json.load(open(os.path.join(d, "config.json")))["vocab_size"]
    prompt = json.load(open(os.path.join(d, "reference", "prompt_ids.json")))
    ref = np.fromfile(os.path.join(d, "reference", "prefill_logits.f32"), dtype=np.float32).reshape(-1, vocab)
    kw = dict(dtype=torch.bfloat16, attn_implementation="eager", use_mamba_kernels=False)
    try:
        model = NemotronHForCausalLM.from_pretrained(d, experts_implementation="eager", **kw)
    except TypeError:
        model = NemotronHForCausalLM.from_pretrained(d, **kw)
    model = model.cuda().eval()
    with torch.no_grad():
        got = model(input_ids=torch.tensor([prompt], device="cuda")).logits[0].float().cpu().numpy()
    worst, close = 0.0, 0
    for g, w in zip(got, ref):
        worst = max(worst, float(np.sqrt(((g - w) ** 2).sum() / (w ** 2).sum())))
        tg, tw = np.argsort(-g)[:3], np.argsort(-w)[:3]
        close += int(tw[0] in tg and tg[0] in tw)
    out = os.path.join(d, "reference", "prefill_logits.bf16arith.f32")
    got.astype(np.float32).tofile(out)
    print(f"{d}: transformers bf16 vs f32 reference: worst rel L2 {worst:.3e}, top-3 close {close}/{len(ref)}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
