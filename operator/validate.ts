/**
 * Turns an untrusted ModelDeployment (from the API or a file) into a ValidDeployment, or one line
 * saying what is wrong. The API server checks the same schema, but the operator never trusts that:
 * objects stored before a CRD upgrade, or on servers without CEL, can still be invalid.
 */
import { describeZodError } from "../contracts/errors.js";
import { ModelDeployment } from "../contracts/model-deployment.js";
import type { ValidDeployment } from "./desired/meta.js";

export type Validation = { readonly ok: true; readonly md: ValidDeployment } | { readonly ok: false; readonly message: string };

export function validateModelDeployment(raw: unknown, defaultNamespace = "default"): Validation {
  const parsed = ModelDeployment.safeParse(raw);
  if (!parsed.success) return { ok: false, message: describeZodError(parsed.error, "invalid ModelDeployment") };
  const { metadata, spec } = parsed.data;
  return { ok: true, md: { name: metadata.name, namespace: metadata.namespace ?? defaultNamespace, uid: metadata.uid, spec } };
}
