// JSON schemas of Grafana's dashboard model, generated from the TypeScript
// types npm @grafana/schema ships (the types Grafana itself generates from
// its CUE schemas): the classic dashboard JSON (raw/dashboard/x), and for
// each panel type named on the command line its plugin's Options and
// FieldConfig (the panel's `fieldConfig.defaults.custom`). Interfaces become
// objects with additionalProperties: false, so unknown fields fail.
// usage (from a folder where node_modules resolves):
//   node grafana_schema.mjs timeseries stat ... > schemas.json
// panels.<type> is null when @grafana/schema has no such panel plugin.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const require = createRequire(import.meta.url);
const { createGenerator } = require("ts-json-schema-generator");
const pkg = dirname(require.resolve("@grafana/schema/package.json"));
const raw = join(pkg, "dist", "types", "raw");

// one TypeScript program for everything: an entry file re-exporting each type
const wanted = { Dashboard: null };
let src = `export type { Dashboard } from ${JSON.stringify(join(raw, "dashboard/x/types.gen"))};\n`;
const panels = {};
for (const panel of process.argv.slice(2)) {
  const file = join(raw, "composable", panel, "panelcfg", "x", "types.gen.d.ts");
  if (!/^[a-z0-9]+$/.test(panel) || !existsSync(file)) {
    panels[panel] = null;
    continue;
  }
  const text = readFileSync(file, "utf8");
  const mod = JSON.stringify(file.replace(/\.d\.ts$/, ""));
  src += `import type * as P_${panel} from ${mod};\n`;
  panels[panel] = { options: null, fieldConfig: null };
  for (const [key, iface] of [["options", "Options"], ["fieldConfig", "FieldConfig"]]) {
    if (new RegExp(`export interface ${iface}\\b`).test(text)) {
      src += `export type ${panel}__${iface} = P_${panel}.${iface};\n`;
      wanted[`${panel}__${iface}`] = [panel, key];
    }
  }
}
const entry = join(process.cwd(), "grafana-schema-entry.ts");
writeFileSync(entry, src);
const generator = createGenerator({ path: entry, skipTypeCheck: true, expose: "export", topRef: true });
const out = {
  version: JSON.parse(readFileSync(join(pkg, "package.json"), "utf8")).version,
  dashboard: null,
  panels,
};
for (const [type, where] of Object.entries(wanted)) {
  const schema = generator.createSchema(type);
  if (where === null) out.dashboard = schema;
  else panels[where[0]][where[1]] = schema;
}
process.stdout.write(JSON.stringify(out));
