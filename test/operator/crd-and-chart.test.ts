import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { parse, parseAllDocuments } from "yaml";
import { CRD_FILES, GENERATED_HEADER, renderCrdYaml } from "../../scripts/gen-crds.js";
import { validateSchema, type Schema } from "../support/k8s-openapi.js";
import { REPO_ROOT } from "../support/paths.js";

const CHART = join(REPO_ROOT, "charts", "latentmesh");

/** Every schema node that is neither typed nor int-or-string/preserve-unknown breaks a structural schema. */
function untypedNodes(node: Schema, path: string): string[] {
  const out: string[] = [];
  if (node.type === undefined && node["x-kubernetes-int-or-string"] !== true && node["x-kubernetes-preserve-unknown-fields"] !== true) out.push(path);
  for (const [k, v] of Object.entries((node.properties ?? {}) as Record<string, Schema>)) out.push(...untypedNodes(v, `${path}.${k}`));
  if (node.items && typeof node.items === "object") out.push(...untypedNodes(node.items as Schema, `${path}[]`));
  if (node.additionalProperties && typeof node.additionalProperties === "object") out.push(...untypedNodes(node.additionalProperties as Schema, `${path}{}`));
  return out;
}

/** Template text with Go-template actions replaced, so that the YAML around them can be parsed. */
function stripTemplate(text: string): string {
  let n = 0;
  return text
    .replace(/\{\{-?\s*\/\*[\s\S]*?\*\/\s*-?\}\}/g, "")
    .split("\n")
    .map((line) => {
      const only = line.match(/^(\s*)\{\{-?\s*(include|toYaml)\b.*\}\}\s*$/);
      if (only) return `${only[1]}templated${n++}: x`;
      if (/^\s*\{\{-?.*-?\}\}\s*$/.test(line)) return "";
      return line.replace(/\{\{-?.*?-?\}\}/g, "x");
    })
    .join("\n");
}

function getPath(obj: unknown, path: string[]): unknown {
  return path.reduce<unknown>((o, k) => (o && typeof o === "object" ? (o as Record<string, unknown>)[k] : undefined), obj);
}

describe("generated CRD", () => {
  it("crds/ is up to date with contracts/model-deployment.ts (gen-crds --check)", () => {
    const r = spawnSync(process.execPath, [join(REPO_ROOT, "dist", "scripts", "gen-crds.js"), "--check"], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
  });

  it("says in its first line that it is generated", () => {
    for (const file of CRD_FILES) assert.equal(readFileSync(join(REPO_ROOT, file), "utf8").split("\n")[0], GENERATED_HEADER);
  });

  it("is a structural schema with status and scale subresources, printer columns and short name md", () => {
    const crd = parse(renderCrdYaml()) as { spec: { names: { shortNames: string[] }; versions: { schema: { openAPIV3Schema: Schema }; subresources: Record<string, unknown>; additionalPrinterColumns: { name: string }[] }[] } };
    const version = crd.spec.versions[0];
    assert.ok(version);
    assert.deepEqual(untypedNodes(version.schema.openAPIV3Schema, "root"), []);
    assert.deepEqual(Object.keys(version.subresources).sort(), ["scale", "status"]);
    assert.deepEqual(version.additionalPrinterColumns.map((c) => c.name).filter((n) => n !== "Model"), ["Ready", "Groups", "Phase", "Age"]);
    assert.deepEqual(crd.spec.names.shortNames, ["md"]);
  });
});

describe("Helm chart", () => {
  it("holds the same CRD as crds/", () => {
    const [main, chart] = CRD_FILES.map((f) => readFileSync(join(REPO_ROOT, f), "utf8"));
    assert.equal(chart, main);
  });

  it("every template parses as YAML once its template actions are stripped, with balanced blocks", () => {
    const dir = join(CHART, "templates");
    const files = readdirSync(dir).filter((f) => f.endsWith(".yaml"));
    assert.ok(files.length >= 5);
    for (const f of files) {
      const text = readFileSync(join(dir, f), "utf8");
      const opens = (text.match(/\{\{-?\s*(if|with|range|define)\b/g) ?? []).length;
      const ends = (text.match(/\{\{-?\s*end\b/g) ?? []).length;
      assert.equal(opens, ends, `${f}: every if/with/range has its end`);
      for (const doc of parseAllDocuments(stripTemplate(text))) assert.deepEqual(doc.errors.map((e) => e.message), [], f);
    }
  });

  it("templates read only values that values.yaml defines", () => {
    const values = parse(readFileSync(join(CHART, "values.yaml"), "utf8")) as unknown;
    for (const f of readdirSync(join(CHART, "templates"))) {
      const text = readFileSync(join(CHART, "templates", f), "utf8");
      for (const m of text.matchAll(/\.Values\.([A-Za-z0-9_.]+)/g)) {
        assert.notEqual(getPath(values, (m[1] ?? "").split(".")), undefined, `${f}: .Values.${m[1]}`);
      }
    }
  });

  it("values.yaml satisfies values.schema.json, and the schema refuses a bad value", () => {
    const schema = JSON.parse(readFileSync(join(CHART, "values.schema.json"), "utf8")) as Schema;
    const values = parse(readFileSync(join(CHART, "values.yaml"), "utf8")) as Record<string, unknown>;
    assert.deepEqual(validateSchema(schema, values, "values", false), []);
    const bad = { ...values, operator: { ...(values.operator as object), replicas: 0 } };
    assert.equal(validateSchema(schema, bad, "values", false).length, 1);
  });

  it("the Grafana dashboard is valid JSON whose queries use the contract's metric names", () => {
    const dash = JSON.parse(readFileSync(join(CHART, "dashboards", "latentmesh.json"), "utf8")) as { panels: { targets: { expr: string }[] }[] };
    const exprs = dash.panels.flatMap((p) => p.targets.map((t) => t.expr)).join("\n");
    assert.match(exprs, /controller_runtime_reconcile_total/);
    assert.match(exprs, /latentmesh_router_time_to_first_token_seconds_bucket/);
  });
});
