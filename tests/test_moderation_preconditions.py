"""Moderation with a stale If-Match: 412 and nothing done, not the action taken anyway."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flask import Flask
from sqlalchemy import text

from comments_api.identity.credentials import SCOPE_ADMIN
from comments_api.store.repository import _lock_key
from comments_api.web.common import EXTENSION_KEY

from .authkit import api_key, bearer
from .clock import FakeClock
from .support import locks_waited_for, wait_until


@dataclass
class PreModerated:
    """An app under pre-moderation on a fake clock, an admin's key and an author's token."""

    app: Flask
    clock: FakeClock
    moderator: dict[str, str]
    author: dict[str, str]

    def __post_init__(self) -> None:
        self.client = self.app.test_client()

    def pending(self, body: str) -> int:
        """The author's new comment, pending: its id."""
        posted = self.client.post(
            "/api/v1/contents/a1/comments", json={"body": body}, headers=self.author
        )
        assert posted.status_code == 202, posted.get_data(as_text=True)
        return int(posted.json["id"])


def pre_moderated(build, signer) -> PreModerated:
    clock = FakeClock()
    app = build(moderation_mode="pre", clock=clock)
    moderator = bearer(api_key(app, SCOPE_ADMIN))
    return PreModerated(app, clock, moderator, bearer(signer.token("author-1")))


BULK = "/api/v1/moderation/comments"
BANS = "/api/v1/moderation/bans"
STALE = {"If-Match": '"a-tag-the-console-saw-earlier"'}


def public_ids(client) -> list[int]:
    return [c["id"] for c in client.get("/api/v1/contents/a1/comments").json["items"]]


def assert_precondition_failed(response) -> None:
    assert response.status_code == 412, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert "If-Match" in response.json["detail"]


def test_moderation_with_a_stale_if_match_is_412_and_changes_nothing(build):
    """The bulk action, bans and lists ignored If-Match: a console that sent the tag of
    what it had shown the moderator hid, banned and unbanned whatever the state was."""
    app = build()
    client = app.test_client()
    admin = bearer(api_key(app, SCOPE_ADMIN))
    ids = [
        client.post("/api/v1/contents/a1/comments", json={"body": f"c{i}"}, headers=admin).json[
            "id"
        ]
        for i in range(2)
    ]
    audit_before = client.get("/api/v1/admin/audit-log", headers=admin).json["items"]

    hide = {"action": "hide", "ids": ids[:1]}
    assert_precondition_failed(client.post(BULK, json=hide, headers={**admin, **STALE}))
    assert public_ids(client) == ids
    ban = {"email": "troll@example.com"}
    assert_precondition_failed(client.post(BANS, json=ban, headers={**admin, **STALE}))
    assert client.get(BANS, headers=admin).json["items"] == []
    for url in (f"{BULK}?status=hidden", "/api/v1/moderation/pending", BANS):
        assert_precondition_failed(client.get(url, headers={**admin, **STALE}))
    assert_precondition_failed(client.get("/api/v1/admin/audit-log", headers={**admin, **STALE}))
    assert client.get("/api/v1/admin/audit-log", headers=admin).json["items"] == audit_before

    # A client mistake is still reported as such first; an unknown ban stays a 404.
    bad = client.post(BULK, json={"action": "hide", "ids": []}, headers={**admin, **STALE})
    assert bad.status_code == 400
    missing = client.delete(f"{BANS}/email:nobody@example.com", headers={**admin, **STALE})
    assert missing.status_code == 404

    # `*` holds (the resource exists), as does no If-Match at all.
    done = client.post(BULK, json=hide, headers={**admin, "If-Match": "*"})
    assert done.json == {"action": "hide", "changed": ids[:1], "unchanged": []}
    assert public_ids(client) == ids[1:]
    assert client.post(BANS, json=ban, headers=admin).status_code == 201
    lift = f"{BANS}/email:troll@example.com"
    assert_precondition_failed(client.delete(lift, headers={**admin, **STALE}))
    assert [b["target"] for b in client.get(BANS, headers=admin).json["items"]] == [
        "email:troll@example.com"
    ]
    assert client.delete(lift, headers={**admin, "If-Match": "*"}).status_code == 204
    assert client.get(BANS, headers=admin).json["items"] == []


