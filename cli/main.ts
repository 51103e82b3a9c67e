/**
 * `bin/latentmesh` dispatch: finds the subcommand, parses its flags, sets up logging and signals,
 * runs it, and maps failures to exit codes (2 and one line for bad input; 1 and a stack otherwise).
 */
import { ERROR_MAPPING, LatentMeshError } from "../contracts/errors.js";
import { formatHelp, parseFlags, UsageError } from "../core/flags.js";
import { COMMANDS, type CommandEntry } from "./commands.js";

const VERSION = "0.1.0";

export function topLevelHelp(commands: readonly CommandEntry[]): string {
  const width = Math.max(...commands.map((c) => c.name.length)) + 2;
  return [
    "latentmesh - serve hybrid Mamba-Transformer MoE models (Nemotron 3) on Kubernetes",
    "",
    "Usage: latentmesh <command> [flags]",
    "",
    "Commands:",
    ...commands.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    "",
    "Run 'latentmesh <command> --help' for a command's flags. Every flag can also be set through",
    "its environment variable (LATENTMESH_<FLAG_NAME>), shown in each command's help.",
    "",
  ].join("\n");
}

function fail(line: string, code: number): number {
  process.stderr.write(`latentmesh: ${line.replace(/\s*\n\s*/g, " ")}\n`);
  return code;
}

/** Runs the CLI for `argv` (without node and script path); resolves to the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(topLevelHelp(COMMANDS));
    return name === undefined ? 2 : 0;
  }
  if (name === "--version" || name === "version") {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  const entry = COMMANDS.find((c) => c.name === name);
  if (!entry) return fail(`unknown command '${name}' (see 'latentmesh --help')`, 2);

  // Signals are caught from here on, before the command's modules load: a SIGTERM that arrives while
  // a process is still starting becomes an orderly stop (the command sees an aborted signal) rather
  // than the default instant death that skips its shutdown.
  const abort = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (abort.signal.aborted) {
      process.stderr.write(`latentmesh: second ${sig}, exiting now\n`);
      process.exit(130);
    }
    abort.abort(sig);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const command = await entry.load().catch((err: unknown) => {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    throw err;
  });
  try {
    const parsed = parseFlags(command, rest, process.env);
    if (parsed.kind === "help") {
      process.stdout.write(formatHelp(command));
      return 0;
    }
    const code = await command.run(parsed.flags, { args: parsed.args, signal: abort.signal });
    return code ?? 0;
  } catch (err) {
    if (err instanceof UsageError) return fail(`${command.name}: ${err.message}`, 2);
    if (err instanceof LatentMeshError) return fail(`${command.name}: ${err.message}`, ERROR_MAPPING[err.code].exitCode);
    process.stderr.write(`latentmesh ${command.name}: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return 1;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}
