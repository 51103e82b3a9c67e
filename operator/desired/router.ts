/**
 * The router (pure): Deployment, Service, its JSON config, and the ServiceAccount + Role it needs to
 * discover worker pods. Its config holds nothing that changes when groups scale, so scaling never
 * rolls the router.
 */
import type { V1ConfigMap, V1Deployment, V1EnvVar, V1VolumeMount, V1Role, V1RoleBinding, V1Service, V1ServiceAccount } from "@kubernetes/client-node";
import { ANNOTATION, names, PATHS, PORTS, ROUTER_ENV } from "../../contracts/model-deployment-wiring.js";
import { commonLabels, contentHash, ownedMeta, selectorLabels, type DesiredObject, type ValidDeployment } from "./meta.js";

/** What `router.json` holds; the router parses it with its own schema. */
export function routerConfig(md: ValidDeployment) {
  const { spec } = md;
  return {
    model: spec.model.name,
    deployment: md.name,
    namespace: md.namespace,
    admission: spec.router.admission,
    speculative: { mtp: spec.speculative.mtp },
    worldSize: spec.workers.expertParallel,
  };
}

function routerEnv(md: ValidDeployment): V1EnvVar[] {
  const { spec } = md;
  const env: V1EnvVar[] = [
    { name: ROUTER_ENV.deployment, value: md.name },
    { name: ROUTER_ENV.namespace, valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
    { name: ROUTER_ENV.modelName, value: spec.model.name },
    { name: ROUTER_ENV.natsUrl, value: spec.nats.url },
    { name: ROUTER_ENV.host, value: "0.0.0.0" },
    { name: ROUTER_ENV.port, value: String(PORTS.routerHttp) },
    { name: ROUTER_ENV.config, value: `${PATHS.routerConfigDir}/${PATHS.routerConfigFile}` },
  ];
  const key = spec.router.apiKeySecretRef;
  if (key) env.push({ name: ROUTER_ENV.apiKey, valueFrom: { secretKeyRef: { name: key.name, key: key.key ?? "api-key" } } });
  const creds = spec.nats.credentialsSecretRef;
  if (creds) env.push({ name: ROUTER_ENV.natsCreds, value: `${PATHS.natsCredsDir}/${creds.key ?? "nats.creds"}` });
  return env;
}

export function buildRouterConfigMap(md: ValidDeployment): DesiredObject & V1ConfigMap {
  return {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: ownedMeta(md, names.routerConfig(md.name), "router"),
    data: { [PATHS.routerConfigFile]: `${JSON.stringify(routerConfig(md), null, 2)}\n` },
  };
}

export function buildRouterDeployment(md: ValidDeployment): DesiredObject & V1Deployment {
  const { router, nats } = md.spec;
  const volumes: NonNullable<NonNullable<V1Deployment["spec"]>["template"]["spec"]>["volumes"] = [{ name: "config", configMap: { name: names.routerConfig(md.name) } }];
  const mounts: V1VolumeMount[] = [{ name: "config", mountPath: PATHS.routerConfigDir, readOnly: true }];
  if (nats.credentialsSecretRef) {
    volumes.push({ name: "nats-creds", secret: { secretName: nats.credentialsSecretRef.name } });
    mounts.push({ name: "nats-creds", mountPath: PATHS.natsCredsDir, readOnly: true });
  }
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: ownedMeta(md, names.router(md.name), "router"),
    spec: {
      replicas: router.replicas,
      selector: { matchLabels: selectorLabels(md, "router") },
      strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
      template: {
        metadata: { labels: commonLabels(md, "router"), annotations: { [ANNOTATION.specHash]: contentHash(routerConfig(md)) } },
        spec: {
          serviceAccountName: names.routerAccount(md.name),
          securityContext: { runAsNonRoot: true },
          containers: [
            {
              name: "router",
              image: router.image,
              args: ["router"],
              env: routerEnv(md),
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

function stringQuantities(r: { requests?: Record<string, string | number>; limits?: Record<string, string | number> }) {
  const conv = (m?: Record<string, string | number>) => (m ? Object.fromEntries(Object.entries(m).map(([k, v]) => [k, String(v)])) : undefined);
  return { ...(r.requests ? { requests: conv(r.requests) } : {}), ...(r.limits ? { limits: conv(r.limits) } : {}) };
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
