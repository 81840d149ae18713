"""The HTTP edge as a careless or hostile client meets it: what the other API tests do not
cover (an app mounted under a prefix, conditional requests on writes, odd query strings).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from comments_api.app import create_app
from comments_api.identity.credentials import SCOPE_ADMIN, SCOPE_MODERATE
from comments_api.settings import Settings
from comments_api.web.protection import CORS_ALLOW_METHODS

from .authkit import api_key, bearer
from .support import ServiceProcess
from .test_serve_server import raw_request

PREFIX = "/comments"


def mounted(app: Flask, monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    """A client of the app as `comments-api serve` runs it with ``SCRIPT_NAME=/comments``:
    gunicorn reads the variable, and puts it in each request's environ."""
    monkeypatch.setenv("SCRIPT_NAME", PREFIX)
    # The test client builds each request's SCRIPT_NAME from APPLICATION_ROOT.
    app.config["APPLICATION_ROOT"] = PREFIX
    return app.test_client()


def test_links_to_pages_keep_the_prefix_the_app_is_mounted_at(make_app, monkeypatch):
    client = mounted(make_app(), monkeypatch)
    for i in range(3):
        created = client.post("/api/v1/contents/a%2Fb/comments", json={"body": f"c{i}"})
        assert created.status_code == 201
        # url_for writes the Location under the prefix; the hand-written Link must agree.
        assert created.headers["Location"].startswith(f"{PREFIX}/api/v1/comments/")
    first = client.get("/api/v1/contents/a%2Fb/comments", query_string={"limit": 2})
    assert first.status_code == 200
    cursor = first.json["next_cursor"]
    link = f"<{PREFIX}/api/v1/contents/a%2Fb/comments?limit=2&order=oldest&cursor={cursor}>"
    assert first.headers["Link"] == f'{link}; rel="next"'
    # Following the link (minus the prefix, which the client's base URL adds) is page 2.
    target = first.headers["Link"][1:].partition(">")[0].removeprefix(PREFIX)
    second = client.get(target)
    assert second.status_code == 200
    assert [c["body"] for c in second.json["items"]] == ["c2"]


def test_moderation_and_audit_links_keep_the_prefix(make_app, monkeypatch):
    """The moderation listings wrote their Link from the app's root, and the audit log
    wrote none: under a mount prefix, following next page's Link missed the app."""
    app = make_app(moderation_mode="pre")
    client = mounted(app, monkeypatch)
    admin = bearer(api_key(app, SCOPE_ADMIN, SCOPE_MODERATE))
    for i in range(3):
        created = client.post("/api/v1/contents/m/comments", json={"body": f"c{i}"})
        assert created.status_code == 202
    for path, query in (
        ("/api/v1/moderation/pending", {}),
        ("/api/v1/moderation/comments", {"status": "pending"}),
    ):
        first = client.get(path, query_string={**query, "limit": 2}, headers=admin)
        assert first.status_code == 200
        link = first.headers["Link"]
        assert link.startswith(f"<{PREFIX}{path}?"), link
        target = link[1:].partition(">")[0].removeprefix(PREFIX)
        second = client.get(target, headers=admin)
        assert second.status_code == 200
        assert [c["body"] for c in second.json["items"]] == ["c2"]
    ids = [c["id"] for c in client.get("/api/v1/moderation/pending", headers=admin).json["items"]]
    for comment_id in ids:  # three audit entries, one per approval
        approve = {"action": "approve", "ids": [comment_id]}
        assert client.post("/api/v1/moderation/comments", json=approve, headers=admin).json[
            "changed"
        ] == [comment_id]
    first = client.get("/api/v1/admin/audit-log", query_string={"limit": 2}, headers=admin)
    assert first.status_code == 200
    cursor = first.json["next_cursor"]
    assert first.headers["Link"] == (
        f'<{PREFIX}/api/v1/admin/audit-log?limit=2&cursor={cursor}>; rel="next"'
    )
    target = first.headers["Link"][1:].partition(">")[0].removeprefix(PREFIX)
    last = client.get(target, headers=admin)
    assert [e["comment_ids"] for e in last.json["items"]] == [[ids[0]]]
    assert "Link" not in last.headers


def test_a_truncated_legacy_list_links_to_v1_under_the_prefix(make_app, monkeypatch):
    client = mounted(make_app(legacy_list_max=1), monkeypatch)
    for i in range(2):
        body = {"email": f"r{i}@example.com", "comment": f"c{i}", "content_id": "big"}
        assert client.post("/api/comment/new", json=body).status_code == 200
    response = client.get("/api/comment/list/big")
    assert response.status_code == 200
    assert response.headers["X-Comments-Truncated"] == "true"
    assert response.headers["Link"] == f'<{PREFIX}/api/v1/contents/big/comments>; rel="alternate"'


