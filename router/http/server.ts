/**
 * The router's node:http server: routing, API keys, body reading, request ids, and the endpoints
 *   GET /health  GET /metrics  GET /v1/models  POST /v1/chat/completions  POST /v1/completions
 * Nothing a client sends can crash the process: every failure becomes an OpenAI error body.
 */
import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { LatentMeshError } from "../../contracts/errors.js";
import type { Logger } from "../../core/log.js";
import type { ApiKeys } from "../auth.js";
import { chatFlavor } from "./chat-completions.js";
import { completionsFlavor } from "./completions.js";
import type { RouterContext } from "./context.js";
import { sendError } from "./errors.js";
import { handleGenerate } from "./generate.js";

const CLIENT_REQUEST_ID = /^[A-Za-z0-9_.:-]{1,128}$/;

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

/** Reads and parses a JSON body of at most `limit` bytes (a larger one destroys the request). */
function readJsonBody(req: IncomingMessage, limit: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let first: Buffer | null = null;
    let more: Buffer[] | null = null;
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.off("data", onData).off("end", onEnd).off("error", onError);
        req.destroy();
        return reject(new LatentMeshError("invalid_request", `request body exceeds ${limit} bytes`));
      }
      if (first === null) first = chunk;
      else (more ??= [first]).push(chunk);
    };
    const onEnd = () => {
      const bytes = more ? Buffer.concat(more) : (first ?? Buffer.alloc(0));
      try {
        resolve(JSON.parse(bytes.toString("utf8")) as unknown);
      } catch {
        reject(new LatentMeshError("invalid_request", "request body is not valid JSON"));
      }
    };
    const onError = (err: Error) => reject(err);
    req.on("data", onData).on("end", onEnd).on("error", onError);
    req.once("close", () => {
      if (!req.complete) reject(new LatentMeshError("invalid_request", "the client closed the connection before sending the whole body"));
    });
  });
}

export function createRouterServer(ctx: RouterContext, keys: ApiKeys, log: Logger): Server {
  // wire ids: a random prefix per process and a counter (unique per router; no entropy per request)
  const wireIdPrefix = randomBytes(6).toString("base64url").replace(/[^A-Za-z0-9]/g, "x");
  let wireIds = 0;
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    const method = req.method ?? "GET";
    if (method === "GET" && (path === "/health" || path === "/healthz")) {
      const ready = ctx.ranks.readyFor(ctx.model).length;
      return json(res, ready > 0 ? 200 : 503, { status: ready > 0 ? "ok" : "no ready rank", readyRanks: ready });
    }
    if (method === "GET" && path === "/metrics") {
      res.writeHead(200, { "content-type": ctx.metrics.registry.contentType });
      return res.end(await ctx.metrics.registry.metrics());
    }
    keys.check(req.headers.authorization);
    if (method === "GET" && path === "/v1/models") {
      return json(res, 200, { object: "list", data: [{ id: ctx.model, object: "model", created: 0, owned_by: "latentmesh" }] });
    }
    const flavor = path === "/v1/chat/completions" ? chatFlavor : path === "/v1/completions" ? completionsFlavor : null;
    if (!flavor) throw new LatentMeshError("not_found", `no route for ${method} ${path}`);
    if (method !== "POST") throw new LatentMeshError("invalid_request", `${path} takes POST`);
    const wireId = wireIdPrefix + (wireIds++).toString(36);
    const given = req.headers["x-request-id"];
    const requestId = typeof given === "string" && CLIENT_REQUEST_ID.test(given) ? given : wireId;
    const rlog = log.child(requestId === wireId ? { requestId } : { requestId: wireId, clientRequestId: requestId });
    const body = await readJsonBody(req, ctx.cfg.maxBodyBytes);
    await handleGenerate(ctx, flavor, req, res, body, { requestId, wireId }, rlog);
  };
  return createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!(err instanceof LatentMeshError)) log.error({ err }, "request failed");
      if (!res.headersSent) sendError(res, err);
      else res.end();
    });
  });
}
