/**
 * A whole serving stack for integration tests, built fluently:
 *   const stack = await startStack({ workers: 2 });   // nats-server + 2 workers + router
 *   stack.client   // official openai client pointed at the router
 *   await stack.stop()
 */
import OpenAI from "openai";
import { join } from "node:path";
import { CliProcess } from "./proc-cli.js";
import { startNatsServer, type NatsServer } from "./nats-server.js";
import { FIXTURES } from "./paths.js";

export const TINY_CHAT = join(FIXTURES, "tiny-chat");
export const MODEL = "tiny-chat";

export interface StackOptions {
  workers?: number;
  /** Checkpoint directory served by router and workers (default: the tiny-chat fixture). */
  model?: string;
  /** Extra flags for every worker / for the router. */
  workerArgs?: readonly string[];
  routerArgs?: readonly string[];
  routerEnv?: Readonly<Record<string, string>>;
  workerEnv?: Readonly<Record<string, string>>;
  natsArgs?: readonly string[];
  apiKey?: string;
}

export interface Stack {
  readonly nats: NatsServer;
  readonly workers: CliProcess[];
  readonly router: CliProcess;
  readonly baseUrl: string;
  readonly client: OpenAI;
  /** Starts one more worker with id `id` (and extra flags); resolves when it is ready. */
  addWorker(id: string, extraArgs?: readonly string[]): Promise<CliProcess>;
  /** Resolves once the router sees `n` ready ranks. */
  waitForRanks(n: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const nats = await startNatsServer(opts.natsArgs);
  const workers: CliProcess[] = [];
  let router: CliProcess | undefined;
  const stop = async () => {
    await Promise.all([router, ...workers].map((p) => p?.stop("SIGKILL")));
    await nats.stop();
  };
  try {
    const addWorker = async (id: string, extraArgs: readonly string[] = []) => {
      const w = new CliProcess(
        `worker ${id}`,
        ["worker", "--model", opts.model ?? TINY_CHAT, "--nats-url", nats.url, "--worker-id", id, "--ops-host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0", "--threads", "1", "--report-interval-ms", "100", ...(opts.workerArgs ?? []), ...extraArgs],
        opts.workerEnv,
      );
      workers.push(w);
      await w.waitForLog((l) => l.msg === "worker ready", 120_000);
      return w;
    };
    const started = Array.from({ length: opts.workers ?? 1 }, (_, i) => addWorker(`w${i}`));
    for (const p of started) p.catch(() => undefined); // awaited below; a failure must not also surface as unhandled
    router = new CliProcess("router", ["router", "--model", opts.model ?? TINY_CHAT, "--nats-url", nats.url, "--port", "0", "--rank-dead-after-ms", "1000", ...(opts.routerArgs ?? [])], opts.routerEnv);
    const listening = await router.waitForLog((l) => l.msg === "router listening");
    await Promise.all(started);
    const baseUrl = `http://127.0.0.1:${listening.port as number}`;
    const r = router;
    const waitForRanks = (n: number) =>
      r.waitFor(
        () => (r.lines.filter((l) => l.msg === "rank joined").length >= n ? true : undefined),
        `${n} ranks`,
        30_000,
      ).then(async () => {
        // the rank table fills from load reports; /health confirms the router sees a ready rank
        for (let i = 0; i < 100; i++) {
          if ((await fetch(`${baseUrl}/health`)).status === 200) return;
          await new Promise((res) => setTimeout(res, 20));
        }
        throw new Error("router /health never became 200");
      });
    await waitForRanks(workers.length);
    return {
      nats,
      workers,
      router: r,
      baseUrl,
      client: new OpenAI({ baseURL: `${baseUrl}/v1`, apiKey: opts.apiKey ?? "none", maxRetries: 0, timeout: 60_000 }),
      addWorker,
      waitForRanks,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
