"""Moderation: pre-moderation, bulk actions, pending queue, bans, audit log, author rights."""

from __future__ import annotations

import re

from comments_api.comments.rules import listing_cursor_pattern
from comments_api.events import moderation_action
from comments_api.identity.credentials import SCOPE_ADMIN, SCOPE_MODERATE, SCOPE_WRITE

from .authkit import api_key, bearer
from .clock import FakeClock

BULK = "/api/v1/moderation/comments"
PENDING = "/api/v1/moderation/pending"
BANS = "/api/v1/moderation/bans"
AUDIT = "/api/v1/admin/audit-log"


def post_v1(client, body="hello", content_id="a1", headers=None, **extra):
    return client.post(
        f"/api/v1/contents/{content_id}/comments", json={"body": body, **extra}, headers=headers
    )


def post_legacy(client, comment="hello", email="anon@example.com", content_id="a1", headers=None):
    return client.post(
        "/api/comment/new",
        json={"email": email, "comment": comment, "content_id": content_id},
        headers=headers,
    )


def public_ids(client, content_id="a1"):
    return [c["id"] for c in client.get(f"/api/v1/contents/{content_id}/comments").json["items"]]


def test_pre_moderation_holds_comments_until_approved(build, signer):
    app = build(moderation_mode="pre")
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))

    v1 = post_v1(client, "waiting")
    assert v1.status_code == 202
    assert v1.json["status"] == "pending"
    assert "Location" not in v1.headers
    legacy = post_legacy(client, "legacy waiting")
    assert legacy.status_code == 200  # old clients still see SUCCESS
    assert legacy.json["status"] == "SUCCESS"
    reader = post_v1(client, "reader waiting", headers=bearer(signer.token("r1")))
    assert reader.status_code == 202

    # Invisible everywhere public.
    assert public_ids(client) == []
    assert client.get(f"/api/v1/comments/{v1.json['id']}").status_code == 404
    assert client.get("/api/v1/counts?content_id=a1").json["counts"] == {"a1": 0}
    assert client.get("/api/comment/list/a1").status_code == 404

    queue = client.get(PENDING, headers=mod)
    assert queue.status_code == 200
    items = queue.json["items"]
    assert [c["body"] for c in items] == ["waiting", "legacy waiting", "reader waiting"]
    # Moderators see who wrote it; the public never sees the address.
    assert items[1]["author_email"] == "anon@example.com"
    assert items[2]["author_subject"] == "r1"

    approved = client.post(BULK, json={"action": "approve", "ids": [v1.json["id"]]}, headers=mod)
    assert approved.json == {"action": "approve", "changed": [v1.json["id"]], "unchanged": []}
    assert public_ids(client) == [v1.json["id"]]
    assert [c["comment"] for c in client.get("/api/comment/list/a1").json] == ["waiting"]
    assert len(client.get(PENDING, headers=mod).json["items"]) == 2

    # A moderator's own comment needs no approval.
    own = post_v1(client, "from the desk", headers=bearer(api_key(app, SCOPE_ADMIN)))
    assert own.status_code == 201