def test_the_contract_documents_the_412_on_every_moderation_operation(build):
    """Every moderation and admin operation answers a stale If-Match with 412: each must
    list the If-Match parameter and the 412 in the OpenAPI document clients generate from."""
    app = build()
    client = app.test_client()
    admin = bearer(api_key(app, SCOPE_ADMIN))
    spec = client.get("/openapi.json").json
    bodies = {("post", BULK): {"action": "hide", "ids": [1]}, ("post", BANS): {"subject": "x"}}
    checked = 0
    for path, item in spec["paths"].items():
        if not path.startswith(("/api/v1/moderation", "/api/v1/admin")):
            continue
        for method, op in item.items():
            url = path.replace("{target}", "sub:x")
            if "{target}" in path:  # one ban, looked up or lifted
                client.post(BANS, json={"subject": "x"}, headers=admin)  # so it is not a 404
            answer = client.open(
                url,
                method=method.upper(),
                json=bodies.get((method, path)),
                headers={**admin, **STALE},
            )
            assert_precondition_failed(answer)
            names = {
                spec["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]]["name"]
                if "$ref" in p
                else p["name"]
                for p in op.get("parameters", [])
            }
            assert "If-Match" in names, (method, path)
            assert "412" in op["responses"], (method, path)
            checked += 1
    assert checked == 8


def test_moderation_writes_with_if_none_match_star_are_412_and_change_nothing(build):
    """`If-None-Match: *` asks to act only if the target does not exist yet (RFC 9110,
    section 13.1.2); the queue, the ban list and a ban being lifted exist, so the writes
    must fail, not hide, ban or unban anyway. Tags hold: nothing has an ETag to match."""
    app = build()
    client = app.test_client()
    admin = bearer(api_key(app, SCOPE_ADMIN))
    star = {**admin, "If-None-Match": "*"}
    ids = [
        client.post("/api/v1/contents/a1/comments", json={"body": f"c{i}"}, headers=admin).json[
            "id"
        ]
        for i in range(2)
    ]
    assert client.post(BANS, json={"email": "old@example.com"}, headers=admin).status_code == 201
    audit_before = client.get("/api/v1/admin/audit-log", headers=admin).json["items"]

    def failed(response) -> None:
        assert response.status_code == 412, response.get_data(as_text=True)
        assert response.json["type"] == "/docs#problem-if-none-match-failed"
        assert response.headers["Cache-Control"] == "no-store"

    failed(client.post(BULK, json={"action": "hide", "ids": ids[:1]}, headers=star))
    failed(client.post(BANS, json={"email": "troll@example.com"}, headers=star))
    failed(client.delete(f"{BANS}/email:old@example.com", headers=star))
    assert public_ids(client) == ids
    assert [b["target"] for b in client.get(BANS, headers=admin).json["items"]] == [
        "email:old@example.com"
    ]
    assert client.get("/api/v1/admin/audit-log", headers=admin).json["items"] == audit_before
    # A ban that does not exist stays a 404; a tag in If-None-Match holds.
    missing = client.delete(f"{BANS}/email:nobody@example.com", headers=star)
    assert missing.status_code == 404
    tagged = {**admin, "If-None-Match": '"some-tag"'}
    done = client.post(BULK, json={"action": "hide", "ids": ids[:1]}, headers=tagged)
    assert done.json == {"action": "hide", "changed": ids[:1], "unchanged": []}
    assert client.delete(f"{BANS}/email:old@example.com", headers=tagged).status_code == 204


def test_delete_by_author_and_the_author_listing_honour_if_match_and_if_none_match(build):
    """Delete by author and the listing by author judge preconditions as the id form does:
    a console acting on a state it no longer sees erases nothing."""
    app = build()
    client = app.test_client()
    admin = bearer(api_key(app, SCOPE_ADMIN))
    body = {"body": "ann", "email": "ann@example.com"}
    cid = client.post("/api/v1/contents/a1/comments", json=body).json["id"]
    erase = {"action": "delete", "author": "email:ann@example.com"}
    assert_precondition_failed(client.post(BULK, json=erase, headers={**admin, **STALE}))
    held = client.post(BULK, json=erase, headers={**admin, "If-None-Match": "*"})
    assert held.status_code == 412
    listing = f"{BULK}?status=hidden&author=email:ann@example.com"
    assert_precondition_failed(client.get(listing, headers={**admin, **STALE}))
    assert public_ids(client) == [cid]
    # A bad key is the client's mistake, reported before the precondition.
    bad = client.post(BULK, json={**erase, "author": "ann"}, headers={**admin, **STALE})
    assert bad.status_code == 400
    done = client.post(BULK, json=erase, headers={**admin, "If-Match": "*"})
    assert done.json == {"action": "delete", "changed": [cid], "unchanged": [], "more": False}
    assert public_ids(client) == [cid]  # a tombstone, in its place
    assert client.get(f"/api/v1/comments/{cid}").json["body"] is None


def test_an_approve_with_if_unedited_since_leaves_a_comment_edited_after_it(build, signer):
    """Pre-moderation: the author changed a pending comment's text after the moderator read
    the queue; the approve names when it was read, and leaves that comment unchanged."""
    setup = pre_moderated(build, signer)
    clock, client, moderator, author = setup.clock, setup.client, setup.moderator, setup.author
    ids = [setup.pending(text) for text in ("a perfectly nice comment", "fine too")]
    read_at = clock.now.isoformat()
    clock.advance(1)
    edited = client.patch(f"/api/v1/comments/{ids[1]}", json={"body": "BUY PILLS"}, headers=author)
    assert edited.status_code == 200, edited.get_data(as_text=True)

    approve = {"action": "approve", "ids": ids, "if_status": ["pending"]}
    seen = client.post(BULK, json={**approve, "if_unedited_since": read_at}, headers=moderator)
    assert seen.json == {"action": "approve", "changed": ids[:1], "unchanged": ids[1:]}
    assert public_ids(client) == ids[:1]
    later = clock.now.isoformat()
    again = client.post(BULK, json={**approve, "if_unedited_since": later}, headers=moderator)
    assert again.json == {"action": "approve", "changed": ids[1:], "unchanged": ids[:1]}
    assert public_ids(client) == ids

    for bad, field in (
        ({**approve, "if_unedited_since": "2026-12-07T10:00:00"}, "if_unedited_since"),
        ({**approve, "if_unedited_since": ""}, "if_unedited_since"),
        ({"action": "delete", "author": "sub:author-1", "if_unedited_since": later}, None),
    ):
        refused = client.post(BULK, json=bad, headers=moderator)
        assert refused.status_code == 400, refused.get_data(as_text=True)
        assert refused.mimetype == "application/problem+json"
        fields = [e["field"] for e in refused.json["errors"]]
        assert fields == [field or "if_unedited_since"], refused.json
    assert public_ids(client) == ids  # nothing deleted by the refused call


def test_an_edit_that_waited_for_a_lock_is_not_taken_as_read_before_it(build, signer):
    """Pre-moderation: an author's edit waited for another write's lock on its content (a
    create, a bulk action; on SQLite any writer) while the moderator read the queue, which
    still showed the old text. The edit was stamped with the time it began, before the
    wait, so an approve naming the moderator's read time took the new text as read and
    published it. It is stamped once it holds its locks: the approve leaves it pending."""
    setup = pre_moderated(build, signer)
    app, clock, client, moderator, author = (
        setup.app, setup.clock, setup.client, setup.moderator, setup.author
    )  # fmt: skip
    cid = setup.pending("a perfectly nice comment")
    assert client.get("/api/v1/moderation/pending", headers=moderator).status_code == 200
    engine = app.extensions[EXTENSION_KEY].repo.engine
    edit: dict[str, object] = {}

    def send_edit() -> None:
        edit["response"] = app.test_client().patch(
            f"/api/v1/comments/{cid}", json={"body": "BUY PILLS"}, headers=author
        )

    editing = threading.Thread(target=send_edit, daemon=True)
    with _another_write_on("a1", engine):
        editing.start()
        if engine.dialect.name == "postgresql":
            assert wait_until(lambda: locks_waited_for(engine, "advisory") == 1, 10, 0.01)
        else:
            time.sleep(0.3)  # retrying BEGIN IMMEDIATE (DB_STATEMENT_TIMEOUT is 5 s)
        assert editing.is_alive(), edit
        clock.advance(1)

        def read_queue() -> None:  # SQLite: it waits for the held write, as for an edit
            edit["queue"] = app.test_client().get("/api/v1/moderation/pending", headers=moderator)

        reading = threading.Thread(target=read_queue, daemon=True)
        reading.start()
        reading.join(0.5)
        clock.advance(1)
    editing.join(10)
    reading.join(10)
    assert edit["response"].status_code == 200, edit["response"].get_data(as_text=True)
    listing = edit["queue"].json
    [(shown, body)] = [(c["id"], c["body"]) for c in listing["items"]]
    assert shown == cid

    # The console's if_unedited_since: the listing's read_at. The old text read: unchanged.
    approve = {"action": "approve", "ids": [cid], "if_status": ["pending"]}
    since = listing["read_at"]
    seen = client.post(BULK, json={**approve, "if_unedited_since": since}, headers=moderator)
    if body == "a perfectly nice comment":
        assert seen.json == {"action": "approve", "changed": [], "unchanged": [cid]}
        assert public_ids(client) == []
    else:  # read after the edit: what it approves is what the moderator saw
        assert seen.json == {"action": "approve", "changed": [cid], "unchanged": []}


@contextmanager
def _another_write_on(content_id: str, engine) -> Iterator[None]:
    """Hold what another write on ``content_id`` holds while it runs: its content's lock
    (PostgreSQL), SQLite's write lock."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key("content", content_id)}
            )
            try:
                yield
            finally:
                conn.commit()
        return
    holder = sqlite3.connect(engine.url.database, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("COMMIT")
    finally:
        holder.close()


def test_a_moderation_listing_takes_no_transaction_id(postgres_url):
    """A listing runs in a write transaction only to hold the edits lock (read_at): it
    asked for its transaction id as the writes do (pg_current_xact_id), which assigned
    one, so every console refresh burnt an id and wrote, and flushed, a commit record."""
    import psycopg

    from comments_api.store.repository import Repository, make_engine, migrate

    engine = make_engine(postgres_url)
    migrate(engine)
    repo = Repository(engine)

    def next_id() -> int:
        with psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True) as conn:
            row = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()
        assert row is not None
        return int(row[0])

    before = next_id()
    for _ in range(5):
        page = repo.moderation_page("pending", content_id=None, limit=10, after_id=None)
        assert page.read_at is not None
    assert next_id() == before