def test_a_requests_own_root_path_never_reaches_a_cached_link(make_app):
    # gunicorn takes a SCRIPT_NAME request header from a trusted forwarder; the page's Link
    # is cached with it and served to everyone, so it must not come from one request.
    app = make_app()
    client = app.test_client()
    for i in range(2):
        assert client.post("/api/v1/contents/a/comments", json={"body": f"c{i}"}).status_code == 201
    app.config["APPLICATION_ROOT"] = "/elsewhere"
    first = client.get("/api/v1/contents/a/comments", query_string={"limit": 1})
    app.config["APPLICATION_ROOT"] = "/"
    again = client.get("/api/v1/contents/a/comments", query_string={"limit": 1})
    for response in (first, again):
        assert response.status_code == 200
        assert response.headers["Link"].startswith("</api/v1/contents/a/comments?limit=1&")


def test_head_answers_405_with_the_headers_of_get(client):
    # HEAD must carry GET's header fields (RFC 9110, section 9.3.2): a 405 whose detail
    # named the method was one byte longer than GET's, so its Content-Length was not GET's.
    # (The ban path was a second case until it answered GET: one ban, looked up.)
    for path in ("/api/comment/new",):
        get, head = client.get(path), client.head(path)
        assert get.status_code == head.status_code == 405
        assert head.data == b""
        for name in ("Content-Length", "Content-Type", "Allow"):
            assert head.headers[name] == get.headers[name], (path, name)


def test_a_percent_sign_that_is_no_escape_stays_text(client):
    # docs/client-input.md: only escapes that are not UTF-8 are refused; "%zz" and "50%"
    # are text, the same contents as their encoded spellings "%25zz" and "50%25".
    body = {"email": "a@example.com", "comment": "x", "content_id": "%zz"}
    assert client.post("/api/comment/new", json=body).status_code == 200
    for path in ("/api/comment/list/%zz", "/api/comment/list/%25zz"):
        assert client.get(path).json == [{"comment": "x", "email": "a***@example.com"}]
    counts = client.get("/api/v1/counts?content_id=%zz&content_id=50%&content_id=50%25")
    assert counts.status_code == 200
    assert counts.json == {"counts": {"%zz": 1, "50%": 0}}
    assert client.get("/api/v1/counts?content_id=%FF").status_code == 400


ORIGIN = "https://news.example"


def test_a_304_from_real_gunicorn_carries_what_its_200_would(tmp_path: Path):
    """RFC 9110, 15.4.5: a 304 must carry the ETag, Cache-Control and Vary its 200 would,
    and no body; with CORS on, the allowed origin's headers too (a browser drops a 304 it
    may not read). Also for HEAD, and for If-None-Match sent as two header fields
    (gunicorn joins them: the lean request reader declines repeated fields)."""
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
        "RATELIMIT_ENABLED": "false",
        "CORS_ORIGINS": ORIGIN,
    }
    with ServiceProcess(env, tmp_path, workers=1) as service:
        created = requests.post(
            f"{service.base}/api/v1/contents/a%2Fb/comments", json={"body": "x"}, timeout=10
        )
        assert created.status_code == 201
        for path in (
            "/api/v1/contents/a%2Fb/comments?limit=1",
            "/api/comment/list/a%2Fb",
            "/api/v1/counts?content_id=a%2Fb&content_id=c",
        ):
            full = requests.get(service.base + path, headers={"Origin": ORIGIN}, timeout=10)
            assert full.status_code == 200
            etag = full.headers["ETag"]
            for method in ("GET", "HEAD"):
                for fields in ([etag], ['"other"', f"W/{etag}"]):
                    lines = "".join(f"If-None-Match: {f}\r\n" for f in fields)
                    request = (
                        f"{method} {path} HTTP/1.1\r\nHost: a\r\nOrigin: {ORIGIN}\r\n"
                        f"{lines}Connection: close\r\n\r\n"
                    )
                    status, headers, body = raw_request(service.port, request.encode())
                    assert (status, body) == (304, b""), (path, method, fields)
                    assert headers["etag"] == etag
                    for name in ("Cache-Control", "Vary", "Access-Control-Allow-Origin"):
                        assert headers[name.lower()] == full.headers[name], (path, name)


