/**
 * Structural-schema handling as the API server does it for custom resources, for the test API
 * server: defaulting, pruning of unknown fields, OpenAPI v3 validation and CEL
 * `x-kubernetes-validations` (through k8s-cel.ts). Errors read like the API server's causes:
 * `spec.workers.groups: Invalid value: -1: should be greater than or equal to 0`.
 */
import { evaluateCel } from "./k8s-cel.js";

export type Schema = { [key: string]: unknown };
type Json = unknown;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function props(schema: Schema): Record<string, Schema> {
  return isObject(schema.properties) ? (schema.properties as Record<string, Schema>) : {};
}

/** Fills `default`s top-down (a defaulted object then gets its own properties' defaults). */
export function applyDefaults(schema: Schema, value: Json): Json {
  if (Array.isArray(value) && isObject(schema.items)) return value.map((v) => applyDefaults(schema.items as Schema, v));
  if (!isObject(value)) return value;
  const out: Record<string, unknown> = { ...value };
  for (const [key, sub] of Object.entries(props(schema))) {
    if (out[key] === undefined && sub.default !== undefined) out[key] = structuredClone(sub.default);
    if (out[key] !== undefined) out[key] = applyDefaults(sub, out[key]);
  }
  if (isObject(schema.additionalProperties)) {
    for (const key of Object.keys(out)) out[key] = applyDefaults(schema.additionalProperties as Schema, out[key]);
  }
  return out;
}

/** Drops fields the schema does not declare (unless x-kubernetes-preserve-unknown-fields). */
export function prune(schema: Schema, value: Json): Json {
  if (schema["x-kubernetes-preserve-unknown-fields"] === true) return value;
  if (Array.isArray(value)) return isObject(schema.items) ? value.map((v) => prune(schema.items as Schema, v)) : value;
  if (!isObject(value)) return value;
  const declared = props(schema);
  const additional = isObject(schema.additionalProperties) ? (schema.additionalProperties as Schema) : undefined;
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    const sub = declared[key] ?? additional;
    if (sub) out[key] = prune(sub, v);
  }
  return out;
}

function typeOf(v: Json): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

/** Every violation of `schema` in `value`, as `path: message` lines. */
export function validateSchema(schema: Schema, value: Json, path: string, cel = true): string[] {
  const errors: string[] = [];
  const fail = (msg: string) => errors.push(`${path}: ${msg}`);
  const shown = JSON.stringify(value);
  if (schema["x-kubernetes-int-or-string"] === true) {
    if (typeof value !== "string" && typeOf(value) !== "integer") fail(`Invalid value: ${shown}: must be an integer or a string`);
    return errors;
  }
  const type = schema.type as string | undefined;
  const actual = typeOf(value);
  if (type && !(actual === type || (type === "number" && actual === "integer"))) {
    fail(`Invalid value: "${actual}": ${path} in body must be of type ${type}: "${actual}"`);
    return errors;
  }
  if (Array.isArray(schema.enum) && !schema.enum.includes(value)) fail(`Unsupported value: ${shown}: supported values: ${schema.enum.map((e) => JSON.stringify(e)).join(", ")}`);
  if (typeof value === "number") {
    const min = schema.minimum as number | undefined;
    const max = schema.maximum as number | undefined;
    if (min !== undefined && (schema.exclusiveMinimum === true ? value <= min : value < min)) fail(`Invalid value: ${value}: should be greater than ${schema.exclusiveMinimum === true ? "" : "or equal to "}${min}`);
    if (max !== undefined && (schema.exclusiveMaximum === true ? value >= max : value > max)) fail(`Invalid value: ${value}: should be less than ${schema.exclusiveMaximum === true ? "" : "or equal to "}${max}`);
  }
  if (typeof value === "string") {
    if (typeof schema.pattern === "string" && !new RegExp(schema.pattern, "u").test(value)) fail(`Invalid value: ${shown}: should match '${schema.pattern}'`);
    if (typeof schema.minLength === "number" && value.length < schema.minLength) fail(`Invalid value: ${shown}: should be at least ${schema.minLength} chars long`);
    if (typeof schema.maxLength === "number" && value.length > schema.maxLength) fail(`Invalid value: ${shown}: may not be more than ${schema.maxLength} chars long`);
  }
  if (Array.isArray(value)) {
    if (typeof schema.minItems === "number" && value.length < schema.minItems) fail(`Invalid value: ${value.length}: should have at least ${schema.minItems} items`);
    if (isObject(schema.items)) value.forEach((v, i) => errors.push(...validateSchema(schema.items as Schema, v, `${path}[${i}]`, cel)));
  }
  if (isObject(value) && schema["x-kubernetes-preserve-unknown-fields"] !== true) {
    for (const key of (schema.required as string[] | undefined) ?? []) if (value[key] === undefined) errors.push(`${path}.${key}: Required value`);
    const declared = props(schema);
    for (const [key, v] of Object.entries(value)) {
      const sub = declared[key] ?? (isObject(schema.additionalProperties) ? (schema.additionalProperties as Schema) : undefined);
      if (sub) errors.push(...validateSchema(sub, v, `${path}.${key}`, cel));
    }
  }
  // CEL runs only on nodes that are otherwise valid, like the API server
  if (cel && errors.length === 0 && Array.isArray(schema["x-kubernetes-validations"])) {
    for (const rule of schema["x-kubernetes-validations"] as { rule: string; message?: string; fieldPath?: string }[]) {
      let ok: boolean;
      try {
        ok = evaluateCel(rule.rule, { self: value }) === true;
      } catch (err) {
        errors.push(`${path}: Invalid value: "object": rule evaluation error: ${(err as Error).message}`);
        continue;
      }
      if (!ok) errors.push(`${path}${rule.fieldPath ?? ""}: Invalid value: "object": ${rule.message ?? `failed rule: ${rule.rule}`}`);
    }
  }
  return errors;
}
