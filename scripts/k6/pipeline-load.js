// Short load test run by scripts/deploy.sh on staging, and by tests/pipeline while replicas
// are replaced or killed. Bounded: VUS virtual users for DURATION, each pausing between
// requests. The run fails (k6 exits 99) when a threshold is crossed.
//   k6 run --no-usage-report -e BASE_URL=http://127.0.0.1:PORT scripts/k6/pipeline-load.js
import http from "k6/http";
import { check, sleep } from "k6";

const BASE = __ENV.BASE_URL;
const MAX_FAILED_RATE = Number(__ENV.MAX_FAILED_RATE || "0.01");
const P95_MS = Number(__ENV.P95_MS || "800");
// Writes are 1 request in WRITE_EVERY (0: read only).
const WRITE_EVERY = Number(__ENV.WRITE_EVERY || "10");
const PAUSE_S = Number(__ENV.PAUSE_S || "0.02");

export const options = {
  scenarios: {
    steady: {
      executor: "constant-vus",
      vus: Number(__ENV.VUS || "4"),
      duration: __ENV.DURATION || "10s",
      gracefulStop: "5s",
    },
  },
  thresholds: {
    http_req_failed: [`rate<=${MAX_FAILED_RATE}`],
    http_req_duration: [`p(95)<${P95_MS}`],
    checks: [`rate>=${1 - MAX_FAILED_RATE}`],
  },
};

const JSON_HEADERS = { headers: { "Content-Type": "application/json" } };

export function setup() {
  const content = `load-${Date.now()}`;
  const res = http.post(
    `${BASE}/api/comment/new`,
    JSON.stringify({ email: "seed@example.com", comment: "seed", content_id: content }),
    JSON_HEADERS,
  );
  if (res.status !== 200) throw new Error(`seeding failed: ${res.status} ${res.body}`);
  return { content };
}

export default function (data) {
  const n = __ITER;
  let res;
  if (WRITE_EVERY > 0 && n % WRITE_EVERY === 0) {
    const body = { email: `vu${__VU}@example.com`, comment: `load ${__VU}-${n}-${Date.now()}`, content_id: data.content };
    res = http.post(`${BASE}/api/comment/new`, JSON.stringify(body), JSON_HEADERS);
    check(res, { "create 200": (r) => r.status === 200 });
  } else if (n % 2 === 0) {
    res = http.get(`${BASE}/api/comment/list/${data.content}`);
    check(res, { "legacy list 200": (r) => r.status === 200 });
  } else {
    res = http.get(`${BASE}/api/v1/contents/${data.content}/comments?limit=10`);
    check(res, { "v1 list 200": (r) => r.status === 200 });
  }
  sleep(PAUSE_S);
}