def test_if_none_match_star_on_a_read_that_exists_is_304(tmp_path: Path):
    """RFC 9110, 13.1.2 and 13.2.2: ``If-None-Match: *`` is false when the target has a
    current representation, and a GET or HEAD must then answer 304. It was ignored (a full
    200), though a create on the same list treats ``*`` as "it exists" (a 412). A read with
    nothing to show stays a 404: ``*`` never stands in for it."""
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}", "RATELIMIT_ENABLED": "false"}
    with ServiceProcess(env, tmp_path, workers=1) as service:
        created = requests.post(
            f"{service.base}/api/v1/contents/star/comments", json={"body": "x"}, timeout=10
        )
        assert created.status_code == 201
        for path in (
            "/api/v1/contents/star/comments",
            "/api/v1/contents/empty/comments",  # exists, empty: a 200 of no items
            "/api/comment/list/star",
            "/api/v1/counts?content_id=star",
        ):
            full = requests.get(service.base + path, timeout=10)
            assert full.status_code == 200, path
            for method in ("GET", "HEAD"):
                for field in ("*", " * "):
                    request = (
                        f"{method} {path} HTTP/1.1\r\nHost: a\r\nIf-None-Match: {field}\r\n"
                        "Connection: close\r\n\r\n"
                    )
                    status, headers, body = raw_request(service.port, request.encode())
                    assert (status, body) == (304, b""), (path, method, field, status)
                    assert headers["etag"] == full.headers["ETag"], path
                    assert headers["cache-control"] == full.headers["Cache-Control"], path
        # Nothing to show: the 404, whatever If-None-Match says.
        request = (
            b"GET /api/comment/list/nothing-here HTTP/1.1\r\nHost: a\r\n"
            b"If-None-Match: *\r\nConnection: close\r\n\r\n"
        )
        status, headers, body = raw_request(service.port, request)
        assert status == 404, status
        assert b"NOT-FOUND" in body
        # If-Match is judged first: a failing one is still the 412.
        request = (
            b'GET /api/comment/list/star HTTP/1.1\r\nHost: a\r\nIf-Match: "x"\r\n'
            b"If-None-Match: *\r\nConnection: close\r\n\r\n"
        )
        assert raw_request(service.port, request)[0] == 412


def _route_urls(app: Flask) -> list[str]:
    """One URL per route of the app, its variables filled in."""
    rules = (r.rule for r in app.url_map.iter_rules() if r.endpoint != "static")
    return sorted({re.sub(r"<[^>]+>", "1", rule) for rule in rules})


def _allow_of_options_and_405(send, url: str) -> tuple[str, str]:
    """(Allow of an OPTIONS, Allow of the 405 to a method no route serves), for ``url``."""
    options = send("OPTIONS", url)
    assert options.status_code == 200, (url, options.status_code)
    refused = send("PUT", url)
    assert refused.status_code == 405, (url, refused.status_code)
    return options.headers["Allow"], refused.headers["Allow"]


def test_options_lists_allow_as_the_405_of_the_same_route_does(client):
    """Flask's automatic OPTIONS listed Allow in its own order (`OPTIONS, GET, POST,
    HEAD`) while the 405 of the same route sorts it: one route, two answers."""
    urls = _route_urls(client.application)
    assert len(urls) >= 20
    for url in urls:
        options, refused = _allow_of_options_and_405(
            lambda method, url: client.open(url, method=method), url
        )
        assert options == refused, url
        assert options.split(", ") == sorted(options.split(", ")), url


def test_options_from_real_gunicorn_lists_allow_as_its_405(tmp_path: Path):
    """The same through `comments-api serve`; a CORS preflight still answers with its own
    Access-Control-Allow-Methods (web/protection.py), untouched."""
    database_url = f"sqlite:///{tmp_path / 'comments.db'}"
    urls = _route_urls(create_app(Settings(database_url=database_url)))
    env = {
        "DATABASE_URL": database_url,
        "RATELIMIT_ENABLED": "false",
        "CORS_ORIGINS": ORIGIN,
    }
    with ServiceProcess(env, tmp_path, workers=1) as service:

        def send(method: str, url: str) -> requests.Response:
            return requests.request(method, service.base + url, timeout=10)

        for url in urls:
            options, refused = _allow_of_options_and_405(send, url)
            assert options == refused, url
            assert options.split(", ") == sorted(options.split(", ")), url
        preflight = requests.options(
            f"{service.base}/api/v1/contents/a/comments",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
            timeout=10,
        )
        assert preflight.status_code == 204
        assert preflight.headers["Access-Control-Allow-Methods"] == CORS_ALLOW_METHODS
        assert "Allow" not in preflight.headers
