/**
 * How the operator wires the pods it creates, and what router and worker processes read back:
 * labels, environment variables, ports, mount paths. The worker and router flags named here follow
 * core/flags' convention (flag `groupId` reads LATENTMESH_GROUP_ID), so a pod needs no arguments.
 */

/** Label keys on every object the operator owns (recommended `app.kubernetes.io/*` labels first). */
export const LABEL = {
  name: "app.kubernetes.io/name",
  instance: "app.kubernetes.io/instance",
  component: "app.kubernetes.io/component",
  partOf: "app.kubernetes.io/part-of",
  managedBy: "app.kubernetes.io/managed-by",
  /** The owning ModelDeployment's name (selectors use this one). */
  deployment: "latentmesh.dev/deployment",
  /** The served model name. */
  model: "latentmesh.dev/model",
  /** Worker group index, on worker-group objects and pods. */
  group: "latentmesh.dev/group",
  /** StatefulSet pod ordinal, set by Kubernetes >= 1.28 on every StatefulSet pod. */
  podIndex: "apps.kubernetes.io/pod-index",
} as const;

export const LABEL_VALUES = {
  name: "latentmesh",
  managedBy: "latentmesh-operator",
} as const;

export const COMPONENTS = ["router", "worker", "shard-plan"] as const;
export type Component = (typeof COMPONENTS)[number];

/** Annotations the operator sets. */
export const ANNOTATION = {
  /** Hash of the spec a group's pods were built from; a change rolls the group. */
  specHash: "latentmesh.dev/spec-hash",
  /** Set on a group's StatefulSet when it was restarted as a unit (RFC 3339). */
  restartedAt: "latentmesh.dev/restarted-at",
  /** Count of unit restarts of a group. */
  restarts: "latentmesh.dev/restarts",
} as const;

/**
 * What a rank writes to its container's termination message (the kubelet's default terminationMessagePath,
 * /dev/termination-log) when it exits 0 because a *peer* drained the group: the operator reads it back from
 * containerStatuses[].lastState.terminated.message to tell a group drain from a rank that failed (a rank
 * stopped by its own SIGTERM — eviction, a failed liveness probe — does not write it).
 */
export const GROUP_DRAIN_MESSAGE = "latentmesh: group drained by a peer rank";
export const TERMINATION_MESSAGE_PATH = "/dev/termination-log";

/** Environment variables of worker pods: the worker's flags (worker/config.ts) by core/flags' naming. */
export const WORKER_ENV = {
  namespace: "LATENTMESH_NAMESPACE",
  deployment: "LATENTMESH_DEPLOYMENT",
  servedModelName: "LATENTMESH_SERVED_MODEL_NAME",
  /** Local checkpoint directory (after the download init step, if any). */
  model: "LATENTMESH_MODEL",
  backend: "LATENTMESH_BACKEND",
  natsUrl: "LATENTMESH_NATS_URL",
  natsCredsFile: "LATENTMESH_NATS_CREDS_FILE",
  /** Group name, a NATS subject token (`g0`, `g1`, ...). */
  group: "LATENTMESH_GROUP",
  /** Rank within the group; set from the pod index when a pod runs one rank (gpusPerPod = 1). */
  rank: "LATENTMESH_RANK",
  maxSlots: "LATENTMESH_MAX_SLOTS",
  /** Ops HTTP port of the pod's first rank; rank process i listens on rankOpsPorts(…, i). */
  httpPort: "LATENTMESH_HTTP_PORT",
  /** gRPC admin port of the pod's first rank (the others: rankOpsPorts). */
  grpcPort: "LATENTMESH_GRPC_PORT",
  /**
   * Rank within the pod. Never set by the operator: a worker started with ranksPerPod > 1 and no
   * local rank supervises one rank process per GPU and sets it for each.
   */
  localRank: "LATENTMESH_LOCAL_RANK",
  opsHost: "LATENTMESH_OPS_HOST",
  /** This pod's ordinal in its group; its first rank is podIndex × ranksPerPod. */
  podIndex: "LATENTMESH_POD_INDEX",
  /** Ranks (processes, GPUs) per pod. */
  ranksPerPod: "LATENTMESH_RANKS_PER_POD",
  /** Ranks in the group (= spec.workers.expertParallel). */
  worldSize: "LATENTMESH_WORLD_SIZE",
  /** host:port of rank 0's rendezvous endpoint, through the group's headless Service. */
  leaderAddress: "LATENTMESH_LEADER_ADDRESS",
  /** Path of the shard plan JSON (see model-deployment-shard-plan.ts). */
  shardPlan: "LATENTMESH_SHARD_PLAN",
  dtype: "LATENTMESH_DTYPE",
  /** MTP speculation: most drafts per sequence per step (worker --mtp-max-draft-tokens); 0 when off. */
  mtpMaxDraftTokens: "LATENTMESH_MTP_MAX_DRAFT_TOKENS",
  /** Seconds a draining worker keeps finishing accepted work (worker --drain-timeout-s; spec.workers.drainSeconds). */
  drainTimeoutS: "LATENTMESH_DRAIN_TIMEOUT_S",
} as const;

