/**
 * The router (pure): Deployment, Service, the ConfigMap of its settings (its flags as
 * LATENTMESH_* variables, read through envFrom), and the ServiceAccount + Role it needs to discover
 * worker pods. Nothing in it changes when groups scale, so scaling never rolls the router. Router
 * pods fetch only the checkpoint's tokenizer files.
 */
import type { V1ConfigMap, V1Deployment, V1EnvVar, V1Role, V1RoleBinding, V1Service, V1ServiceAccount, V1Volume, V1VolumeMount } from "@kubernetes/client-node";
import { ANNOTATION, names, PATHS, PORTS, ROUTER_ENV } from "../../contracts/model-deployment-wiring.js";
import { commonLabels, contentHash, ownedMeta, selectorLabels, type DesiredObject, type ValidDeployment } from "./meta.js";
import { planModelSource } from "./model-source.js";

/** The router's settings, as the environment variables its flags read. */
export function routerSettings(md: ValidDeployment): Record<string, string> {
  const { spec } = md;
  const env: Record<string, string> = {
    [ROUTER_ENV.namespace]: md.namespace,
    [ROUTER_ENV.deployment]: md.name,
    [ROUTER_ENV.servedModelName]: spec.model.name,
    [ROUTER_ENV.model]: planModelSource(md, "tokenizer").modelPath,
    [ROUTER_ENV.natsUrl]: spec.nats.url,
    [ROUTER_ENV.host]: "0.0.0.0",
    [ROUTER_ENV.port]: String(PORTS.routerHttp),
    [ROUTER_ENV.maxInflight]: String(spec.router.admission.maxInflightRequests),
    [ROUTER_ENV.requestTimeoutS]: String(spec.router.admission.requestTimeoutSeconds),
  };
  const creds = spec.nats.credentialsSecretRef;
  if (creds) env[ROUTER_ENV.natsCredsFile] = `${PATHS.natsCredsDir}/${creds.key ?? "nats.creds"}`;
  return env;
}

export function buildRouterConfigMap(md: ValidDeployment): DesiredObject & V1ConfigMap {
  return { apiVersion: "v1", kind: "ConfigMap", metadata: ownedMeta(md, names.routerConfig(md.name), "router"), data: routerSettings(md) };
}

function stringQuantities(r: { requests?: Record<string, string | number>; limits?: Record<string, string | number> }) {
  const conv = (m?: Record<string, string | number>) => (m ? Object.fromEntries(Object.entries(m).map(([k, v]) => [k, String(v)])) : undefined);
  return { ...(r.requests ? { requests: conv(r.requests) } : {}), ...(r.limits ? { limits: conv(r.limits) } : {}) };
}

export function buildRouterDeployment(md: ValidDeployment): DesiredObject & V1Deployment {
  const { router, nats } = md.spec;
  const source = planModelSource(md, "tokenizer");
  const volumes: V1Volume[] = [...source.volumes];
  const mounts: V1VolumeMount[] = [...source.mounts];
  if (nats.credentialsSecretRef) {
    volumes.push({ name: "nats-creds", secret: { secretName: nats.credentialsSecretRef.name } });
    mounts.push({ name: "nats-creds", mountPath: PATHS.natsCredsDir, readOnly: true });
  }
  const env: V1EnvVar[] = [];
  const key = router.apiKeySecretRef;
  if (key) env.push({ name: ROUTER_ENV.apiKeys, valueFrom: { secretKeyRef: { name: key.name, key: key.key ?? "api-key" } } });
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: ownedMeta(md, names.router(md.name), "router"),
    spec: {
      replicas: router.replicas,
      selector: { matchLabels: selectorLabels(md, "router") },
      strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
      template: {
        // settings come through envFrom: their hash rolls the router when they change
        metadata: { labels: commonLabels(md, "router"), annotations: { [ANNOTATION.specHash]: contentHash(routerSettings(md)) } },
        spec: {
          serviceAccountName: names.routerAccount(md.name),
          securityContext: { runAsNonRoot: true, fsGroup: 65532 },
          ...(source.init ? { initContainers: [source.init] } : {}),
          containers: [
            {
              name: "router",
              image: router.image,
              args: ["router"],
              envFrom: [{ configMapRef: { name: names.routerConfig(md.name) } }],
              ...(env.length > 0 ? { env } : {}),
              ports: [{ name: "http", containerPort: PORTS.routerHttp }],
              readinessProbe: { httpGet: { path: "/healthz", port: "http" }, periodSeconds: 5 },
              livenessProbe: { httpGet: { path: "/healthz", port: "http" }, periodSeconds: 10, failureThreshold: 6 },
              ...(router.resources ? { resources: stringQuantities(router.resources) } : {}),
              volumeMounts: mounts,
              securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true },
            },
          ],
          volumes,
        },
      },
    },
  };
}

export function buildRouterService(md: ValidDeployment): DesiredObject & V1Service {
  const { service } = md.spec.router;
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: ownedMeta(md, names.router(md.name), "router"),
    spec: {
      type: service.type,
      selector: selectorLabels(md, "router"),
      ports: [{ name: "http", port: service.port, targetPort: "http", protocol: "TCP" }],
    },
  };
}

/** The router lists and watches worker pods of its namespace to learn the ranks that exist. */
export function buildRouterRbac(md: ValidDeployment): [DesiredObject & V1ServiceAccount, DesiredObject & V1Role, DesiredObject & V1RoleBinding] {
  const name = names.routerAccount(md.name);
  return [
    { apiVersion: "v1", kind: "ServiceAccount", metadata: ownedMeta(md, name, "router") },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "Role",
      metadata: ownedMeta(md, name, "router"),
      rules: [{ apiGroups: [""], resources: ["pods"], verbs: ["get", "list", "watch"] }],
    },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "RoleBinding",
      metadata: ownedMeta(md, name, "router"),
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name },
      subjects: [{ kind: "ServiceAccount", name, namespace: md.namespace }],
    },
  ];
}
