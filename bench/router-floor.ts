/**
 * The floor of bench/router.ts: the least any HTTP → NATS router process can do per request (read
 * and parse the body, submit a fixed GenerateRequest, await the ack and the final message, answer a
 * JSON body); no validation, tokenization, logging or metrics. Its latency over the direct path is
 * the cost of the extra process and HTTP hop alone on this machine.
 *
 * Usage: node dist/bench/router-floor.js --nats-url URL --port N   (GET /health, POST anything)
 */
import http from "node:http";
import { parseArgs } from "node:util";
import { connect } from "nats";
import { encodeMessage } from "../contracts/messages.js";
import { deploymentSubjects } from "../contracts/subjects.js";
import { AckInbox } from "../router/ack-inbox.js";

const { values: args } = parseArgs({ options: { "nats-url": { type: "string" }, port: { type: "string" }, "worker-id": { type: "string", default: "echo0" } }, strict: false });
const subjects = deploymentSubjects("default", "local");
const ROUTER_ID = "floor";

async function main(): Promise<void> {
  const nc = await connect({ servers: String(args["nats-url"]) });
  const acks = new AckInbox(nc);
  acks.start();
  const finals = new Map<string, () => void>();
  nc.subscribe(subjects.replyWildcard(ROUTER_ID), {
    callback: (_e, m) => {
      const id = m.subject.slice(m.subject.lastIndexOf(".") + 1);
      const done = finals.get(id);
      finals.delete(id);
      done?.();
    },
  });
  const generate = subjects.generate(String(args["worker-id"]));
  let n = 0;
  http
    .createServer((req, res) => {
      if (req.url === "/health") return void res.end("ok");
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        JSON.parse(Buffer.concat(chunks).toString("utf8"));
        const id = `f${(n++).toString(36)}`;
        finals.set(id, () => {
          res.writeHead(200, { "content-type": "application/json" });
          res.end(JSON.stringify({ id, object: "text_completion", choices: [{ index: 0, text: "H", logprobs: null, finish_reason: "length" }] }));
        });
        const request = { type: "generate", requestId: id, attempt: 0, replySubject: subjects.reply(ROUTER_ID, id), model: "tiny-chat", promptTokens: [262, 290], maxTokens: 1, sampling: { temperature: 0, topK: 0, topP: 1, seed: 0 }, ignoreEos: false, stopTokenIds: [] };
        acks.request(generate, encodeMessage(request), 5000).catch(() => {
          finals.delete(id);
          res.writeHead(502).end();
        });
      });
    })
    .listen(Number(args.port), "127.0.0.1");
  process.once("SIGTERM", () => process.exit(0));
}

main().catch((err: unknown) => {
  process.stderr.write(`router-floor: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
