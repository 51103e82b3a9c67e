/**
 * One worker group (pure): a StatefulSet of `expertParallel / gpusPerPod` pods, one process per GPU
 * rank (a pod of several GPUs runs a supervising worker that starts them, each with its own metrics
 * port), and the headless Service through which ranks find their group's leader. Pods start in
 * parallel (ranks rendezvous) and update OnDelete: the operator rolls a group as a unit, never one
 * rank at a time (a group with mixed revisions cannot run collectives).
 */
import type { V1Container, V1EnvVar, V1PodSpec, V1ResourceRequirements, V1Service, V1StatefulSet, V1Volume, V1VolumeMount } from "@kubernetes/client-node";
import { ANNOTATION, LABEL, leaderHost, names, PATHS, PORTS, rankMetricsPortName, rankOpsPorts, WORKER_ENV } from "../../contracts/model-deployment-wiring.js";
import { commonLabels, contentHash, ownedMeta, selectorLabels, type DesiredObject, type ValidDeployment } from "./meta.js";
import { planModelSource } from "./model-source.js";

export const GPU_RESOURCE = "nvidia.com/gpu";

/** Pods per group. */
export function podsPerGroup(md: ValidDeployment): number {
  return md.spec.workers.expertParallel / md.spec.workers.gpusPerPod;
}

/**
 * The metrics port of each rank process of a pod (one per GPU; the pod's supervisor shifts each
 * rank's ops ports by rankOpsPorts), named metrics, metrics-1, ….
 */
export function rankMetricsPorts(md: ValidDeployment): { name: string; port: number }[] {
  return Array.from({ length: md.spec.workers.gpusPerPod }, (_, i) => ({ name: rankMetricsPortName(i), port: rankOpsPorts(PORTS.workerHttp, PORTS.workerGrpc, i).httpPort }));
}

function workerResources(md: ValidDeployment): V1ResourceRequirements {
  const given = md.spec.workers.resources;
  const requests: Record<string, string> = {};
  const limits: Record<string, string> = {};
  for (const [k, v] of Object.entries(given?.requests ?? {})) requests[k] = String(v);
  for (const [k, v] of Object.entries(given?.limits ?? {})) limits[k] = String(v);
  if (md.spec.engine.backend === "cuda") {
    const gpus = String(md.spec.workers.gpusPerPod);
    limits[GPU_RESOURCE] = gpus;
    requests[GPU_RESOURCE] = gpus;
  }
  const out: V1ResourceRequirements = {};
  if (Object.keys(requests).length > 0) out.requests = requests;
  if (Object.keys(limits).length > 0) out.limits = limits;
  return out;
}

/** Seconds past the drain timeout before the kubelet's SIGKILL: time to exit after a drain. */
const DRAIN_EXIT_MARGIN_S = 30;

