"""v1 API: create, read, paginate, reply, delete, counts; on SQLite and on PostgreSQL."""

from __future__ import annotations

import re
import sys

import pytest

from comments_api.identity.credentials import SCOPE_MODERATE
from comments_api.web.common import EXTENSION_KEY

from .authkit import api_key, bearer
from .clock import FakeClock

PROBLEM = "application/problem+json"


def create(client, content_id="1", headers=None, **body):
    body.setdefault("body", "hello")
    return client.post(f"/api/v1/contents/{content_id}/comments", json=body, headers=headers)


def page(client, content_id="1", **params):
    return client.get(f"/api/v1/contents/{content_id}/comments", query_string=params)


def assert_problem(response, status, field=None):
    assert response.status_code == status, response.data
    assert response.mimetype == PROBLEM
    body = response.json
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["type"].startswith("/docs#problem-")
    if field is not None:
        assert field in {e["field"] for e in body["errors"]}
    return body


def test_create_returns_201_location_and_the_stored_comment(client):
    response = create(client, body="Nice piece", email="Alice@Example.com", author_name="Alice")
    assert response.status_code == 201
    comment = response.json
    assert response.headers["Location"] == f"/api/v1/comments/{comment['id']}"
    assert comment["content_id"] == "1"
    assert comment["body"] == "Nice piece"
    assert comment["status"] == "published"
    assert comment["parent_id"] is None
    assert comment["author"]["name"] == "Alice"
    assert re.fullmatch(r"[0-9a-f]{64}", comment["author"]["email_hash"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", comment["created_at"])
    fetched = client.get(response.headers["Location"])
    assert fetched.status_code == 200
    assert fetched.json == comment


def test_email_hash_is_case_insensitive_and_raw_email_never_appears(client):
    a = create(client, body="one", email="Alice@Example.com").json
    b = create(client, body="two", email="alice@example.com").json
    assert a["author"]["email_hash"] == b["author"]["email_hash"]
    for response in (page(client), client.get(f"/api/v1/comments/{a['id']}")):
        assert b"example.com" not in response.data.lower()


def test_anonymous_display_name(client):
    assert create(client, body="x").json["author"] == {"name": "anonymous", "email_hash": None}


def test_pagination_with_opaque_cursor_oldest_and_newest(client):
    ids = [create(client, body=f"c{i}").json["id"] for i in range(7)]
    seen, cursor = [], None
    while True:
        params = {"limit": 3} if cursor is None else {"limit": 3, "cursor": cursor}
        response = page(client, **params)
        assert response.status_code == 200
        seen += [c["id"] for c in response.json["items"]]
        cursor = response.json["next_cursor"]
        if cursor is None:
            assert "Link" not in response.headers
            break
        assert 'rel="next"' in response.headers["Link"]
    assert seen == ids

    newest = page(client, limit=4, order="newest").json
    assert [c["id"] for c in newest["items"]] == ids[::-1][:4]
    rest = page(client, limit=4, order="newest", cursor=newest["next_cursor"]).json
    assert [c["id"] for c in rest["items"]] == ids[::-1][4:]
    assert rest["next_cursor"] is None


def test_default_and_max_page_size(client):
    for i in range(27):
        create(client, body=f"c{i}", email=f"u{i}@example.com")
    assert len(page(client).json["items"]) == 25
    assert len(page(client, limit=100).json["items"]) == 27
    assert_problem(page(client, limit=101), 400, "limit")
    assert_problem(page(client, limit=0), 400, "limit")
    assert_problem(page(client, limit="ten"), 400, "limit")


def test_bad_cursor_and_order(client):
    create(client)
    assert_problem(page(client, cursor="!!!"), 400, "cursor")
    assert_problem(page(client, cursor="bm90LWEtY3Vyc29y"), 400, "cursor")
    assert_problem(page(client, order="random"), 400, "order")
    first = page(client, limit=1).json
    create(client, body="second")
    cursor = page(client, limit=1).json["next_cursor"]
    assert first["items"]
    # A cursor from one order cannot be replayed in the other.
    assert_problem(page(client, cursor=cursor, order="newest"), 400, "cursor")


def test_a_cursor_from_another_contents_list_is_400(client):
    # Before, it was taken as a position in the other list: page 2 of one thread started
    # somewhere in another, silently.
    for i in range(3):
        create(client, content_id="a", body=f"a{i}")
        create(client, content_id="b", body=f"b{i}")
    for order in ("oldest", "newest"):
        cursor = page(client, content_id="a", limit=1, order=order).json["next_cursor"]
        assert cursor
        response = page(client, content_id="b", limit=1, order=order, cursor=cursor)
        assert_problem(response, 400, "cursor")
        assert "another content" in response.json["detail"]
        # Its own list still takes it.
        assert page(client, content_id="a", limit=1, order=order, cursor=cursor).status_code == 200


def test_a_cursor_survives_inserts_hides_and_deletes_between_pages(client, v1_delete):
    """Keyset pages: no comment twice, none skipped, whatever happens between two pages."""
    ids = [create(client, body=f"c{i}").json["id"] for i in range(6)]
    first = page(client, limit=2).json
    assert [c["id"] for c in first["items"]] == ids[:2]
    # The comment the cursor names is deleted, the next one hidden by a moderator, and a
    # new comment arrives: the next page starts right after the cursor's position.
    v1_delete(client, ids[1])
    moderator = client.application.extensions["tests_moderator_key"]
    hidden = client.post(
        "/api/v1/moderation/comments",
        json={"action": "hide", "ids": [ids[2]]},
        headers={"Authorization": f"Bearer {moderator}"},
    )
    assert hidden.json["changed"] == [ids[2]]
    late = create(client, body="late").json["id"]
    seen, cursor = [], first["next_cursor"]
    for _ in range(10):
        response = page(client, limit=2, cursor=cursor)
        assert response.status_code == 200
        seen += [c["id"] for c in response.json["items"]]
        cursor = response.json["next_cursor"]
        if cursor is None:
            break
    assert seen == [*ids[3:], late]


def test_updated_at_moves_with_every_change_as_the_contract_says(client, v1_delete):
    """/openapi.json's `updated_at`: `created_at` until an edit, a moderator's decision or
    the delete (what a client must know before showing "edited" for updated_at alone)."""
    created = create(client, body="first").json
    assert created["updated_at"] == created["created_at"]
    v1_delete(client, create(client, body="other").json["id"])  # makes the moderator key
    moderator = {"Authorization": f"Bearer {client.application.extensions['tests_moderator_key']}"}
    seen = [created["updated_at"]]
    for action in ("hide", "approve"):
        answer = client.post(
            "/api/v1/moderation/comments",
            json={"action": action, "ids": [created["id"]]},
            headers=moderator,
        )
        assert answer.json["changed"] == [created["id"]]
        seen.append(client.application.extensions[EXTENSION_KEY].repo.get(created["id"]).updated_at)
    v1_delete(client, created["id"])
    tombstone = client.get(f"/api/v1/comments/{created['id']}").json
    assert tombstone["created_at"] == created["created_at"]
    assert tombstone["updated_at"] == tombstone["deleted_at"] >= created["updated_at"]
    assert len(set(seen)) == 3  # created, hidden, approved: three instants
    schema = client.get("/openapi.json").json["components"]["schemas"]["Comment"]
    described = schema["properties"]["updated_at"]["description"]
    assert "approves or hides" in described
    assert "edits" in described


def test_edited_at_marks_the_authors_edits_and_not_a_moderators_decisions(build, signer):
    """`edited_at`: null until the author changes the text, then that edit's instant (equal
    to `updated_at`). A moderator's approve or hide moves `updated_at` only, so a client can
    show "(edited)" without mistaking an approval for an edit. A tombstone has no text and
    no `edited_at`."""
    clock = FakeClock()
    app = build(moderation_mode="pre", clock=clock)
    client = app.test_client()
    author = bearer(signer.token("alice"))
    moderator = bearer(api_key(app, SCOPE_MODERATE))
    url = None

    def moderate(action: str) -> dict:
        clock.advance(1)
        answer = client.post(
            "/api/v1/moderation/comments",
            json={"action": action, "ids": [created["id"]]},
            headers=moderator,
        )
        assert answer.json["changed"] == [created["id"]]
        status = "hidden" if action == "hide" else "published"
        listed = client.get(
            "/api/v1/moderation/comments", query_string={"status": status}, headers=moderator
        )
        if status == "published":
            return client.get(url).json
        return next(c for c in listed.json["items"] if c["id"] == created["id"])

    created = create(client, body="first", headers=author).json
    url = f"/api/v1/comments/{created['id']}"
    assert created["edited_at"] is None
    approved = moderate("approve")
    assert approved["updated_at"] > created["updated_at"]
    assert approved["edited_at"] is None  # an approval is no edit
    assert page(client).json["items"][0]["edited_at"] is None

    clock.advance(1)
    edited = client.patch(url, json={"body": "second"}, headers=author)
    assert edited.status_code == 200, edited.data
    assert edited.json["edited_at"] == edited.json["updated_at"] > approved["updated_at"]
    approved = moderate("approve")  # pre-moderation sent the new text back to the queue
    assert approved["updated_at"] > edited.json["updated_at"]
    assert approved["edited_at"] == edited.json["edited_at"]
    assert page(client).json["items"][0]["edited_at"] == edited.json["edited_at"]
    hidden = moderate("hide")
    assert hidden["updated_at"] > approved["updated_at"]
    assert hidden["edited_at"] == edited.json["edited_at"]

    moderate("approve")
    clock.advance(1)
    assert client.delete(url, headers=author).status_code == 204
    tombstone = client.get(url).json
    assert tombstone["status"] == "deleted"
    assert tombstone["edited_at"] is None
    assert tombstone["updated_at"] == tombstone["deleted_at"]
    schema = client.get("/openapi.json").json["components"]["schemas"]["Comment"]
    assert "edited_at" in schema["required"]
    assert "author" in schema["properties"]["edited_at"]["description"]


def test_empty_content_lists_empty_page(client):
    response = page(client, content_id="nothing-here")
    assert response.status_code == 200
    assert response.json["items"] == []
    assert response.json["next_cursor"] is None


def test_replies_must_belong_to_the_same_content(client):
    parent = create(client, content_id="a", body="parent").json
    reply = create(client, content_id="a", body="reply", parent_id=parent["id"])
    assert reply.status_code == 201
    assert reply.json["parent_id"] == parent["id"]
    assert_problem(
        create(client, content_id="b", body="x", parent_id=parent["id"]), 400, "parent_id"
    )
    assert_problem(create(client, content_id="a", body="x", parent_id=999999), 400, "parent_id")
    assert_problem(create(client, content_id="a", body="x", parent_id="1"), 400, "parent_id")
    assert [c["body"] for c in page(client, content_id="b").json["items"]] == []


def test_get_unknown_or_malformed_id_is_404_problem(client):
    assert_problem(client.get("/api/v1/comments/424242"), 404)
    assert_problem(client.get("/api/v1/comments/abc"), 404)


def test_delete_leaves_a_tombstone(client, v1_delete):
    parent = create(client, body="to delete", email="x@example.com", author_name="X").json
    reply = create(client, body="reply", parent_id=parent["id"]).json
    response = v1_delete(client, parent["id"])
    assert response.status_code == 204
    assert response.data == b""
    assert "Content-Type" not in response.headers  # not Flask's default text/html
    tomb = client.get(f"/api/v1/comments/{parent['id']}").json
    assert tomb["status"] == "deleted"
    assert tomb["body"] is None
    assert tomb["author"] is None
    assert tomb["deleted_at"]
    items = page(client).json["items"]
    assert [c["id"] for c in items] == [parent["id"], reply["id"]]
    assert items[0]["body"] is None
    # Deleted comments leave the legacy list and the counts.
    assert [c["comment"] for c in client.get("/api/comment/list/1").json] == ["reply"]
    assert client.get("/api/v1/counts", query_string={"content_id": "1"}).json == {
        "counts": {"1": 1}
    }
    assert v1_delete(client, parent["id"]).status_code == 204  # idempotent
    assert_problem(v1_delete(client, 999999), 404)


def test_counts_for_many_contents_in_one_call(client):
    for cid, n in (("a", 3), ("b", 1)):
        for i in range(n):
            create(client, content_id=cid, body=f"{cid}{i}")
    response = client.get(
        "/api/v1/counts",
        query_string=[("content_id", "a"), ("content_id", "b"), ("content_id", "zzz")],
    )
    assert response.status_code == 200
    assert response.json == {"counts": {"a": 3, "b": 1, "zzz": 0}}
    ids = [("content_id", str(i)) for i in range(100)]
    assert len(client.get("/api/v1/counts", query_string=ids).json["counts"]) == 100
    too_many = [*ids, ("content_id", "100")]
    assert_problem(client.get("/api/v1/counts", query_string=too_many), 400, "content_id")
    assert_problem(client.get("/api/v1/counts"), 400, "content_id")
    assert_problem(client.get("/api/v1/counts", query_string={"content_id": ""}), 400, "content_id")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body"),
        ({"body": "  "}, "body"),
        ({"body": 1}, "body"),
        ({"body": "x", "email": "nope"}, "email"),
        ({"body": "x", "author_name": ""}, "author_name"),
        ({"body": "x", "author_name": "n" * 81}, "author_name"),
        ({"body": "x", "parent_id": -1}, "parent_id"),
        ({"body": "x", "parent_id": True}, "parent_id"),
        ({"body": "x", "status": "published"}, "status"),
    ],
)
def test_create_validation_problems_store_nothing(client, body, field):
    response = client.post("/api/v1/contents/1/comments", json=body)
    assert_problem(response, 400, field)
    assert page(client).json["items"] == []


