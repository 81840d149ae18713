"""Abuse guards: duplicates, per-thread flood limit, banned words, CORS, security headers."""

from __future__ import annotations

import pytest

from comments_api.settings import Settings, SettingsError

from .authkit import AUDIENCE, ISSUER, bearer, hs_signer
from .clock import FakeClock

ORIGIN = "https://www.news.example"


def post_v1(client, body="hello", content_id="a1", headers=None, **extra):
    return client.post(
        f"/api/v1/contents/{content_id}/comments", json={"body": body, **extra}, headers=headers
    )


def post_legacy(client, comment="hello", email="ann@example.com", content_id="a1"):
    return client.post(
        "/api/comment/new", json={"email": email, "comment": comment, "content_id": content_id}
    )


def test_duplicates_are_rejected_within_the_window(make_app):
    clock = FakeClock()
    client = make_app(duplicate_window=1.5, clock=clock).test_client()
    assert post_legacy(client, "Great article").status_code == 200
    dup = post_legacy(client, "Great article", email="ANN@example.com")  # same author
    assert dup.status_code == 409
    assert dup.json == {
        "status": "CONFLICT",
        "message": "you already posted this comment here; duplicates are not accepted",
    }
    v1 = post_v1(client, "Great article", email="ann@example.com")
    assert v1.status_code == 409
    assert v1.json["type"].endswith("/docs#problem-duplicate")
    # Another content, another author or another text are fine.
    assert post_legacy(client, "Great article", content_id="a2").status_code == 200
    assert post_legacy(client, "Great article", email="bob@example.com").status_code == 200
    assert post_legacy(client, "Great article!").status_code == 200
    clock.advance(1.4)
    assert post_legacy(client, "Great article").status_code == 409  # still inside
    clock.advance(0.2)
    assert post_legacy(client, "Great article").status_code == 200


