/**
 * Command and flag definitions shared by every subcommand of `bin/latentmesh`.
 *
 * A command declares its flags as zod schemas over the raw string value; the parser reads
 * `--name value`, `--name=value`, `--flag` / `--no-flag` for booleans, then the flag's environment
 * variable, then the schema default. A bad value is a UsageError naming the flag (exit 2, one line).
 */
import { z } from "zod";

/** A flag's declaration: the schema parses the raw string (or undefined when absent). */
export interface FlagSpec<S extends z.ZodType = z.ZodType> {
  readonly schema: S;
  readonly help: string;
  /** Environment variable read when the flag is absent; defaults to LATENTMESH_<NAME>. */
  readonly env: string | null;
  readonly short?: string;
  /** Placeholder in --help, e.g. "N" or "DIR"; absent for boolean flags. */
  readonly placeholder?: string;
  readonly boolean: boolean;
}

type FlagMap = Record<string, FlagSpec>;
/** The parsed, readonly options object a command receives. */
export type ParsedFlags<F extends FlagMap> = { readonly [K in keyof F]: z.output<F[K]["schema"]> };

/** Raised for a bad command line; the CLI prints the message as one line and exits 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

export interface CommandContext {
  /** Positional arguments, when the command accepts them. */
  readonly args: readonly string[];
  /** Resolves when SIGINT/SIGTERM arrives. */
  readonly signal: AbortSignal;
}

export interface CommandSpec<F extends FlagMap = FlagMap> {
  readonly name: string;
  readonly summary: string;
  /** Extra help text printed after the flags. */
  readonly details?: string;
  readonly flags: F;
  /** Name of accepted positional arguments for --help; absent = none accepted. */
  readonly positionals?: string;
  run(flags: ParsedFlags<F> & CommonFlags, ctx: CommandContext): Promise<number | void>;
}

/** Declare a command with its flags' types inferred. */
export function defineCommand<F extends FlagMap>(spec: CommandSpec<F>): CommandSpec<F> {
  return spec;
}

interface FlagOptions {
  env?: string | null;
  short?: string;
  placeholder?: string;
}

/** A flag taking a value, parsed by `schema` from its string form. */
export function flag<S extends z.ZodType>(schema: S, help: string, opts: FlagOptions = {}): FlagSpec<S> {
  return { schema, help, env: opts.env === undefined ? "" : opts.env, short: opts.short, placeholder: opts.placeholder ?? "VALUE", boolean: false };
}

/** A boolean flag: `--name`, `--no-name`, or env true/false/1/0. */
export function boolFlag(help: string, defaultValue = false, opts: FlagOptions = {}) {
  const schema = z
    .enum(["true", "false", "1", "0", "yes", "no"], { error: "expected true or false" })
    .transform((v) => v === "true" || v === "1" || v === "yes")
    .default(defaultValue);
  return { schema, help, env: opts.env === undefined ? "" : opts.env, short: opts.short, boolean: true } satisfies FlagSpec;
}

/** Schema helpers over raw strings. */
export const parse = {
  int(opts: { min?: number; max?: number } = {}) {
    let n = z.number().int();
    if (opts.min !== undefined) n = n.min(opts.min, `must be >= ${opts.min}`);
    if (opts.max !== undefined) n = n.max(opts.max, `must be <= ${opts.max}`);
    return z.string().trim().regex(/^[+-]?\d+$/, "expected an integer").transform(Number).pipe(n);
  },
  number(opts: { min?: number; max?: number } = {}) {
    let n = z.number().finite();
    if (opts.min !== undefined) n = n.min(opts.min, `must be >= ${opts.min}`);
    if (opts.max !== undefined) n = n.max(opts.max, `must be <= ${opts.max}`);
    return z.string().trim().regex(/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/, "expected a number").transform(Number).pipe(n);
  },
  /** Comma-separated integers, e.g. `5,17,300`. */
  intList(opts: { min?: number } = {}) {
    return z
      .string()
      .trim()
      .regex(/^[+-]?\d+(\s*,\s*[+-]?\d+)*$/, "expected comma-separated integers")
      .transform((s) => s.split(",").map((x) => Number(x.trim())))
      .refine((xs) => opts.min === undefined || xs.every((x) => x >= (opts.min ?? 0)), `every value must be >= ${opts.min}`);
  },
  url(protocols: readonly string[]) {
    return z.string().trim().refine((s) => {
      try {
        return protocols.includes(new URL(s).protocol.replace(/:$/, ""));
      } catch {
        return false;
      }
    }, `expected a URL (${protocols.join(", ")})`);
  },
};

function camelToKebab(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

function envName(key: string, spec: FlagSpec): string | null {
  if (spec.env === null) return null;
  return spec.env !== "" ? spec.env : `LATENTMESH_${camelToKebab(key).replace(/-/g, "_").toUpperCase()}`;
}

/** Flags every command accepts. */
export const COMMON_FLAGS = {
  logLevel: flag(z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"), "log level", {
    placeholder: "LEVEL",
  }),
  logFormat: flag(z.enum(["auto", "json", "pretty"]).default("auto"), "log format: JSON lines, or human-readable (auto: pretty on a TTY)", {
    placeholder: "FORMAT",
  }),
} satisfies FlagMap;

