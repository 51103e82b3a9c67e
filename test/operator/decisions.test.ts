import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AutoscalingSpec } from "../../contracts/model-deployment.js";
import { decideGroups, type DeploymentLoad } from "../../operator/autoscale/decide.js";
import { estimateTtftSeconds } from "../../operator/autoscale/load-board.js";
import { assessGroup, planGroupActions, type GroupHealth, type PodView } from "../../operator/group-health.js";
import { WorkQueue } from "../../operator/queue.js";
import { computeStatus, mergeConditions } from "../../operator/status.js";
import type { GroupStatus } from "../../contracts/model-deployment-status.js";
import { GROUP_DRAIN_MESSAGE } from "../../contracts/model-deployment-wiring.js";

const policy = AutoscalingSpec.parse({ enabled: true, minGroups: 1, maxGroups: 4, scaleUpStabilizationSeconds: 0, scaleDownStabilizationSeconds: 60 });
const load = (waiting: number, ttftSeconds = 0.5): DeploymentLoad => ({ waiting, ttftSeconds, ranks: 8 });

describe("autoscaling decision", () => {
  const cases: [string, number, DeploymentLoad | undefined, number][] = [
    ["holds when the load is on target", 2, load(32), 2],
    ["scales up in proportion to the queue", 2, load(64), 4],
    ["never beyond maxGroups", 2, load(1000), 4],
    ["scales up on time to first token alone", 2, load(0, 4), 4],
    ["starts a group when requests wait and none exists", 0, load(3), 1],
    ["holds without load reports", 3, undefined, 3],
    ["scale-down waits out its stabilisation window", 4, load(0, 0.1), 4],
  ];
  for (const [what, current, l, expected] of cases) {
    it(what, () => {
      assert.equal(decideGroups({ currentGroups: current, policy, load: l, history: [], nowMs: 1_000_000 }).groups, expected);
    });
  }

  it("scales down to the highest recommendation of the window once it has passed", () => {
    const history = [{ atMs: 0, groups: 1 }];
    assert.equal(decideGroups({ currentGroups: 4, policy, load: load(0, 0.1), history, nowMs: 61_000 }).groups, 1);
    const recentHigh = [{ atMs: 30_000, groups: 3 }];
    assert.equal(decideGroups({ currentGroups: 4, policy, load: load(0, 0.1), history: recentHigh, nowMs: 61_000 }).groups, 3);
  });

  it("is disabled unless enabled, and estimates TTFT from queued prefill work", () => {
    assert.equal(decideGroups({ currentGroups: 2, policy: { ...policy, enabled: false }, load: load(999), history: [], nowMs: 0 }).groups, 2);
    assert.ok(Math.abs(estimateTtftSeconds({ pendingPrefillTokens: 1024, stepTokenBudget: 512, stepTimeMs: 100 }) - 0.3) < 1e-9);
  });
});

const pod = (name: string, opts: { ready?: boolean; restarts?: number; lastExit?: number; drainMessage?: boolean; phase?: string; hash?: string; deleting?: boolean } = {}): PodView => ({
  metadata: { name, annotations: { "latentmesh.dev/spec-hash": opts.hash ?? "h1" }, ...(opts.deleting ? { deletionTimestamp: "2026-01-01T00:00:00Z" } : {}) },
  status: {
    phase: opts.phase ?? "Running",
    conditions: [{ type: "Ready", status: opts.ready === false ? "False" : "True" }],
    containerStatuses: [{ restartCount: opts.restarts ?? 0, ...(opts.lastExit !== undefined ? { lastState: { terminated: { exitCode: opts.lastExit, ...(opts.drainMessage ? { message: GROUP_DRAIN_MESSAGE } : {}) } } } : {}) }],
  },
});

/** A restarted container now waiting (e.g. in CrashLoopBackOff) after its last exit: 0 with the drain message, or 1. */
const podWaiting = (name: string, reason: string, drained: boolean): PodView => ({
  metadata: { name, annotations: { "latentmesh.dev/spec-hash": "h1" } },
  status: {
    phase: "Running",
    conditions: [{ type: "Ready", status: "False" }],
    containerStatuses: [{ restartCount: 2, state: { waiting: { reason } }, lastState: { terminated: drained ? { exitCode: 0, message: GROUP_DRAIN_MESSAGE } : { exitCode: 1 } } }],
  },
});

const group = (index: number, pods: PodView[], wasRestarting = false, lastRestartReason?: GroupStatus["lastRestartReason"]): GroupHealth =>
  assessGroup({ index, name: `g${index}`, expectedPods: 2, templateHash: "h1", pods, restarts: 0, wasRestarting, lastRestartReason });