def test_create_rejects_wrong_content_type_and_bad_json(client):
    url = "/api/v1/contents/1/comments"
    assert_problem(client.post(url, data="body=x", content_type="text/plain"), 415)
    assert_problem(client.post(url, data="{", content_type="application/json"), 400)
    assert_problem(client.post(url, data="[]", content_type="application/json"), 400)
    assert page(client).json["items"] == []


@pytest.mark.parametrize(
    ("body", "key"),
    [
        # The last key won: a proxy or WAF that reads the first saw "hello", we stored this.
        ('{"body": "hello", "body": "<img src=x onerror=alert(1)>"}', "body"),
        ('{"body": "x", "parent_id": 1, "parent_id": 2}', "parent_id"),
        ('{"body": "x", "author_name": "A", "author_name": "B"}', "author_name"),
        ('{"body": "x", "b\\u006fdy": "y"}', "body"),  # an escape spells the same key
        ('{"body": "x", "email": {"e": 1, "e": 2}}', "e"),  # at any depth
    ],
)
def test_duplicate_keys_are_a_400_problem_naming_the_key(client, body, key):
    response = client.post(
        "/api/v1/contents/1/comments", data=body, content_type="application/json"
    )
    problem = assert_problem(response, 400)
    assert problem["type"] == "/docs#problem-bad-request"
    assert problem["detail"] == (
        f'the request body has the key "{key}" more than once in one object; send each key '
        "once (parsers disagree on which value counts)"
    )
    assert page(client).json["items"] == []


