/**
 * The HTTP edge of typed errors (STYLE rule 5): every failure becomes a status and an OpenAI error
 * body `{"error": {"message", "type", "param", "code"}}`, mapped once here.
 */
import type { ServerResponse } from "node:http";
import { z } from "zod";
import { ERROR_MAPPING, LatentMeshError } from "../../contracts/errors.js";

export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string };
}

/** A zod failure of a request body as a LatentMeshError naming the field. */
export function bodyError(error: z.ZodError): LatentMeshError {
  const issue = error.issues[0];
  const param = issue && issue.path.length > 0 ? issue.path.map(String).join(".") : undefined;
  const message = issue ? `${param ?? "body"}: ${issue.message}` : "invalid request body";
  return new LatentMeshError("invalid_request", message, param);
}

/** Status and body of any error; unknown errors are internal (the caller logs them). */
export function toHttpError(err: unknown): { status: number; body: OpenAIErrorBody; known: boolean } {
  const e = err instanceof LatentMeshError ? err : new LatentMeshError("internal", "internal error");
  const map = ERROR_MAPPING[e.code];
  return { status: map.httpStatus, body: { error: { message: e.message, type: map.openaiType, param: e.param ?? null, code: e.code } }, known: err instanceof LatentMeshError };
}

/** Seconds a client should wait after a 429. */
export const RETRY_AFTER_S = 1;

/** Writes an error response (headers not sent yet). */
export function sendError(res: ServerResponse, err: unknown): void {
  const { status, body } = toHttpError(err);
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (status === 429 || status === 503) headers["retry-after"] = String(RETRY_AFTER_S);
  res.writeHead(status, headers);
  res.end(JSON.stringify(body));
}