describe("worker group health", () => {
  const cases: [string, GroupHealth, string, boolean][] = [
    ["all ranks ready", group(0, [pod("a"), pod("b")]), "Ready", false],
    ["a rank pod missing", group(0, [pod("a")]), "Pending", false],
    ["a rank container restarted", group(0, [pod("a"), pod("b", { restarts: 1 })]), "Failed", true],
    ["a rank container restarted after exiting 1", group(0, [pod("a"), pod("b", { restarts: 1, lastExit: 1 })]), "Failed", true],
    ["ranks restarted after a peer's group drain (exit 0 + the drain message)", group(0, [pod("a", { restarts: 1, lastExit: 0, drainMessage: true }), pod("b", { deleting: true })]), "Restarting", false],
    ["a rank restarted after exiting 0 without the drain message (its own SIGTERM: liveness probe)", group(0, [pod("a", { restarts: 1, lastExit: 0 }), pod("b")]), "Failed", true],
    ["a drained rank drained again and waits in CrashLoopBackOff", group(0, [podWaiting("a", "CrashLoopBackOff", true), pod("b", { deleting: true })]), "Restarting", false],
    ["a rank crash-loops after exiting 1", group(0, [podWaiting("a", "CrashLoopBackOff", false), pod("b")]), "Failed", true],
    ["one rank drained, the other crashed", group(0, [pod("a", { restarts: 1, lastExit: 0, drainMessage: true }), pod("b", { phase: "Failed" })]), "Failed", true],
    ["a rank pod failed", group(0, [pod("a"), pod("b", { phase: "Failed" })]), "Failed", true],
    ["pods terminating after a restart", group(0, [pod("a", { deleting: true })]), "Restarting", false],
    ["restarted and not whole yet", group(0, [pod("a", { ready: false })], true), "Restarting", false],
  ];
  for (const [what, health, phase, failed] of cases) {
    it(`${what} → ${phase}`, () => {
      assert.equal(health.status.phase, phase);
      assert.equal(health.failure !== undefined, failed);
    });
  }

  it("restarts a drained group as a unit, saying it drained", () => {
    const drained = group(1, [pod("a", { restarts: 1, lastExit: 0, drainMessage: true }), pod("b", { restarts: 1, lastExit: 0, drainMessage: true })]);
    assert.equal(drained.ready, false);
    assert.equal(drained.status.lastRestartReason, "Drained");
    assert.deepEqual(planGroupActions([drained], 1).map((a) => `${a.reason} ${a.index}`), ["drained 1"]);
  });

  it("keeps the restart reason while the group restarts, and drops it once it is whole", () => {
    assert.equal(group(0, [pod("a", { ready: false })], true, "Drained").status.lastRestartReason, "Drained");
    assert.equal(group(0, [pod("a"), pod("b")], true, "Drained").status.lastRestartReason, undefined);
  });

  it("reports Degraded GroupDrained for drained groups, RankFailed when one failed, and nothing for a rollout", () => {
    const status = (groups: GroupStatus[]) =>
      computeStatus(undefined, { generation: 1, desiredGroups: 2, selector: "s", existingGroups: 2, groups, router: { replicas: 1, readyReplicas: 1 }, rollingOut: false }, "t").conditions?.find((c) => c.type === "Degraded");
    const g = (name: string, phase: GroupStatus["phase"], lastRestartReason?: GroupStatus["lastRestartReason"]): GroupStatus => ({ index: 0, name, phase, readyPods: 0, pods: 2, restarts: 1, ...(lastRestartReason ? { lastRestartReason } : {}) });
    assert.equal(status([g("g0", "Restarting", "Drained"), g("g1", "Ready")])?.reason, "GroupDrained");
    const mixed = status([g("g0", "Restarting", "Drained"), g("g1", "Restarting", "RankFailed")]);
    assert.equal(mixed?.reason, "RankFailed");
    assert.match(mixed?.message ?? "", /rank failure: g1; after a drain: g0/);
    assert.equal(status([g("g0", "Restarting", "Rollout"), g("g1", "Ready")])?.status, "False");
  });

  it("restarts every failed group, and rolls outdated ready groups one at a time", () => {
    const old = (i: number) => group(i, [pod("a", { hash: "h0" }), pod("b", { hash: "h0" })]);
    const failed = group(3, [pod("a"), pod("b", { restarts: 2 })]);
    const actions = planGroupActions([old(0), old(1), old(2), failed], 1);
    assert.deepEqual(actions.map((a) => `${a.reason} ${a.index}`), ["rank-failed 3"], "a failed group already uses the budget");
    assert.deepEqual(planGroupActions([old(0), old(1), old(2)], 1).map((a) => a.index), [0]);
    assert.deepEqual(planGroupActions([old(0), old(1), old(2)], 2).map((a) => a.index), [0, 1]);
  });
});

