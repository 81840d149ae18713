// Validates prometheus-operator objects (ServiceMonitor, PrometheusRule, ...) against the
// CRD JSON schemas shipped in @kubernetes-models/prometheus-operator, offline.
// Input on stdin: a JSON array of objects. Prints one line per object; exit 1 on any error.
import * as v1 from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const objects = JSON.parse(Buffer.concat(chunks).toString("utf8"));

let failed = 0;
for (const obj of objects) {
  const name = `${obj.kind}/${obj.metadata?.name}`;
  const Model = obj.apiVersion === "monitoring.coreos.com/v1" ? v1[obj.kind] : undefined;
  if (typeof Model !== "function") {
    console.log(`UNKNOWN ${name} (${obj.apiVersion}): no schema`);
    failed++;
    continue;
  }
  try {
    new Model(obj).validate();
    console.log(`valid ${name}`);
  } catch (err) {
    console.log(`INVALID ${name}: ${err.message}`);
    failed++;
  }
}
if (objects.length === 0) {
  console.log("no objects given");
  failed++;
}
process.exit(failed ? 1 : 0);
