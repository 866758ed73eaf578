// Evaluates a flagd flag-definition file with the real @openfeature/flagd-core.
//
// Usage: node flagd-check.mjs NODE_MODULES FLAGS_JSON CONTROL_JSON [COHORT ...]
//
// 1. Loads CONTROL_JSON (flagd's documented fractional example) with strict
//    schema validation: if the evaluator refuses the documented file, the
//    checker itself is broken and exits 2.
// 2. Loads FLAGS_JSON with strict schema validation (flagd-core's
//    MemoryStorage.setConfigurations(json, true) throws on an invalid file).
//    A refusal prints {"loaded": false, "error": "..."} and exits 0, so a test
//    can assert that a deliberately broken file is refused.
// 3. For every flag: resolves the boolean flag for 10,000 targeting keys
//    (user-0 .. user-9999) without a cohort, and for 100 keys in each COHORT
//    (context attribute `cohort`), and prints the counts of `true`.
//
// Output (one JSON object on stdout):
// {"loaded": true, "flags": {"KEY": {"total": 10000, "on": 512, "errors": 0,
//   "variants": {"on": 512, "off": 9488}, "cohorts": {"beta": {"total": 100, "on": 100}}}}}

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const [nodeModules, flagsPath, controlPath, ...cohorts] = process.argv.slice(2);
if (!nodeModules || !flagsPath || !controlPath) {
  console.error("usage: node flagd-check.mjs NODE_MODULES FLAGS_JSON CONTROL_JSON [COHORT ...]");
  process.exit(64);
}
const require = createRequire(join(nodeModules, "noop.js"));
const { FlagdCore, MemoryStorage } = require("@openfeature/flagd-core");

const logger = {
  error: (...a) => console.error("flagd-core:", ...a),
  warn: (...a) => console.error("flagd-core:", ...a),
  info: () => {},
  debug: () => {},
};

function load(path) {
  const storage = new MemoryStorage(logger);
  // strictValidation = true: the file must satisfy flagd's flags.json schema
  storage.setConfigurations(readFileSync(path, "utf8"), true);
  return new FlagdCore(storage, logger);
}

try {
  const control = load(controlPath);
  const red = control.resolveStringEvaluation("headerColor", "none", { email: "a@b.c" }, logger);
  if (!["red", "blue", "green"].includes(red.variant)) {
    throw new Error(`control file resolved to ${JSON.stringify(red)}`);
  }
} catch (e) {
  console.error(`the documented flagd example does not load: ${e.message}`);
  process.exit(2);
}

let core;
try {
  core = load(flagsPath);
} catch (e) {
  console.log(JSON.stringify({ loaded: false, error: String(e.message).slice(0, 2000) }));
  process.exit(0);
}

function tally(key, contexts) {
  const out = { total: 0, on: 0, errors: 0, variants: {} };
  for (const ctx of contexts) {
    const r = core.resolveBooleanEvaluation(key, false, ctx, logger);
    out.total += 1;
    if (r.errorCode) out.errors += 1;
    if (r.value === true) out.on += 1;
    out.variants[r.variant] = (out.variants[r.variant] ?? 0) + 1;
  }
  return out;
}

const keys = Array.from({ length: 10000 }, (_, i) => `user-${i}`);
const flags = {};
for (const key of core.getFlags().keys()) {
  const result = tally(key, keys.map((targetingKey) => ({ targetingKey })));
  result.cohorts = {};
  for (const cohort of cohorts) {
    const members = keys.slice(0, 100).map((targetingKey) => ({ targetingKey, cohort }));
    const t = tally(key, members);
    result.cohorts[cohort] = { total: t.total, on: t.on, errors: t.errors };
  }
  flags[key] = result;
}
console.log(JSON.stringify({ loaded: true, flags }));
