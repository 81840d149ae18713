"""HTTP caching as a CDN in front sees it: what the cacheable routes' other answers say."""

from __future__ import annotations

import pytest

from comments_api.contract.spec import build_spec


@pytest.mark.parametrize("policy", [None, "public, no-cache", "public, max-age=0, s-maxage=5"])
def test_the_legacy_lists_404_says_how_long_a_cache_may_keep_it(make_app, policy):
    """A content with no comment yet is a legacy 404. Without Cache-Control a 404 is
    heuristically cacheable, and CDNs keep one for their default TTL: the route caching.md
    tells operators to cache would hide an article's first comments that long."""
    app = make_app() if policy is None else make_app(read_cache_control=policy)
    expected = app.extensions["comments_api"].settings.read_cache_control
    client = app.test_client()

    missing = client.get("/api/comment/list/new-article")
    assert missing.status_code == 404
    assert missing.json == {"status": "NOT-FOUND", "message": "content_id new-article not found"}
    assert missing.headers["Cache-Control"] == expected
    assert "ETag" not in missing.headers  # never revalidated into a 304
    head = client.head("/api/comment/list/new-article")
    assert (head.status_code, head.headers["Cache-Control"]) == (404, expected)

    # The first comment is in the next answer, with the same policy.
    client.post(
        "/api/comment/new",
        json={"email": "a@example.com", "comment": "first", "content_id": "new-article"},
    )
    listed = client.get("/api/comment/list/new-article")
    assert listed.status_code == 200
    assert listed.headers["Cache-Control"] == expected

    # The document says so, with this deployment's value.
    spec = build_spec(app.extensions["comments_api"].settings)
    documented = spec["paths"]["/api/comment/list/{content_id}"]["get"]["responses"]["404"]
    assert expected in documented["headers"]["Cache-Control"]["description"]


@pytest.mark.parametrize("policy", [None, "public, no-cache"])
def test_one_comment_and_its_404_say_how_long_a_cache_may_keep_them(make_app, policy, v1_delete):
    """GET /api/v1/comments/{id} had no Cache-Control: a 200 and a 404 without one are
    heuristically cacheable, so a CDN in front kept showing a comment after its author
    deleted it (or a 404 after it was posted) for its default TTL."""
    app = make_app() if policy is None else make_app(read_cache_control=policy)
    expected = app.extensions["comments_api"].settings.read_cache_control
    client = app.test_client()

    created = client.post("/api/v1/contents/article/comments", json={"body": "hello"})
    assert created.status_code == 201
    one = client.get(created.headers["Location"])
    assert (one.status_code, one.headers["Cache-Control"]) == (200, expected)
    assert "ETag" not in one.headers

    assert v1_delete(client, created.json["id"]).status_code == 204
    tombstone = client.get(created.headers["Location"])
    assert tombstone.status_code == 200
    assert tombstone.json["body"] is None
    assert tombstone.headers["Cache-Control"] == expected

    for path in ("/api/v1/comments/999999", "/api/v1/comments/not-an-id"):
        gone = client.get(path)
        assert gone.status_code == 404, path
        assert gone.mimetype == "application/problem+json"
        assert gone.json["detail"] == "comment not found"
        assert gone.headers["Cache-Control"] == expected, path

    spec = build_spec(app.extensions["comments_api"].settings)
    documented = spec["paths"]["/api/v1/comments/{comment_id}"]["get"]["responses"]
    for status in ("200", "404"):
        assert expected in documented[status]["headers"]["Cache-Control"]["description"]
