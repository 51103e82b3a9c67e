/**
 * A test client that talks to worker ranks straight over NATS (no router): places one request on
 * a chosen rank and follows its stream, so tests decide exactly which rank runs what.
 */
import assert from "node:assert/strict";
import { createInbox, type NatsConnection } from "nats";
import { decodeMessage, encodeMessage, StreamMessage, SubmitAck, type GenerateRequestInput } from "../../contracts/messages.js";
import { deploymentSubjects } from "../../contracts/subjects.js";
import { CliProcess } from "../support/proc-cli.js";
import type { NatsServer } from "../support/nats-server.js";
import { MODEL, TINY_CHAT } from "../support/proc-stack.js";

/** Subjects of the workers these tests start (the worker's default namespace and deployment). */
export const SUBJECTS = deploymentSubjects("default", "local");

/** What a request's stream delivered so far (updated live). */
export interface Outcome {
  readonly tokens: number[];
  final: StreamMessage | null;
}

export interface Placed {
  readonly ack: SubmitAck;
  readonly live: Outcome;
  /** Resolves once the first tokens arrived. */
  readonly firstToken: Promise<void>;
  /** Resolves once the stream ended (final or error). */
  readonly done: Promise<Outcome>;
}

/** Sends a greedy request for `maxTokens` tokens (eos ignored) to rank `workerId`. */
export async function place(nc: NatsConnection, workerId: string, requestId: string, prompt: readonly number[], maxTokens: number): Promise<Placed> {
  const replySubject = createInbox();
  const live: Outcome = { tokens: [], final: null };
  let first: () => void = () => undefined;
  const firstToken = new Promise<void>((r) => (first = r));
  const sub = nc.subscribe(replySubject);
  const done = (async () => {
    for await (const m of sub) {
      const d = decodeMessage(StreamMessage, m.data, "StreamMessage");
      assert.ok(d.ok, "invalid stream message");
      if (d.value.type !== "error") live.tokens.push(...d.value.tokens);
      if (d.value.type !== "tokens") {
        live.final = d.value;
        break;
      }
      first();
    }
    sub.unsubscribe();
    return live;
  })();
  const req: GenerateRequestInput = {
    type: "generate",
    requestId,
    attempt: 0,
    replySubject,
    model: MODEL,
    promptTokens: [...prompt],
    maxTokens,
    sampling: { temperature: 0, topK: 0, topP: 1, seed: 0 },
    ignoreEos: true,
  };
  const reply = await nc.request(SUBJECTS.generate(workerId), encodeMessage(req), { timeout: 5000 });
  const ack = decodeMessage(SubmitAck, reply.data, "SubmitAck");
  assert.ok(ack.ok, "invalid ack");
  if (ack.value.type === "rejected") sub.unsubscribe();
  return { ack: ack.value, live, firstToken, done };
}

/** `latentmesh worker` on tiny-chat with JSON logs, any free ops ports and one thread, plus `args`. */
export function startWorker(name: string, nats: NatsServer, args: readonly string[], env: Readonly<Record<string, string>> = {}): CliProcess {
  return new CliProcess(name, ["worker", "--model", TINY_CHAT, "--nats-url", nats.url, "--ops-host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0", "--threads", "1", ...args], env);
}
