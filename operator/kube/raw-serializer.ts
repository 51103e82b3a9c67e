/**
 * Makes @kubernetes/client-node pass objects of the kinds the operator handles through unchanged.
 * By default the library maps typed models by their TypeScript attribute names (e.g. a
 * NetworkPolicy rule's `from` is the model's `_from`, timestamps become Date), which would silently
 * drop fields of the plain wire-format objects the pure builders produce. `registerModel` is the
 * library's documented hook for this.
 */
// the wrapper with registerModel is not re-exported from the package index (1.4.0)
import { ObjectSerializer } from "@kubernetes/client-node/dist/serializer.js";

const passThrough = {
  serialize: (data: unknown) => data,
  deserialize: (data: unknown) => data,
};

let registered = false;

/** Registers `kind` and `kindList` of each apiVersion as raw JSON (idempotent). */
export function useRawObjects(kinds: readonly { apiVersion: string; kind: string }[]): void {
  if (registered) return;
  registered = true;
  for (const { apiVersion, kind } of kinds) {
    const [group, version] = apiVersion.includes("/") ? (apiVersion.split("/") as [string, string]) : ["", apiVersion];
    for (const k of [kind, `${kind}List`]) {
      try {
        ObjectSerializer.registerModel({ group, version, kind: k }, passThrough);
      } catch {
        // already registered by another instance in this process
      }
    }
  }
}
