"""Response headers against a real `comments-api serve`: for each operation and each status
a client can provoke, every header /openapi.json marks required on that response is there,
and every header the server sends beyond the standard ones is declared on that response.

A generated client (openapi-typescript, openapi-python-client) reads headers from the
response it was told about, not from prose: a header sent but undeclared cannot be read
through it, and one declared `required` but absent breaks it. Out of scope, as the document
says: the CORS headers (none here, CORS_ORIGINS is unset) and the browser security headers.
"""

from __future__ import annotations

import gzip
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from jsonschema import ValidationError

from comments_api.app import SECURITY_HEADERS
from comments_api.contract.headers import OPS_ROUTES
from comments_api.contract.paths import example_path
from comments_api.identity.credentials import (
    SCOPE_ADMIN,
    SCOPE_MODERATE,
    SCOPE_WRITE,
    generate_api_key,
)
from comments_api.store.repository import Repository, make_engine, migrate

from .authkit import AUDIENCE, ISSUER, bearer, hs_signer
from .support import ServiceProcess
from .test_openapi import METHODS, check, resolve
from .test_serve_server import raw_request

# Headers of HTTP itself, which no operation declares.
STANDARD = {"content-type", "content-length", "date", "server", "connection", "keep-alive"}
# Directives to browsers, described once for every answer (docs/security.md): the app's
# SECURITY_HEADERS and the pages' and widget scripts' cross-origin policies.
BROWSER = {name.lower() for name, _ in SECURITY_HEADERS} | {
    "cross-origin-opener-policy",
    "cross-origin-resource-policy",
}
MAX_BODY = 2048
READS_PER_MINUTE = 40
ANONYMOUS_WRITES_PER_MINUTE = 4


def problems_with(spec: dict[str, Any], path: str, method: str, answer: Any) -> list[str]:
    """What breaks the document in ``answer``'s headers (empty: nothing)."""
    responses = spec["paths"][path][method]["responses"]
    status = str(answer.status_code)
    key = status if status in responses else "default"
    where = f"{method.upper()} {path} {status}"
    if key == "default" and not 400 <= answer.status_code < 600:
        return [f"{where}: status not documented"]
    declared = {
        name.lower(): resolve(spec, value)
        for name, value in resolve(spec, responses[key]).get("headers", {}).items()
    }
    sent = {name.lower(): value for name, value in answer.headers.items()}
    found = [
        f"{where}: {name} is required but was not sent"
        for name, doc in declared.items()
        if doc.get("required") and name not in sent
    ]
    for name, value in sent.items():
        if name in STANDARD or name in BROWSER:
            continue
        if name not in declared:
            found.append(f"{where}: sends {name}: {value!r}, not declared on this response")
            continue
        schema = declared[name]["schema"]
        try:
            check(spec, schema, int(value) if schema.get("type") == "integer" else value)
        except (ValueError, ValidationError) as exc:  # reported with the others below
            found.append(f"{where}: {name}: {value!r} does not match its schema: {exc}")
    return found


