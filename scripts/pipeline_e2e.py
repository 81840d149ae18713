"""End-to-end and smoke checks that scripts/deploy.sh runs against an environment.

    python3 scripts/pipeline_e2e.py e2e   http://127.0.0.1:PORT   # staging gate
    python3 scripts/pipeline_e2e.py smoke http://127.0.0.1:PORT   # after a production rollout

Standard library only, so it runs from any Python 3.11 (the dev venv or the system one).
`e2e` replays the README's curl walkthrough (on a content id of its own, so reruns against a
long-lived database stay exact) and the v1 API's main calls; `smoke` is short and writes
nothing. Every failed check is one FAIL line: the check, the request and what came back (a
status, a content type and the start of the body, or no answer at all). A request that gets
no answer (refused, reset, timed out) stops the run there: the checks after it would only
wait for the same server. The exit status is the number of failures (max 100).
"""

from __future__ import annotations

import http.client
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

FAILURES: list[str] = []
# The last request and what came back, as a FAIL line names them.
LAST = ["no request yet"]


class NoAnswer(Exception):
    """A request that got no HTTP answer at all."""


def call(
    base: str, method: str, path: str, body: object | None = None
) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    if not base.startswith(("http://", "https://")):
        raise SystemExit(f"not an http(s) URL: {base}")
    url = base + path
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http only
                status, headers, raw = response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            status, headers, raw = exc.code, exc.headers, exc.read()
    except (OSError, http.client.HTTPException) as exc:
        # Refused, reset, cut mid-answer, timed out, not HTTP: URLError wraps the reason.
        reason = getattr(exc, "reason", None) or exc
        LAST[0] = f"{method} {url} -> no answer: {type(reason).__name__}: {reason}"
        raise NoAnswer(LAST[0]) from exc
    # haproxy sends header names in lower case: compare them that way.
    lowered = {k.lower(): v for k, v in headers.items()}
    text = raw.decode(errors="replace")
    kind = lowered.get("content-type", "no content type")
    LAST[0] = f"{method} {url} -> {status} {kind}: {text[:200]!r}"
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = text
    return status, lowered, payload


def report(name: str, ok: bool, detail: str) -> None:
    print(f"    {'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail}"[:400]))
    if not ok:
        FAILURES.append(name)


@contextmanager
def checking(name: str) -> Iterator[Callable[[bool], None]]:
    """One check: its requests and `expect(condition)` inside the block. An answer of
    another shape (HTML, a list for an object, a missing key) fails the check, named, with
    what came back; no answer at all fails it and stops the run (NoAnswer)."""
    outcome: list[bool] = []
    try:
        yield outcome.append
    except NoAnswer as exc:
        report(name, False, str(exc))
        raise
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        report(name, False, f"unexpected answer: {LAST[0]}")
        return
    report(name, bool(outcome) and all(outcome), LAST[0])


def smoke(base: str) -> None:
    with checking("GET /healthz is 200") as expect:
        status, _, body = call(base, "GET", "/healthz")
        expect(status == 200)
    with checking("GET /readyz is 200 ready") as expect:
        status, _, body = call(base, "GET", "/readyz")
        expect(status == 200 and body.get("status") == "ready")
    unknown = f"smoke-{uuid.uuid4().hex[:12]}"
    with checking("legacy list of an unknown content is a JSON 404") as expect:
        status, headers, body = call(base, "GET", f"/api/comment/list/{unknown}")
        expect(
            status == 404
            and "json" in headers.get("content-type", "")
            and body["status"] == "NOT-FOUND"
        )
    with checking("v1 list answers an empty page") as expect:
        status, _, body = call(base, "GET", f"/api/v1/contents/{unknown}/comments")
        expect(status == 200 and body.get("items") == [])
    with checking("the OpenAPI document is served") as expect:
        status, _, body = call(base, "GET", "/openapi.json")
        expect(status == 200 and "openapi" in body)
    with checking("the widget's script is served") as expect:
        status, headers, _ = call(base, "GET", "/widget/comments.js")
        expect(status == 200 and "javascript" in headers.get("content-type", ""))


