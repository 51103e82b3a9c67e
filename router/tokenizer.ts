/**
 * Text ⇄ tokens for one checkpoint: tokenizer.json through @huggingface/tokenizers, the chat
 * template of tokenizer_config.json through @huggingface/jinja.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { Tokenizer } from "@huggingface/tokenizers";
import { LatentMeshError } from "../contracts/errors.js";

/** One chat message after validation, content flattened to text. */
export interface ChatMessage {
  readonly role: string;
  readonly content: string;
  readonly name?: string;
}

function readJson(path: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  } catch (err) {
    throw new LatentMeshError("invalid_config", `cannot read ${path}: ${(err as Error).message}`);
  }
}

/** A special token in tokenizer_config.json: a string or an AddedToken object. */
function tokenText(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") return (v as { content: string }).content;
  return undefined;
}

export class TextCodec {
  private constructor(
    private readonly tokenizer: Tokenizer,
    private readonly template: Template | null,
    private readonly specials: { bos_token?: string; eos_token?: string },
  ) {}

  /** Reads `<dir>/tokenizer.json` and `<dir>/tokenizer_config.json`. */
  static load(modelDir: string): TextCodec {
    const tokenizerJson = readJson(join(modelDir, "tokenizer.json"));
    const config = readJson(join(modelDir, "tokenizer_config.json"));
    const tokenizer = new Tokenizer(tokenizerJson, config);
    const source = typeof config.chat_template === "string" ? config.chat_template : null;
    let template: Template | null = null;
    if (source !== null) {
      try {
        template = new Template(source);
      } catch (err) {
        throw new LatentMeshError("invalid_config", `${modelDir}/tokenizer_config.json: chat_template: ${(err as Error).message}`);
      }
    }
    return new TextCodec(tokenizer, template, { bos_token: tokenText(config.bos_token), eos_token: tokenText(config.eos_token) });
  }

  get hasChatTemplate(): boolean {
    return this.template !== null;
  }

  /** Token ids of `text`; special-token markers in the text (from a chat template) become their ids. */
  encode(text: string, addSpecialTokens: boolean): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  /** Text of `ids` without special tokens. */
  decode(ids: readonly number[]): string {
    if (ids.length === 0) return "";
    return this.tokenizer.decode([...ids], { skip_special_tokens: true, clean_up_tokenization_spaces: false });
  }

  /** The prompt text the chat template makes of `messages`, ending with the assistant's turn opening. */
  applyChatTemplate(messages: readonly ChatMessage[]): string {
    if (!this.template) throw new LatentMeshError("invalid_request", "this model has no chat template; use /v1/completions", "messages");
    try {
      return this.template.render({ messages, add_generation_prompt: true, ...this.specials });
    } catch (err) {
      throw new LatentMeshError("invalid_request", `chat template failed: ${(err as Error).message}`, "messages");
    }
  }
}
