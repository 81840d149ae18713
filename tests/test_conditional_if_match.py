"""If-Match on the cacheable reads (RFC 9110, sections 13.1.1 and 13.2): 412 unless it names
the current strong ETag (or is ``*``); evaluated before If-None-Match; ignored on a 404."""

from __future__ import annotations

import pytest

from .authkit import bearer

LEGACY = "/api/comment/list/story"
PAGE = "/api/v1/contents/story/comments?limit=5"
COUNTS = "/api/v1/counts?content_id=story&content_id=other"
CACHED_READS = [LEGACY, PAGE, COUNTS]


@pytest.fixture
def story(client):
    created = client.post(
        "/api/comment/new",
        json={"email": "a@example.com", "comment": "first", "content_id": "story"},
    )
    assert created.status_code == 200
    return client


def _assert_precondition_failed(response, path):
    assert response.status_code == 412, (path, response.status_code)
    # The If-Match answer of one request: no cache in front may keep it for others.
    assert response.headers["Cache-Control"] == "no-store"
    assert "ETag" not in response.headers
    if response.request.method == "HEAD":
        assert response.data == b""
        return
    if path.startswith("/api/comment/"):
        assert response.json["status"] == "PRECONDITION-FAILED"
        assert "If-Match" in response.json["message"]
    else:
        assert response.mimetype == "application/problem+json"
        assert response.json["type"] == "/docs#problem-if-match-failed"
        assert (response.json["status"], response.json["title"]) == (412, "Precondition Failed")
        assert "If-Match" in response.json["detail"]


@pytest.mark.parametrize("path", CACHED_READS)
def test_if_match_naming_another_etag_is_412(story, path):
    plain = story.get(path)
    etag = plain.headers["ETag"]
    assert etag.startswith('"')
    for header in ('"not-the-etag"', f"W/{etag}", "garbage", '"x" junk'):
        for method in (story.get, story.head):
            _assert_precondition_failed(method(path, headers={"If-Match": header}), path)


@pytest.mark.parametrize("path", CACHED_READS)
def test_if_match_naming_the_current_etag_or_star_reads_as_usual(story, path):
    plain = story.get(path)
    etag = plain.headers["ETag"]
    for header in (etag, "*", f'"x", {etag}', f'W/"x", {etag}', f"{etag},,", "", " , ,"):
        response = story.get(path, headers={"If-Match": header})
        assert response.status_code == 200, header
        assert response.data == plain.data
        assert response.headers["ETag"] == etag
        assert response.headers["Cache-Control"] == plain.headers["Cache-Control"]


@pytest.mark.parametrize("path", CACHED_READS)
def test_if_match_is_judged_before_if_none_match(story, path):
    etag = story.get(path).headers["ETag"]
    # Both hold: If-None-Match then answers 304.
    both = story.get(path, headers={"If-Match": etag, "If-None-Match": etag})
    assert (both.status_code, both.data, both.headers["ETag"]) == (304, b"", etag)
    # If-Match fails: 412, never the 304 the If-None-Match alone would get.
    failed = story.get(path, headers={"If-Match": '"other"', "If-None-Match": etag})
    _assert_precondition_failed(failed, path)


@pytest.mark.parametrize("path", CACHED_READS)
def test_if_match_with_an_etag_a_write_made_old_is_412(story, path):
    old = story.get(path).headers["ETag"]
    story.post("/api/v1/contents/story/comments", json={"body": "second"})
    _assert_precondition_failed(story.get(path, headers={"If-Match": old}), path)
    current = story.get(path).headers["ETag"]
    assert current != old
    assert story.get(path, headers={"If-Match": current}).status_code == 200


def test_if_match_on_a_legacy_404_is_the_404(client):
    """RFC 9110, section 13.2.1: preconditions are ignored when the answer without them is
    not a 2xx; ``*`` on a content with no comment does not turn its 404 into a 412."""
    for header in ("*", '"x"'):
        response = client.get("/api/comment/list/nothing-yet", headers={"If-Match": header})
        assert response.status_code == 404, header
        assert response.json["status"] == "NOT-FOUND"


def test_if_match_on_one_comment(client, v1_delete):
    """One comment carries no ETag: only ``*`` holds, and its 404 stays a 404."""
    created = client.post("/api/v1/contents/story/comments", json={"body": "hello"})
    location = created.headers["Location"]
    plain = client.get(location)
    assert client.get(location, headers={"If-Match": "*"}).data == plain.data
    for header in ('"x"', 'W/"x"'):
        _assert_precondition_failed(client.get(location, headers={"If-Match": header}), location)
        _assert_precondition_failed(client.head(location, headers={"If-Match": header}), location)
    for header in ("*", '"x"'):
        missing = client.get("/api/v1/comments/999999", headers={"If-Match": header})
        assert missing.status_code == 404, header


def test_if_match_on_an_edit_or_delete_of_one_comment(build, signer):
    """An edit or delete sent with ``If-Match: <tag>`` ("only if it is still the copy I
    hold") was applied anyway: one comment has no ETag, so only ``*`` holds, and any tag is
    a 412 that changes nothing (RFC 9110, section 13.1.1), as on the moderation endpoints.
    A 404, a 403 and a bad body win over it (section 13.2.1)."""
    client = build().test_client()
    author = bearer(signer.token("author-1"))
    stranger = bearer(signer.token("stranger"))
    created = client.post("/api/v1/contents/story/comments", json={"body": "v1"}, headers=author)
    location = created.headers["Location"]
    for header in ('"x"', 'W/"x"', "garbage"):
        conditional = {**author, "If-Match": header}
        edited = client.patch(location, json={"body": "v2"}, headers=conditional)
        _assert_precondition_failed(edited, location)
        _assert_precondition_failed(client.delete(location, headers=conditional), location)
    assert client.get(location).json == created.json  # nothing changed
    # What the answer would have been without the condition comes first.
    tagged = {"If-Match": '"x"'}
    assert (
        client.patch(
            "/api/v1/comments/999999", json={"body": "v2"}, headers={**author, **tagged}
        ).status_code
        == 404
    )
    assert (
        client.patch(location, json={"body": "v2"}, headers={**stranger, **tagged}).status_code
        == 403
    )
    assert client.delete(location, headers={**stranger, **tagged}).status_code == 403
    assert (
        client.patch(location, json={"body": ""}, headers={**author, **tagged}).status_code == 400
    )
    # `*` (and no condition at all) holds.
    star = {**author, "If-Match": "*"}
    assert client.patch(location, json={"body": "v2"}, headers=star).json["body"] == "v2"
    assert client.delete(location, headers=star).status_code == 204
    # A tombstone exists (a GET answers 200): a tag still fails, `*` is the usual 204.
    _assert_precondition_failed(client.delete(location, headers={**author, **tagged}), location)
    assert client.delete(location, headers=star).status_code == 204
