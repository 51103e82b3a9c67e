/** `latentmesh operator`: reconciles ModelDeployments into router and worker-group objects. */
import { KubeConfig } from "@kubernetes/client-node";
import { invalid } from "../contracts/errors.js";
import { defineCommand } from "../core/flags.js";
import { createLogger } from "../core/log.js";
import { LoadBoard } from "./autoscale/load-board.js";
import { subscribeLoadReports } from "./autoscale/nats-source.js";
import { controllerOptions, OPERATOR_FLAGS } from "./config.js";
import { Controller } from "./controller.js";
import { Kube } from "./kube/client.js";
import { OperatorMetrics, serveMetrics } from "./metrics.js";

export const operatorCommand = defineCommand({
  name: "operator",
  summary: "Kubernetes operator: reconciles ModelDeployment objects",
  details: "Needs the ModelDeployment CRD (crds/) installed; the Helm chart (charts/latentmesh) installs both. See docs/operator.md.",
  flags: OPERATOR_FLAGS,
  async run(flags, ctx) {
    const log = createLogger({ name: "operator", level: flags.logLevel, format: flags.logFormat });
    const kc = new KubeConfig();
    try {
      if (flags.kubeconfig) kc.loadFromFile(flags.kubeconfig);
      else kc.loadFromDefault();
    } catch (err) {
      throw invalid(`cannot load the kubeconfig: ${(err as Error).message}`, "kubeconfig");
    }
    if (!kc.getCurrentCluster()) throw invalid("no Kubernetes cluster configured (kubeconfig or in-cluster service account)", "kubeconfig");
    const metrics = new OperatorMetrics();
    const board = flags.natsUrl ? new LoadBoard() : undefined;
    const nats = flags.natsUrl && board ? await subscribeLoadReports(flags.natsUrl, board, log) : undefined;
    let lost = false;
    let finish: () => void = () => {};
    const done = new Promise<void>((resolve) => (finish = resolve));
    ctx.signal.addEventListener("abort", () => finish(), { once: true });
    if (ctx.signal.aborted) finish();
    const controller = new Controller(new Kube(kc), controllerOptions(flags), metrics, log, board, () => {
      lost = true;
      finish();
    });
    const http = await serveMetrics(metrics, controller, flags.metricsHost, flags.metricsPort);
    log.info({ port: http.port }, "serving /metrics, /healthz and /readyz");
    controller.start();
    await done;
    await controller.stop();
    await nats?.drain();
    http.server.close();
    // a replica that lost its lease exits so it restarts clean (client-go does the same)
    return lost ? 1 : 0;
  },
});