class Caller:
    """Requests to the service, each from its own client address (TRUSTED_PROXIES=1) so
    that only the calls meant to use up a budget do; each answer is checked and kept."""

    def __init__(self, base: str, spec: dict[str, Any]) -> None:
        self.base = base
        self.spec = spec
        self.addresses: Iterator[str] = (f"10.{i // 250}.{i % 250}.1" for i in itertools.count())
        self.found: list[str] = []
        self.seen: set[tuple[str, str, int]] = set()

    def __call__(
        self,
        op: tuple[str, str],
        url: str,
        expect: int,
        *,
        address: str | None = None,
        headers: dict[str, str] | None = None,
        send: str | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Call ``url`` as operation ``op`` (with another method: ``send``)."""
        path, method = op
        sent = {"X-Forwarded-For": address or next(self.addresses), **(headers or {})}
        answer = requests.request(
            send or method, self.base + url, headers=sent, timeout=10, **kwargs
        )
        assert answer.status_code == expect, (method, url, answer.status_code, answer.text[:300])
        self.seen.add((path, method, expect))
        self.found += problems_with(self.spec, path, method, answer)
        return answer


LEGACY_NEW = ("/api/comment/new", "post")
LEGACY_LIST = ("/api/comment/list/{content_id}", "get")
CREATE = ("/api/v1/contents/{content_id}/comments", "post")
LIST = ("/api/v1/contents/{content_id}/comments", "get")
GET_ONE = ("/api/v1/comments/{comment_id}", "get")
EDIT = ("/api/v1/comments/{comment_id}", "patch")
DELETE = ("/api/v1/comments/{comment_id}", "delete")
CONFIG = ("/api/v1/config", "get")
COUNTS = ("/api/v1/counts", "get")
PENDING = ("/api/v1/moderation/pending", "get")
LISTING = ("/api/v1/moderation/comments", "get")
BULK = ("/api/v1/moderation/comments", "post")
BANS = ("/api/v1/moderation/bans", "get")
BAN = ("/api/v1/moderation/bans", "post")
UNBAN = ("/api/v1/moderation/bans/{target}", "delete")
AUDIT = ("/api/v1/admin/audit-log", "get")
NOT_A_TAG = {"If-Match": '"not-a-current-tag"'}
GZIP_JSON = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[ServiceProcess, dict[str, str]]]:
    url = f"sqlite:///{tmp_path / 'comments.db'}"
    engine = make_engine(url)
    migrate(engine)
    keys = {}
    for scope in (SCOPE_ADMIN, SCOPE_MODERATE, SCOPE_WRITE):
        new = generate_api_key()
        Repository(engine).add_api_key(new.key_id, scope, new.key_hash, [scope])
        keys[scope] = new.key
    engine.dispose()
    signer = hs_signer()
    keys["author"] = signer.token("author-1")
    keys["reader"] = signer.token("reader-2")
    env = {
        "DATABASE_URL": url,
        "RATELIMIT_ENABLED": "true",  # memory storage: one worker, one set of counters
        "RATELIMIT_READ": f"{READS_PER_MINUTE}/minute",
        "RATELIMIT_ANONYMOUS_WRITE": f"{ANONYMOUS_WRITES_PER_MINUTE}/minute",
        "RATELIMIT_AUTHENTICATED_WRITE": "1000/minute",
        "TRUSTED_PROXIES": "1",
        "THREAD_AUTHOR_MAX": "2",
        "MAX_BODY_BYTES": str(MAX_BODY),
        "LEGACY_LIST_MAX": "2",  # a longer legacy thread is cut: X-Comments-Truncated, Link
        "JWT_HS256_SECRET": signer.key,
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE,
    }
    with ServiceProcess(env, tmp_path, workers=1) as service:
        yield service, keys


def test_every_header_sent_is_declared_and_every_required_one_sent(served):
    service, keys = served
    spec = requests.get(f"{service.base}/openapi.json", timeout=10).json()
    call = Caller(service.base, spec)
    admin, author, reader = (
        bearer(keys[SCOPE_ADMIN]),
        bearer(keys["author"]),
        bearer(keys["reader"]),
    )

    # Every operation: a bad credential (401) and a token in the URL (400), before any view.
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                url = example_path(path) + ("?content_id=1" if path == COUNTS[0] else "")
                call((path, method), url, 401, headers=bearer("not-a-credential"))
                joiner = "&" if "?" in url else "?"
                call((path, method), f"{url}{joiner}access_token=x", 400)

    # The legacy API.
    legacy = {"email": "ann@example.com", "comment": "first post", "content_id": "h1"}
    call(LEGACY_NEW, "/api/comment/new", 200, json=legacy)
    call(LEGACY_NEW, "/api/comment/new", 409, json=legacy)
    call(LEGACY_NEW, "/api/comment/new", 400, json={**legacy, "comment": " "})
    call(LEGACY_NEW, "/api/comment/new", 415, data="x", headers={"Content-Type": "text/plain"})
    # A compressed body: its 415 names the one coding taken (Accept-Encoding), undeclared once.
    call(LEGACY_NEW, "/api/comment/new", 415, data=gzip.compress(b"{}"), headers=GZIP_JSON)
    call(LEGACY_NEW, "/api/comment/new", 413, json={**legacy, "comment": "x" * MAX_BODY})
    listed = call(LEGACY_LIST, "/api/comment/list/h1", 200)
    call(
        LEGACY_LIST, "/api/comment/list/h1", 304, headers={"If-None-Match": listed.headers["ETag"]}
    )
    call(LEGACY_LIST, "/api/comment/list/h1", 412, headers=NOT_A_TAG)
    call(LEGACY_LIST, "/api/comment/list/nothing-here", 404)
    call(LEGACY_LIST, "/api/comment/list/%01", 400)

    # v1 creates, and their replays.
    thread = "/api/v1/contents/h1/comments"
    first = call(CREATE, thread, 201, json={"body": "one"}, headers=author)
    second = call(CREATE, thread, 201, json={"body": "two"}, headers=author)
    keyed = {"Idempotency-Key": "b7d7c4d6-0d7e-4f7e-9a53-4d5e2b8f7a10"}
    call(CREATE, thread, 201, json={"body": "keyed"}, headers=keyed)
    replay = call(CREATE, thread, 201, json={"body": "keyed"}, headers=keyed)
    assert replay.headers["Idempotent-Replayed"] == "true"
    call(CREATE, thread, 422, json={"body": "other"}, headers=keyed)
    call(CREATE, thread, 400, json={"body": "  "})
    duplicate = {"body": "same again", "email": "dup@example.com"}
    call(CREATE, thread, 201, json=duplicate)
    call(CREATE, thread, 409, json=duplicate)
    call(CREATE, thread, 412, json={"body": "three"}, headers={**author, **NOT_A_TAG})
    call(CREATE, thread, 413, json={"body": "x" * MAX_BODY})
    call(CREATE, thread, 415, data="x", headers={"Content-Type": "text/plain"})
    call(CREATE, thread, 415, data=gzip.compress(b'{"body": "x"}'), headers=GZIP_JSON)
    call(CREATE, thread, 403, json={"body": "x"}, headers=bearer(keys[SCOPE_MODERATE]))
    flood = {"email": "flood@example.com"}
    for n in (1, 2):
        call(CREATE, "/api/v1/contents/h2/comments", 201, json={"body": f"f{n}", **flood})
    call(CREATE, "/api/v1/contents/h2/comments", 429, json={"body": "f3", **flood})

    # v1 reads, and the legacy list of a thread now longer than LEGACY_LIST_MAX.
    truncated = call(LEGACY_LIST, "/api/comment/list/h1", 200)
    assert truncated.headers["X-Comments-Truncated"] == "true"
    assert 'rel="alternate"' in truncated.headers["Link"]
    page = call(LIST, f"{thread}?limit=1", 200)
    assert "Link" in page.headers
    call(LIST, f"{thread}?limit=1", 304, headers={"If-None-Match": page.headers["ETag"]})
    call(LIST, thread, 412, headers=NOT_A_TAG)
    call(LIST, f"{thread}?limit=1000", 400)
    one = first.headers["Location"]
    call(GET_ONE, one, 200)
    call(GET_ONE, one, 412, headers=NOT_A_TAG)
    call(GET_ONE, "/api/v1/comments/999999", 404)
    call(CONFIG, "/api/v1/config", 200)
    counts = call(COUNTS, "/api/v1/counts?content_id=h1", 200)
    call(
        COUNTS,
        "/api/v1/counts?content_id=h1",
        304,
        headers={"If-None-Match": counts.headers["ETag"]},
    )
    call(COUNTS, "/api/v1/counts?content_id=h1", 412, headers=NOT_A_TAG)
    call(COUNTS, "/api/v1/counts", 400)

    # One comment's edit and delete.
    call(EDIT, one, 200, json={"body": "one, edited"}, headers=author)
    call(EDIT, one, 400, json={"body": " "}, headers=author)
    call(EDIT, one, 401, json={"body": "x"})
    call(EDIT, one, 403, json={"body": "x"}, headers=reader)
    call(EDIT, "/api/v1/comments/999999", 404, json={"body": "x"}, headers=author)
    call(EDIT, one, 412, json={"body": "x"}, headers={**author, **NOT_A_TAG})
    call(EDIT, one, 413, json={"body": "x" * MAX_BODY}, headers=author)
    call(EDIT, one, 415, data="x", headers={**author, "Content-Type": "text/plain"})
    call(DELETE, one, 401)
    call(DELETE, one, 403, headers=reader)
    call(DELETE, one, 412, headers={**author, **NOT_A_TAG})
    call(DELETE, "/api/v1/comments/999999", 404, headers=author)
    call(DELETE, second.headers["Location"], 204, headers=author)

    # Moderation and admin.
    ban = "/api/v1/moderation/bans"
    banned = call(BAN, ban, 201, json={"email": "troll@example.com"}, headers=admin)
    call(BAN, ban, 200, json={"email": "troll@example.com"}, headers=admin)
    call(BAN, ban, 201, json={"subject": "troll-2"}, headers=admin)
    call(BAN, ban, 400, json={}, headers=admin)
    call(BAN, ban, 412, json={"subject": "x"}, headers={**admin, **NOT_A_TAG})
    call(CREATE, thread, 403, json={"body": "hi", "email": "troll@example.com"})
    call(LEGACY_NEW, "/api/comment/new", 403, json={**legacy, "email": "troll@example.com"})
    bans = call(BANS, f"{ban}?limit=1", 200, headers=admin)
    assert "Link" in bans.headers
    call(BANS, f"{ban}?cursor=x", 400, headers=admin)
    call(BANS, ban, 412, headers={**admin, **NOT_A_TAG})
    call(UNBAN, banned.headers["Location"], 204, headers=admin)
    call(UNBAN, banned.headers["Location"], 404, headers=admin)
    call(UNBAN, f"{ban}/nobody", 400, headers=admin)
    call(UNBAN, f"{ban}/sub:troll-2", 412, headers={**admin, **NOT_A_TAG})
    pending = "/api/v1/moderation/pending"
    call(PENDING, pending, 200, headers=admin)
    call(PENDING, f"{pending}?cursor=x", 400, headers=admin)
    call(PENDING, pending, 401)
    call(PENDING, pending, 403, headers=bearer(keys[SCOPE_WRITE]))
    call(PENDING, pending, 412, headers={**admin, **NOT_A_TAG})
    listing = "/api/v1/moderation/comments"
    published = call(
        LISTING, f"{listing}?status=published&content_id=h1&limit=1", 200, headers=admin
    )
    assert "Link" in published.headers
    call(LISTING, f"{listing}?status=nope", 400, headers=admin)
    call(LISTING, listing, 412, headers={**admin, **NOT_A_TAG})
    target = {"action": "hide", "ids": [first.json()["id"]]}
    call(BULK, listing, 200, json=target, headers=admin)
    call(BULK, listing, 400, json={"action": "nuke", "ids": []}, headers=admin)
    call(BULK, listing, 412, json=target, headers={**admin, **NOT_A_TAG})
    call(BULK, listing, 413, json={**target, "x": "x" * MAX_BODY}, headers=admin)
    call(BULK, listing, 415, data="x", headers={**admin, "Content-Type": "text/plain"})
    audit = "/api/v1/admin/audit-log"
    log = call(AUDIT, f"{audit}?limit=1", 200, headers=admin)
    assert "Link" in log.headers
    call(AUDIT, f"{audit}?limit=0", 400, headers=admin)
    call(AUDIT, audit, 403, headers=bearer(keys[SCOPE_MODERATE]))
    call(AUDIT, audit, 412, headers={**admin, **NOT_A_TAG})

    # The pages, files and probes; a method a path does not take (405, `default`).
    for path, item in spec["paths"].items():
        op = item.get("get")
        if op is None or path.startswith("/api/"):
            continue
        plain = call((path, "get"), example_path(path), 200)
        if "304" in op["responses"]:
            condition = {"If-None-Match": plain.headers["ETag"]}
            call((path, "get"), example_path(path), 304, headers=condition)
    call(("/widget/demo", "get"), "/widget/demo?lang=xx", 400)
    call(COUNTS, "/api/v1/counts?content_id=h1", 405, send="PUT")

    # Budgets used up, last: an anonymous writer's, a reader's, a moderator's reads.
    writer = "192.0.2.10"
    for n in range(ANONYMOUS_WRITES_PER_MINUTE):
        call(CREATE, "/api/v1/contents/h3/comments", 201, json={"body": f"w{n}"}, address=writer)
    call(CREATE, "/api/v1/contents/h3/comments", 429, json={"body": "over"}, address=writer)
    call(LEGACY_NEW, "/api/comment/new", 429, json=legacy, address=writer)
    for who, op, url, headers in (
        ("192.0.2.20", COUNTS, "/api/v1/counts?content_id=h1", {}),
        ("192.0.2.30", BANS, ban, admin),
    ):
        for _ in range(READS_PER_MINUTE):
            call(op, url, 200, address=who, headers=headers)
        call(op, url, 429, address=who, headers=headers)
    # The pages, the files and the document draw on the read budget too: their 429 carries
    # Retry-After, which their `default` did not declare (they listed no 429).
    for path, item in spec["paths"].items():
        if "get" in item and not path.startswith("/api/") and path not in OPS_ROUTES:
            call((path, "get"), example_path(path), 429, address="192.0.2.20")

    assert not call.found, "\n".join(sorted(set(call.found)))
    assert len(call.seen) > 120, len(call.seen)


class _Raw:
    """A raw answer (tests/test_serve_server.py's ``raw_request``) as ``problems_with``
    reads one."""

    def __init__(self, answer: tuple[int, dict[str, str], bytes]) -> None:
        self.status_code, self.headers, _ = answer


def test_the_http_servers_own_400s_lack_only_what_the_document_lets_them(served):
    """The worker answers a malformed request itself, before the app: a header that must
    be sent once sent twice (Idempotency-Key on a create), no Host, a bare LF. Such a 400
    carries no rate-limit headers (the limiter never saw it), yet the document declared
    X-RateLimit-* required on every 400 of a rate-limited operation."""
    service, _keys = served
    spec = requests.get(f"{service.base}/openapi.json", timeout=10).json()
    create = (
        b"POST /api/v1/contents/h1/comments HTTP/1.1\r\nHost: a\r\n"
        b"Content-Type: application/json\r\nIdempotency-Key: k1\r\nIdempotency-Key: k2\r\n"
        b'Content-Length: 13\r\nConnection: close\r\n\r\n{"body": "x"}'
    )
    counts = b"GET /api/v1/counts?content_id=1 HTTP/1.1\r\n"
    found = []
    for (path, method), request in (
        (CREATE, create),
        (COUNTS, counts + b"Connection: close\r\n\r\n"),  # no Host
        (COUNTS, counts + b"Host: a\nConnection: close\r\n\r\n"),  # a bare LF
    ):
        answer = _Raw(raw_request(service.port, request))
        assert answer.status_code == 400, (path, answer.headers)
        assert "x-ratelimit-limit" not in answer.headers  # the server's own, not the app's
        found += problems_with(spec, path, method, answer)
    assert not found, "\n".join(found)


def test_an_edits_415_names_the_patch_types_in_accept_patch(served):
    """RFC 5789, section 2.2: a PATCH refused for its media type says in Accept-Patch which
    patch formats the comment takes (and Accept, as every 415 does); a create's 415 has no
    Accept-Patch to give. Nothing is edited."""
    service, keys = served
    author = bearer(keys["author"])
    created = requests.post(
        f"{service.base}/api/v1/contents/patches/comments",
        json={"body": "mine"},
        headers=author,
        timeout=10,
    )
    assert created.status_code == 201, created.text
    one = created.headers["Location"]
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        edit = requests.patch(
            service.base + one,
            data=b'{"body": "edited"}',
            headers={**author, "Content-Type": content_type},
            timeout=10,
        )
        assert edit.status_code == 415, edit.text
        assert edit.headers.get("Accept-Patch") == (
            "application/json, application/merge-patch+json"
        )
        assert edit.headers.get("Accept") == "application/json"
    create = requests.post(
        f"{service.base}/api/v1/contents/patches/comments",
        data=b"{}",
        headers={"Content-Type": "text/plain"},
        timeout=10,
    )
    assert create.status_code == 415, create.text
    assert "Accept-Patch" not in create.headers
    assert requests.get(service.base + one, timeout=10).json()["body"] == "mine"