def test_bulk_approve_hide_delete_in_one_call_with_audit(build):
    app = build()
    client = app.test_client()
    mod_key = api_key(app, SCOPE_MODERATE)
    mod = bearer(mod_key)
    ids = [post_v1(client, f"c{i}").json["id"] for i in range(4)]
    seen = []

    def record(sender, **kw):
        seen.append((kw["action"], kw["count"]))

    moderation_action.connect(record)
    try:
        hidden = client.post(BULK, json={"action": "hide", "ids": [*ids[:3], 999999]}, headers=mod)
        assert hidden.status_code == 200
        assert hidden.json["changed"] == ids[:3]
        assert hidden.json["unchanged"] == [999999]
        assert public_ids(client) == [ids[3]]
        assert client.get(f"/api/v1/comments/{ids[0]}").status_code == 404

        back = client.post(BULK, json={"action": "approve", "ids": [ids[0]]}, headers=mod)
        assert back.json["changed"] == [ids[0]]
        assert public_ids(client) == [ids[0], ids[3]]

        gone = client.post(BULK, json={"action": "delete", "ids": [ids[0], ids[1]]}, headers=mod)
        assert gone.json["changed"] == [ids[0], ids[1]]
        tomb = client.get(f"/api/v1/comments/{ids[0]}").json
        assert (tomb["status"], tomb["body"], tomb["author"]) == ("deleted", None, None)
        # Approving a deleted comment never resurrects it.
        again = client.post(BULK, json={"action": "approve", "ids": [ids[0]]}, headers=mod)
        assert again.json["changed"] == []
        assert client.get(f"/api/v1/comments/{ids[0]}").json["status"] == "deleted"
    finally:
        moderation_action.disconnect(record)
    assert seen == [("hide", 3), ("approve", 1), ("delete", 2), ("approve", 0)]

    audit = client.get(AUDIT, headers=bearer(api_key(app, SCOPE_ADMIN))).json["items"]
    actor = f"api_key:{mod_key.split('_')[1]}"
    assert [(e["action"], e["comment_ids"], e["actor"]) for e in audit] == [
        ("approve", [], actor),
        ("delete", [ids[0], ids[1]], actor),
        ("approve", [ids[0]], actor),
        ("hide", ids[:3], actor),
    ]
    assert all(e["created_at"].endswith("Z") for e in audit)

    for bad in (
        {"action": "nuke", "ids": [1]},
        {"action": "hide", "ids": []},
        {"action": "hide", "ids": list(range(1, 102))},
        {"action": "hide", "ids": ["1"]},
        {"action": "hide", "ids": [1], "extra": True},
        [1, 2],
    ):
        response = client.post(BULK, json=bad, headers=mod)
        assert response.status_code == 400, bad
        assert response.mimetype == "application/problem+json"


def test_bulk_if_status_acts_only_on_comments_still_as_the_moderator_saw_them(build):
    """Two moderators on one queue: B's Hide of a row A approved meanwhile must not hide the
    now-published comment. With the status B saw (`if_status`), it is `unchanged`."""
    app = build(moderation_mode="pre")
    client = app.test_client()
    admin = bearer(api_key(app, SCOPE_ADMIN))
    mod = bearer(api_key(app, SCOPE_MODERATE))
    first, second = (post_v1(client, f"queued {i}").json["id"] for i in range(2))
    approved = client.post(BULK, json={"action": "approve", "ids": [first]}, headers=mod)
    assert approved.json["changed"] == [first]

    stale = {"action": "hide", "ids": [first, second], "if_status": ["pending"]}
    hidden = client.post(BULK, json=stale, headers=mod)
    assert hidden.status_code == 200, hidden.json
    assert (hidden.json["changed"], hidden.json["unchanged"]) == ([second], [first])
    assert public_ids(client) == [first]
    entry = client.get(AUDIT, headers=admin).json["items"][0]
    assert entry["comment_ids"] == [second]
    assert entry["details"] == {"requested": [first, second], "if_status": ["pending"]}

    # Statuses the action cannot leave are simply not matched: approve only from hidden.
    both = {"action": "approve", "ids": [first, second], "if_status": ["published", "hidden"]}
    both = client.post(BULK, json=both, headers=mod)
    assert (both.json["changed"], both.json["unchanged"]) == ([second], [first])
    # Without it, as before: an action takes every status its rule allows.
    blind = client.post(BULK, json={"action": "hide", "ids": [first]}, headers=mod)
    assert blind.json["changed"] == [first]

    for bad in ([], ["deleted"], ["pending", "nope"], "pending", None, ["pending"] * 4):
        response = client.post(
            BULK, json={"action": "hide", "ids": [1], "if_status": bad}, headers=mod
        )
        assert response.status_code == 400, bad
        errors = response.json["errors"]
        assert errors == [
            {
                "field": "if_status",
                "message": "must be a list of 1 to 3 of published, pending, hidden",
            }
        ], bad


def test_moderation_answers_are_never_stored(build):
    """They carry authors' emails and subjects: no browser cache or disk keeps them."""
    app = build(moderation_mode="pre")
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    admin = bearer(api_key(app, SCOPE_ADMIN))
    post_v1(client, "queued", email="reader@example.com")
    answers = [
        client.get(PENDING, headers=mod),
        client.get(f"{BULK}?status=hidden", headers=mod),
        client.get(BANS, headers=mod),
        client.get(AUDIT, headers=admin),
        client.post(BULK, json={"action": "hide", "ids": [1]}, headers=mod),
        client.get(PENDING),  # a 401 too
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 200, 401]
    assert "reader@example.com" in answers[0].get_data(as_text=True)
    assert [a.headers.get("Cache-Control") for a in answers] == ["no-store"] * len(answers)


