/**
 * The router's flags (each also read from LATENTMESH_<NAME>), parsed once by core/flags.ts into a
 * readonly RouterConfig that main.ts passes down.
 */
import { z } from "zod";
import { flag, parse, type CommonFlags, type ParsedFlags } from "../core/flags.js";
import { NATS_FLAGS } from "../core/nats.js";
import { SubjectToken } from "../contracts/subjects.js";

const name = (help: string, def: string) => flag(SubjectToken.default(def), help, { placeholder: "NAME" });

export const ROUTER_FLAGS = {
  host: flag(z.string().default("127.0.0.1"), "address to listen on", { placeholder: "ADDR" }),
  port: flag(parse.int({ min: 0, max: 65535 }).default(8000), "HTTP port (0: any free port)", { placeholder: "N" }),
  model: flag(z.string().min(1).optional(), "checkpoint directory whose tokenizer.json and tokenizer_config.json the router uses", { placeholder: "DIR" }),
  servedModelName: flag(z.string().min(1).optional(), "model name clients ask for (default: the checkpoint directory's name)", { placeholder: "NAME" }),
  ...NATS_FLAGS,
  namespace: name("deployment namespace (NATS subject prefix)", "default"),
  deployment: name("deployment name (NATS subject prefix)", "local"),
  routerId: flag(SubjectToken.optional(), "unique id of this router replica (default: random)", { placeholder: "ID" }),
  apiKeys: flag(z.string().optional(), "comma-separated API keys clients must send as 'Authorization: Bearer <key>'", { placeholder: "KEYS", env: "LATENTMESH_API_KEYS" }),
  apiKeysFile: flag(z.string().min(1).optional(), "file of API keys, one per line (# comments allowed)", { placeholder: "FILE" }),
  maxInflight: flag(parse.int({ min: 1 }).default(1024), "requests in flight at most; beyond that 429 with Retry-After", { placeholder: "N" }),
  maxN: flag(parse.int({ min: 1, max: 128 }).default(8), "largest 'n' (choices per request) accepted", { placeholder: "N" }),
  maxMigrations: flag(parse.int({ min: 0, max: 16 }).default(2), "times a request is moved to another rank when its rank dies", { placeholder: "N" }),
  rankDeadAfterMs: flag(parse.int({ min: 100 }).default(3000), "a rank whose load reports stop for this long is dead", { placeholder: "MS" }),
  submitTimeoutMs: flag(parse.int({ min: 50 }).default(2000), "time a rank has to acknowledge a request", { placeholder: "MS" }),
  requestTimeoutS: flag(parse.int({ min: 1 }).default(600), "time a request may take end to end", { placeholder: "S" }),
  affinitySlack: flag(parse.number({ min: 1 }).default(1.5), "a session stays on its rank while that rank's predicted time is within this factor of the best", { placeholder: "X" }),
  maxBodyBytes: flag(parse.int({ min: 1024 }).default(8 * 1024 * 1024), "largest request body accepted", { placeholder: "BYTES" }),
};

export type RouterConfig = ParsedFlags<typeof ROUTER_FLAGS> & CommonFlags;
