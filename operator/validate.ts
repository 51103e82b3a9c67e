/**
 * Turns an untrusted ModelDeployment (from the API or a file) into a ValidDeployment, or one line
 * saying what is wrong. The API server checks the same schema, but the operator never trusts that:
 * objects stored before a CRD upgrade, or on servers without CEL, can still be invalid.
 */
import { describeZodError } from "../contracts/errors.js";
import { ModelDeployment } from "../contracts/model-deployment.js";
import type { ValidDeployment } from "./desired/meta.js";

export type Validation =
  | { readonly ok: true; readonly md: ValidDeployment; readonly warnings: readonly string[] }
  | { readonly ok: false; readonly message: string };

/**
 * spec.engine.dtype values earlier schemas accepted but the engine never implemented (it always ran
 * bfloat16). New objects are refused by the CRD; objects stored before the upgrade are served as
 * bfloat16 with a warning, not frozen as invalid.
 */
const LEGACY_DTYPES: ReadonlySet<unknown> = new Set(["float16", "float32", "fp8"]);

export function validateModelDeployment(raw: unknown, defaultNamespace = "default"): Validation {
  const warnings: string[] = [];
  const engine = (raw as { spec?: { engine?: { dtype?: unknown } } } | null)?.spec?.engine;
  if (engine && LEGACY_DTYPES.has(engine.dtype)) {
    warnings.push(`spec.engine.dtype '${String(engine.dtype)}' is not implemented: served as bfloat16 (set dtype: bfloat16 to silence this)`);
    raw = { ...(raw as object), spec: { ...(raw as { spec: object }).spec, engine: { ...engine, dtype: "bfloat16" } } };
  }
  const parsed = ModelDeployment.safeParse(raw);
  if (!parsed.success) return { ok: false, message: describeZodError(parsed.error, "invalid ModelDeployment") };
  const { metadata, spec } = parsed.data;
  return { ok: true, md: { name: metadata.name, namespace: metadata.namespace ?? defaultNamespace, uid: metadata.uid, spec }, warnings };
}
