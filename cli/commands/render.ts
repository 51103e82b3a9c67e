/** `latentmesh render -f FILE`: print the objects a ModelDeployment becomes. */
import { readFileSync } from "node:fs";
import { parseAllDocuments, stringify } from "yaml";
import { z } from "zod";
import { invalid } from "../../contracts/errors.js";
import { defineCommand, flag } from "../../core/flags.js";
import { buildDesired } from "../../operator/desired/index.js";
import { validateModelDeployment } from "../../operator/validate.js";

function readSource(file: string): string {
  try {
    return readFileSync(file === "-" ? 0 : file, "utf8");
  } catch (err) {
    throw invalid(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, "file");
  }
}

/** The YAML stream for every ModelDeployment document of `text` (throws one-line errors). */
export function renderText(text: string, file: string): string {
  const docs = parseAllDocuments(text);
  if (!Array.isArray(docs)) throw invalid(`${file}: not a YAML document stream`, "file");
  const out: string[] = [];
  docs.forEach((doc, i) => {
    const where = docs.length > 1 ? `${file} (document ${i + 1})` : file;
    const yamlError = doc.errors[0];
    if (yamlError) throw invalid(`${where}: ${yamlError.message.split("\n")[0]}`, "file");
    const raw: unknown = doc.toJS();
    if (raw === null || raw === undefined) return;
    const result = validateModelDeployment(raw);
    if (!result.ok) throw invalid(`${where}: ${result.message}`, "file");
    for (const w of result.warnings) process.stderr.write(`latentmesh render: ${where}: warning: ${w}\n`);
    for (const obj of buildDesired(result.md)) out.push(stringify(obj, { lineWidth: 0 }));
  });
  if (out.length === 0) throw invalid(`${file}: no ModelDeployment found`, "file");
  return out.map((o) => `---\n${o}`).join("");
}

export const renderCommand = defineCommand({
  name: "render",
  summary: "print, as a YAML stream, every object the operator creates for a ModelDeployment file",
  details:
    "The objects are what the operator applies, built by the same code. ownerReferences appear only when the\n" +
    "file's metadata has a uid (a stored object); the namespace defaults to 'default'.",
  flags: {
    file: flag(z.string().min(1), "ModelDeployment YAML file ('-' for stdin)", { short: "f", placeholder: "FILE", env: null }),
  },
  async run(flags) {
    process.stdout.write(renderText(readSource(flags.file), flags.file));
  },
});
