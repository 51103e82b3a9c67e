/**
 * Child processes for integration tests: `bin/latentmesh <command>` (compiled dist) with its JSON log
 * lines captured, awaitable log events, and a kill that every test's after-hook calls.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { CLI } from "./paths.js";

export interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly [key: string]: unknown;
}

export class CliProcess {
  readonly proc: ChildProcess;
  readonly lines: LogLine[] = [];
  /** Raw stderr text that was not a JSON log line (panics, one-line CLI errors). */
  readonly rawErr: string[] = [];
  readonly stdout: string[] = [];
  private readonly waiters = new Set<() => void>();
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(
    readonly name: string,
    args: readonly string[],
    env: Readonly<Record<string, string>> = {},
  ) {
    this.proc = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env, LATENTMESH_LOG_FORMAT: "json" } });
    let errBuf = "";
    this.proc.stderr?.setEncoding("utf8").on("data", (d: string) => {
      errBuf += d;
      let i: number;
      while ((i = errBuf.indexOf("\n")) >= 0) {
        const line = errBuf.slice(0, i);
        errBuf = errBuf.slice(i + 1);
        try {
          this.lines.push(JSON.parse(line) as LogLine);
        } catch {
          this.rawErr.push(line);
        }
        this.notify();
      }
    });
    this.proc.stdout?.setEncoding("utf8").on("data", (d: string) => {
      this.stdout.push(d);
      this.notify();
    });
    this.exited = new Promise((resolve) => this.proc.once("exit", (code, signal) => (this.notify(), resolve({ code, signal }))));
    this.closed = new Promise((resolve) => this.proc.once("close", () => (this.notify(), resolve())));
  }

  /** Resolves once the process's stdout and stderr have been read to the end (after 'exit'). */
  private readonly closed: Promise<void>;

  /**
   * Waits for the exit, then for the last output to be read: 'exit' can come before the pipes'
   * final data, and tests read log lines right after. Bounded, since a child the process started
   * with inherited stdio may hold the pipes open after it dies.
   */
  private async exitedAndRead(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const r = await this.exited;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.closed, new Promise<void>((res) => (timer = setTimeout(res, 5_000)))]);
    clearTimeout(timer);
    return r;
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Resolves with the first log line matching `pred` (past or future); rejects on exit or timeout. */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs = 60_000): Promise<LogLine> {
    return this.waitFor(() => this.lines.find(pred), `log line in ${this.name}`, timeoutMs);
  }

  /** Resolves once `get` returns a value; rejects if the process exits first or on timeout. */
  waitFor<T>(get: () => T | undefined, what: string, timeoutMs = 60_000): Promise<T> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const v = get();
        if (v !== undefined) return done(() => resolve(v));
        if (!this.running) return done(() => reject(new Error(`${this.name} exited while waiting for ${what}: ${this.rawErr.slice(-5).join(" | ")}`)));
      };
      const timer = setTimeout(() => done(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${this.name})`))), timeoutMs);
      const done = (f: () => void) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        f();
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Sends `signal` and waits for the exit (SIGKILL after `graceMs`). */
  async stop(signal: NodeJS.Signals = "SIGTERM", graceMs = 10_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.running) {
      this.proc.kill(signal);
      const timer = setTimeout(() => this.proc.kill("SIGKILL"), graceMs);
      const r = await this.exitedAndRead();
      clearTimeout(timer);
      return r;
    }
    return this.exitedAndRead();
  }
}