def e2e(base: str) -> None:
    cid = f"e2e-{uuid.uuid4().hex[:12]}"
    # --- the README's walkthrough (legacy API) ---
    with checking("legacy create (alice)") as expect:
        status, _, body = call(
            base,
            "POST",
            "/api/comment/new",
            {"email": "alice@example.com", "comment": "first post!", "content_id": cid},
        )
        expect(
            status == 200
            and body
            == {
                "status": "SUCCESS",
                "message": f"comment created and associated with content_id {cid}",
            }
        )
    with checking("legacy create (bob)") as expect:
        status, _, body = call(
            base,
            "POST",
            "/api/comment/new",
            {"email": "bob@example.com", "comment": "I agree", "content_id": cid},
        )
        expect(status == 200 and body.get("status") == "SUCCESS")
    with checking("legacy list: both, oldest first, emails masked") as expect:
        status, _, body = call(base, "GET", f"/api/comment/list/{cid}")
        expect(
            status == 200
            and body
            == [
                {"email": "a***@example.com", "comment": "first post!"},
                {"email": "b***@example.com", "comment": "I agree"},
            ]
        )
    missing = f"{cid}-none"
    with checking("legacy list of a content without comments: 404 NOT-FOUND") as expect:
        status, _, body = call(base, "GET", f"/api/comment/list/{missing}")
        expect(
            status == 404
            and body == {"status": "NOT-FOUND", "message": f"content_id {missing} not found"}
        )
    with checking("legacy create with missing fields: 400 BAD-REQUEST") as expect:
        status, _, body = call(base, "POST", "/api/comment/new", {"email": "x@example.com"})
        expect(status == 400)

    # --- v1 ---
    with checking("v1 create: 201 + Location") as expect:
        status, headers, created = call(
            base,
            "POST",
            f"/api/v1/contents/{cid}/comments",
            {"body": "Nice piece", "author_name": "Alice", "email": "alice@example.com"},
        )
        expect(status == 201 and "location" in headers)
    if status == 201 and "location" in headers:
        with checking("v1 never shows an email") as expect:
            expect("alice@example.com" not in json.dumps(created))
        # The path of the Location (absolute or not), as a request to `base` takes it.
        path = urllib.parse.urlsplit(headers["location"])._replace(scheme="", netloc="").geturl()
        with checking("v1 get the created comment") as expect:
            status, _, one = call(base, "GET", path)
            expect(
                status == 200 and one["body"] == "Nice piece" and one["author"]["name"] == "Alice"
            )
        with checking("v1 edit without a credential: 401") as expect:
            status, _, _ = call(base, "PATCH", path, {"body": "edited"})
            expect(status == 401)
        with checking("v1 delete without a credential: 401") as expect:
            status, _, _ = call(base, "DELETE", path)
            expect(status == 401)
    with checking("v1 list: a page of 2 with a next cursor") as expect:
        status, _, page = call(base, "GET", f"/api/v1/contents/{cid}/comments?limit=2&order=oldest")
        expect(status == 200 and len(page["items"]) == 2 and bool(page["next_cursor"]))
    with checking("v1 counts") as expect:
        status, _, counts = call(
            base, "GET", f"/api/v1/counts?content_id={cid}&content_id={missing}"
        )
        expect(status == 200 and counts == {"counts": {cid: 3, missing: 0}})
    with checking("v1 validation error is problem+json 400") as expect:
        status, headers, _ = call(base, "POST", f"/api/v1/contents/{cid}/comments", {"body": ""})
        expect(
            status == 400 and headers.get("content-type", "").startswith("application/problem+json")
        )
    smoke(base)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in {"e2e", "smoke"}:
        print(__doc__, file=sys.stderr)
        return 64
    started = time.monotonic()
    try:
        {"e2e": e2e, "smoke": smoke}[argv[1]](argv[2].rstrip("/"))
    except NoAnswer:
        print("    stopped there: no answer, so the remaining checks did not run")
    took = time.monotonic() - started
    print(f"    {argv[1]}: {len(FAILURES)} failed check(s) in {took:.1f}s")
    return min(len(FAILURES), 100)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