def test_a_key_named_in_a_duplicate_key_problem_is_escaped_and_cut(client):
    url = "/api/v1/contents/1/comments"
    cases = [
        # An unpaired surrogate could not be written into the UTF-8 answer: escaped.
        ('{"\\ud800": 1, "\\ud800": 2}', '"\\ud800"'),
        # Control and bidi characters are shown as escapes, never raw in the message.
        ('{"a\\u202e\\n": 1, "a\\u202e\\n": 2}', '"a\\u202e\\n"'),
        ('{"caf\u00e9": 1, "caf\u00e9": 2}', '"caf\\u00e9"'),
        # A long key is cut to its first 40 characters.
        ('{"' + "k" * 500 + '": 1, "' + "k" * 500 + '": 2}', '"' + "k" * 40 + '"...'),
    ]
    for body, shown in cases:
        response = client.post(url, data=body.encode(), content_type="application/json")
        problem = assert_problem(response, 400)
        assert problem["detail"].startswith(f"the request body has the key {shown} more "), body
    assert page(client).json["items"] == []


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/api/v1/contents/1/comments", '{"body": "x", "parent_id": %s}'),
        ("/api/comment/new", '{"email": "a@b.co", "comment": "x", "content_id": %s}'),
    ],
)
def test_an_integer_too_long_to_read_is_a_400_that_says_so(client, url, body):
    """Python refuses int() of more than 4,300 digits; its message reached the client
    as the 400's detail, telling them to call sys.set_int_max_str_digits()."""
    digits = sys.get_int_max_str_digits() + 1
    response = client.post(url, data=body % ("9" * digits), content_type="application/json")
    assert response.status_code == 400, response.data
    detail = response.json["detail" if url.startswith("/api/v1/") else "message"]
    assert detail == (
        f"the request body has an integer of more than {digits - 1} digits; no field takes one"
    )
    assert "sys." not in response.get_data(as_text=True)
    assert page(client).json["items"] == []


