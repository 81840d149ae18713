"""Idempotency-Key on v1 creates, on SQLite and PostgreSQL (the app over a real database)."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
import requests
from sqlalchemy import func, select, text

from comments_api.identity.credentials import SCOPE_MODERATE, SCOPE_WRITE, generate_api_key
from comments_api.store.repository import comments
from comments_api.web.common import EXTENSION_KEY

from .authkit import api_key, bearer
from .clock import FakeClock
from .support import ServiceProcess

URL = "/api/v1/contents/idem/comments"
BULK = "/api/v1/moderation/comments"


def count(app) -> int:
    with app.extensions[EXTENSION_KEY].repo.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(comments)).scalar_one())


def post(client, body, key=None, headers=None):
    headers = dict(headers or {})
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(URL, json=body, headers=headers)


def test_a_retry_gets_the_first_answer_and_stores_nothing(make_app):
    app = make_app()
    client = app.test_client()
    key = str(uuid.uuid4())
    first = post(client, {"body": "only once", "email": "ann@example.com"}, key)
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    # Key order and spacing do not make it another request.
    again = client.post(
        URL,
        data='{ "email": "ann@example.com",  "body": "only once" }',
        content_type="application/json",
        headers={"Idempotency-Key": key},
    )
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_data() == first.get_data()
    assert again.headers["Location"] == first.headers["Location"]
    assert again.mimetype == "application/json"
    assert count(app) == 1
    # The replay answers even after the comment changed: it is the first answer.
    assert client.get(first.headers["Location"]).json == first.json


def test_the_same_key_with_another_body_is_422(make_app):
    app = make_app()
    client = app.test_client()
    key = "order-42"
    assert post(client, {"body": "first text"}, key).status_code == 201
    other = post(client, {"body": "second text"}, key)
    assert other.status_code == 422
    assert other.mimetype == "application/problem+json"
    assert other.json["type"] == "/docs#problem-idempotency-key-reused"
    assert "different request" in other.json["detail"]
    assert count(app) == 1
    # Another content is another request too.
    moved = client.post(
        "/api/v1/contents/elsewhere/comments",
        json={"body": "first text"},
        headers={"Idempotency-Key": key},
    )
    assert moved.status_code == 422


def test_a_number_written_another_way_is_the_same_request(make_app):
    # parent_id 1 and 1.0 are the same value (the reader makes 1.0 the integer 1): the
    # retry of a client that serialises ids as floats was a 422 "different request".
    app = make_app()
    client = app.test_client()
    parent = post(client, {"body": "parent"}).json["id"]
    key = str(uuid.uuid4())
    first = post(client, {"body": "reply", "parent_id": parent}, key)
    assert first.status_code == 201
    for spelling in (f"{parent}.0", f"{parent}e0", f"{parent}.000"):
        again = client.post(
            URL,
            data=f'{{"body": "reply", "parent_id": {spelling}}}',
            content_type="application/json",
            headers={"Idempotency-Key": key},
        )
        assert again.status_code == 201, (spelling, again.json)
        assert again.headers["Idempotent-Replayed"] == "true"
    assert count(app) == 2


def test_keys_are_scoped_per_caller(make_app):
    app = make_app()
    client = app.test_client()
    new = generate_api_key()
    app.extensions[EXTENSION_KEY].repo.add_api_key(new.key_id, "site", new.key_hash, [SCOPE_WRITE])
    backend = {"Authorization": f"Bearer {new.key}"}
    key = "shared-key"
    anonymous = post(client, {"body": "from a reader"}, key)
    site = post(client, {"body": "from the backend"}, key, headers=backend)
    assert (anonymous.status_code, site.status_code) == (201, 201)
    assert anonymous.json["id"] != site.json["id"]
    assert post(client, {"body": "from the backend"}, key, headers=backend).json == site.json
    assert count(app) == 2


def test_keys_expire_after_the_window(make_app):
    clock = FakeClock()
    app = make_app(idempotency_ttl=1.0, duplicate_window=0, clock=clock)
    client = app.test_client()
    first = post(client, {"body": "again later"}, "k-1")
    assert (
        post(client, {"body": "again later"}, "k-1").headers["Location"]
        == (first.headers["Location"])
    )
    clock.advance(0.9)
    assert post(client, {"body": "again later"}, "k-1").headers["Idempotent-Replayed"] == "true"
    clock.advance(0.3)
    later = post(client, {"body": "again later"}, "k-1")
    assert later.status_code == 201
    assert "Idempotent-Replayed" not in later.headers
    assert later.headers["Location"] != first.headers["Location"]
    # Once expired, another body is a new request, not a reuse.
    clock.advance(1.2)
    assert post(client, {"body": "something else"}, "k-1").status_code == 201
    assert count(app) == 3


def test_pending_answers_replay_as_202_without_location(make_app):
    app = make_app(moderation_mode="pre")
    client = app.test_client()
    first = post(client, {"body": "wait for me"}, "p-1")
    again = post(client, {"body": "wait for me"}, "p-1")
    assert (first.status_code, again.status_code) == (202, 202)
    assert "Location" not in again.headers
    assert again.json == first.json
    assert count(app) == 1


def test_refused_requests_are_not_remembered(make_app):
    app = make_app()
    client = app.test_client()
    assert post(client, {"body": "dup", "email": "d@example.com"}).status_code == 201
    # A duplicate refused with a key leaves the key free: nothing was created under it.
    assert post(client, {"body": "dup", "email": "d@example.com"}, "d-1").status_code == 409
    assert post(client, {"body": "new text", "email": "d@example.com"}, "d-1").status_code == 201
    assert count(app) == 2


def test_malformed_keys_are_400(make_app):
    client = make_app().test_client()
    for bad in ("", "x" * 256, "caf\u00e9"):
        response = client.post(
            URL,
            json={"body": "hello"},
            headers={"Idempotency-Key": bad.encode("utf-8").decode("latin-1")},
        )
        assert response.status_code == 400, bad
        assert response.json["errors"][0]["field"] == "Idempotency-Key"


def test_expired_keys_are_swept(make_app, monkeypatch):
    from comments_api.store import repository as storage
    from comments_api.store.repository import idempotency_keys

    monkeypatch.setattr(storage, "IDEMPOTENCY_SWEEP_INTERVAL", 0.0)
    clock = FakeClock()
    app = make_app(idempotency_ttl=1.0, clock=clock)
    client = app.test_client()
    assert post(client, {"body": "old"}, "old-key").status_code == 201
    clock.advance(1.2)
    assert post(client, {"body": "new"}, "new-key").status_code == 201
    with app.extensions[EXTENSION_KEY].repo.engine.connect() as conn:
        left = [r.key for r in conn.execute(select(idempotency_keys.c.key))]
    assert left == ["new-key"]


def test_a_backlog_of_expired_keys_is_swept_in_bounded_batches(make_app):
    """Expired keys pile up while no keyed create sweeps them (IDEMPOTENCY_TTL lowered,
    keyed creates back after a pause). One sweep deleted the whole backlog in one
    transaction, run by the create that triggered it: 900,000 rows held that create and
    SQLite's write lock, so every other write, for 6.6 s. A sweep now deletes at most
    IDEMPOTENCY_SWEEP_BATCH rows, and the next keyed creates go on until none is left."""
    from comments_api.store import repository as storage
    from comments_api.store.repository import idempotency_keys

    clock = FakeClock()
    app = make_app(idempotency_ttl=60.0, clock=clock)
    engine = app.extensions[EXTENSION_KEY].repo.engine
    batch = storage.IDEMPOTENCY_SWEEP_BATCH
    backlog = 2 * batch + batch // 2
    old = clock() - timedelta(seconds=120)
    with engine.begin() as conn:
        conn.execute(
            idempotency_keys.insert(),
            [
                {
                    "scope": "anonymous",
                    "key": f"old-{i}",
                    "request_hash": "0" * 64,
                    "status": 201,
                    "body": "{}",
                    # One instant for all: a batch bounded by its newest created_at
                    # would take every row written in that microsecond.
                    "created_at": old,
                }
                for i in range(backlog)
            ],
        )

    def expired() -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(idempotency_keys.c.key.like("old-%"))
                ).scalar_one()
            )

    client = app.test_client()
    assert post(client, {"body": "first"}, "new-0").status_code == 201
    assert expired() == backlog - batch  # one batch per create
    # A full batch leaves more behind: the next keyed create sweeps again, without
    # waiting for IDEMPOTENCY_SWEEP_INTERVAL.
    assert post(client, {"body": "second"}, "new-1").status_code == 201
    assert expired() == backlog - 2 * batch
    assert post(client, {"body": "third"}, "new-2").status_code == 201
    assert expired() == 0
    # Caught up: the next sweep waits for its interval again, and fresh keys stay.
    assert post(client, {"body": "fourth"}, "new-3").status_code == 201
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(idempotency_keys)).scalar_one() == 4


def test_a_retry_after_its_parent_was_hidden_gets_the_first_answer(make_app):
    # The reply's parent was checked before the key was looked up: once a moderator hid
    # the parent, the retry of a reply already stored was a 400, not its 201.
    app = make_app()
    client = app.test_client()
    moderator = generate_api_key()
    app.extensions[EXTENSION_KEY].repo.add_api_key(
        moderator.key_id, "moderator", moderator.key_hash, [SCOPE_MODERATE]
    )
    parent = post(client, {"body": "parent"}).json["id"]
    reply = {"body": "reply", "parent_id": parent}
    key = str(uuid.uuid4())
    first = post(client, reply, key)
    assert first.status_code == 201
    hidden = client.post(
        "/api/v1/moderation/comments",
        json={"action": "hide", "ids": [parent]},
        headers={"Authorization": f"Bearer {moderator.key}"},
    )
    assert hidden.json["changed"] == [parent]

    again = post(client, reply, key)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_data() == first.get_data()
    # A first attempt still has its parent checked, with a new key or without one.
    for other_key in (str(uuid.uuid4()), None):
        refused = post(client, reply, other_key)
        assert refused.status_code == 400
        assert refused.json["errors"][0]["field"] == "parent_id"
    assert count(app) == 2


def test_two_idempotency_keys_are_refused_and_never_taken_for_one(tmp_path):
    """Served: gunicorn's parser joins a repeated field with ",", so two keys "aaa" and
    "bbb" were stored under the one key "aaa,bbb", and a later request sending that key
    got the first one's answer. The worker refuses the repeat with a 400; the key "aaa,bbb"
    sent once is an ordinary key."""
    db = tmp_path / "c.db"
    env = {"DATABASE_URL": f"sqlite:///{db}", "RATELIMIT_ENABLED": "false"}
    body = b'{"body": "twice", "email": "t@example.com"}'
    with ServiceProcess(env, tmp_path, workers=1) as service:
        with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
            sock.sendall(
                f"POST {URL} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                "Idempotency-Key: aaa\r\nIdempotency-Key: bbb\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, document = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), head
        assert b"Content-Type: application/problem+json" in head
        assert (
            json.loads(document)["detail"] == "the Idempotency-Key header field must be sent once"
        )
        assert count_rows(db) == 0
        joined = requests.post(
            service.base + URL,
            json={"body": "one key with a comma", "email": "t@example.com"},
            headers={"Idempotency-Key": "aaa,bbb"},
            timeout=10,
        )
        assert joined.status_code == 201
        assert joined.json()["body"] == "one key with a comma"
    assert count_rows(db) == 1


def count_rows(db) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM comments").fetchone()[0])


def send_at_once(url: str, body: dict[str, str], key: str, times: int) -> list[requests.Response]:
    """POST the same request on ``times`` connections released together."""
    start = threading.Barrier(times)
    answers: list[requests.Response] = []

    def send() -> None:
        with requests.Session() as session:
            start.wait(timeout=10)
            answers.append(
                session.post(url, json=body, headers={"Idempotency-Key": key}, timeout=30)
            )

    senders = [threading.Thread(target=send) for _ in range(times)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(timeout=60)
    return answers


def test_concurrent_retries_on_two_workers_store_one_comment(database_url, tmp_path):
    """Served, two workers: the same key sent four times at once (a client that timed out
    and retried on several connections) stores one comment; every answer is that comment,
    all but one marked as replays. The same key with another body meanwhile is a 422."""
    env = {"DATABASE_URL": database_url, "RATELIMIT_ENABLED": "false", "DUPLICATE_WINDOW": "0"}
    with ServiceProcess(env, tmp_path, workers=2) as service:
        for attempt in range(5):
            key = str(uuid.uuid4())
            body = {"body": f"sent at once {attempt}", "email": "race@example.com"}
            answers = send_at_once(service.base + URL, body, key, 4)
            assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
            assert len({a.json()["id"] for a in answers}) == 1
            replayed = sorted(a.headers.get("Idempotent-Replayed", "") for a in answers)
            assert replayed == ["", "true", "true", "true"]
            other = requests.post(
                service.base + URL,
                json={**body, "body": "another comment"},
                headers={"Idempotency-Key": key},
                timeout=30,
            )
            assert other.status_code == 422
            assert other.json()["type"] == "/docs#problem-idempotency-key-reused"
        listed = requests.get(service.base + URL, params={"limit": 100}, timeout=30).json()
        assert len(listed["items"]) == 5


SECRET = "a text its author took back 7f3a"

# How a comment posted with an Idempotency-Key goes away (every delete path), and whether
# a tombstone stays (False: removed for good, never public and nothing replies to it).
DELETES = {
    "author": ("post", "author", True),
    "moderator": ("post", "moderator", True),
    "bulk": ("post", "bulk", True),
    "withdrawn while pending": ("pre", "author", False),
    "hidden, then deleted in bulk": ("post", "hide+bulk", False),
}


def stored_answer(app, key: str):
    from comments_api.store.repository import idempotency_keys

    with app.extensions[EXTENSION_KEY].repo.engine.connect() as conn:
        return conn.execute(
            select(idempotency_keys.c.body, idempotency_keys.c.comment_id).where(
                idempotency_keys.c.key == key
            )
        ).one()


@pytest.mark.parametrize("how", list(DELETES))
def test_a_deleted_comment_leaves_its_stored_answer_and_a_retry_creates_nothing(build, signer, how):
    """The first answer (text and author included) was kept for IDEMPOTENCY_TTL whatever
    became of the comment: deleted by its author or a moderator, it still held both. Now
    the delete erases them there in its own transaction; a retry with the key replays the
    tombstone and never stores the comment again."""
    mode, deleter, tombstone = DELETES[how]
    app = build(moderation_mode="pre" if mode == "pre" else "post")
    client = app.test_client()
    alice = bearer(signer.token("alice"))
    mod = bearer(api_key(app, SCOPE_MODERATE))
    request = {"body": SECRET}
    key = str(uuid.uuid4())
    first = post(client, request, key, headers=alice)
    assert first.status_code == (202 if mode == "pre" else 201)
    cid = first.json["id"]
    # Another comment's answer is left as it was.
    kept = post(client, {"body": "still here"}, "kept-key", headers=alice)
    assert SECRET in stored_answer(app, key).body
    assert stored_answer(app, key).comment_id == cid

    url = f"/api/v1/comments/{cid}"
    if deleter == "author":
        assert client.delete(url, headers=alice).status_code == 204
    elif deleter == "moderator":
        assert client.delete(url, headers=mod).status_code == 204
    else:
        if deleter == "hide+bulk":
            hidden = client.post(BULK, json={"action": "hide", "ids": [cid]}, headers=mod)
            assert hidden.json["changed"] == [cid]
        deleted = client.post(BULK, json={"action": "delete", "ids": [cid]}, headers=mod)
        assert deleted.json["changed"] == [cid]

    body, comment_id = stored_answer(app, key)
    assert SECRET not in body
    assert "Reader alice" not in body
    assert comment_id == cid
    remaining = count(app)
    again = post(client, request, key, headers=alice)
    assert again.status_code == first.status_code
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers.get("Location") == first.headers.get("Location")
    assert (again.json["id"], again.json["status"]) == (cid, "deleted")
    assert (again.json["body"], again.json["author"]) == (None, None)
    assert count(app) == remaining == (2 if tombstone else 1)
    if tombstone:
        # What the API says about the comment now, field for field.
        assert again.json == client.get(url).json
    else:
        assert client.get(url).status_code == 404
    listed = client.get(URL).json["items"]
    assert SECRET not in json.dumps(listed)
    assert post(client, {"body": "still here"}, "kept-key", headers=alice).json == kept.json


def test_an_answer_stored_before_edited_at_replays_with_it_null(make_app):
    """A retry within IDEMPOTENCY_TTL of an upgrade to migration 0008 replays an answer the
    previous release stored, without the edited_at the contract requires: the replay adds
    it, null (a created comment was not edited), where fresh answers have it."""
    from comments_api.store.repository import idempotency_keys

    app = make_app()
    client = app.test_client()
    first = post(client, {"body": "stored by the release before", "email": "o@example.com"}, "k")
    assert first.status_code == 201
    older = {name: value for name, value in first.json.items() if name != "edited_at"}
    with app.extensions[EXTENSION_KEY].repo.engine.begin() as conn:
        conn.execute(
            idempotency_keys.update()
            .where(idempotency_keys.c.key == "k")
            .values(body=json.dumps(older, separators=(",", ":")))
        )
    again = post(client, {"body": "stored by the release before", "email": "o@example.com"}, "k")
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json
    assert list(again.json) == list(first.json)
    assert again.json["edited_at"] is None


def test_a_sweep_and_a_delete_take_the_answers_row_locks_in_one_order(postgres_url):
    """PostgreSQL: a delete erases its comments' stored answers row by row in created_at
    order (_erase_answers); the expiry sweep must lock the rows it deletes in that order
    too. The batched sweep's DELETE ... IN (subquery) ran as a hash join over a seq scan,
    locking rows in their physical order, which updates and reused space make another
    order: a sweep and a moderator's delete then deadlocked, and the delete was the 503."""
    import psycopg

    from comments_api.comments.rules import NewComment
    from comments_api.moderation.rules import ACTION_DELETE, transition
    from comments_api.store import repository as storage
    from comments_api.store.repository import (
        Repository,
        idempotency_keys,
        make_engine,
        migrate,
    )

    engine = make_engine(postgres_url, statement_timeout=30.0)
    migrate(engine)
    repo = Repository(engine)
    first, second, kept = (
        repo.create(NewComment(content_id="sweep", body=f"c{i}")).id for i in range(3)
    )
    old = FakeClock()() - timedelta(days=2)

    def answer(key: str, comment_id: int, age: int) -> dict[str, object]:
        body = json.dumps({"id": comment_id, "body": "text"})
        return {
            "scope": "anonymous",
            "key": key,
            "request_hash": "0" * 64,
            "status": 201,
            "body": body,
            "created_at": old + timedelta(seconds=age),
            "comment_id": comment_id,
        }

    # Physical order "b", "gate", "a"; created_at order "a", "b", "gate". Among fresh
    # keys, as in a service's steady state, where a sweep takes a few of many rows.
    with engine.begin() as conn:
        for row in (answer("b", second, 2), answer("gate", kept, 3), answer("a", first, 1)):
            conn.execute(idempotency_keys.insert(), row)
        fresh = {**answer("fresh", kept, 0), "created_at": FakeClock()()}
        conn.execute(
            idempotency_keys.insert(), [{**fresh, "key": f"fresh-{i}"} for i in range(5000)]
        )
        conn.execute(text("ANALYZE idempotency_keys"))

    libpq = postgres_url.replace("+psycopg", "")
    waiting = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'"
    )

    def wait_for_waiters(monitor: psycopg.Connection, count: int) -> None:
        for _ in range(200):
            row = monitor.execute(waiting).fetchone()
            if row is not None and row[0] >= count:
                return
            time.sleep(0.02)
        raise AssertionError(f"{count} waiters expected")

    outcomes: dict[str, BaseException | None] = {}

    def run(name: str, work: Callable[[], object]) -> None:
        try:
            work()
            outcomes[name] = None
        except BaseException as exc:
            outcomes[name] = exc

    def sweep() -> None:
        repo._last_sweep = -storage.IDEMPOTENCY_SWEEP_INTERVAL
        repo._sweep_idempotency_keys(old + timedelta(days=1))

    with psycopg.connect(libpq, autocommit=True) as monitor, psycopg.connect(libpq) as gate:
        # The gate row held, so the sweep stops between its locks, as under load.
        gate.execute("SELECT 1 FROM idempotency_keys WHERE key = 'gate' FOR UPDATE")
        sweeping = threading.Thread(target=run, args=("sweep", sweep))
        sweeping.start()
        wait_for_waiters(monitor, 1)
        deleting = threading.Thread(
            target=run,
            args=("delete", lambda: repo.moderate([first, second], transition(ACTION_DELETE), "m")),
        )
        deleting.start()
        wait_for_waiters(monitor, 2)  # the delete waits on "a" or, holding it, on "b"
        gate.rollback()
        for thread in (sweeping, deleting):
            thread.join(timeout=30)
    assert outcomes.get("delete", "unfinished") is None, outcomes.get("delete")
    with engine.connect() as conn:
        left = conn.execute(
            select(func.count()).where(idempotency_keys.c.key.in_(["a", "b", "gate"]))
        ).scalar_one()
    assert left == 0
