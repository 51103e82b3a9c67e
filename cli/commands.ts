/** Every subcommand of `bin/latentmesh`, in help order. */
import type { CommandSpec } from "../core/flags.js";
import { operatorCommand } from "../operator/command.js";
import { routerCommand } from "../router/command.js";
import { workerCommand } from "../worker/command.js";
import { generateCommand } from "./commands/generate.js";
import { logitsCommand } from "./commands/logits.js";
import { benchCommand } from "./commands/bench.js";
import { renderCommand } from "./commands/render.js";
import { upCommand } from "./commands/up.js";

export const COMMANDS: readonly CommandSpec[] = [
  operatorCommand,
  routerCommand,
  workerCommand,
  upCommand,
  logitsCommand,
  generateCommand,
  renderCommand,
  benchCommand,
] as unknown as readonly CommandSpec[];
