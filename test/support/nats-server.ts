/** A real nats-server on a free loopback port for integration tests. */
import { spawn, type ChildProcess } from "node:child_process";
import { connect } from "node:net";
import { freePort } from "../../core/net.js";

export { freePort };

export interface NatsServer {
  readonly url: string;
  readonly port: number;
  stop(): Promise<void>;
}

const tcpOpen = (port: number) =>
  new Promise<boolean>((res) => {
    const c = connect(port, "127.0.0.1");
    c.once("connect", () => (c.destroy(), res(true)));
    c.once("error", () => res(false));
  });

/** Starts nats-server with extra `args` (e.g. ["--auth", "secret"]); resolves once it accepts connections. */
export async function startNatsServer(args: readonly string[] = []): Promise<NatsServer> {
  const port = await freePort();
  const proc: ChildProcess = spawn("nats-server", ["-a", "127.0.0.1", "-p", String(port), ...args], { stdio: "ignore" });
  const deadline = Date.now() + 10_000;
  while (!(await tcpOpen(port))) {
    if (proc.exitCode !== null) throw new Error(`nats-server exited with ${proc.exitCode}`);
    if (Date.now() > deadline) throw new Error("nats-server did not start in 10 s");
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGTERM");
      await exited;
    },
  };
}