def test_duplicates_of_a_signed_in_reader(make_app):
    signer = hs_signer()
    app = make_app(jwt_hs256_secret=signer.key, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    client = app.test_client()
    reader = bearer(signer.token("r-7"))
    assert post_v1(client, "same", headers=reader).status_code == 201
    assert post_v1(client, "same", headers=reader).status_code == 409
    # Posting anonymously with the reader's email is a different author key.
    assert post_v1(client, "same", email="r-7@readers.example").status_code == 201


def test_per_thread_per_author_limit(make_app):
    clock = FakeClock()
    client = make_app(thread_author_max=3, thread_author_window=60, clock=clock).test_client()
    for i in range(3):
        assert post_legacy(client, f"n{i}").status_code == 200
    flooded = post_legacy(client, "n3")
    assert flooded.status_code == 429
    assert flooded.json["status"] == "TOO-MANY-REQUESTS"
    assert "at most 3 comments" in flooded.json["message"]
    assert flooded.headers["Retry-After"] == "60"
    v1 = post_v1(client, "n4", email="ann@example.com")
    assert v1.status_code == 429
    assert v1.json["type"].endswith("too-many-comments")
    # Other threads and other authors are unaffected.
    assert post_legacy(client, "n5", content_id="a2").status_code == 200
    assert post_legacy(client, "n6", email="bob@example.com").status_code == 200
    # The window slides: once the first three are older than it, the author may post again.
    clock.advance(59)
    assert post_legacy(client, "n7").status_code == 429
    # The Retry-After obeyed to the microsecond is not refused again: the window held its
    # first instant (created_at >= now - window), where the oldest comment then still sat.
    clock.advance(1)
    assert post_legacy(client, "n7").status_code == 200


def test_the_flood_limits_retry_after_is_its_own_with_rate_limiting_on(make_app):
    # The limiter's after_request hook wrote its own window (60) over the flood guard's
    # Retry-After on every 429: a client that obeyed it was refused again.
    client = make_app(
        thread_author_max=2,
        thread_author_window=3600,
        ratelimit_enabled=True,
        ratelimit_storage_url="memory://",
        ratelimit_anonymous_write="1000/minute",
        ratelimit_read="1000/minute",
    ).test_client()
    for i in range(2):
        assert post_v1(client, f"n{i}", email="ann@example.com").status_code == 201
    flooded = post_v1(client, "n2", email="ann@example.com")
    assert flooded.status_code == 429
    assert flooded.json["type"].endswith("too-many-comments")
    assert flooded.headers["Retry-After"] == "3600"
    assert flooded.headers["X-RateLimit-Remaining"] == "997"  # the limiter still counted it


def test_the_flood_limits_retry_after_is_when_a_place_frees_up(make_app):
    # Retry-After was the whole THREAD_AUTHOR_WINDOW, however old the author's comments:
    # a place frees up when the oldest of them leaves the window.
    clock = FakeClock()
    client = make_app(thread_author_max=3, thread_author_window=3600, clock=clock).test_client()
    assert post_legacy(client, "n0").status_code == 200
    clock.advance(600)
    for i in (1, 2):
        assert post_legacy(client, f"n{i}").status_code == 200
    clock.advance(1200.5)  # the oldest leaves the window in 1799.5 s
    flooded = post_v1(client, "n3", email="ann@example.com")
    assert flooded.status_code == 429
    assert flooded.headers["Retry-After"] == "1800"  # rounded up: obeyed, it is not early
    assert post_legacy(client, "n3").headers["Retry-After"] == "1800"
    clock.advance(1799.4)
    assert post_legacy(client, "n3").headers["Retry-After"] == "1"  # at least a second
    clock.advance(0.2)
    assert post_legacy(client, "n3").status_code == 200
    # Full again: now the two posted at 600 s are the oldest, 599.9 s from leaving.
    assert post_legacy(client, "n4").headers["Retry-After"] == "600"


def test_banned_words_whole_words_case_insensitive_never_echoed(make_app):
    signer = hs_signer()
    app = make_app(
        banned_words=("darn", "heck yeah", "ÉPÉE"),
        jwt_hs256_secret=signer.key,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    client = app.test_client()
    # Any whitespace between a phrase's words: two spaces, a newline, a no-break space.
    for text in (
        "Well DARN it",
        "darn.",
        "oh heck YEAH",
        "une épée!",
        "oh Heck  yeah",
        "heck\nyeah",
        "heck\u00a0yeah",
    ):
        response = post_v1(client, text)
        assert response.status_code == 400, text
        assert response.json["errors"] == [
            {
                "field": "body",
                "message": "contains language this site does not accept; please rephrase",
            }
        ]
        assert text.lower() not in response.get_data(as_text=True).lower()
    legacy = post_legacy(client, "darn")
    assert legacy.status_code == 400
    assert "comment:" in legacy.json["message"]
    # Whole words only: these contain the letters but not the word.
    for text in ("darned socks", "undarn", "heck", "épées"):
        assert post_v1(client, text).status_code == 201, text
    # Edits go through the same filter.
    reader = bearer(signer.token("r1"))
    cid = post_v1(client, "clean", headers=reader).json["id"]
    edit = client.patch(f"/api/v1/comments/{cid}", json={"body": "darn"}, headers=reader)
    assert edit.status_code == 400


def test_cors_allowlist_and_preflight(make_app):
    client = make_app(cors_origins=(ORIGIN,)).test_client()
    preflight = client.options(
        "/api/v1/contents/a1/comments",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )
    assert preflight.status_code == 204
    assert "Content-Type" not in preflight.headers
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    allowed_headers = {
        h.strip() for h in preflight.headers["Access-Control-Allow-Headers"].lower().split(",")
    }
    # Every request header the API reads; a browser refuses to send one not listed here.
    assert {
        "authorization",
        "content-type",
        "idempotency-key",
        "if-match",
        "if-none-match",
        "x-request-id",
    } <= allowed_headers
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in preflight.headers["Vary"]

    denied = client.options(
        "/api/v1/contents/a1/comments",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert denied.status_code == 403
    assert denied.mimetype == "application/problem+json"
    assert "Access-Control-Allow-Origin" not in denied.headers

    ok = client.get("/api/v1/counts?content_id=1", headers={"Origin": ORIGIN})
    assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    exposed = {h.strip() for h in ok.headers["Access-Control-Expose-Headers"].split(",")}
    # Beyond the safelisted response headers, what a script needs: ETags for revalidation,
    # the replay flag of an idempotent create, the id to quote in a support request.
    assert {"Retry-After", "ETag", "Location", "Idempotent-Replayed", "X-Request-ID"} <= exposed
    assert "Origin" in ok.headers["Vary"]
    other = client.get("/api/v1/counts?content_id=1", headers={"Origin": "https://evil.example"})
    assert other.status_code == 200  # the browser, not the server, withholds the body
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Access-Control-Allow-Credentials" not in other.headers
    assert "Origin" in other.headers["Vary"]  # caches must not reuse one origin's answer
    for response in (preflight, denied, ok, other):
        assert response.headers.get("Access-Control-Allow-Origin") != "*"


def test_cors_is_off_without_an_allowlist_and_never_a_wildcard(make_app):
    client = make_app().test_client()
    preflight = client.options(
        "/api/v1/contents/a1/comments",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 403
    plain = client.get("/api/v1/counts?content_id=1", headers={"Origin": ORIGIN})
    assert "Access-Control-Allow-Origin" not in plain.headers
    with pytest.raises(SettingsError, match=r"\*"):
        Settings.from_env({"CORS_ORIGINS": "*"})
    assert Settings.from_env(
        {"CORS_ORIGINS": f"{ORIGIN}, https://m.news.example"}
    ).cors_origins == (
        ORIGIN,
        "https://m.news.example",
    )


def test_security_headers_on_every_kind_of_response(make_app):
    client = make_app().test_client()
    responses = {
        "list": client.get("/api/v1/contents/a1/comments"),
        "legacy 404": client.get("/api/comment/list/nothing"),
        "validation error": post_v1(client, ""),
        "unknown route": client.get("/nope"),
        "wrong method": client.put("/api/v1/counts"),
        "openapi": client.get("/openapi.json"),
        "health": client.get("/healthz"),
        "docs": client.get("/docs"),
    }
    for name, response in responses.items():
        assert response.headers["X-Content-Type-Options"] == "nosniff", name
        assert response.headers["X-Frame-Options"] == "DENY", name
        assert response.headers["Referrer-Policy"] == "no-referrer", name
        csp = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp, name
        assert "script-src" not in csp or "'unsafe" not in csp.split("script-src")[1], name
    assert responses["list"].headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert responses["docs"].headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert responses["docs"].headers["Cross-Origin-Opener-Policy"] == "same-origin"