def test_pending_queue_is_paginated(build):
    app = build(moderation_mode="pre")
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    ids = [post_v1(client, f"p{i}", content_id=f"c{i % 2}").json["id"] for i in range(5)]
    first = client.get(f"{PENDING}?limit=2", headers=mod)
    assert [c["id"] for c in first.json["items"]] == ids[:2]
    assert 'rel="next"' in first.headers["Link"]
    second = client.get(f"{PENDING}?limit=2&cursor={first.json['next_cursor']}", headers=mod)
    third = client.get(f"{PENDING}?limit=2&cursor={second.json['next_cursor']}", headers=mod)
    assert [c["id"] for c in second.json["items"] + third.json["items"]] == ids[2:]
    assert third.json["next_cursor"] is None
    assert client.get(f"{PENDING}?cursor=garbage", headers=mod).status_code == 400
    assert client.get(PENDING).status_code == 401  # moderation always needs a credential


def listed_ids(client, url, headers):
    """Every id of a moderation listing, following its Link headers page by page."""
    ids, pages = [], 0
    while url:
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.json
        ids += [c["id"] for c in response.json["items"]]
        link = response.headers.get("Link")
        assert (link is None) == (response.json["next_cursor"] is None)
        url = link.split(">")[0].lstrip("<") if link else None
        pages += 1
    return ids, pages


def test_the_pending_queue_and_hidden_comments_by_content(build):
    app = build(moderation_mode="pre")
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    slashed = "news/2026/12/a b"  # any content id, encoded in the query as in a path
    posted = [
        post_v1(client, f"p{i}", content_id=("a1", "b2", slashed)[i % 3]).json["id"]
        for i in range(9)
    ]
    by_content = {cid: posted[i::3] for i, cid in enumerate(("a1", "b2", slashed))}

    assert listed_ids(client, PENDING, mod) == (posted, 1)
    assert listed_ids(client, f"{PENDING}?content_id=b2&limit=2", mod) == (by_content["b2"], 2)
    encoded = "news%2F2026%2F12%2Fa%20b"
    assert listed_ids(client, f"{PENDING}?content_id={encoded}&limit=1", mod) == (
        by_content[slashed],
        3,
    )
    # The general listing: pending by default, the same queue.
    assert listed_ids(client, f"{BULK}?limit=4", mod) == (posted, 3)

    client.post(BULK, json={"action": "approve", "ids": posted}, headers=mod)
    hide = [by_content["a1"][0], by_content["a1"][2], by_content["b2"][1]]
    assert client.post(BULK, json={"action": "hide", "ids": hide}, headers=mod).status_code == 200
    assert listed_ids(client, PENDING, mod) == ([], 1)
    assert listed_ids(client, f"{BULK}?status=hidden&limit=2", mod) == (sorted(hide), 2)
    first = client.get(f"{BULK}?status=hidden&content_id=a1&limit=1", headers=mod)
    assert [c["status"] for c in first.json["items"]] == ["hidden"]
    assert "author_email" in first.json["items"][0]  # the moderator's view
    assert "status=hidden" in first.headers["Link"]
    assert "content_id=a1" in first.headers["Link"]
    assert listed_ids(client, f"{BULK}?status=hidden&content_id=a1&limit=1", mod) == (
        [by_content["a1"][0], by_content["a1"][2]],
        2,
    )

    # Found in the hidden list, published again: gone from it, public again.
    client.post(BULK, json={"action": "approve", "ids": [hide[0]]}, headers=mod)
    assert listed_ids(client, f"{BULK}?status=hidden", mod) == (sorted(hide[1:]), 1)
    assert hide[0] in public_ids(client, "a1")

    # Published comments of one content, or of one author, with their authors (the public
    # list names none): the console's By content finds an author from there.
    assert listed_ids(client, f"{BULK}?status=published&content_id=a1&limit=1", mod) == (
        [by_content["a1"][0], by_content["a1"][1]],
        2,
    )
    signed = post_v1(client, "signed", content_id="b2", email="Named@Example.com").json["id"]
    client.post(BULK, json={"action": "approve", "ids": [signed]}, headers=mod)
    by_author = client.get(
        f"{BULK}?status=published&author=email:named@example.com", headers=mod
    ).json["items"]
    assert [(c["id"], c["status"], c["author_email"]) for c in by_author] == [
        (signed, "published", "Named@Example.com")  # as given; found by its key in any case
    ]

    for bad, field in (
        (f"{BULK}?status=published", "content_id"),  # of one content or author only
        (f"{BULK}?status=", "status"),
        (f"{BULK}?status=hidden&content_id=", "content_id"),
        (f"{PENDING}?content_id=a%01b", "content_id"),
        (f"{BULK}?status=hidden&cursor=garbage", "cursor"),
    ):
        response = client.get(bad, headers=mod)
        assert response.status_code == 400, bad
        assert response.mimetype == "application/problem+json"
        assert [e["field"] for e in response.json["errors"]] == [field], bad
    unknown = client.get(f"{BULK}?status=approved", headers=mod).json["errors"]
    assert unknown == [{"field": "status", "message": "must be 'pending', 'hidden' or 'published'"}]
    assert client.get(f"{BULK}?status=hidden").status_code == 401
    assert client.get(f"{BULK}?status=nonsense").status_code == 401  # credentials first
    writer = bearer(api_key(app, SCOPE_WRITE))
    assert client.get(f"{BULK}?status=hidden", headers=writer).status_code == 403


