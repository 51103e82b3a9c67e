import { LatentMeshError } from "../contracts/errors.js";

/** For subcommands whose issue has not landed: a clear one-line error, exit 1. */
export function notYet(command: string, issue: string): never {
  throw new LatentMeshError("internal", `'${command}' is not available in this build yet (${issue})`);
}
