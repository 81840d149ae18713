// Validates prometheus-operator objects (ServiceMonitor, PrometheusRule, ...) and External
// Secrets objects (SecretStore, ExternalSecret) against the CRD JSON schemas shipped in
// @kubernetes-models/prometheus-operator and @kubernetes-models/external-secrets, offline.
// Input on stdin: a JSON array of objects. Prints one line per object; exit 1 on any error.
import * as monitoring from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
import * as externalSecrets from "@kubernetes-models/external-secrets/external-secrets.io/v1";

const models = {
  "monitoring.coreos.com/v1": monitoring,
  "external-secrets.io/v1": externalSecrets,
};

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const objects = JSON.parse(Buffer.concat(chunks).toString("utf8"));

let failed = 0;
for (const obj of objects) {
  const name = `${obj.kind}/${obj.metadata?.name}`;
  const Model = models[obj.apiVersion]?.[obj.kind];
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
