"""End-to-end and smoke checks that scripts/deploy.sh runs against an environment.

    python3 scripts/pipeline_e2e.py e2e   http://127.0.0.1:PORT   # staging gate
    python3 scripts/pipeline_e2e.py smoke http://127.0.0.1:PORT   # after a production rollout

Standard library only, so it runs from any Python 3.11 (the dev venv or the system one).
`e2e` replays the README's curl walkthrough (on a content id of its own, so reruns against a
long-lived database stay exact) and the v1 API's main calls; `smoke` is short and writes
nothing. Every failed check is printed; the exit status is the number of failures (max 100).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

FAILURES: list[str] = []


def call(
    base: str, method: str, path: str, body: object | None = None
) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    if not base.startswith(("http://", "https://")):
        raise SystemExit(f"not an http(s) URL: {base}")
    request = urllib.request.Request(base + path, data=data, method=method)  # noqa: S310
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http only
            status, headers, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, exc.headers, exc.read()
    # haproxy sends header names in lower case: compare them that way.
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = raw.decode(errors="replace")
    return status, lowered, payload


def check(name: str, ok: bool, detail: object = "") -> None:
    print(f"    {'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail!r}"[:300]))
    if not ok:
        FAILURES.append(name)


def smoke(base: str) -> None:
    status, _, body = call(base, "GET", "/healthz")
    check("GET /healthz is 200", status == 200, (status, body))
    status, _, body = call(base, "GET", "/readyz")
    check("GET /readyz is 200 ready", status == 200 and body.get("status") == "ready", body)
    unknown = f"smoke-{uuid.uuid4().hex[:12]}"
    status, headers, body = call(base, "GET", f"/api/comment/list/{unknown}")
    check(
        "legacy list of an unknown content is a JSON 404",
        status == 404
        and "json" in headers.get("content-type", "")
        and body["status"] == "NOT-FOUND",
        (status, body),
    )
    status, _, body = call(base, "GET", f"/api/v1/contents/{unknown}/comments")
    check(
        "v1 list answers an empty page", status == 200 and body.get("items") == [], (status, body)
    )
    status, _, body = call(base, "GET", "/openapi.json")
    check("the OpenAPI document is served", status == 200 and "openapi" in body, status)
    status, headers, _ = call(base, "GET", "/widget/comments.js")
    check(
        "the widget's script is served",
        status == 200 and "javascript" in headers.get("content-type", ""),
        (status, headers.get("content-type")),
    )


def e2e(base: str) -> None:
    cid = f"e2e-{uuid.uuid4().hex[:12]}"
    # --- the README's walkthrough (legacy API) ---
    status, _, body = call(
        base,
        "POST",
        "/api/comment/new",
        {"email": "alice@example.com", "comment": "first post!", "content_id": cid},
    )
    expected = {
        "status": "SUCCESS",
        "message": f"comment created and associated with content_id {cid}",
    }
    check("legacy create (alice)", status == 200 and body == expected, (status, body))
    status, _, body = call(
        base,
        "POST",
        "/api/comment/new",
        {"email": "bob@example.com", "comment": "I agree", "content_id": cid},
    )
    check("legacy create (bob)", status == 200 and body.get("status") == "SUCCESS", body)
    status, _, body = call(base, "GET", f"/api/comment/list/{cid}")
    check(
        "legacy list: both, oldest first, emails masked",
        status == 200
        and body
        == [
            {"email": "a***@example.com", "comment": "first post!"},
            {"email": "b***@example.com", "comment": "I agree"},
        ],
        (status, body),
    )
    missing = f"{cid}-none"
    status, _, body = call(base, "GET", f"/api/comment/list/{missing}")
    check(
        "legacy list of a content without comments: 404 NOT-FOUND",
        status == 404
        and body == {"status": "NOT-FOUND", "message": f"content_id {missing} not found"},
        (status, body),
    )
    status, _, body = call(base, "POST", "/api/comment/new", {"email": "x@example.com"})
    check("legacy create with missing fields: 400 BAD-REQUEST", status == 400, (status, body))

    # --- v1 ---
    status, headers, created = call(
        base,
        "POST",
        f"/api/v1/contents/{cid}/comments",
        {"body": "Nice piece", "author_name": "Alice", "email": "alice@example.com"},
    )
    check("v1 create: 201 + Location", status == 201 and "location" in headers, (status, created))
    if status == 201:
        check("v1 never shows an email", "alice@example.com" not in json.dumps(created), created)
        location = headers["location"]
        path = location[location.index("/api/") :]
        status, _, one = call(base, "GET", path)
        check(
            "v1 get the created comment",
            status == 200 and one["body"] == "Nice piece" and one["author"]["name"] == "Alice",
            (status, one),
        )
        status, _, _ = call(base, "PATCH", path, {"body": "edited"})
        check("v1 edit without a credential: 401", status == 401, status)
        status, _, _ = call(base, "DELETE", path)
        check("v1 delete without a credential: 401", status == 401, status)
    status, _, page = call(base, "GET", f"/api/v1/contents/{cid}/comments?limit=2&order=oldest")
    check(
        "v1 list: a page of 2 with a next cursor",
        status == 200 and len(page["items"]) == 2 and page["next_cursor"],
        (status, page),
    )
    status, _, counts = call(base, "GET", f"/api/v1/counts?content_id={cid}&content_id={missing}")
    check(
        "v1 counts",
        status == 200 and counts == {"counts": {cid: 3, missing: 0}},
        (status, counts),
    )
    status, headers, problem = call(base, "POST", f"/api/v1/contents/{cid}/comments", {"body": ""})
    check(
        "v1 validation error is problem+json 400",
        status == 400 and headers.get("content-type", "").startswith("application/problem+json"),
        (status, problem),
    )
    smoke(base)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in {"e2e", "smoke"}:
        print(__doc__, file=sys.stderr)
        return 64
    started = time.monotonic()
    {"e2e": e2e, "smoke": smoke}[argv[1]](argv[2].rstrip("/"))
    took = time.monotonic() - started
    print(f"    {argv[1]}: {len(FAILURES)} failed check(s) in {took:.1f}s")
    return min(len(FAILURES), 100)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