/** Environment variables of router pods: the router's flags (router/config.ts). */
export const ROUTER_ENV = {
  namespace: "LATENTMESH_NAMESPACE",
  deployment: "LATENTMESH_DEPLOYMENT",
  servedModelName: "LATENTMESH_SERVED_MODEL_NAME",
  /** Checkpoint directory with the tokenizer files. */
  model: "LATENTMESH_MODEL",
  natsUrl: "LATENTMESH_NATS_URL",
  natsCredsFile: "LATENTMESH_NATS_CREDS_FILE",
  host: "LATENTMESH_HOST",
  port: "LATENTMESH_PORT",
  apiKeys: "LATENTMESH_API_KEYS",
  maxInflight: "LATENTMESH_MAX_INFLIGHT",
  requestTimeoutS: "LATENTMESH_REQUEST_TIMEOUT_S",
} as const;

export const PORTS = {
  routerHttp: 8000,
  /** Worker ops HTTP: /metrics /healthz /readyz (the pod's first rank; see rankOpsPorts). */
  workerHttp: 9100,
  /** Worker gRPC admin: health, Drain, Stats (the pod's first rank). */
  workerGrpc: 9101,
  /** Rank 0's rendezvous (NCCL bootstrap / CPU socket transport) port. */
  groupRendezvous: 29500,
} as const;

export const PATHS = {
  modelCache: "/var/lib/latentmesh/models",
  shardPlanDir: "/etc/latentmesh/shard-plan",
  shardPlanFile: "plan.json",
  natsCredsDir: "/etc/latentmesh/nats",
} as const;

/**
 * Ops ports of rank process `localRank` of a pod whose first rank listens on httpPort / grpcPort:
 * each non-zero port + localRank·S, S one more than the distance between the two ports, so no two
 * ranks of a pod share a port (9100/9101: local rank 1 gets 9102/9103, rank 2 9104/9105); 0 (any
 * free port) stays 0. The worker's pod supervisor and the operator's port lists both use it.
 */
export function rankOpsPorts(httpPort: number, grpcPort: number, localRank: number): { httpPort: number; grpcPort: number } {
  const stride = httpPort > 0 && grpcPort > 0 ? Math.abs(grpcPort - httpPort) + 1 : 1;
  const at = (base: number) => (base === 0 ? 0 : base + localRank * stride);
  return { httpPort: at(httpPort), grpcPort: at(grpcPort) };
}

/** Name of local rank i's metrics port on worker containers and group Services: metrics, metrics-1, … */
export function rankMetricsPortName(localRank: number): string {
  return localRank === 0 ? "metrics" : `metrics-${localRank}`;
}

/** The first global rank of a pod in its group. */
export function rankOffset(podIndex: number, ranksPerPod: number): number {
  return podIndex * ranksPerPod;
}

/** Object names derived from a ModelDeployment's name (all within DNS-label limits for names ≤ 40). */
export const names = {
  router: (md: string) => `${md}-router`,
  routerConfig: (md: string) => `${md}-router`,
  routerAccount: (md: string) => `${md}-router`,
  workerAccount: (md: string) => `${md}-worker`,
  group: (md: string, index: number) => `${md}-g${index}`,
  /** The group's name on NATS and in load reports. */
  groupToken: (index: number) => `g${index}`,
  shardPlan: (md: string) => `${md}-shard-plan`,
  serviceMonitor: (md: string) => md,
  networkPolicy: (md: string) => `${md}-workers`,
} as const;

/** DNS name of a group's leader pod (ordinal 0) through the group's headless Service. */
export function leaderHost(md: string, namespace: string, group: number): string {
  const g = names.group(md, group);
  return `${g}-0.${g}.${namespace}.svc`;
}
