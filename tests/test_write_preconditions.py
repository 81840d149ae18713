"""If-Match and If-None-Match on the v1 writes (RFC 9110, sections 13.1.1 and 13.1.2).

One comment (PATCH, DELETE) and a content's comment list as the target of a create carry no
ETag a write is judged against: ``If-Match: *`` holds and any tag fails; ``If-None-Match:
*`` ("only if it does not exist yet") fails, since both exist; If-None-Match naming tags
holds (no tag can match). A 412 changes and stores nothing, Idempotency-Key answers
included. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from comments_api.store.repository import comments, idempotency_keys
from comments_api.web.common import EXTENSION_KEY

from .authkit import bearer

CREATE = "/api/v1/contents/story/comments"


def _rows(app, table) -> int:
    with app.extensions[EXTENSION_KEY].repo.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _assert_if_none_match_failed(response):
    assert response.status_code == 412, (response.status_code, response.data)
    # It answers this request's header alone: no cache in front may serve it to others.
    assert response.headers["Cache-Control"] == "no-store"
    assert "ETag" not in response.headers
    assert response.mimetype == "application/problem+json"
    assert response.json["type"] == "/docs#problem-if-none-match-failed"
    assert (response.json["status"], response.json["title"]) == (412, "Precondition Failed")
    assert "If-None-Match" in response.json["detail"]


def _assert_if_match_failed(response):
    assert response.status_code == 412, (response.status_code, response.data)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.json["type"] == "/docs#problem-if-match-failed"
    assert "If-Match" in response.json["detail"]


def test_if_none_match_star_on_an_edit_or_delete_is_412_and_changes_nothing(build, signer):
    """``If-None-Match: *`` means "only if it does not exist yet": an existing comment (a
    tombstone too) was edited or deleted anyway. A 404, a 403 and a bad body win over it."""
    app = build()
    client = app.test_client()
    author = bearer(signer.token("author-1"))
    stranger = bearer(signer.token("stranger"))
    created = client.post(CREATE, json={"body": "v1"}, headers=author)
    location = created.headers["Location"]
    star = {**author, "If-None-Match": "*"}
    for conditional in (star, {**star, "If-Match": "*"}):
        _assert_if_none_match_failed(
            client.patch(location, json={"body": "v2"}, headers=conditional)
        )
        _assert_if_none_match_failed(client.delete(location, headers=conditional))
    assert client.get(location).json == created.json  # nothing changed
    # If-Match is judged first (section 13.2.2): both failing is the If-Match 412.
    _assert_if_match_failed(client.delete(location, headers={**star, "If-Match": '"x"'}))
    # What the answer would have been without the condition comes first.
    missing = client.patch("/api/v1/comments/999999", json={"body": "v2"}, headers=star)
    assert missing.status_code == 404
    assert client.delete("/api/v1/comments/999999", headers=star).status_code == 404
    stranger_star = {**stranger, "If-None-Match": "*"}
    assert client.patch(location, json={"body": "v2"}, headers=stranger_star).status_code == 403
    assert client.delete(location, headers=stranger_star).status_code == 403
    assert client.patch(location, json={"body": ""}, headers=star).status_code == 400
    # Tags never match (one comment has no ETag): the write is done.
    tagged = {**author, "If-None-Match": '"x", W/"y"'}
    assert client.patch(location, json={"body": "v2"}, headers=tagged).json["body"] == "v2"
    assert client.delete(location, headers=tagged).status_code == 204
    # The tombstone exists: `*` still fails, and the tombstone stays as it was.
    tombstone = client.get(location).json
    _assert_if_none_match_failed(client.delete(location, headers=star))
    assert client.get(location).json == tombstone


def test_preconditions_on_a_create(make_app):
    """A content's comment list always exists: ``If-None-Match: *`` fails. A create is not
    conditional on the list's ETags (they name pages, and no check could be atomic with
    the insert): only ``If-Match: *`` holds, and If-None-Match tags never match."""
    app = make_app()
    client = app.test_client()
    etag = client.get(CREATE).headers["ETag"]
    for conditions in ({"If-None-Match": "*"}, {"If-None-Match": "*", "If-Match": "*"}):
        _assert_if_none_match_failed(
            client.post(CREATE, json={"body": "only if new"}, headers=conditions)
        )
    for header in ('"x"', etag, f"W/{etag}", "garbage"):
        _assert_if_match_failed(
            client.post(CREATE, json={"body": "only if same"}, headers={"If-Match": header})
        )
    # If-Match is judged first.
    both = {"If-Match": '"x"', "If-None-Match": "*"}
    _assert_if_match_failed(client.post(CREATE, json={"body": "both"}, headers=both))
    assert _rows(app, comments) == 0
    assert client.get(CREATE).headers["ETag"] == etag  # the list did not change
    # A bad request is still answered as such.
    bad = client.post(CREATE, json={"body": ""}, headers={"If-None-Match": "*"})
    assert bad.status_code == 400
    # What holds creates as usual.
    for number, conditions in enumerate(
        ({"If-Match": "*"}, {"If-None-Match": etag}, {"If-None-Match": '"x", W/"y"'}, {})
    ):
        created = client.post(CREATE, json={"body": f"post {number}"}, headers=conditions)
        assert created.status_code == 201, conditions
    assert _rows(app, comments) == 4


def test_a_create_that_fails_its_precondition_stores_no_idempotent_answer(make_app):
    """A 412 is not the key's first answer: the retry without the failing header is
    created, and a repeat of that gets it replayed."""
    app = make_app()
    client = app.test_client()
    key = {"Idempotency-Key": "k-412"}
    body = {"body": "once"}
    for conditions in ({"If-None-Match": "*"}, {"If-Match": '"x"'}):
        failed = client.post(CREATE, json=body, headers={**key, **conditions})
        assert failed.status_code == 412
        assert "Idempotent-Replayed" not in failed.headers
    assert (_rows(app, comments), _rows(app, idempotency_keys)) == (0, 0)
    first = client.post(CREATE, json=body, headers={**key, "If-Match": "*"})
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    again = client.post(CREATE, json=body, headers=key)
    assert (again.status_code, again.json) == (201, first.json)
    assert again.headers["Idempotent-Replayed"] == "true"
    # A repeat that now fails its precondition gets the 412 and leaves the stored answer.
    _assert_if_none_match_failed(
        client.post(CREATE, json=body, headers={**key, "If-None-Match": "*"})
    )
    replayed = client.post(CREATE, json=body, headers=key)
    assert (replayed.status_code, replayed.json) == (201, first.json)
    assert (_rows(app, comments), _rows(app, idempotency_keys)) == (1, 1)


@pytest.mark.parametrize("header", ["", " , "])
def test_an_empty_if_none_match_is_no_condition(make_app, header):
    client = make_app().test_client()
    assert (
        client.post(CREATE, json={"body": "x"}, headers={"If-None-Match": header}).status_code
        == 201
    )
