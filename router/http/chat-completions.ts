/** POST /v1/chat/completions: messages → chat template → tokens; answers chat.completion(.chunk). */
import { bodyError } from "./errors.js";
import type { Flavor } from "./generate.js";
import { ChatCompletionBody } from "./openai-schema.js";

export const chatFlavor: Flavor = {
  idPrefix: "chatcmpl",
  object: "chat.completion",
  chunkObject: "chat.completion.chunk",
  parse(raw, ctx) {
    const r = ChatCompletionBody.safeParse(raw);
    if (!r.success) throw bodyError(r.error);
    const messages = r.data.messages.map((m) => ({
      role: m.role,
      content: typeof m.content === "string" ? m.content : (m.content ?? []).map((p) => p.text).join(""),
      ...(m.name ? { name: m.name } : {}),
    }));
    const prompt = ctx.codec.applyChatTemplate(messages);
    return { body: r.data, maxTokens: r.data.max_completion_tokens ?? r.data.max_tokens ?? null, promptTokens: ctx.codec.encode(prompt, false) };
  },
  choice: (index, text, finish) => ({ index, message: { role: "assistant", content: text }, logprobs: null, finish_reason: finish }),
  chunkChoice(index, text, finish) {
    if (text === null) return { index, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null };
    return { index, delta: finish ? {} : { content: text }, logprobs: null, finish_reason: finish };
  },
};
