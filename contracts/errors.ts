/**
 * Error codes shared by every edge (HTTP, NATS, Kubernetes conditions, CLI exit codes).
 * A code says what went wrong; each edge maps it once (STYLE rule 5).
 */
import { z } from "zod";

export const ERROR_CODES = [
  "invalid_request",
  "invalid_config",
  "unauthorized",
  "model_not_found",
  "not_found",
  "context_length_exceeded",
  "queue_full",
  "no_live_rank",
  "draining",
  "cancelled",
  "timeout",
  "worker_lost",
  "engine_error",
  "internal",
] as const;

export const ErrorCode = z.enum(ERROR_CODES);
export type ErrorCode = z.infer<typeof ErrorCode>;

/** How one error code appears at the HTTP edge (OpenAI-style error body) and the CLI edge. */
export interface ErrorMapping {
  /** HTTP status the router answers with. */
  readonly httpStatus: number;
  /** OpenAI `error.type`. */
  readonly openaiType: string;
  /** Process exit code when the error ends a CLI command. */
  readonly exitCode: number;
}

export const ERROR_MAPPING: Readonly<Record<ErrorCode, ErrorMapping>> = {
  invalid_request: { httpStatus: 400, openaiType: "invalid_request_error", exitCode: 2 },
  invalid_config: { httpStatus: 400, openaiType: "invalid_request_error", exitCode: 2 },
  unauthorized: { httpStatus: 401, openaiType: "authentication_error", exitCode: 2 },
  model_not_found: { httpStatus: 404, openaiType: "invalid_request_error", exitCode: 2 },
  /** An HTTP path or resource that does not exist. */
  not_found: { httpStatus: 404, openaiType: "invalid_request_error", exitCode: 2 },
  context_length_exceeded: { httpStatus: 400, openaiType: "invalid_request_error", exitCode: 2 },
  queue_full: { httpStatus: 429, openaiType: "rate_limit_error", exitCode: 1 },
  no_live_rank: { httpStatus: 503, openaiType: "service_unavailable", exitCode: 1 },
  /** A rank that is finishing its work and takes nothing new (the router places the request elsewhere). */
  draining: { httpStatus: 503, openaiType: "service_unavailable", exitCode: 1 },
  cancelled: { httpStatus: 499, openaiType: "cancelled", exitCode: 1 },
  timeout: { httpStatus: 504, openaiType: "timeout", exitCode: 1 },
  worker_lost: { httpStatus: 502, openaiType: "server_error", exitCode: 1 },
  engine_error: { httpStatus: 500, openaiType: "server_error", exitCode: 1 },
  internal: { httpStatus: 500, openaiType: "server_error", exitCode: 1 },
};

/** An expected failure with a code and a message fit to show a user as one line. */
export class LatentMeshError extends Error {
  override readonly name = "LatentMeshError";
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** The offending input field, flag or tensor, when there is one. */
    readonly param?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Shorthand for the most common case: the caller's input (flag, file, body) is invalid. */
export function invalid(message: string, param?: string): LatentMeshError {
  return new LatentMeshError("invalid_request", message, param);
}

/** One line for a zod error: `path: message` of the first issue, prefixed by what was parsed. */
export function describeZodError(error: z.ZodError, what: string): string {
  const issue = error.issues[0];
  if (!issue) return `${what}: invalid`;
  const path = issue.path.length > 0 ? issue.path.map(String).join(".") : "(root)";
  return `${what}: ${path}: ${issue.message}`;
}
