/**
 * The ModelDeployment API (`latentmesh.dev/v1alpha1`): the zod schema of spec and status, with
 * defaults, and the cross-field rules. This file is the one source of the CRD (`crds/` is generated
 * from it by scripts/gen-crds.ts), of the operator's validation and of `latentmesh render`.
 *
 * Cross-field rules live in CROSS_FIELD_RULES: each is a zod refinement here and a CEL
 * `x-kubernetes-validations` rule in the CRD, so the API server and the operator agree.
 */
import { z } from "zod";

export const GROUP = "latentmesh.dev";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;
export const KIND = "ModelDeployment";
export const PLURAL = "modeldeployments";
export const SINGULAR = "modeldeployment";
export const SHORT_NAMES = ["md"] as const;
export const CATEGORIES = ["latentmesh"] as const;

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
/** hf://org/repo, pvc://claim/path, s3://bucket/prefix, or an absolute path inside the image. */
const MODEL_URI = new RegExp("^(hf://[^/\\s]+/[^/\\s]+|pvc://[a-z0-9][-a-z0-9.]*(/\\S*)?|s3://[^/\\s]+(/\\S*)?|/\\S*)$");
const QUANTITY = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+|[KMGTPE]i?|[munk])?$/;
const DURATION = /^\d+(ms|s|m|h)$/;

/** An opaque Kubernetes core type (affinity, toleration, ...), kept as given. */
function opaque(description: string) {
  return z.record(z.string(), z.unknown()).meta({ description, "x-kubernetes-preserve-unknown-fields": true });
}

/** A resource quantity: `4`, `500m`, `16Gi`. */
export const Quantity = z
  .union([z.string().regex(QUANTITY, "expected a quantity such as 500m or 16Gi"), z.number().nonnegative()])
  .meta({ "x-kubernetes-int-or-string": true });

export const ResourceRequirements = z
  .object({
    requests: z.record(z.string(), Quantity).optional(),
    limits: z.record(z.string(), Quantity).optional(),
  })
  .describe("Compute resources of one container, as in a Pod spec");
export type ResourceRequirements = z.infer<typeof ResourceRequirements>;

export const SecretKeyRef = z.object({
  name: z.string().regex(DNS_LABEL, "expected a Secret name").describe("Secret in the deployment's namespace"),
  key: z.string().min(1).optional().describe("Key inside the Secret, where one is read"),
});
export type SecretKeyRef = z.infer<typeof SecretKeyRef>;

export const ModelSpec = z.object({
  name: z.string().regex(/^[A-Za-z0-9][-A-Za-z0-9._]{0,62}$/, "expected 1-63 letters, digits, '-', '_' or '.'").describe("Model name served by the OpenAI API"),
  source: z.object({
    uri: z.string().regex(MODEL_URI, "expected hf://org/repo, pvc://claim/path, s3://bucket/prefix or an absolute path").describe("Where the checkpoint lives"),
    revision: z.string().min(1).optional().describe("Revision (branch, tag or commit) for hf:// sources"),
    credentialsSecretRef: SecretKeyRef.optional().describe("Secret with HF_TOKEN or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"),
  }),
  cache: z
    .object({
      claimName: z.string().regex(DNS_LABEL).optional().describe("Existing (ReadWriteMany) PVC shared by every worker pod"),
      size: Quantity.optional().describe("Size of a per-pod PVC created from a volumeClaimTemplate"),
      storageClassName: z.string().optional(),
    })
    .optional()
    .describe("Where downloaded checkpoints are kept; an emptyDir when absent"),
  numExperts: z.int().min(1).optional().describe("Routed experts per MoE layer, when known ahead of loading the checkpoint"),
});

export const EngineSpec = z.object({
  image: z.string().min(1).default("ghcr.io/latentmesh/worker:0.1.0").describe("Worker image"),
  imagePullPolicy: z.enum(["Always", "IfNotPresent", "Never"]).default("IfNotPresent"),
  backend: z.enum(["cuda", "cpu"]).default("cuda"),
  dtype: z
    .enum(["bfloat16"])
    .default("bfloat16")
    .describe("Compute dtype of the CUDA engine: bfloat16 (F32/F16 checkpoint tensors are converted on load; the CPU backend computes in float32). FP8 is not implemented yet"),
  maxSequences: z.int().min(1).max(65536).default(256).describe("Sequences a rank batches at once"),
  extraArgs: z.array(z.string()).default([]).describe("Extra arguments for `latentmesh worker`"),
});

