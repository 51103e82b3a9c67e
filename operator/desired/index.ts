/**
 * Everything a ModelDeployment becomes (pure): the one function both the reconciler and
 * `latentmesh render` call.
 */
import { contentHash, inApplyOrder, type DesiredObject, type ValidDeployment } from "./meta.js";
import { buildNetworkPolicy, buildRouterPdb, buildServiceMonitor, buildWorkerAccount, buildWorkerPdb } from "./policies.js";
import { buildRouterConfigMap, buildRouterDeployment, buildRouterRbac, buildRouterService } from "./router.js";
import { buildShardPlanConfigMap, planShards } from "./shard-plan.js";
import { buildGroupService, buildGroupStatefulSet } from "./worker-group.js";

export type { DesiredObject, ValidDeployment } from "./meta.js";

/** Every object the deployment should own, in apply order. */
export function buildDesired(md: ValidDeployment): DesiredObject[] {
  const plan = planShards(md);
  const configHash = contentHash({ plan });
  const objects: (DesiredObject | undefined)[] = [
    buildWorkerAccount(md),
    ...buildRouterRbac(md),
    buildShardPlanConfigMap(md, plan),
    buildRouterConfigMap(md),
    buildRouterService(md),
    buildRouterDeployment(md),
    buildRouterPdb(md),
    buildNetworkPolicy(md),
    buildServiceMonitor(md),
  ];
  if (md.spec.workers.groups > 0) objects.push(buildWorkerPdb(md));
  for (let g = 0; g < md.spec.workers.groups; g++) {
    objects.push(buildGroupService(md, g), buildGroupStatefulSet(md, g, configHash));
  }
  return inApplyOrder(objects.filter((o): o is DesiredObject => o !== undefined));
}

/** Identity of an object within a deployment: `Kind/name` (all owned objects share a namespace). */
export function objectKey(o: { kind?: string; metadata?: { name?: string } }): string {
  return `${o.kind ?? ""}/${o.metadata?.name ?? ""}`;
}
