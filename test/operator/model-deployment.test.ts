import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CROSS_FIELD_RULES, ModelDeploymentSpec, ModelDeploymentSpecStructure } from "../../contracts/model-deployment.js";
import { validateModelDeployment } from "../../operator/validate.js";
import { evaluateCel } from "../support/k8s-cel.js";
import { exampleDeployment } from "../support/k8s-cluster.js";

const base = exampleDeployment().spec;

describe("ModelDeployment schema", () => {
  it("accepts the issue's example as it is and fills in defaults", () => {
    const v = validateModelDeployment(exampleDeployment());
    assert.ok(v.ok);
    assert.equal(v.md.spec.engine.backend, "cuda");
    assert.equal(v.md.spec.workers.rollout.maxSurge, 0);
    assert.equal(v.md.spec.nats.url, "nats://nats:4222");
    assert.equal(v.md.spec.autoscaling.maxGroups, 4);
  });

  it("serves a stored spec with a dtype earlier schemas accepted (fp8) as bfloat16, with a warning, instead of freezing it as invalid", () => {
    const legacy = exampleDeployment("old", "ns", { engine: { dtype: "fp8" } });
    const v = validateModelDeployment(legacy);
    assert.ok(v.ok);
    assert.equal(v.md.spec.engine.dtype, "bfloat16");
    assert.equal(v.warnings.length, 1);
    assert.match(v.warnings[0] ?? "", /spec\.engine\.dtype 'fp8' is not implemented: served as bfloat16/);
    const current = validateModelDeployment(exampleDeployment());
    assert.ok(current.ok);
    assert.deepEqual(current.warnings, []);
    const unknown = validateModelDeployment(exampleDeployment("x", "ns", { engine: { dtype: "int4" } }));
    assert.equal(unknown.ok, false, "values no schema ever accepted stay invalid");
  });

  const invalid: [string, Record<string, unknown>, RegExp][] = [
    ["a model URI of an unknown scheme", { model: { name: "m", source: { uri: "ftp://x/y" } } }, /model\.source\.uri/],
    ["negative groups", { workers: { groups: -1 } }, /workers\.groups/],
    ["expertParallel not a multiple of gpusPerPod", { workers: { expertParallel: 6, gpusPerPod: 4 } }, /multiple of workers\.gpusPerPod/],
    ["experts not divisible across ranks", { model: { ...base.model, numExperts: 10 }, workers: { expertParallel: 4, gpusPerPod: 2 } }, /divisible/],
    ["minGroups above maxGroups", { autoscaling: { enabled: true, minGroups: 5, maxGroups: 4 } }, /minGroups/],
    ["a rollout that can never progress", { workers: { rollout: { maxUnavailable: 0, maxSurge: 0 } } }, /cannot both be 0/],
    ["a cache with both claimName and size", { model: { ...base.model, cache: { claimName: "c", size: "1Ti" } } }, /claimName or size/],
  ];
  for (const [what, spec, message] of invalid) {
    it(`refuses ${what}, in one line naming the field`, () => {
      const v = validateModelDeployment(exampleDeployment("nano", "llm", spec));
      assert.equal(v.ok, false);
      if (!v.ok) {
        assert.match(v.message, message);
        assert.equal(v.message.split("\n").length, 1);
      }
    });
  }

  it("each cross-field rule's CEL agrees with its zod refinement on valid and invalid specs", () => {
    for (const raw of [base, ...invalid.map(([, spec]) => ({ ...base, ...spec }))]) {
      const structural = ModelDeploymentSpecStructure.safeParse(raw);
      if (!structural.success) continue; // refused before any rule runs, by the API server too
      const spec = structural.data;
      for (const rule of CROSS_FIELD_RULES) {
        assert.equal(evaluateCel(rule.cel, { self: JSON.parse(JSON.stringify(spec)) }), rule.holds(spec), `${rule.message} on ${JSON.stringify(raw).slice(0, 80)}`);
      }
      assert.equal(ModelDeploymentSpec.safeParse(raw).success, CROSS_FIELD_RULES.every((r) => r.holds(spec)));
    }
  });

  it("rejects a name too long for the objects derived from it", () => {
    const v = validateModelDeployment({ ...exampleDeployment(), metadata: { name: "a".repeat(41) } });
    assert.equal(v.ok, false);
  });
});