export const WorkersSpec = z.object({
  groups: z.int().min(0).max(1024).default(1).describe("Worker groups (scale subresource); each serves the whole model"),
  expertParallel: z.int().min(1).max(1024).default(1).describe("GPU ranks per group; routed experts are sharded across them"),
  gpusPerPod: z.int().min(1).max(16).default(1).describe("Ranks (GPUs) per pod; one process per rank"),
  redundantExpertSlots: z.int().min(0).max(64).default(0).describe("Extra expert slots per rank for copies of hot experts"),
  drainSeconds: z
    .int()
    .min(0)
    .max(86400)
    .default(600)
    .describe("On shutdown a worker group keeps stepping until its accepted requests finish, at most this long; the pods' termination grace period is this plus 30 s"),
  resources: ResourceRequirements.optional().describe("Per-pod resources; nvidia.com/gpu is set from gpusPerPod"),
  nodeSelector: z.record(z.string(), z.string()).optional(),
  tolerations: z.array(opaque("A Pod toleration")).optional(),
  affinity: opaque("Pod affinity, as in a Pod spec").optional(),
  topologySpreadConstraints: z.array(opaque("A Pod topology spread constraint")).optional(),
  priorityClassName: z.string().optional(),
  schedulerName: z.string().optional(),
  rollout: z
    .object({
      maxUnavailable: z.int().min(0).default(1).describe("Groups that may be down at once during a rollout"),
      maxSurge: z.int().min(0).default(0).describe("Extra groups during a rollout; 0 suits clusters without spare GPUs"),
      progressDeadlineSeconds: z
        .int()
        .min(1)
        .default(600)
        .describe("Seconds a deployment may go without progress (a group or router replica becoming ready or changing size) before it is Degraded with reason ProgressDeadlineExceeded, as a Deployment's spec.progressDeadlineSeconds; progress clears it"),
    })
    .prefault({}),
});

export const SpeculativeSpec = z.object({
  mtp: z
    .object({
      enabled: z.boolean().default(false).describe("Multi-token-prediction speculative decoding"),
      maxDraftTokens: z.int().min(1).max(16).default(3),
      adaptive: z.boolean().default(true).describe("Let the router pick the draft depth per batch"),
    })
    .prefault({}),
});

export const RouterSpec = z.object({
  image: z.string().min(1).default("ghcr.io/latentmesh/control-plane:0.1.0"),
  replicas: z.int().min(0).max(1000).default(1),
  resources: ResourceRequirements.optional(),
  service: z
    .object({
      type: z.enum(["ClusterIP", "NodePort", "LoadBalancer"]).default("ClusterIP"),
      port: z.int().min(1).max(65535).default(8000),
    })
    .prefault({}),
  apiKeySecretRef: SecretKeyRef.optional().describe("Secret holding the API key clients must send"),
  admission: z
    .object({
      maxInflightRequests: z.int().min(1).default(1024).describe("Requests in flight per router replica; beyond that 429"),
      requestTimeoutSeconds: z.int().min(1).default(600),
    })
    .prefault({}),
});

export const NatsSpec = z.object({
  url: z.string().regex(new RegExp("^(nats|tls|ws|wss)://\\S+$"), "expected a nats:// URL").default("nats://nats:4222"),
  credentialsSecretRef: SecretKeyRef.optional().describe("Secret with a NATS .creds file"),
});

export const AutoscalingSpec = z.object({
  enabled: z.boolean().default(false),
  minGroups: z.int().min(0).default(1),
  maxGroups: z.int().min(1).default(1),
  targets: z
    .object({
      queueDepthPerGroup: z.number().positive().default(16).describe("Waiting sequences per group above which to scale up"),
      timeToFirstTokenSeconds: z.number().positive().default(2).describe("p-ish TTFT above which to scale up"),
    })
    .prefault({}),
  scaleUpStabilizationSeconds: z.int().min(0).default(60),
  scaleDownStabilizationSeconds: z.int().min(0).default(300),
});

export const ObservabilitySpec = z.object({
  serviceMonitor: z
    .object({
      enabled: z.boolean().default(false),
      interval: z.string().regex(DURATION).default("30s"),
      labels: z.record(z.string(), z.string()).optional(),
    })
    .prefault({}),
});