def test_a_listing_cursor_is_bound_to_its_status_and_content_filter(build):
    app = build(moderation_mode="pre")
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    ids = [post_v1(client, f"p{i}", content_id=f"c{i % 2}").json["id"] for i in range(6)]
    hidden = [ids[0], ids[3]]  # older than the cursors below: a replay would skip them
    assert client.post(BULK, json={"action": "hide", "ids": hidden}, headers=mod).status_code == 200

    def page(url):
        response = client.get(url, headers=mod)
        assert response.status_code == 200, response.json
        return [c["id"] for c in response.json["items"]], response.json["next_cursor"]

    def refused(url):
        response = client.get(url, headers=mod)
        assert response.status_code == 400, url
        assert response.mimetype == "application/problem+json"
        assert [e["field"] for e in response.json["errors"]] == ["cursor"], url
        assert "restart without a cursor" in response.json["errors"][0]["message"]

    items, pending = page(f"{PENDING}?limit=2")  # after ids[2]
    assert items == [ids[1], ids[2]]
    # The same listing under both routes, at any page size.
    assert page(f"{BULK}?status=pending&limit=9&cursor={pending}") == ([ids[4], ids[5]], None)
    assert page(f"{BULK}?cursor={pending}") == ([ids[4], ids[5]], None)
    refused(f"{BULK}?status=hidden&cursor={pending}")  # would have skipped ids[0]
    refused(f"{PENDING}?content_id=c0&cursor={pending}")

    items, of_c0 = page(f"{BULK}?status=pending&content_id=c0&limit=1")  # after ids[2]
    assert items == [ids[2]]
    assert page(f"{PENDING}?content_id=c0&cursor={of_c0}") == ([ids[4]], None)
    refused(f"{PENDING}?content_id=c1&cursor={of_c0}")
    refused(f"{PENDING}?cursor={of_c0}")  # would have skipped ids[1]
    refused(f"{BULK}?status=hidden&content_id=c0&cursor={of_c0}")

    items, of_hidden = page(f"{BULK}?status=hidden&limit=1")  # after ids[0]
    assert items == [ids[0]]
    assert page(f"{BULK}?status=hidden&cursor={of_hidden}") == ([ids[3]], None)
    refused(f"{PENDING}?cursor={of_hidden}")  # another list, even when nothing is skipped
    # A cursor as issued before cursors carried their filter names no listing: refused in
    # every listing, its own included (as a position in any list it would skip as above).
    untagged = of_hidden.partition(".")[0]
    for url in (f"{PENDING}?cursor={untagged}", f"{BULK}?status=hidden&cursor={untagged}"):
        response = client.get(url, headers=mod)
        assert response.status_code == 400, url
        assert response.json["errors"] == [
            {
                "field": "cursor",
                "message": "names no listing (a cursor from before cursors were bound to "
                "their filter); restart without a cursor",
            }
        ]
    # A tag that is not one the API writes.
    for bad in (f"{untagged}.", f"{untagged}.short", f"{of_hidden}.x", f"{of_hidden}x"):
        response = client.get(f"{BULK}?status=hidden&cursor={bad}", headers=mod)
        assert response.status_code == 400, bad
        assert response.json["errors"] == [
            {"field": "cursor", "message": "is not a cursor this API issued"}
        ]
    # Every cursor issued matches what both listings publish they take (a client validating
    # its requests against /openapi.json must be able to send the next_cursor it was given).
    spec = client.get("/openapi.json").json
    for path in ("/api/v1/moderation/pending", "/api/v1/moderation/comments"):
        (cursor_param,) = (
            spec["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]]
            for p in spec["paths"][path]["get"]["parameters"]
            if "$ref" in p
            and spec["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]]["name"] == "cursor"
        )
        assert cursor_param["schema"]["pattern"] == listing_cursor_pattern(), path
        for cursor in (pending, of_c0, of_hidden):
            assert re.search(cursor_param["schema"]["pattern"], cursor), (path, cursor)
        assert not re.search(cursor_param["schema"]["pattern"], untagged), path


def test_bans_by_email_and_subject(build, signer):
    app = build(legacy_email="full")
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    troll = bearer(signer.token("troll-42"))
    assert post_legacy(client, "hi", email="Troll@Example.com").status_code == 200
    assert post_v1(client, "hi", headers=troll).status_code == 201

    by_email = client.post(BANS, json={"email": "troll@EXAMPLE.com", "reason": "spam"}, headers=mod)
    assert by_email.status_code == 201
    assert by_email.json == {"target": "email:troll@example.com", "created": True}
    by_subject = client.post(BANS, json={"subject": "troll-42"}, headers=mod)
    assert by_subject.status_code == 201
    assert client.post(BANS, json={"subject": "troll-42"}, headers=mod).status_code == 200

    rejected = post_legacy(client, "again", email="TROLL@example.com")
    assert rejected.status_code == 403
    assert rejected.json["status"] == "FORBIDDEN"
    v1 = post_v1(client, "again", email="troll@example.com")
    assert v1.status_code == 403
    assert v1.json["type"].endswith("author-banned")
    assert post_v1(client, "again", headers=troll).status_code == 403
    assert post_v1(client, "someone else", email="fine@example.com").status_code == 201

    listed = client.get(BANS, headers=mod).json["items"]
    assert {b["target"] for b in listed} == {"email:troll@example.com", "sub:troll-42"}
    assert next(b for b in listed if b["target"].startswith("email"))["reason"] == "spam"

    lifted = client.delete(by_email.headers["Location"], headers=mod)
    assert lifted.status_code == 204
    assert post_legacy(client, "reformed", email="troll@example.com").status_code == 200
    assert client.delete(by_email.headers["Location"], headers=mod).status_code == 404
    assert client.delete(f"{BANS}/nonsense", headers=mod).status_code == 400
    # Bans need the moderate scope.
    writer = bearer(api_key(app, SCOPE_WRITE))
    assert client.post(BANS, json={"subject": "x"}, headers=writer).status_code == 403
    assert client.post(BANS, json={"email": "x@example.com"}).status_code == 401
    assert (
        client.post(BANS, json={"email": "a@b.c", "subject": "x"}, headers=mod).status_code == 400
    )


def test_audit_log_is_admin_only_and_paginated(build):
    app = build()
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    admin = bearer(api_key(app, SCOPE_ADMIN))
    for i in range(3):
        client.post(BANS, json={"subject": f"s{i}"}, headers=mod)
    assert client.get(AUDIT).status_code == 401
    assert client.get(AUDIT, headers=mod).status_code == 403
    assert client.get(AUDIT, headers=bearer(api_key(app, SCOPE_WRITE))).status_code == 403
    first = client.get(f"{AUDIT}?limit=2", headers=admin)
    assert first.status_code == 200
    assert [e["target"] for e in first.json["items"]] == ["sub:s2", "sub:s1"]
    rest = client.get(f"{AUDIT}?limit=2&cursor={first.json['next_cursor']}", headers=admin)
    assert [e["target"] for e in rest.json["items"]] == ["sub:s0"]
    assert rest.json["next_cursor"] is None


def test_an_audit_log_cursor_and_a_comment_list_cursor_are_not_each_others(build):
    # Both lists are newest first by id, and their cursors used to be the same string (`n`
    # and the id): either was taken by the other as a position, 200 with a page from
    # somewhere in a list it never walked. Each list's cursor now names the list.
    app = build()
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    admin = bearer(api_key(app, SCOPE_ADMIN))
    for i in range(3):
        post_v1(client, f"c{i}")
        client.post(BANS, json={"subject": f"s{i}"}, headers=mod)
    of_audit = client.get(f"{AUDIT}?limit=1", headers=admin).json["next_cursor"]
    newest = "/api/v1/contents/a1/comments?order=newest&limit=1"
    of_comments = client.get(newest).json["next_cursor"]
    assert of_audit
    assert of_comments
    assert of_audit != of_comments

    def refused(url, headers=None):
        response = client.get(url, headers=headers)
        assert response.status_code == 400, (url, response.json)
        assert response.mimetype == "application/problem+json"
        assert response.json["errors"] == [
            {"field": "cursor", "message": "belongs to another list; restart without a cursor"}
        ], url

    refused(f"{newest}&cursor={of_audit}")
    refused(f"/api/v1/contents/a1/comments?cursor={of_audit}")
    refused(f"{AUDIT}?cursor={of_comments}", admin)
    # A moderation listing's cursor (a comment list cursor and a tag) is another list's too.
    listing = f"{BULK}?status=published&content_id=a1&limit=1"
    of_listing = client.get(listing, headers=mod).json["next_cursor"]
    refused(f"/api/v1/contents/a1/comments?cursor={of_listing}")
    refused(f"{AUDIT}?cursor={of_listing}", admin)
    refused(f"{listing}&cursor={of_audit}", mod)
    # Each still pages its own list.
    assert client.get(f"{AUDIT}?cursor={of_audit}", headers=admin).status_code == 200
    assert client.get(f"{newest}&cursor={of_comments}").status_code == 200


def test_authors_delete_and_edit_their_own_comments_within_the_window(build, signer):
    clock = FakeClock()
    app = build(edit_window=2.0, clock=clock)
    client = app.test_client()
    alice, bob = bearer(signer.token("alice")), bearer(signer.token("bob"))
    mine = post_v1(client, "first version", headers=alice).json["id"]
    url = f"/api/v1/comments/{mine}"

    assert client.patch(url, json={"body": "bob was here"}, headers=bob).status_code == 403
    assert client.delete(url, headers=bob).status_code == 403
    assert client.patch(url, json={"body": "x"}).status_code == 401  # anonymous
    assert client.delete(url).status_code == 401
    # A trusted backend key may post but is not a moderator: it cannot delete others'.
    assert client.delete(url, headers=bearer(api_key(app, SCOPE_WRITE))).status_code == 403
    # Identity by email proves nothing: same email in a body is not authorship.
    anon = post_v1(client, "anon", email="alice@readers.example").json["id"]
    assert client.delete(f"/api/v1/comments/{anon}", headers=alice).status_code == 403

    edited = client.patch(url, json={"body": "second version"}, headers=alice)
    assert edited.status_code == 200
    assert edited.json["body"] == "second version"
    assert client.get(url).json["body"] == "second version"
    bad = client.patch(url, json={"body": "x", "email": "e@example.com"}, headers=alice)
    assert bad.status_code == 400
    assert client.patch(url, json={"body": "   "}, headers=alice).status_code == 400

    clock.advance(2.0)
    on_the_edge = client.patch(url, json={"body": "just in time"}, headers=alice)
    assert on_the_edge.status_code == 200  # the window includes its last instant
    clock.advance(0.001)
    late = client.patch(url, json={"body": "too late"}, headers=alice)
    assert late.status_code == 403
    assert "2 seconds" in late.json["detail"]
    assert client.get(url).json["body"] == "just in time"

    # Deleting has no window.
    assert client.delete(url, headers=alice).status_code == 204
    assert client.get(url).json["status"] == "deleted"
    # A tombstone is still public (it holds its replies' place) but cannot be edited.
    zombie = client.patch(url, json={"body": "zombie"}, headers=alice)
    assert zombie.status_code == 404
    assert zombie.json["detail"] == "comment not found"
    audit = client.get(AUDIT, headers=bearer(api_key(app, SCOPE_ADMIN))).json["items"]
    assert [(e["action"], e["actor"]) for e in audit] == [
        ("delete", "jwt:alice"),
        ("edit", "jwt:alice"),
        ("edit", "jwt:alice"),
    ]


def test_authors_with_non_ascii_subjects_edit_and_delete_and_others_are_refused(build, signer):
    """hmac.compare_digest refuses str with non-ASCII characters (TypeError): any edit or
    delete of a comment by an author whose subject is "josé", by them or by anyone else,
    was a 500."""
    client = build(edit_window=600.0).test_client()
    jose, bob = bearer(signer.token("jos\u00e9")), bearer(signer.token("bob"))
    theirs = f"/api/v1/comments/{post_v1(client, 'hola', headers=jose).json['id']}"
    bobs = f"/api/v1/comments/{post_v1(client, 'hi', headers=bob).json['id']}"
    assert client.patch(theirs, json={"body": "bob"}, headers=bob).status_code == 403
    assert client.delete(theirs, headers=bob).status_code == 403
    assert client.patch(bobs, json={"body": "jos\u00e9"}, headers=jose).status_code == 403
    assert client.delete(bobs, headers=jose).status_code == 403
    edited = client.patch(theirs, json={"body": "adi\u00f3s"}, headers=jose)
    assert (edited.status_code, edited.json["body"]) == (200, "adi\u00f3s")
    assert client.delete(theirs, headers=jose).status_code == 204
    assert client.get(theirs).json["status"] == "deleted"
    assert client.get(bobs).json["body"] == "hi"


def test_moderators_delete_any_comment(build, signer):
    app = build()
    client = app.test_client()
    cid = post_v1(client, "rude", headers=bearer(signer.token("someone"))).json["id"]
    mod = bearer(signer.token("mod-1", scope="comments:moderate"))  # scope granted by the IdP
    assert client.delete(f"/api/v1/comments/{cid}", headers=mod).status_code == 204
    assert client.get(f"/api/v1/comments/{cid}").json["status"] == "deleted"


def test_a_ban_by_email_stops_the_signed_in_reader_with_that_email(build, signer):
    """A signed-in reader's author key is its subject's, so a ban by email was looked up
    under a key the reader never posts with: answered 201, it stopped nothing."""
    app = build(edit_window=600.0)
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    troll = bearer(signer.token("troll-9", email="Troll9@Example.com", email_verified=True))
    url = f"/api/v1/comments/{post_v1(client, 'first', headers=troll).json['id']}"
    banned = client.post(BANS, json={"email": "troll9@example.com"}, headers=mod)
    assert banned.status_code == 201
    refused = post_v1(client, "again", headers=troll)
    assert refused.status_code == 403
    assert refused.json["type"].endswith("author-banned")
    edit = client.patch(url, json={"body": "edited"}, headers=troll)
    assert edit.status_code == 403
    assert edit.json["type"].endswith("author-banned")
    # Another signed-in reader, and the same reader once the ban is lifted, still post.
    assert post_v1(client, "fine", headers=bearer(signer.token("reader-2"))).status_code == 201
    assert client.delete(banned.headers["Location"], headers=mod).status_code == 204
    assert post_v1(client, "reformed", headers=troll).status_code == 201


def test_an_address_is_one_author_in_either_unicode_form(build, signer):
    """``josé`` typed precomposed (U+00E9) and decomposed (``e`` + U+0301) is one mailbox:
    a ban by one form let the other post (anonymously, or from a token whose email came in
    the other form), and an erasure by one left the other's comments."""
    composed, decomposed = "jos\u00e9@example.com", "jose\u0301@example.com"
    app = build()
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    posted = post_v1(client, "first", email=decomposed)
    assert posted.status_code == 201
    banned = client.post(BANS, json={"email": composed.upper()}, headers=mod)
    assert banned.status_code == 201
    assert banned.json["target"] == f"email:{composed}"
    assert client.post(BANS, json={"email": decomposed}, headers=mod).status_code == 200
    assert post_v1(client, "again", email=decomposed).status_code == 403
    reader = bearer(signer.token("jose-1", email=decomposed, email_verified=True))
    assert post_v1(client, "signed in", headers=reader).status_code == 403
    erased = client.post(
        "/api/v1/moderation/comments",
        json={"action": "delete", "author": f"email:{composed}"},
        headers=mod,
    )
    assert erased.json["changed"] == [posted.json["id"]]


def test_banned_authors_cannot_edit_their_comments_either(build, signer):
    app = build(edit_window=600.0)
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    troll = bearer(signer.token("troll-7"))
    url = f"/api/v1/comments/{post_v1(client, 'harmless', headers=troll).json['id']}"
    assert client.patch(url, json={"body": "still harmless"}, headers=troll).status_code == 200
    assert client.post(BANS, json={"subject": "troll-7"}, headers=mod).status_code == 201
    refused = client.patch(url, json={"body": "now offensive"}, headers=troll)
    assert refused.status_code == 403
    assert refused.json["type"].endswith("author-banned")
    assert client.get(url).json["body"] == "still harmless"
