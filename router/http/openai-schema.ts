/**
 * Request bodies of the OpenAI API the router serves, as zod schemas. Unknown fields are accepted and
 * ignored (clients send many); known fields with a wrong type or range are a 400 naming the field.
 */
import { z } from "zod";

const nullish = <T extends z.ZodType>(t: T) => t.nullable().optional();

const sampling = {
  model: z.string().min(1),
  max_tokens: nullish(z.number().int().min(1)),
  temperature: nullish(z.number().min(0).max(2)),
  top_p: nullish(z.number().gt(0).max(1)),
  /** vLLM extension: 0 or -1 = off. */
  top_k: nullish(z.number().int().min(-1)),
  seed: nullish(z.number().int()),
  stop: nullish(z.union([z.string(), z.array(z.string().min(1)).max(16)])),
  n: nullish(z.number().int().min(1)),
  stream: nullish(z.boolean()),
  stream_options: nullish(z.object({ include_usage: nullish(z.boolean()) })),
  /** vLLM extension: do not stop at the model's end-of-sequence tokens. */
  ignore_eos: nullish(z.boolean()),
  user: nullish(z.string()),
};

const TextPart = z.looseObject({ type: z.literal("text"), text: z.string() });

export const ChatMessageBody = z.looseObject({
  role: z.enum(["system", "developer", "user", "assistant", "tool"]),
  content: nullish(z.union([z.string(), z.array(TextPart)])),
  name: nullish(z.string()),
});

export const ChatCompletionBody = z.looseObject({
  ...sampling,
  messages: z.array(ChatMessageBody).min(1),
  max_completion_tokens: nullish(z.number().int().min(1)),
});
export type ChatCompletionBody = z.infer<typeof ChatCompletionBody>;

const TokenIds = z.array(z.number().int().min(0)).min(1);

export const CompletionBody = z.looseObject({
  ...sampling,
  prompt: z.union([z.string(), TokenIds, z.array(z.string()).length(1), z.array(TokenIds).length(1)]),
  echo: nullish(z.literal(false)),
});
export type CompletionBody = z.infer<typeof CompletionBody>;

/** What both endpoints share once parsed. */
export type SamplingBody = z.infer<z.ZodObject<typeof sampling>>;