export type CommonFlags = ParsedFlags<typeof COMMON_FLAGS>;

export type ParseOutcome<F extends FlagMap> =
  | { kind: "help" }
  | { kind: "ok"; flags: ParsedFlags<F> & CommonFlags; args: string[] };

/**
 * Parse argv for one command. Throws UsageError with a one-line message naming the flag.
 * `env` is passed in (never read globally) so parsing stays a pure function.
 */
export function parseFlags<F extends FlagMap>(spec: CommandSpec<F>, argv: readonly string[], env: Readonly<Record<string, string | undefined>>): ParseOutcome<F> {
  const all: FlagMap = { ...COMMON_FLAGS, ...spec.flags };
  const byName = new Map<string, [string, FlagSpec]>();
  for (const [key, f] of Object.entries(all)) {
    byName.set(`--${camelToKebab(key)}`, [key, f]);
    if (f.short) byName.set(`-${f.short}`, [key, f]);
  }
  const raw = new Map<string, { value: string; source: string }>();
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i] as string;
    if (tok === "--help" || tok === "-h") return { kind: "help" };
    if (tok === "--") {
      args.push(...argv.slice(i + 1));
      break;
    }
    if (!tok.startsWith("-") || tok === "-") {
      args.push(tok);
      continue;
    }
    const eq = tok.indexOf("=");
    const name = eq >= 0 ? tok.slice(0, eq) : tok;
    let entry = byName.get(name);
    let value: string | undefined = eq >= 0 ? tok.slice(eq + 1) : undefined;
    if (!entry && name.startsWith("--no-")) {
      const positive = byName.get(`--${name.slice(5)}`);
      if (positive?.[1].boolean && value === undefined) {
        entry = positive;
        value = "false";
      }
    }
    if (!entry) throw new UsageError(`unknown flag ${name} (see 'latentmesh ${spec.name} --help')`);
    const [key, f] = entry;
    if (value === undefined) {
      if (f.boolean) value = "true";
      else {
        const next = argv[i + 1];
        if (next === undefined) throw new UsageError(`flag ${name} needs a value`);
        value = next;
        i++;
      }
    }
    raw.set(key, { value, source: `--${camelToKebab(key)}` });
  }
  if (args.length > 0 && !spec.positionals) {
    throw new UsageError(`unexpected argument '${args[0]}' (see 'latentmesh ${spec.name} --help')`);
  }
  const out: Record<string, unknown> = {};
  for (const [key, f] of Object.entries(all)) {
    let given = raw.get(key);
    const envKey = envName(key, f);
    if (!given && envKey && env[envKey] !== undefined && env[envKey] !== "") {
      given = { value: env[envKey] as string, source: `${envKey} (environment)` };
    }
    const result = f.schema.safeParse(given?.value);
    if (!result.success) {
      const issue = result.error.issues[0];
      const why = issue?.message ?? "invalid value";
      if (!given) throw new UsageError(`missing required flag --${camelToKebab(key)}`);
      throw new UsageError(`invalid value for ${given.source}: ${JSON.stringify(given.value)}: ${why}`);
    }
    out[key] = result.data;
  }
  return { kind: "ok", flags: out as ParsedFlags<F> & CommonFlags, args };
}

function describeDefault(f: FlagSpec): string | undefined {
  const r = f.schema.safeParse(undefined);
  if (!r.success || r.data === undefined) return undefined;
  if (f.boolean && r.data === false) return undefined;
  return typeof r.data === "string" ? r.data : JSON.stringify(r.data);
}

/** Help text for one command. */
export function formatHelp(spec: CommandSpec): string {
  const lines = [`latentmesh ${spec.name} - ${spec.summary}`, "", `Usage: latentmesh ${spec.name} [flags]${spec.positionals ? ` ${spec.positionals}` : ""}`, "", "Flags:"];
  const rows: [string, string][] = [];
  for (const [key, f] of Object.entries({ ...spec.flags, ...COMMON_FLAGS } as FlagMap)) {
    const name = `${f.short ? `-${f.short}, ` : ""}--${camelToKebab(key)}${f.boolean ? "" : ` ${f.placeholder ?? "VALUE"}`}`;
    const extra: string[] = [];
    const env = envName(key, f);
    if (env) extra.push(`env ${env}`);
    const def = describeDefault(f);
    if (def !== undefined) extra.push(`default ${def}`);
    else if (!f.boolean && !f.schema.safeParse(undefined).success) extra.push("required");
    rows.push([name, `${f.help}${extra.length ? ` (${extra.join(", ")})` : ""}`]);
  }
  rows.push(["-h, --help", "show this help"]);
  const width = Math.min(34, Math.max(...rows.map(([n]) => n.length)) + 2);
  for (const [n, h] of rows) lines.push(`  ${n.padEnd(width)}${n.length >= width ? `\n  ${"".padEnd(width)}` : ""}${h}`);
  if (spec.details) lines.push("", spec.details.trim());
  return lines.join("\n") + "\n";
}
