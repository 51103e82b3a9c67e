/**
 * The ModelDeployment CustomResourceDefinition, derived from the zod schema in model-deployment.ts:
 * JSON Schema from zod, rewritten into a Kubernetes structural OpenAPI v3 schema (every node typed,
 * int-or-string and preserve-unknown-fields markers, OpenAPI 3.0 exclusive bounds), with the
 * cross-field rules as CEL `x-kubernetes-validations`. scripts/gen-crds.ts writes it to crds/.
 */
import { z } from "zod";
import {
  API_VERSION,
  CATEGORIES,
  CROSS_FIELD_RULES,
  GROUP,
  KIND,
  ModelDeploymentSpecStructure,
  ModelDeploymentStatus,
  PLURAL,
  SHORT_NAMES,
  SINGULAR,
  VERSION,
} from "./model-deployment.js";

/** A node of an OpenAPI v3 schema as the CRD holds it. */
export type JsonSchema = { [key: string]: unknown };

export const CRD_NAME = `${PLURAL}.${GROUP}`;

/** JSON Schema keywords a structural schema does not accept, or we do not want in the CRD. */
const DROPPED_KEYS = new Set(["$schema", "propertyNames", "id", "$id"]);

function isRecord(v: unknown): v is JsonSchema {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Rewrites one JSON Schema node (from z.toJSONSchema) into its structural OpenAPI form. */
export function toStructural(node: JsonSchema): JsonSchema {
  if (node["x-kubernetes-int-or-string"] === true) {
    const out: JsonSchema = { "x-kubernetes-int-or-string": true };
    if (typeof node.description === "string") out.description = node.description;
    return out;
  }
  if (node["x-kubernetes-preserve-unknown-fields"] === true) {
    const out: JsonSchema = { type: "object", "x-kubernetes-preserve-unknown-fields": true };
    if (typeof node.description === "string") out.description = node.description;
    return out;
  }
  const out: JsonSchema = {};
  for (const [key, value] of Object.entries(node)) {
    if (DROPPED_KEYS.has(key)) continue;
    if (key === "additionalProperties" && !isRecord(value)) continue;
    if ((key === "maximum" && value === Number.MAX_SAFE_INTEGER) || (key === "minimum" && value === Number.MIN_SAFE_INTEGER)) continue;
    if (key === "exclusiveMinimum" || key === "exclusiveMaximum") {
      out[key === "exclusiveMinimum" ? "minimum" : "maximum"] = value;
      out[key] = true;
      continue;
    }
    if (key === "properties" && isRecord(value)) {
      out.properties = Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toStructural(v as JsonSchema)]));
    } else if ((key === "items" || key === "additionalProperties") && isRecord(value)) {
      out[key] = toStructural(value);
    } else {
      out[key] = value;
    }
  }
  if (Array.isArray(out.required) && out.required.length === 0) delete out.required;
  return out;
}

function structuralOf(schema: z.ZodType): JsonSchema {
  return toStructural(z.toJSONSchema(schema, { io: "input", unrepresentable: "throw" }) as JsonSchema);
}

/** The CRD object (apiextensions.k8s.io/v1), ready to serialize. */
export function buildCrd(): JsonSchema {
  const spec = structuralOf(ModelDeploymentSpecStructure);
  spec.description = "Desired state: the model, its engine, worker groups, router, autoscaling";
  spec["x-kubernetes-validations"] = CROSS_FIELD_RULES.map((r) => ({ rule: r.cel, message: r.message, fieldPath: `.${r.path.join(".")}` }));
  const status = structuralOf(ModelDeploymentStatus);
  status.description = "Observed state, written by the operator through the status subresource";
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: CRD_NAME, labels: { "app.kubernetes.io/name": "latentmesh", "app.kubernetes.io/part-of": "latentmesh" } },
    spec: {
      group: GROUP,
      names: { kind: KIND, listKind: `${KIND}List`, plural: PLURAL, singular: SINGULAR, shortNames: [...SHORT_NAMES], categories: [...CATEGORIES] },
      scope: "Namespaced",
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          schema: {
            openAPIV3Schema: {
              description: `${KIND} (${API_VERSION}) serves one model with a router and expert-parallel worker groups`,
              type: "object",
              required: ["spec"],
              properties: {
                apiVersion: { type: "string" },
                kind: { type: "string" },
                metadata: { type: "object" },
                spec,
                status,
              },
            },
          },
          subresources: {
            status: {},
            scale: { specReplicasPath: ".spec.workers.groups", statusReplicasPath: ".status.groups", labelSelectorPath: ".status.selector" },
          },
          additionalPrinterColumns: [
            { name: "Ready", type: "string", jsonPath: ".status.ready", description: "Ready worker groups / desired" },
            { name: "Groups", type: "integer", jsonPath: ".spec.workers.groups", description: "Desired worker groups" },
            { name: "Phase", type: "string", jsonPath: ".status.phase" },
            { name: "Model", type: "string", jsonPath: ".spec.model.name", priority: 1 },
            { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
          ],
        },
      ],
    },
  };
}
