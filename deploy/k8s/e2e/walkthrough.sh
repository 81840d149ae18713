#!/usr/bin/env bash
# The README's curl walkthrough against a deployed comments-api, with assertions.
# Usage: deploy/k8s/e2e/walkthrough.sh BASE_URL   (e.g. http://127.0.0.1:8080)
set -euo pipefail
base=${1:?usage: walkthrough.sh BASE_URL}
content=$((RANDOM + 100000))  # a fresh content id, so reruns start from an empty list

expect() {  # expect STATUS METHOD PATH [BODY]
  local want=$1 method=$2 path=$3 body=${4:-} got
  if [ -n "$body" ]; then
    got=$(curl -s -o /tmp/walkthrough.out -w '%{http_code}' -X "$method" "$base$path" \
      -H 'Content-Type: application/json' -d "$body")
  else
    got=$(curl -s -o /tmp/walkthrough.out -w '%{http_code}' -X "$method" "$base$path")
  fi
  echo "$method $path -> $got $(head -c 200 /tmp/walkthrough.out)"
  [ "$got" = "$want" ] || { echo "expected $want" >&2; exit 1; }
}

expect 200 GET /readyz
expect 200 POST /api/comment/new "{\"email\":\"alice@example.com\",\"comment\":\"first post!\",\"content_id\":$content}"
expect 200 POST /api/comment/new "{\"email\":\"bob@example.com\",\"comment\":\"I agree\",\"content_id\":$content}"
expect 200 GET "/api/comment/list/$content"
grep -q '"a\*\*\*@example.com"' /tmp/walkthrough.out
expect 404 GET "/api/comment/list/$((content + 1))"
expect 200 GET "/api/v1/contents/$content/comments"
expect 400 POST /api/comment/new '{"email":"not-an-email","comment":"x","content_id":1}'
echo "walkthrough: OK"
