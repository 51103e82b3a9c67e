/**
 * One worker group (pure): a StatefulSet of `expertParallel / gpusPerPod` pods, one process per GPU
 * rank, and the headless Service through which ranks find their group's leader. Pods start in
 * parallel (ranks rendezvous) and update OnDelete: the operator rolls a group as a unit, never one
 * rank at a time (a group with mixed revisions cannot run collectives).
 */
import type { V1Container, V1EnvVar, V1PodSpec, V1ResourceRequirements, V1Service, V1StatefulSet, V1Volume, V1VolumeMount } from "@kubernetes/client-node";
import { ANNOTATION, LABEL, leaderHost, names, PATHS, PORTS, WORKER_ENV } from "../../contracts/model-deployment-wiring.js";
import { ownedMeta, selectorLabels, commonLabels, type DesiredObject, type ValidDeployment } from "./meta.js";
import { planModelSource } from "./model-source.js";

export const GPU_RESOURCE = "nvidia.com/gpu";

/** Pods per group. */
export function podsPerGroup(md: ValidDeployment): number {
  return md.spec.workers.expertParallel / md.spec.workers.gpusPerPod;
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

function workerEnv(md: ValidDeployment, group: number, modelPath: string): V1EnvVar[] {
  const { spec } = md;
  const env: V1EnvVar[] = [
    { name: WORKER_ENV.deployment, value: md.name },
    { name: WORKER_ENV.namespace, valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
    { name: WORKER_ENV.modelName, value: spec.model.name },
    { name: WORKER_ENV.model, value: modelPath },
    { name: WORKER_ENV.backend, value: spec.engine.backend },
    { name: WORKER_ENV.dtype, value: spec.engine.dtype },
    { name: WORKER_ENV.natsUrl, value: spec.nats.url },
    { name: WORKER_ENV.groupId, value: String(group) },
    { name: WORKER_ENV.podIndex, valueFrom: { fieldRef: { fieldPath: `metadata.labels['${LABEL.podIndex}']` } } },
    { name: WORKER_ENV.ranksPerPod, value: String(spec.workers.gpusPerPod) },
    { name: WORKER_ENV.worldSize, value: String(spec.workers.expertParallel) },
    { name: WORKER_ENV.leaderAddress, value: `${leaderHost(md.name, md.namespace, group)}:${PORTS.groupRendezvous}` },
    { name: WORKER_ENV.shardPlan, value: `${PATHS.shardPlanDir}/${PATHS.shardPlanFile}` },
    { name: WORKER_ENV.maxSequences, value: String(spec.engine.maxSequences) },
    { name: WORKER_ENV.mtpMaxDraftTokens, value: String(spec.speculative.mtp.enabled ? spec.speculative.mtp.maxDraftTokens : 0) },
    { name: WORKER_ENV.metricsPort, value: String(PORTS.workerMetrics) },
  ];
  if (spec.nats.credentialsSecretRef) env.push({ name: WORKER_ENV.natsCreds, value: `${PATHS.natsCredsDir}/${spec.nats.credentialsSecretRef.key ?? "nats.creds"}` });
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
    ports: [
      { name: "metrics", containerPort: PORTS.workerMetrics },
      { name: "rendezvous", containerPort: PORTS.groupRendezvous },
    ],
    resources: workerResources(md),
    readinessProbe: { httpGet: { path: "/healthz", port: "metrics" }, periodSeconds: 5, failureThreshold: 3 },
    volumeMounts: [...source.mounts, ...shared.mounts],
    securityContext: { allowPrivilegeEscalation: false },
  };
  const spec: V1PodSpec = {
    serviceAccountName: names.workerAccount(md.name),
    automountServiceAccountToken: false,
    securityContext: { runAsNonRoot: true, fsGroup: 65532 },
    terminationGracePeriodSeconds: 60,
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
      ports: [
        { name: "rendezvous", port: PORTS.groupRendezvous, targetPort: "rendezvous" },
        { name: "metrics", port: PORTS.workerMetrics, targetPort: "metrics" },
      ],
    },
  };
}

/**
 * The group's StatefulSet. `podTemplateHash` (shard plan and anything else pods read at start)
 * goes into a pod annotation so that a change makes the group's revision differ.
 */
export function buildGroupStatefulSet(md: ValidDeployment, group: number, podTemplateHash: string): DesiredObject & V1StatefulSet {
  const source = planModelSource(md);
  const name = names.group(md.name, group);
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
        metadata: { labels: commonLabels(md, "worker", group), annotations: { [ANNOTATION.specHash]: podTemplateHash } },
        spec: podSpec(md, group),
      },
    },
  };
  if (source.claimTemplates.length > 0 && set.spec) set.spec.volumeClaimTemplates = source.claimTemplates;
  return set;
}
