/** POST /v1/completions: a text (or token-id) prompt; answers text_completion objects. */
import { LatentMeshError } from "../../contracts/errors.js";
import { bodyError } from "./errors.js";
import type { Flavor } from "./generate.js";
import { CompletionBody } from "./openai-schema.js";

export const completionsFlavor: Flavor = {
  idPrefix: "cmpl",
  object: "text_completion",
  chunkObject: "text_completion",
  parse(raw, ctx) {
    const r = CompletionBody.safeParse(raw);
    if (!r.success) throw bodyError(r.error);
    const p = r.data.prompt;
    const one = Array.isArray(p) && (typeof p[0] === "string" || Array.isArray(p[0])) ? p[0] : p;
    let promptTokens: number[];
    if (typeof one === "string") {
      promptTokens = ctx.codec.encode(one, true);
      if (promptTokens.length === 0) throw new LatentMeshError("invalid_request", "prompt: must not be empty", "prompt");
    } else promptTokens = one as number[];
    return { body: r.data, maxTokens: r.data.max_tokens ?? null, promptTokens };
  },
  choice: (index, text, finish) => ({ index, text, logprobs: null, finish_reason: finish }),
  chunkChoice: (index, text, finish) => (text === null ? null : { index, text, logprobs: null, finish_reason: finish }),
};