const ModelDeploymentSpecShape = z.object({
  model: ModelSpec,
  engine: EngineSpec.prefault({}),
  workers: WorkersSpec.prefault({}),
  speculative: SpeculativeSpec.prefault({}),
  router: RouterSpec.prefault({}),
  nats: NatsSpec.prefault({}),
  autoscaling: AutoscalingSpec.prefault({}),
  observability: ObservabilitySpec.prefault({}),
  networkPolicy: z.object({ enabled: z.boolean().default(false) }).prefault({}).describe("Restrict worker ingress to the group and NATS"),
});
type SpecShape = z.output<typeof ModelDeploymentSpecShape>;

/** A rule over the (defaulted) spec, enforced by zod here and by CEL in the API server. */
export interface CrossFieldRule {
  /** CEL over `self` = the spec, as an `x-kubernetes-validations` rule. */
  readonly cel: string;
  readonly message: string;
  /** Path of the field to blame, relative to spec. */
  readonly path: readonly string[];
  readonly holds: (spec: SpecShape) => boolean;
}

export const CROSS_FIELD_RULES: readonly CrossFieldRule[] = [
  {
    cel: "self.workers.expertParallel % self.workers.gpusPerPod == 0",
    message: "workers.expertParallel must be a multiple of workers.gpusPerPod",
    path: ["workers", "expertParallel"],
    holds: (s) => s.workers.expertParallel % s.workers.gpusPerPod === 0,
  },
  {
    cel: "!has(self.model.numExperts) || self.model.numExperts % self.workers.expertParallel == 0",
    message: "model.numExperts must be divisible by workers.expertParallel",
    path: ["model", "numExperts"],
    holds: (s) => s.model.numExperts === undefined || s.model.numExperts % s.workers.expertParallel === 0,
  },
  {
    cel: "self.autoscaling.minGroups <= self.autoscaling.maxGroups",
    message: "autoscaling.minGroups must not exceed autoscaling.maxGroups",
    path: ["autoscaling", "minGroups"],
    holds: (s) => s.autoscaling.minGroups <= s.autoscaling.maxGroups,
  },
  {
    cel: "self.workers.rollout.maxUnavailable + self.workers.rollout.maxSurge >= 1",
    message: "workers.rollout.maxUnavailable and maxSurge cannot both be 0",
    path: ["workers", "rollout"],
    holds: (s) => s.workers.rollout.maxUnavailable + s.workers.rollout.maxSurge >= 1,
  },
  {
    cel: "!has(self.model.cache) || !(has(self.model.cache.claimName) && has(self.model.cache.size))",
    message: "model.cache takes claimName or size, not both",
    path: ["model", "cache"],
    holds: (s) => !(s.model.cache?.claimName !== undefined && s.model.cache.size !== undefined),
  },
];

/** The spec schema without the cross-field rules (what the CRD's structural schema is built from). */
export const ModelDeploymentSpecStructure = ModelDeploymentSpecShape;

/** The spec: defaults applied, cross-field rules checked. */
export const ModelDeploymentSpec = ModelDeploymentSpecShape.superRefine((spec, ctx) => {
  for (const rule of CROSS_FIELD_RULES) {
    if (!rule.holds(spec)) ctx.addIssue({ code: "custom", message: rule.message, path: [...rule.path] });
  }
});
export type ModelDeploymentSpec = z.output<typeof ModelDeploymentSpec>;
/** The spec as a user writes it (defaults not yet applied). */
export type ModelDeploymentSpecInput = z.input<typeof ModelDeploymentSpec>;

export * from "./model-deployment-status.js";
import { ModelDeploymentStatus } from "./model-deployment-status.js";

export const ObjectMeta = z.looseObject({
  name: z.string().regex(DNS_LABEL, "expected a DNS label").max(40, "at most 40 characters (object names derive from it)"),
  namespace: z.string().regex(DNS_LABEL).optional(),
  uid: z.string().optional(),
  generation: z.int().optional(),
  resourceVersion: z.string().optional(),
  labels: z.record(z.string(), z.string()).optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});

/** A whole ModelDeployment object, as read from a file or the API. */
export const ModelDeployment = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal(KIND),
  metadata: ObjectMeta,
  spec: ModelDeploymentSpec,
  status: ModelDeploymentStatus.optional(),
});
export type ModelDeployment = z.output<typeof ModelDeployment>;
