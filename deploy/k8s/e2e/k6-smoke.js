// Short load test for a deployed comments-api (GitHub Actions E2E on kind, and by hand):
//   k6 run --no-usage-report -e BASE_URL=http://127.0.0.1:8080 deploy/k8s/e2e/k6-smoke.js
// Reads and writes through the legacy and v1 APIs; fails on any error or a slow p95.
import http from "k6/http";
import { check } from "k6";

export const options = {
  // A fixed arrival rate under the per-address limits (RATELIMIT_READ 600/minute: 4
  // iterations/s x 2 reads = 480/minute); through a port-forward every request shares
  // one client address.
  scenarios: {
    steady: { executor: "constant-arrival-rate", rate: 4, timeUnit: "1s", duration: __ENV.DURATION || "30s", preAllocatedVUs: 4 },
  },
  thresholds: {
    http_req_failed: ["rate==0"],
    http_req_duration: ["p(95)<500"],
    checks: ["rate==1"],
  },
};

const BASE = __ENV.BASE_URL || "http://127.0.0.1:8080";
const JSON_HEADERS = { headers: { "Content-Type": "application/json" } };

const CONTENTS = [0, 1, 2, 3, 4].map((i) => 900000 + i + Math.floor(Math.random() * 1000) * 10);

// One comment per content first, so every list below has something to return.
export function setup() {
  for (const content of CONTENTS) {
    const r = http.post(
      `${BASE}/api/comment/new`,
      JSON.stringify({ email: "k6@example.com", comment: "seed", content_id: content }),
      JSON_HEADERS,
    );
    if (r.status !== 200) throw new Error(`seeding content ${content}: ${r.status} ${r.body}`);
  }
  return { contents: CONTENTS };
}

// 429 is a correct answer under the write rate limit, not a failure of the service.
const WRITE = { ...JSON_HEADERS, responseCallback: http.expectedStatuses(200, 429) };

export default function (data) {
  const content = data.contents[__ITER % data.contents.length];
  if (__ITER % 10 === 0) {
    const created = http.post(
      `${BASE}/api/comment/new`,
      JSON.stringify({ email: `k6-${__VU}@example.com`, comment: `load ${__ITER}`, content_id: content }),
      WRITE,
    );
    check(created, { "create 200 or 429": (r) => r.status === 200 || r.status === 429 });
  }
  const listed = http.get(`${BASE}/api/comment/list/${content}`);
  check(listed, { "list 200": (r) => r.status === 200 });
  const v1 = http.get(`${BASE}/api/v1/contents/${content}/comments`);
  check(v1, { "v1 list 200": (r) => r.status === 200 });
}