describe("unschedulable pods and the progress deadline", () => {
  const unschedulable: PodView = {
    metadata: { name: "g0-1", annotations: { "latentmesh.dev/spec-hash": "h1" } },
    status: { phase: "Pending", conditions: [{ type: "PodScheduled", status: "False", reason: "Unschedulable", message: "0/3 nodes are available: 3 Insufficient nvidia.com/gpu." }] },
  };

  it("a pod the scheduler cannot place leaves the group Pending, saying why", () => {
    const h = group(0, [pod("g0-0"), unschedulable]);
    assert.equal(h.status.phase, "Pending");
    assert.equal(h.failure, undefined, "waiting for a node is not a rank failure");
    assert.equal(h.status.waiting, "pod g0-1 unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.");
    assert.equal(group(0, [pod("g0-0"), pod("g0-1")]).status.waiting, undefined);
  });

  const T0 = Date.parse("2026-11-24T00:00:00Z");
  const at = (s: number) => new Date(T0 + s * 1000).toISOString();
  const g = (readyPods: number, waiting?: string): GroupStatus => ({ index: 0, name: "g0", phase: readyPods === 2 ? "Ready" : "Pending", readyPods, pods: 2, restarts: 0, ...(waiting ? { waiting } : {}) });
  const observe = (groups: GroupStatus[], progressDeadlineSeconds = 600) => ({ generation: 1, desiredGroups: 1, selector: "s", existingGroups: 1, groups, router: { replicas: 1, readyReplicas: 1 }, rollingOut: false, progressDeadlineSeconds });
  const cond = (s: ReturnType<typeof computeStatus>, type: string) => s.conditions?.find((c) => c.type === type);

  it("stays Progressing until the deadline passes without progress, then is Degraded; progress clears it", () => {
    const first = computeStatus(undefined, observe([g(1, "pod g0-1 unschedulable: no GPUs")]), at(0));
    assert.equal(first.lastProgressTime, at(0));
    assert.match(cond(first, "Progressing")?.message ?? "", /waiting: g0: pod g0-1 unschedulable: no GPUs/);
    const before = computeStatus(first, observe([g(1, "pod g0-1 unschedulable: no GPUs")]), at(599));
    assert.equal(cond(before, "Progressing")?.status, "True");
    assert.equal(before.phase, "Progressing");
    assert.equal(before.lastProgressTime, at(0), "nothing changed: the clock keeps running");
    const after = computeStatus(before, observe([g(1, "pod g0-1 unschedulable: no GPUs")]), at(601));
    assert.equal(cond(after, "Progressing")?.status, "False");
    assert.equal(cond(after, "Progressing")?.reason, "ProgressDeadlineExceeded");
    assert.equal(cond(after, "Degraded")?.reason, "ProgressDeadlineExceeded");
    assert.match(cond(after, "Degraded")?.message ?? "", /no progress for 600 s: .*no GPUs/);
    assert.equal(after.phase, "Degraded");
    const moved = computeStatus(after, observe([g(0)]), at(700));
    assert.equal(cond(moved, "Progressing")?.status, "True", "a change of what is ready is progress");
    assert.equal(moved.lastProgressTime, at(700));
    assert.equal(cond(moved, "Degraded")?.status, "False");
    const done = computeStatus(moved, observe([g(2)]), at(5000));
    assert.equal(done.phase, "Ready");
    assert.equal(cond(done, "Progressing")?.reason, "UpToDate");
    assert.equal(computeStatus(done, observe([g(2)]), at(9000)).phase, "Ready", "a ready deployment never passes a deadline");
  });

  it("a rank failure stays the Degraded reason past the deadline; a shorter deadline fires sooner", () => {
    const failing: GroupStatus = { ...g(0), phase: "Failed" };
    const s0 = computeStatus(undefined, observe([failing], 10), at(0));
    const s1 = computeStatus(s0, observe([failing], 10), at(11));
    assert.equal(cond(s1, "Degraded")?.reason, "RankFailed");
    assert.equal(cond(s1, "Progressing")?.reason, "ProgressDeadlineExceeded");
  });
});

describe("work queue", () => {
  it("hands out a key once however often it is added, and re-queues a key added while it is processed", async () => {
    const q = new WorkQueue({ name: "t", baseDelayMs: 1, maxDelayMs: 10 });
    q.add("a");
    q.add("a");
    q.add("b");
    assert.equal(q.length, 2);
    const first = await q.get();
    assert.equal(first, "a");
    q.add("a");
    assert.equal(q.length, 1, "not queued while being processed");
    q.done("a");
    assert.deepEqual([await q.get(), await q.get()], ["b", "a"]);
    q.shutDown();
    assert.equal(await q.get(), undefined);
  });

  it("backs off exponentially per key, up to the maximum, and forgets on success", () => {
    const q = new WorkQueue({ name: "t", baseDelayMs: 10, maxDelayMs: 50 });
    assert.deepEqual([q.addRateLimited("k"), q.addRateLimited("k"), q.addRateLimited("k"), q.addRateLimited("k")], [10, 20, 40, 50]);
    q.forget("k");
    assert.equal(q.addRateLimited("k"), 10);
    q.shutDown();
  });
});

describe("conditions", () => {
  it("keep lastTransitionTime while their status stays, and move it when it changes", () => {
    const first = mergeConditions(undefined, [{ type: "Available", status: "False", reason: "NoGroupReady", message: "" }], 1, "t1");
    const same = mergeConditions(first, [{ type: "Available", status: "False", reason: "NoGroupReady", message: "0/2" }], 2, "t2");
    const flipped = mergeConditions(same, [{ type: "Available", status: "True", reason: "AllGroupsReady", message: "" }], 2, "t3");
    assert.equal(same[0]?.lastTransitionTime, "t1");
    assert.equal(same[0]?.observedGeneration, 2);
    assert.equal(flipped[0]?.lastTransitionTime, "t3");
  });
});
