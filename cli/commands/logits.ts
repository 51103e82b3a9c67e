/** `latentmesh logits`: the parity tool. Writes prefill and incremental-decode logits as raw f32. */
import { z } from "zod";
import { defineCommand, flag, parse } from "../../core/flags.js";
import { notYet } from "../../core/not-yet.js";

export const logitsCommand = defineCommand({
  name: "logits",
  summary: "parity tool: write a checkpoint's prefill and decode logits as float32 files",
  flags: {
    model: flag(z.string().min(1), "checkpoint directory", { placeholder: "DIR", env: null }),
    promptIds: flag(parse.intList({ min: 0 }), "prompt token ids, e.g. 5,17,300", { placeholder: "IDS", env: null }),
    feed: flag(parse.intList({ min: 0 }).optional(), "tokens fed one at a time after the prompt", { placeholder: "IDS", env: null }),
    decode: flag(parse.int({ min: 0 }).optional(), "greedily generate N tokens after the prompt", { placeholder: "N", env: null }),
    out: flag(z.string().min(1), "output directory", { placeholder: "DIR", env: null }),
    backend: flag(z.enum(["cpu", "cuda"]).default("cpu"), "compute backend", { placeholder: "NAME" }),
  },
  async run() {
    notYet("logits", "CPU engine issue");
  },
});
