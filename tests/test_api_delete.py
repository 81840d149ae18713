"""DELETE /api/v1/comments/{id} as a client developer meets it: retries and non-public comments.

On SQLite and PostgreSQL, through the real app (Flask test client).
"""

from __future__ import annotations

import pytest

from comments_api.identity.credentials import SCOPE_MODERATE

from .authkit import api_key, bearer

BULK = "/api/v1/moderation/comments"


def post(client, headers=None, content_id="d1", body="hello"):
    response = client.post(
        f"/api/v1/contents/{content_id}/comments", json={"body": body}, headers=headers
    )
    assert response.status_code in (201, 202), response.data
    return response.json["id"]


def test_an_authors_repeated_delete_is_204_as_documented(build, signer):
    """api.md: DELETE is "204, idempotent". A mobile client whose first answer was lost
    retries; the tombstone no longer names its author, and the retry got a 403 saying the
    author may not delete their own comment."""
    app = build()
    client = app.test_client()
    alice = bearer(signer.token("alice"))
    url = f"/api/v1/comments/{post(client, alice)}"

    assert client.delete(url, headers=alice).status_code == 204
    again = client.delete(url, headers=alice)
    assert again.status_code == 204, again.data
    assert again.data == b""
    assert client.get(url).json["status"] == "deleted"
    # Still a credential to send (anonymous callers delete nothing), and nothing to audit twice.
    assert client.delete(url).status_code == 401
    audit = app.extensions["comments_api"].repo.audit_page(limit=10, before_id=None)[0]
    assert [e.action for e in audit] == ["delete"]


def test_strangers_still_cannot_delete_a_live_comment(build, signer):
    client = build().test_client()
    url = f"/api/v1/comments/{post(client, bearer(signer.token('alice')))}"
    refused = client.delete(url, headers=bearer(signer.token("bob")))
    assert refused.status_code == 403
    assert client.get(url).json["status"] == "published"


@pytest.mark.parametrize("status", ["hidden", "pending"])
def test_moderators_delete_any_comment_hidden_and_pending_included(build, signer, status):
    """api.md: `comments:moderate` may "delete any comment". A hidden or pending comment,
    listed by GET /moderation/comments, was a 404 "comment not found" on DELETE."""
    app = build(moderation_mode="pre" if status == "pending" else "post")
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    cid = post(client, bearer(signer.token("alice")))
    if status == "hidden":
        assert client.post(BULK, json={"action": "hide", "ids": [cid]}, headers=mod).json[
            "changed"
        ] == [cid]
    listed = client.get(f"{BULK}?status={status}", headers=mod).json["items"]
    assert [c["id"] for c in listed] == [cid]

    deleted = client.delete(f"/api/v1/comments/{cid}", headers=mod)
    assert deleted.status_code == 204, deleted.data
    assert client.get(f"{BULK}?status={status}", headers=mod).json["items"] == []
    # Nobody could read it, and nothing replies to it: no public tombstone either (one
    # used to appear in the public list, where counts said 0).
    assert client.get(f"/api/v1/comments/{cid}").status_code == 404
    assert client.get("/api/v1/contents/d1/comments").json["items"] == []
    # Approving never brings it back.
    assert client.post(BULK, json={"action": "approve", "ids": [cid]}, headers=mod).json[
        "unchanged"
    ] == [cid]


def test_an_author_withdraws_a_comment_still_awaiting_moderation(build, signer):
    app = build(moderation_mode="pre")
    client = app.test_client()
    alice = bearer(signer.token("alice"))
    cid = post(client, alice)
    url = f"/api/v1/comments/{cid}"
    assert client.get(url).status_code == 404  # not public yet
    # Others are not told that it exists, whatever their credential.
    stranger = client.delete(url, headers=bearer(signer.token("bob")))
    assert stranger.status_code == 404
    assert stranger.json["detail"] == "comment not found"
    assert client.delete(url, headers=alice).status_code == 204
    mod = bearer(api_key(app, SCOPE_MODERATE))
    assert client.get(f"{BULK}?status=pending", headers=mod).json["items"] == []


def test_a_hidden_comment_stays_unknown_to_others_and_its_author_may_remove_it(build, signer):
    app = build()
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    alice = bearer(signer.token("alice"))
    cid = post(client, alice)
    client.post(BULK, json={"action": "hide", "ids": [cid]}, headers=mod)
    refused = client.delete(f"/api/v1/comments/{cid}", headers=bearer(signer.token("bob")))
    assert refused.status_code == 404
    assert client.delete("/api/v1/comments/999999", headers=mod).status_code == 404
    # Its author may still withdraw it; it is not published by that, nor is a tombstone.
    assert client.delete(f"/api/v1/comments/{cid}", headers=alice).status_code == 204
    assert client.get(f"/api/v1/comments/{cid}").status_code == 404
    assert client.get(f"{BULK}?status=hidden", headers=mod).json["items"] == []
    # Gone for good: a repeat is told so, as for any id that is not there.
    assert client.delete(f"/api/v1/comments/{cid}", headers=alice).status_code == 404


def test_a_hidden_comment_with_replies_deleted_keeps_them_in_place(build, signer):
    """A hidden comment that readers had answered before it was hidden: deleted, it becomes
    a tombstone, so its replies keep their parent."""
    app = build()
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    alice = bearer(signer.token("alice"))
    cid = post(client, alice)
    reply = client.post(
        "/api/v1/contents/d1/comments", json={"body": "an answer", "parent_id": cid}, headers=alice
    ).json["id"]
    client.post(BULK, json={"action": "hide", "ids": [cid]}, headers=mod)
    assert client.delete(f"/api/v1/comments/{cid}", headers=mod).status_code == 204
    gone = client.get(f"/api/v1/comments/{cid}").json
    assert (gone["status"], gone["body"], gone["author"]) == ("deleted", None, None)
    listed = client.get("/api/v1/contents/d1/comments").json["items"]
    assert [(c["id"], c["status"], c["parent_id"]) for c in listed] == [
        (cid, "deleted", None),
        (reply, "published", cid),
    ]
    assert client.delete(f"/api/v1/comments/{cid}", headers=mod).status_code == 204
