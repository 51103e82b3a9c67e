/**
 * NATS subjects of one deployment (DESIGN.md §4). Everything lives under `lm.<namespace>.<deployment>`:
 *
 *   lm.<ns>.<dep>.rank.<workerId>.generate   request/reply: a GenerateRequest; the reply is a SubmitAck
 *   lm.<ns>.<dep>.rank.<workerId>.cancel     CancelRequest (fire and forget)
 *   lm.<ns>.<dep>.load                       LoadReport of every rank, a few times a second
 *   lm.<ns>.<dep>.reply.<routerId>.<reqId>   StreamMessage of one request (tokens | final | error)
 *
 * A router subscribes once to `reply.<routerId>.>` and demultiplexes by request id.
 */
import { z } from "zod";

const SUBJECT_TOKEN_CHARS = /^[A-Za-z0-9_-]+$/;
const SUBJECT_TOKEN_MAX = 128;

/** One subject token: no dots, wildcards or whitespace. */
export const SubjectToken = z
  .string()
  .min(1)
  .max(SUBJECT_TOKEN_MAX)
  .regex(SUBJECT_TOKEN_CHARS, "letters, digits, '_' and '-' only");

export const SUBJECT_ROOT = "lm";

export interface DeploymentSubjects {
  /** Prefix shared by every subject of the deployment. */
  readonly prefix: string;
  /** Where a rank takes GenerateRequests (NATS request/reply; the reply is a SubmitAck). */
  generate(workerId: string): string;
  /** Where a rank takes CancelRequests. */
  cancel(workerId: string): string;
  /** Where every rank publishes its LoadReport. */
  readonly load: string;
  /** The stream subject of one request placed by one router. */
  reply(routerId: string, requestId: string): string;
  /** Wildcard covering every reply subject of one router. */
  replyWildcard(routerId: string): string;
}

/** SubjectToken's check without zod: subjects are built per request on the router's hot path. */
function token(value: string, what: string): string {
  if (value.length > SUBJECT_TOKEN_MAX || !SUBJECT_TOKEN_CHARS.test(value)) throw new Error(`invalid ${what} for a NATS subject: ${JSON.stringify(value)}`);
  return value;
}

/** Subject builders for one deployment; throws on names that cannot be subject tokens. */
export function deploymentSubjects(namespace: string, deployment: string): DeploymentSubjects {
  const prefix = `${SUBJECT_ROOT}.${token(namespace, "namespace")}.${token(deployment, "deployment")}`;
  return {
    prefix,
    generate: (workerId) => `${prefix}.rank.${token(workerId, "worker id")}.generate`,
    cancel: (workerId) => `${prefix}.rank.${token(workerId, "worker id")}.cancel`,
    load: `${prefix}.load`,
    reply: (routerId, requestId) => `${prefix}.reply.${token(routerId, "router id")}.${token(requestId, "request id")}`,
    replyWildcard: (routerId) => `${prefix}.reply.${token(routerId, "router id")}.>`,
  };
}

/** The request id at the end of a reply subject, or undefined when the subject is not one. */
export function requestIdOfReply(subject: string): string | undefined {
  const i = subject.lastIndexOf(".");
  return i >= 0 ? subject.slice(i + 1) : undefined;
}
