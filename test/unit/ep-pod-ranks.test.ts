/**
 * Planning a pod's rank processes (worker/group-pod.ts, pure): global ranks, GPUs, ops ports without
 * clashes, and settings handed down as variables that parse back to the supervisor's own.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LatentMeshError } from "../../contracts/errors.js";
import { parseFlags } from "../../core/flags.js";
import { isPodSupervisor, workerRank, type WorkerConfig } from "../../worker/config.js";
import { workerCommand } from "../../worker/command.js";
import { failureCause, planPodRanks, podRankPorts } from "../../worker/group-pod.js";

function config(argv: string[], env: Record<string, string> = {}): WorkerConfig {
  const r = parseFlags(workerCommand, argv, env);
  assert.equal(r.kind, "ok");
  if (r.kind !== "ok") throw new Error("unreachable");
  return r.flags as WorkerConfig;
}

const GROUP = ["--model", "/models/nano", "--world-size", "8", "--leader-address", "nano-g0-0.nano-g0.llm.svc:29500", "--ranks-per-pod", "4"];

describe("pods of several ranks", () => {
  it("a process with several ranks per pod and no rank or local rank supervises; one with either is a rank", () => {
    assert.equal(isPodSupervisor(config(GROUP)), true);
    assert.equal(isPodSupervisor(config([...GROUP, "--local-rank", "0"])), false);
    assert.equal(isPodSupervisor(config([...GROUP, "--rank", "3"])), false);
    assert.equal(isPodSupervisor(config(["--model", "m"])), false);
    assert.equal(workerRank(config([...GROUP, "--pod-index", "1", "--local-rank", "2"])), 6);
  });

  it("pod 1 of a 4-rank-per-pod group runs global ranks 4..7, one GPU each", () => {
    const ranks = planPodRanks(config([...GROUP, "--pod-index", "1"]), undefined);
    assert.deepEqual(ranks.map((r) => [r.localRank, r.rank, r.device]), [[0, 4, "0"], [1, 5, "1"], [2, 6, "2"], [3, 7, "3"]]);
  });

  it("takes the GPUs from the pod's CUDA_VISIBLE_DEVICES, in order", () => {
    const ranks = planPodRanks(config(GROUP), "3,5, 6,7");
    assert.deepEqual(ranks.map((r) => r.env.CUDA_VISIBLE_DEVICES), ["3", "5", "6", "7"]);
    assert.throws(() => planPodRanks(config(GROUP), "0,1"), (e: unknown) => e instanceof LatentMeshError && e.code === "invalid_config" && /lists 2 GPUs/.test(e.message));
  });

  const portCases: [number, number, number, { httpPort: number; grpcPort: number }][] = [
    [9100, 9101, 0, { httpPort: 9100, grpcPort: 9101 }],
    [9100, 9101, 1, { httpPort: 9102, grpcPort: 9103 }],
    [9100, 9101, 3, { httpPort: 9106, grpcPort: 9107 }],
    [9101, 9100, 2, { httpPort: 9105, grpcPort: 9104 }],
    [8080, 8090, 1, { httpPort: 8091, grpcPort: 8101 }],
    [0, 0, 3, { httpPort: 0, grpcPort: 0 }],
    [9100, 0, 2, { httpPort: 9102, grpcPort: 0 }],
  ];
  for (const [http, grpc, local, want] of portCases) {
    it(`ops ports ${http}/${grpc} give local rank ${local} ${want.httpPort}/${want.grpcPort}`, () => {
      assert.deepEqual(podRankPorts(http, grpc, local), want);
    });
  }

  it("no two ranks of a pod share a port, whatever the two base ports", () => {
    for (const [http, grpc] of [[9100, 9101], [9100, 9102], [9100, 9104], [9200, 9100], [5000, 5003]] as const) {
      const ports = Array.from({ length: 8 }, (_, i) => podRankPorts(http, grpc, i)).flatMap((p) => [p.httpPort, p.grpcPort]);
      assert.equal(new Set(ports).size, ports.length, `${http}/${grpc}: ${ports.join(",")}`);
    }
  });

  it("each rank's variables parse back to the supervisor's settings with its own local rank, ports and id", () => {
    const cfg = config([...GROUP, "--pod-index", "1", "--nats-url", "nats://nats.llm:4222", "--max-slots", "64", "--shard-plan", "/etc/plan.json", "--log-format", "json"], { LATENTMESH_NATS_TOKEN: "s3cret" });
    for (const r of planPodRanks(cfg, undefined)) {
      const env: Record<string, string> = {};
      for (const [k, v] of Object.entries(r.env)) if (v !== undefined) env[k] = v;
      const child = config([], env);
      assert.equal(isPodSupervisor(child), false);
      assert.equal(workerRank(child), r.rank);
      assert.deepEqual({ ...child }, { ...cfg, localRank: r.localRank, httpPort: r.httpPort, grpcPort: r.grpcPort });
      assert.equal(child.natsToken, "s3cret");
    }
  });

  it("an explicit worker id gets the local rank as a suffix, and a stale LATENTMESH_RANK is removed", () => {
    const ranks = planPodRanks(config([...GROUP, "--worker-id", "w"]), undefined);
    assert.deepEqual(ranks.map((r) => r.env.LATENTMESH_WORKER_ID), ["w-0", "w-1", "w-2", "w-3"]);
    assert.ok(ranks.every((r) => "LATENTMESH_RANK" in r.env && r.env.LATENTMESH_RANK === undefined));
  });

  const refusals: [string, string[], RegExp][] = [
    ["a pod beyond the world size", ["--pod-index", "2"], /holds ranks 8\.\.11, outside the group's world size 8/],
    ["ports beyond 65535", ["--http-port", "65530", "--grpc-port", "65531"], /local rank 3's HTTP port would be 65536/],
  ];
  for (const [what, extra, message] of refusals) {
    it(`refuses ${what} with invalid_config`, () => {
      assert.throws(() => planPodRanks(config([...GROUP, ...extra]), undefined), (e: unknown) => e instanceof LatentMeshError && e.code === "invalid_config" && message.test(e.message));
    });
  }
});

describe("the rank a pod's failure is blamed on", () => {
  it("is the rank killed from outside even when a peer that lost it was reaped first; else the first reaped", () => {
    const peerExit1 = { rank: 2, external: false };
    const killed = { rank: 3, external: true };
    const terminatedByUs = { rank: 1, external: false };
    assert.equal(failureCause([peerExit1, killed])?.rank, 3);
    assert.equal(failureCause([killed, peerExit1])?.rank, 3);
    assert.equal(failureCause([peerExit1, terminatedByUs])?.rank, 2);
    assert.equal(failureCause([]), undefined);
  });
});
