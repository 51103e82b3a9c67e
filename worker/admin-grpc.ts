/**
 * The rank's gRPC admin port: the standard `grpc.health.v1.Health` service (Check and Watch; the
 * overall service "" and "latentmesh.worker.v1.Admin" are known) plus `latentmesh.worker.v1.Admin`
 * with `Drain` (stop taking requests; answers once accepted work has finished or the deadline in
 * the request passes) and `Stats` (this rank's current load report, step-time curve and per-class
 * MTP acceptance included).
 * The protos are declared here as protobuf JSON so nothing has to be found on disk at run time.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { LoadReport } from "../contracts/messages.js";

const u32 = (id: number) => ({ type: "uint32", id });

/** protobuf JSON of grpc.health.v1 and latentmesh.worker.v1 (exported for clients and tests). */
export const ADMIN_PROTO = {
  nested: {
    grpc: {
      nested: {
        health: {
          nested: {
            v1: {
              nested: {
                HealthCheckRequest: { fields: { service: { type: "string", id: 1 } } },
                HealthCheckResponse: {
                  fields: { status: { type: "ServingStatus", id: 1 } },
                  nested: { ServingStatus: { values: { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } } },
                },
                Health: {
                  methods: {
                    Check: { requestType: "HealthCheckRequest", responseType: "HealthCheckResponse" },
                    Watch: { requestType: "HealthCheckRequest", responseType: "HealthCheckResponse", responseStream: true },
                  },
                },
              },
            },
          },
        },
      },
    },
    latentmesh: {
      nested: {
        worker: {
          nested: {
            v1: {
              nested: {
                DrainRequest: { fields: { timeoutSeconds: u32(1) } },
                DrainResponse: { fields: { drained: { type: "bool", id: 1 }, running: u32(2), waiting: u32(3) } },
                StatsRequest: { fields: {} },
                StatsResponse: {
                  fields: {
                    workerId: { type: "string", id: 1 },
                    model: { type: "string", id: 2 },
                    ready: { type: "bool", id: 3 },
                    draining: { type: "bool", id: 4 },
                    running: u32(5),
                    waiting: u32(6),
                    maxSlots: u32(7),
                    freeSlots: u32(8),
                    totalKvBlocks: u32(9),
                    freeKvBlocks: u32(10),
                    maxContextTokens: u32(11),
                    stepTimeMs: { type: "double", id: 12 },
                    tokensPerSecond: { type: "double", id: 13 },
                    mtpAcceptance: { type: "double", id: 14 },
                    stepCurve: { rule: "repeated", type: "StepCurvePoint", id: 15 },
                    mtpByClass: { keyType: "string", type: "ClassAcceptance", id: 16 },
                  },
                },
                StepCurvePoint: { fields: { batch: { type: "double", id: 1 }, draftTokens: u32(2), stepMs: { type: "double", id: 3 } } },
                ClassAcceptance: { fields: { numDrafts: u32(1), acceptanceLength: { type: "double", id: 2 }, acceptRates: { rule: "repeated", type: "double", id: 3 } } },
                Admin: {
                  methods: {
                    Drain: { requestType: "DrainRequest", responseType: "DrainResponse" },
                    Stats: { requestType: "StatsRequest", responseType: "StatsResponse" },
                  },
                },
              },
            },
          },
        },
      },
    },
  },
};

export const ADMIN_SERVICE = "latentmesh.worker.v1.Admin";

/** Loads ADMIN_PROTO as a grpc-js package object (for servers and clients alike). */
export function adminPackage(): grpc.GrpcObject {
  const def = protoLoader.fromJSON(ADMIN_PROTO as Parameters<typeof protoLoader.fromJSON>[0], { keepCase: true, longs: Number, enums: String, defaults: true });
  return grpc.loadPackageDefinition(def);
}

export interface AdminHooks {
  readonly isServing: () => boolean;
  readonly stats: () => LoadReport;
  /** Starts draining; resolves once no sequence is left. */
  readonly drain: () => Promise<void>;
}

type Status = "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN";
const WATCH_POLL_MS = 500;

function serviceCtor(pkg: grpc.GrpcObject, path: string): grpc.ServiceClientConstructor {
  let node: unknown = pkg;
  for (const part of path.split(".")) node = (node as Record<string, unknown>)[part];
  return node as grpc.ServiceClientConstructor;
}

/** Starts the admin server on host:port (0 = any free port); resolves with the server and bound port. */
export async function startAdminGrpc(host: string, port: number, hooks: AdminHooks): Promise<{ server: grpc.Server; port: number }> {
  const pkg = adminPackage();
  const server = new grpc.Server();
  const statusOf = (service: string): Status => {
    if (service !== "" && service !== ADMIN_SERVICE) return "SERVICE_UNKNOWN";
    return hooks.isServing() ? "SERVING" : "NOT_SERVING";
  };
  server.addService(serviceCtor(pkg, "grpc.health.v1.Health").service, {
    Check(call: grpc.ServerUnaryCall<{ service: string }, unknown>, done: grpc.sendUnaryData<unknown>) {
      const status = statusOf(call.request.service);
      if (status === "SERVICE_UNKNOWN") return done({ code: grpc.status.NOT_FOUND, details: `unknown service ${call.request.service}` });
      done(null, { status });
    },
    Watch(call: grpc.ServerWritableStream<{ service: string }, unknown>) {
      let last: Status | null = null;
      const tick = () => {
        const status = statusOf(call.request.service);
        if (status !== last) call.write({ status });
        last = status;
      };
      tick();
      const timer = setInterval(tick, WATCH_POLL_MS);
      call.on("cancelled", () => clearInterval(timer));
      call.on("close", () => clearInterval(timer));
    },
  });
  server.addService(serviceCtor(pkg, ADMIN_SERVICE).service, {
    Drain(call: grpc.ServerUnaryCall<{ timeoutSeconds: number }, unknown>, done: grpc.sendUnaryData<unknown>) {
      const timeoutMs = (call.request.timeoutSeconds || 600) * 1000;
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
      Promise.race([hooks.drain().then(() => true), timedOut]).then(
        (drained) => {
          clearTimeout(timer);
          const s = hooks.stats();
          done(null, { drained, running: s.running, waiting: s.waiting });
        },
        (err: unknown) => done({ code: grpc.status.INTERNAL, details: String(err) }),
      );
    },
    Stats(_call: grpc.ServerUnaryCall<unknown, unknown>, done: grpc.sendUnaryData<unknown>) {
      done(null, hooks.stats());
    },
  });
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { server, port: bound };
}
