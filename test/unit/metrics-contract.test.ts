import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LABELS, OPERATOR_METRICS, ROUTER_METRICS, WORKER_METRICS } from "../../contracts/metrics.js";

describe("metric contract", () => {
  const all = [...Object.values(ROUTER_METRICS), ...Object.values(WORKER_METRICS), ...Object.values(OPERATOR_METRICS)];

  it("names are unique and valid Prometheus names", () => {
    const names = all.map((m) => m.name);
    assert.equal(new Set(names).size, names.length);
    for (const n of names) assert.match(n, /^[a-zA-Z_:][a-zA-Z0-9_:]*$/);
  });

  it("counters end in _total and histograms carry their unit", () => {
    for (const m of all) {
      if (m.type === "counter") assert.match(m.name, /_total$/, m.name);
      if (m.type === "histogram") assert.match(m.name, /_(seconds|tokens)$/, m.name);
    }
  });

  it("router and worker metrics use the shared label vocabulary", () => {
    const allowed = new Set<string>([...LABELS, "status", "reason", "migration_type", "layer", "expert", "position"]);
    for (const m of [...Object.values(ROUTER_METRICS), ...Object.values(WORKER_METRICS)]) {
      for (const l of m.labels) assert.ok(allowed.has(l), `${m.name}: label ${l}`);
    }
  });
});