@pytest.mark.parametrize("coding", ["gzip", "deflate", "GZIP"])
def test_a_compressed_body_is_415_naming_the_coding_we_take(client, coding):
    # It was a 400 "not valid UTF-8", which sent clients looking for a charset problem.
    import gzip
    import zlib

    legacy = b'{"email": "a@example.com", "comment": "x", "content_id": 1}'
    pack = zlib.compress if coding == "deflate" else gzip.compress
    headers = {"Content-Encoding": coding}
    v1 = client.post(
        "/api/v1/contents/1/comments",
        data=pack(b'{"body": "x"}'),
        content_type="application/json",
        headers=headers,
    )
    body = assert_problem(v1, 415)
    assert body["type"] == "/docs#problem-unsupported-media-type"
    assert "Content-Encoding" in body["detail"]
    assert v1.headers["Accept-Encoding"] == "identity"
    old = client.post(
        "/api/comment/new", data=pack(legacy), content_type="application/json", headers=headers
    )
    assert old.status_code == 415
    assert old.json["status"] == "UNSUPPORTED-MEDIA-TYPE"
    assert old.headers["Accept-Encoding"] == "identity"
    assert page(client).json["items"] == []


def test_body_too_large_is_413_problem(make_app):
    client = make_app(max_body_bytes=512).test_client()
    assert_problem(create(client, body="x" * 1000), 413)


