/**
 * NATS connection flags (URL, user/password, token, nkey seed, creds file, TLS files) and the
 * options they become, shared by every process that joins NATS (router, worker). Secrets come from
 * flags or env and are never logged.
 */
import { readFileSync } from "node:fs";
import { z } from "zod";
import { connect, credsAuthenticator, nkeyAuthenticator, type ConnectionOptions, type NatsConnection } from "nats";
import { flag, parse } from "./flags.js";
import { LatentMeshError } from "../contracts/errors.js";

const optionalString = z.string().min(1).optional();
const optionalFile = (help: string) => flag(optionalString, help, { placeholder: "FILE" });

export const NATS_FLAGS = {
  natsUrl: flag(parse.url(["nats", "tls", "ws", "wss"]).default("nats://127.0.0.1:4222"), "NATS server URL", { placeholder: "URL" }),
  natsUser: flag(optionalString, "NATS user name", { placeholder: "NAME" }),
  natsPassword: flag(optionalString, "NATS password (prefer the environment variable)", { placeholder: "SECRET" }),
  natsToken: flag(optionalString, "NATS authentication token (prefer the environment variable)", { placeholder: "SECRET" }),
  natsNkeySeedFile: optionalFile("file holding an NKey seed (SU...)"),
  natsCredsFile: optionalFile("NATS .creds file (JWT + NKey seed)"),
  natsTlsCa: optionalFile("CA bundle verifying the NATS server"),
  natsTlsCert: optionalFile("client certificate for NATS mutual TLS"),
  natsTlsKey: optionalFile("client key for NATS mutual TLS"),
};

export interface NatsSettings {
  readonly natsUrl: string;
  readonly natsUser?: string | undefined;
  readonly natsPassword?: string | undefined;
  readonly natsToken?: string | undefined;
  readonly natsNkeySeedFile?: string | undefined;
  readonly natsCredsFile?: string | undefined;
  readonly natsTlsCa?: string | undefined;
  readonly natsTlsCert?: string | undefined;
  readonly natsTlsKey?: string | undefined;
}

function readSecretFile(path: string, what: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new LatentMeshError("invalid_config", `cannot read ${what} ${path}: ${(err as Error).message}`);
  }
}

/** Connection options for nats.js; throws invalid_config on an unreadable file or half-given pair. */
export function natsConnectionOptions(s: NatsSettings, name: string): ConnectionOptions {
  if ((s.natsUser === undefined) !== (s.natsPassword === undefined)) {
    throw new LatentMeshError("invalid_config", "--nats-user and --nats-password go together");
  }
  if ((s.natsTlsCert === undefined) !== (s.natsTlsKey === undefined)) {
    throw new LatentMeshError("invalid_config", "--nats-tls-cert and --nats-tls-key go together");
  }
  const opts: ConnectionOptions = { servers: s.natsUrl, name, maxReconnectAttempts: -1, reconnectTimeWait: 500 };
  if (s.natsUser !== undefined) Object.assign(opts, { user: s.natsUser, pass: s.natsPassword });
  if (s.natsToken !== undefined) opts.token = s.natsToken;
  if (s.natsCredsFile !== undefined) opts.authenticator = credsAuthenticator(readSecretFile(s.natsCredsFile, "NATS creds file"));
  else if (s.natsNkeySeedFile !== undefined) {
    opts.authenticator = nkeyAuthenticator(new TextEncoder().encode(new TextDecoder().decode(readSecretFile(s.natsNkeySeedFile, "NKey seed file")).trim()));
  }
  if (s.natsTlsCa !== undefined || s.natsTlsCert !== undefined || s.natsUrl.startsWith("tls:")) {
    opts.tls = {
      ...(s.natsTlsCa !== undefined ? { caFile: s.natsTlsCa } : {}),
      ...(s.natsTlsCert !== undefined ? { certFile: s.natsTlsCert, keyFile: s.natsTlsKey } : {}),
    };
  }
  return opts;
}

/** Connects, mapping a failure to one line without credentials. */
export async function connectNats(s: NatsSettings, name: string): Promise<NatsConnection> {
  const opts = natsConnectionOptions(s, name);
  try {
    return await connect(opts);
  } catch (err) {
    throw new LatentMeshError("invalid_config", `cannot connect to NATS at ${s.natsUrl}: ${(err as Error).message}`);
  }
}
