/**
 * Logging for every process: pino, JSON lines on stderr when stderr is not a TTY (or --log-format json),
 * a compact human-readable line otherwise. stdout stays free for command output (render, logits).
 */
import { Writable } from "node:stream";
import { pino, type Logger } from "pino";

export type { Logger };

export interface LogOptions {
  readonly name: string;
  readonly level: string;
  readonly format: "auto" | "json" | "pretty";
  /** Defaults to process.stderr. */
  readonly stream?: NodeJS.WritableStream & { isTTY?: boolean };
}

const LEVEL_NAMES: Record<number, string> = { 10: "TRACE", 20: "DEBUG", 30: "INFO", 40: "WARN", 50: "ERROR", 60: "FATAL" };
const SKIP_KEYS = new Set(["level", "time", "pid", "hostname", "name", "msg"]);

/** Turns one pino JSON line into `12:00:01.123 INFO  router: message key=value`. */
export function prettyLine(json: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const time = typeof rec.time === "number" ? new Date(rec.time).toISOString().slice(11, 23) : "";
  const level = (LEVEL_NAMES[rec.level as number] ?? String(rec.level)).padEnd(5);
  const extras = Object.entries(rec)
    .filter(([k]) => !SKIP_KEYS.has(k))
    .map(([k, v]) => {
      if (k === "err" && v && typeof v === "object" && "stack" in v) return `\n${String((v as { stack: unknown }).stack)}`;
      return `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`;
    });
  return `${time} ${level} ${String(rec.name ?? "")}: ${String(rec.msg ?? "")}${extras.length ? ` ${extras.join(" ")}` : ""}\n`;
}

export function createLogger(opts: LogOptions): Logger {
  const out = opts.stream ?? process.stderr;
  const pretty = opts.format === "pretty" || (opts.format === "auto" && out.isTTY === true);
  const base = { name: opts.name, level: opts.level };
  if (!pretty) return pino({ ...base, base: { pid: process.pid } }, out);
  const formatter = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString("utf8").split("\n")) if (line) out.write(prettyLine(line));
      done();
    },
  });
  return pino(base, formatter);
}