def test_unknown_route_and_wrong_method_are_problems(client):
    assert_problem(client.get("/api/v1/nothing"), 404)
    assert_problem(client.get("/definitely/not/here"), 404)
    body = assert_problem(client.put("/api/v1/contents/1/comments"), 405)
    assert "PUT" in body["detail"]


def test_invalid_content_id_in_path(client):
    assert_problem(page(client, content_id="x" * 129), 400, "content_id")
    assert_problem(create(client, content_id="%20padded"), 400, "content_id")


def test_a_line_feed_in_a_path_content_id_is_the_same_400_as_other_control_characters(client):
    # "." in the route's pattern stopped at "\n": these were a 404 "no such route".
    for path_id in ("a%0Ab", "a%0D%0Ab", "news%2F%0A%2Fslug"):
        for response in (page(client, content_id=path_id), create(client, content_id=path_id)):
            body = assert_problem(response, 400, "content_id")
            assert body["errors"][0]["message"] == "must not contain control characters"
        legacy = client.get(f"/api/comment/list/{path_id}")
        assert legacy.status_code == 400
        assert legacy.json == {
            "status": "BAD-REQUEST",
            "message": "content_id: must not contain control characters",
        }


# Content ids the contract allows, with slashes: a site's paths are natural content ids.
SLASHED_IDS = ["news/2026/12/a-slug", "/leading", "trailing/", "a//b", "https://x.test/p?q"]


