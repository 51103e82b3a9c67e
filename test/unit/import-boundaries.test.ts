import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { COMPONENTS, findViolations, importSpecifiers, readSources } from "../support/imports.js";
import { REPO_ROOT } from "../support/paths.js";

describe("import boundaries", () => {
  it("finds import, export-from, side-effect and dynamic imports", () => {
    const src = `import a from "./a.js";\nimport { b } from '../b.js';\nexport * from "./c.js";\nimport "./d.js";\nconst e = await import("./e.js");\nimport type { F } from "./f.js";`;
    assert.deepEqual(importSpecifiers(src), ["./a.js", "../b.js", "./c.js", "./d.js", "./e.js", "./f.js"]);
  });

  it("flags a component importing another component", () => {
    const v = findViolations([{ path: "router/dispatch.ts", source: `import { Engine } from "../worker/engine.js";` }]);
    assert.equal(v.length, 1);
    assert.match(v[0]?.reason ?? "", /router\/ must not import worker\//);
  });

  it("flags contracts importing anything but zod and contracts", () => {
    const v = findViolations([
      { path: "contracts/x.ts", source: `import { pino } from "pino";\nimport { y } from "../core/log.js";` },
    ]);
    assert.equal(v.length, 2);
  });

  it("allows components to import contracts/ and core/", () => {
    const v = findViolations([
      { path: "operator/reconcile.ts", source: `import { a } from "../contracts/model-deployment.js";\nimport { b } from "../core/log.js";\nimport { c } from "./desired/router.js";` },
    ]);
    assert.deepEqual(v, []);
  });

  it("the repository has no forbidden imports", () => {
    const files = readSources(REPO_ROOT, [...COMPONENTS, "contracts", "core"]);
    assert.ok(files.length > 5, "expected to scan the sources");
    assert.deepEqual(findViolations(files), []);
  });
});
