/** The operator's flags (parsed once by core/flags) and the options derived from them. */
import { hostname } from "node:os";
import { z } from "zod";
import { boolFlag, flag, parse, type ParsedFlags } from "../core/flags.js";
import type { ControllerOptions } from "./controller.js";

export const OPERATOR_FLAGS = {
  namespace: flag(z.string().optional(), "watch only this namespace (default: all)", { placeholder: "NS" }),
  kubeconfig: flag(z.string().min(1).optional(), "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)", { placeholder: "FILE", env: "KUBECONFIG" }),
  metricsHost: flag(z.string().default("0.0.0.0"), "address for /metrics, /healthz and /readyz", { placeholder: "ADDR" }),
  metricsPort: flag(parse.int({ min: 0, max: 65535 }).default(8080), "port for /metrics, /healthz and /readyz", { placeholder: "N" }),
  leaderElect: boolFlag("elect a leader through a Lease so that only one replica acts", true),
  leaseNamespace: flag(z.string().min(1).default("latentmesh-system"), "namespace of the leader-election Lease (the operator's own)", { placeholder: "NS" }),
  leaseName: flag(z.string().min(1).default("latentmesh-operator"), "name of the leader-election Lease", { placeholder: "NAME" }),
  identity: flag(z.string().min(1).optional(), "this replica's identity in the Lease (default: the host name)", { placeholder: "ID" }),
  leaseDurationS: flag(parse.number({ min: 1 }).default(15), "seconds a Lease is valid without renewal", { placeholder: "S" }),
  renewDeadlineS: flag(parse.number({ min: 0.1 }).default(10), "seconds a leader keeps trying to renew before it stands down", { placeholder: "S" }),
  retryPeriodS: flag(parse.number({ min: 0.05 }).default(2), "seconds between Lease attempts", { placeholder: "S" }),
  workers: flag(parse.int({ min: 1, max: 64 }).default(2), "reconciles running at once", { placeholder: "N" }),
  resyncS: flag(parse.int({ min: 1 }).default(300), "seconds between full re-reconciles", { placeholder: "S" }),
  groupRestartBackoffS: flag(parse.number({ min: 0 }).default(30), "seconds before a worker group is restarted again", { placeholder: "S" }),
  natsUrl: flag(parse.url(["nats", "tls", "ws", "wss"]).optional(), "NATS server whose load reports drive autoscaling (none: no autoscaling)", { placeholder: "URL" }),
  autoscaleIntervalS: flag(parse.number({ min: 0.1 }).default(15), "seconds between autoscaling decisions", { placeholder: "S" }),
};

export type OperatorFlags = ParsedFlags<typeof OPERATOR_FLAGS>;

export function controllerOptions(f: OperatorFlags): ControllerOptions {
  return {
    namespace: f.namespace,
    identity: f.identity ?? hostname(),
    workers: f.workers,
    backoffBaseMs: 50,
    backoffMaxMs: 60_000,
    resyncMs: f.resyncS * 1000,
    watchTimeoutSeconds: 300,
    groupRestartBackoffMs: f.groupRestartBackoffS * 1000,
    leaderElection: f.leaderElect
      ? { namespace: f.leaseNamespace, name: f.leaseName, leaseDurationMs: f.leaseDurationS * 1000, renewDeadlineMs: f.renewDeadlineS * 1000, retryPeriodMs: f.retryPeriodS * 1000 }
      : undefined,
    autoscaleIntervalMs: f.autoscaleIntervalS * 1000,
  };
}