@pytest.mark.parametrize("content_id", SLASHED_IDS)
def test_content_ids_with_slashes_work_on_every_content_route(client, content_id):
    """Sent percent-encoded (%2F, as encodeURIComponent does), they reach the same
    content on the v1 and legacy routes; never a redirect to another content (werkzeug's
    merge of "//" answered an HTML 308 from /contents/%2Fleading to /contents/leading)."""
    from urllib.parse import quote

    path_id = quote(content_id, safe="")
    created = client.post(f"/api/v1/contents/{path_id}/comments", json={"body": "v1"})
    assert created.status_code == 201, created.data
    assert created.json["content_id"] == content_id
    legacy = client.post(
        "/api/comment/new",
        json={"email": "a@example.com", "comment": "legacy", "content_id": content_id},
    )
    assert legacy.status_code == 200, legacy.data

    listed = client.get(f"/api/v1/contents/{path_id}/comments")
    assert listed.status_code == 200
    assert listed.json["content_id"] == content_id
    assert [c["body"] for c in listed.json["items"]] == ["v1", "legacy"]
    old = client.get(f"/api/comment/list/{path_id}")
    assert old.status_code == 200
    assert [c["comment"] for c in old.json] == ["v1", "legacy"]
    counts = client.get("/api/v1/counts", query_string={"content_id": content_id})
    assert counts.json["counts"] == {content_id: 2}
    # The neighbour without the slashes got nothing.
    other = content_id.replace("/", "") or "x"
    assert client.get(f"/api/v1/contents/{quote(other, safe='')}/comments").json["items"] == []


def test_no_route_answers_with_a_redirect(client):
    for method, path in [
        ("GET", "/api/v1/contents//x/comments"),
        ("POST", "/api/v1/contents/%2Fx/comments"),
        ("GET", "/api/comment/list//x"),
        ("GET", "//healthz"),
        ("GET", "/api/v1//counts?content_id=1"),
        ("GET", "/api/v1/comments//1"),
        ("GET", "/healthz/"),
    ]:
        response = client.open(
            path, method=method, json={"body": "b"} if method == "POST" else None
        )
        assert response.status_code < 300 or response.status_code >= 400, (path, response.status)
        assert "Location" not in response.headers or response.status_code == 201
        assert response.mimetype != "text/html", (path, response.data[:80])


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, {"auth_mode": "open", "moderation_mode": "post", "max_comment_length": 5000}),
        (
            {"auth_mode": "required", "moderation_mode": "pre", "max_comment_length": 300},
            {"auth_mode": "required", "moderation_mode": "pre", "max_comment_length": 300},
        ),
    ],
)
def test_config_tells_clients_the_settings_they_adapt_to(make_app, settings, expected):
    app = make_app(edit_window=120.0, **settings)
    client = app.test_client()
    response = client.get("/api/v1/config")
    assert response.status_code == 200
    assert response.json == {
        **expected,
        "max_author_name_length": 80,
        "max_email_length": 254,
        "edit_window_seconds": 120.0,
    }
    assert response.headers["Cache-Control"] == "public, max-age=300"
    # The limits it announces are the ones a create enforces.
    limit = response.json["max_comment_length"]
    fits = client.post("/api/v1/contents/cfg/comments", json={"body": "x" * limit})
    too_long = client.post("/api/v1/contents/cfg/comments", json={"body": "x" * (limit + 1)})
    if expected["auth_mode"] == "open":
        assert fits.status_code in (201, 202)
        assert_problem(too_long, 400, "body")
        name = response.json["max_author_name_length"]
        named = client.post(
            "/api/v1/contents/cfg/comments", json={"body": "hi", "author_name": "n" * name}
        )
        assert named.status_code in (201, 202)
        longer = {"body": "hi", "author_name": "n" * (name + 1)}
        assert_problem(
            client.post("/api/v1/contents/cfg/comments", json=longer), 400, "author_name"
        )
    else:
        assert (fits.status_code, too_long.status_code) == (401, 401)


def test_a_plain_options_names_the_methods_with_an_empty_untyped_answer(client):
    # Not a CORS preflight (tests/test_abuse.py): RFC 9110's 200 with Allow and
    # Content-Length: 0, and no Flask text/html type for a body that is not there.
    cases = {
        "/api/v1/contents/a/comments": {"GET", "HEAD", "POST", "OPTIONS"},
        "/api/comment/new": {"POST", "OPTIONS"},
        "/api/v1/comments/1": {"GET", "HEAD", "PATCH", "DELETE", "OPTIONS"},
        "/healthz": {"GET", "HEAD", "OPTIONS"},
    }
    for path, methods in cases.items():
        response = client.options(path)
        assert response.status_code == 200, path
        assert {m.strip() for m in response.headers["Allow"].split(",")} == methods
        assert response.headers["Content-Length"] == "0"
        assert "Content-Type" not in response.headers, path
        assert response.data == b""