function workerEnv(md: ValidDeployment, group: number, modelPath: string): V1EnvVar[] {
  const { spec } = md;
  const podIndex: V1EnvVar["valueFrom"] = { fieldRef: { fieldPath: `metadata.labels['${LABEL.podIndex}']` } };
  const env: V1EnvVar[] = [
    { name: WORKER_ENV.namespace, valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
    { name: WORKER_ENV.deployment, value: md.name },
    { name: WORKER_ENV.servedModelName, value: spec.model.name },
    { name: WORKER_ENV.model, value: modelPath },
    { name: WORKER_ENV.backend, value: spec.engine.backend },
    { name: WORKER_ENV.dtype, value: spec.engine.dtype },
    { name: WORKER_ENV.natsUrl, value: spec.nats.url },
    { name: WORKER_ENV.group, value: names.groupToken(group) },
    { name: WORKER_ENV.podIndex, valueFrom: podIndex },
    { name: WORKER_ENV.ranksPerPod, value: String(spec.workers.gpusPerPod) },
    { name: WORKER_ENV.worldSize, value: String(spec.workers.expertParallel) },
    { name: WORKER_ENV.leaderAddress, value: `${leaderHost(md.name, md.namespace, group)}:${PORTS.groupRendezvous}` },
    { name: WORKER_ENV.drainTimeoutS, value: String(spec.workers.drainSeconds) },
    { name: WORKER_ENV.shardPlan, value: `${PATHS.shardPlanDir}/${PATHS.shardPlanFile}` },
    { name: WORKER_ENV.maxSlots, value: String(spec.engine.maxSequences) },
    { name: WORKER_ENV.mtpMaxDraftTokens, value: String(spec.speculative.mtp.enabled ? spec.speculative.mtp.maxDraftTokens : 0) },
    { name: WORKER_ENV.opsHost, value: "0.0.0.0" },
    { name: WORKER_ENV.httpPort, value: String(PORTS.workerHttp) },
    { name: WORKER_ENV.grpcPort, value: String(PORTS.workerGrpc) },
  ];
  // one rank per pod: the rank is the pod's ordinal (multi-rank pods derive theirs from podIndex)
  if (spec.workers.gpusPerPod === 1) env.push({ name: WORKER_ENV.rank, valueFrom: podIndex });
  if (spec.nats.credentialsSecretRef) env.push({ name: WORKER_ENV.natsCredsFile, value: `${PATHS.natsCredsDir}/${spec.nats.credentialsSecretRef.key ?? "nats.creds"}` });
  return env;
}

/** Volumes every worker pod has besides the model source's: shard plan, shared memory, NATS creds. */
function commonVolumes(md: ValidDeployment): { volumes: V1Volume[]; mounts: V1VolumeMount[] } {
  const volumes: V1Volume[] = [
    { name: "shard-plan", configMap: { name: names.shardPlan(md.name) } },
    // NCCL and the CPU transport use /dev/shm between the ranks of a pod
    { name: "dshm", emptyDir: { medium: "Memory" } },
  ];
  const mounts: V1VolumeMount[] = [
    { name: "shard-plan", mountPath: PATHS.shardPlanDir, readOnly: true },
    { name: "dshm", mountPath: "/dev/shm" },
  ];
  const creds = md.spec.nats.credentialsSecretRef;
  if (creds) {
    volumes.push({ name: "nats-creds", secret: { secretName: creds.name } });
    mounts.push({ name: "nats-creds", mountPath: PATHS.natsCredsDir, readOnly: true });
  }
  return { volumes, mounts };
}

function podSpec(md: ValidDeployment, group: number): V1PodSpec {
  const { workers, engine } = md.spec;
  const source = planModelSource(md);
  const shared = commonVolumes(md);
  const container: V1Container = {
    name: "worker",
    image: engine.image,
    imagePullPolicy: engine.imagePullPolicy,
    args: ["worker", ...engine.extraArgs],
    env: workerEnv(md, group, source.modelPath),
    ports: [...rankMetricsPorts(md).map(({ name, port }) => ({ name, containerPort: port })), { name: "rendezvous", containerPort: PORTS.groupRendezvous }],
    resources: workerResources(md),
    readinessProbe: { httpGet: { path: "/readyz", port: "metrics" }, periodSeconds: 5, failureThreshold: 3 },
    livenessProbe: { httpGet: { path: "/healthz", port: "metrics" }, periodSeconds: 10, failureThreshold: 6 },
    volumeMounts: [...source.mounts, ...shared.mounts],
    securityContext: { allowPrivilegeEscalation: false },
  };
  const spec: V1PodSpec = {
    serviceAccountName: names.workerAccount(md.name),
    automountServiceAccountToken: false,
    securityContext: { runAsNonRoot: true, fsGroup: 65532 },
    // The kubelet kills a pod this long after SIGTERM: the drain (finishing accepted requests)
    // must fit, with a margin for the process to flush and exit.
    terminationGracePeriodSeconds: md.spec.workers.drainSeconds + DRAIN_EXIT_MARGIN_S,
    containers: [container],
    volumes: [...source.volumes, ...shared.volumes],
  };
  if (source.init) spec.initContainers = [source.init];
  if (workers.nodeSelector) spec.nodeSelector = workers.nodeSelector;
  if (workers.tolerations) spec.tolerations = workers.tolerations as unknown as V1PodSpec["tolerations"];
  if (workers.affinity) spec.affinity = workers.affinity as unknown as V1PodSpec["affinity"];
  if (workers.topologySpreadConstraints) spec.topologySpreadConstraints = workers.topologySpreadConstraints as unknown as V1PodSpec["topologySpreadConstraints"];
  if (workers.priorityClassName) spec.priorityClassName = workers.priorityClassName;
  if (workers.schedulerName) spec.schedulerName = workers.schedulerName;
  return spec;
}

/** The headless Service giving each rank pod a stable DNS name (`<group>-<ordinal>.<group>`). */
export function buildGroupService(md: ValidDeployment, group: number): DesiredObject & V1Service {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: ownedMeta(md, names.group(md.name, group), "worker", group),
    spec: {
      clusterIP: "None",
      // ranks must resolve the leader before any of them is ready
      publishNotReadyAddresses: true,
      selector: selectorLabels(md, "worker", group),
      ports: [{ name: "rendezvous", port: PORTS.groupRendezvous, targetPort: "rendezvous" }, ...rankMetricsPorts(md).map(({ name, port }) => ({ name, port, targetPort: name }))],
    },
  };
}

/**
 * The group's StatefulSet. Its pods carry a hash of their template and of `configHash` (the shard
 * plan and anything else they read at start) in an annotation: a pod whose hash differs from its
 * StatefulSet's is outdated, and the operator rolls its whole group (updateStrategy OnDelete).
 */
export function buildGroupStatefulSet(md: ValidDeployment, group: number, configHash: string): DesiredObject & V1StatefulSet {
  const source = planModelSource(md);
  const name = names.group(md.name, group);
  const spec = podSpec(md, group);
  const labels = commonLabels(md, "worker", group);
  const podTemplateHash = contentHash({ labels, spec, configHash });
  const set: DesiredObject & V1StatefulSet = {
    apiVersion: "apps/v1",
    kind: "StatefulSet",
    metadata: ownedMeta(md, name, "worker", group),
    spec: {
      serviceName: name,
      replicas: podsPerGroup(md),
      podManagementPolicy: "Parallel",
      updateStrategy: { type: "OnDelete" },
      selector: { matchLabels: selectorLabels(md, "worker", group) },
      template: {
        metadata: { labels, annotations: { [ANNOTATION.specHash]: podTemplateHash } },
        spec,
      },
    },
  };
  if (source.claimTemplates.length > 0 && set.spec) set.spec.volumeClaimTemplates = source.claimTemplates;
  return set;
}
