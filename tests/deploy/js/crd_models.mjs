// Validate Prometheus Operator objects (ServiceMonitor, PrometheusRule, ...)
// with npm @kubernetes-models/prometheus-operator, whose validators are
// compiled from the operator's CRD schemas (types, required fields, enums,
// patterns such as durations).
// stdin: a JSON array of objects; stdout: a JSON array of
// {kind, name, error} (error null when valid). Exit 1 when any is invalid.
import { readFileSync } from "node:fs";

const v1 = await import("@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1");
const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const obj of objects) {
  const name = obj?.metadata?.name ?? "?";
  let error = null;
  if (obj.apiVersion !== "monitoring.coreos.com/v1" || typeof v1[obj.kind] !== "function") {
    error = `no model for ${obj.apiVersion} ${obj.kind}`;
  } else {
    try {
      new v1[obj.kind](obj).validate();
    } catch (e) {
      error = String(e && e.message ? e.message : e);
    }
  }
  results.push({ kind: obj.kind, name, error });
}
process.stdout.write(JSON.stringify(results));
process.exit(results.some((r) => r.error) ? 1 : 0);
