/**
 * Leader election over a coordination.k8s.io/v1 Lease (client-go's leaderelection, reduced): one
 * replica holds the lease and renews it; the others retry until it expires. Expiry is judged by the
 * local clock from when this replica last saw the lease change, never by comparing clocks. A leader
 * that cannot renew within renewDeadline stops leading; on shutdown it releases the lease so a
 * successor need not wait out the lease.
 */
import type { Logger } from "../core/log.js";
import { FIELD_MANAGER } from "./desired/meta.js";
import { KubeError, type Kube, type KubeObject } from "./kube/client.js";

export interface LeaderElectionOptions {
  readonly namespace: string;
  readonly name: string;
  readonly identity: string;
  readonly leaseDurationMs: number;
  readonly renewDeadlineMs: number;
  readonly retryPeriodMs: number;
}

interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

/** RFC 3339 with microseconds, the Lease's MicroTime format. */
function microTime(ms: number): string {
  return new Date(ms).toISOString().replace("Z", "000Z");
}

export class LeaderElector {
  private leading = false;
  private observed: { record: string; atMs: number } | undefined;
  private lastRenewMs = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly kube: Kube,
    private readonly opts: LeaderElectionOptions,
    private readonly log: Logger,
  ) {}

  get isLeader(): boolean {
    return this.leading;
  }

  /** Runs until stop(); calls onStart when this replica becomes leader and onStop when it stops being one. */
  run(onStart: () => void, onStop: () => void): void {
    const tick = async () => {
      if (this.stopped) return;
      let ok = false;
      try {
        ok = await this.tryAcquireOrRenew();
      } catch (err) {
        this.log.warn({ err: err instanceof Error ? err.message : String(err) }, "leader election: lease update failed");
      }
      if (this.stopped) return;
      const now = Date.now();
      if (ok) {
        this.lastRenewMs = now;
        if (!this.leading) {
          this.leading = true;
          this.log.info({ lease: `${this.opts.namespace}/${this.opts.name}`, identity: this.opts.identity }, "became leader");
          onStart();
        }
      } else if (this.leading && now - this.lastRenewMs > this.opts.renewDeadlineMs) {
        this.leading = false;
        this.log.warn({ identity: this.opts.identity }, "lost leadership");
        onStop();
      }
      this.timer = setTimeout(() => void tick(), this.opts.retryPeriodMs);
    };
    void tick();
  }

  private spec(now: number, prev: LeaseSpec | undefined): LeaseSpec {
    const sameHolder = prev?.holderIdentity === this.opts.identity;
    return {
      holderIdentity: this.opts.identity,
      leaseDurationSeconds: Math.max(1, Math.round(this.opts.leaseDurationMs / 1000)),
      acquireTime: sameHolder && prev?.acquireTime ? prev.acquireTime : microTime(now),
      renewTime: microTime(now),
      leaseTransitions: (prev?.leaseTransitions ?? 0) + (sameHolder || !prev?.holderIdentity ? 0 : 1),
    };
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = Date.now();
    const lease = await this.kube.get("coordination.k8s.io/v1", "Lease", this.opts.namespace, this.opts.name);
    if (!lease) {
      try {
        await this.kube.create({ apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { name: this.opts.name, namespace: this.opts.namespace }, spec: this.spec(now, undefined) }, FIELD_MANAGER);
        return true;
      } catch (err) {
        if (err instanceof KubeError && err.status === 409) return false;
        throw err;
      }
    }
    const spec = (lease.spec ?? {}) as LeaseSpec;
    const record = JSON.stringify(spec);
    if (this.observed?.record !== record) this.observed = { record, atMs: now };
    const holder = spec.holderIdentity ?? "";
    const durationMs = (spec.leaseDurationSeconds ?? 0) * 1000;
    const heldByOther = holder !== "" && holder !== this.opts.identity && now < (this.observed?.atMs ?? now) + durationMs;
    if (heldByOther) return false;
    try {
      await this.kube.replace({ ...lease, spec: this.spec(now, spec) } as KubeObject, FIELD_MANAGER);
      return true;
    } catch (err) {
      if (err instanceof KubeError && err.status === 409) return false;
      throw err;
    }
  }

  /** Stops electing; a leader releases the lease (empty holder) so a successor takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (!this.leading) return;
    this.leading = false;
    try {
      const lease = await this.kube.get("coordination.k8s.io/v1", "Lease", this.opts.namespace, this.opts.name);
      const spec = (lease?.spec ?? {}) as LeaseSpec;
      if (lease && spec.holderIdentity === this.opts.identity) {
        await this.kube.replace({ ...lease, spec: { ...spec, holderIdentity: "", leaseDurationSeconds: 1, renewTime: microTime(Date.now()) } } as KubeObject, FIELD_MANAGER);
      }
    } catch (err) {
      this.log.warn({ err: err instanceof Error ? err.message : String(err) }, "could not release the lease");
    }
  }
}
