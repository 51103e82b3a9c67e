/**
 * Feeds the LoadBoard from the workers' load reports over NATS (`lm.<ns>.<dep>.load`, the subjects
 * of contracts/subjects.ts). Thin on purpose: decoding and validation are the contract's, the
 * decision is decide.ts's.
 */
import { connect, type NatsConnection } from "nats";
import { decodeMessage, LoadReport } from "../../contracts/messages.js";
import { SUBJECT_ROOT } from "../../contracts/subjects.js";
import type { Logger } from "../../core/log.js";
import type { LoadBoard } from "./load-board.js";

export async function subscribeLoadReports(natsUrl: string, board: LoadBoard, log: Logger, now: () => number = Date.now): Promise<NatsConnection> {
  const nc = await connect({ servers: natsUrl, name: "latentmesh-operator", maxReconnectAttempts: -1 });
  const sub = nc.subscribe(`${SUBJECT_ROOT}.*.*.load`);
  void (async () => {
    for await (const msg of sub) {
      const [, namespace, deployment] = msg.subject.split(".");
      const decoded = decodeMessage(LoadReport, msg.data, "load report");
      if (!decoded.ok) {
        log.debug({ subject: msg.subject, error: decoded.error }, "ignoring an invalid load report");
        continue;
      }
      if (namespace && deployment) board.record(namespace, deployment, decoded.value, now());
    }
  })();
  return nc;
}
