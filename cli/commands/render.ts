/** `latentmesh render -f FILE`: print the objects a ModelDeployment becomes. */
import { z } from "zod";
import { defineCommand, flag } from "../../core/flags.js";
import { notYet } from "../../core/not-yet.js";

export const renderCommand = defineCommand({
  name: "render",
  summary: "print, as a YAML stream, every object the operator creates for a ModelDeployment file",
  flags: {
    file: flag(z.string().min(1), "ModelDeployment YAML file ('-' for stdin)", { short: "f", placeholder: "FILE", env: null }),
  },
  async run() {
    notYet("render", "operator issue");
  },
});
