"""The ban list a page at a time: ``GET /api/v1/moderation/bans?limit=&cursor=``, newest
first, keyset-paged on (created_at, target) off ix_bans_created_at_target (0017)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from sqlalchemy import event

from comments_api.comments.rules import AUDIT_LOG, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, encode_cursor
from comments_api.identity.credentials import SCOPE_ADMIN, SCOPE_MODERATE
from comments_api.web.common import EXTENSION_KEY

from .authkit import api_key, bearer
from .clock import FakeClock
from .test_openapi import documented

BANS = "/api/v1/moderation/bans"
ANOTHER_LIST = "belongs to another list; restart without a cursor"
NOT_ISSUED = "is not a cursor this API issued"


def ban(client, headers, subject: str) -> None:
    response = client.post(BANS, json={"subject": subject}, headers=headers)
    assert response.status_code == 201, response.json


def lift(client, headers, subject: str) -> None:
    assert client.delete(f"{BANS}/sub:{quote(subject)}", headers=headers).status_code == 204


def page(client, headers, **query):
    response = client.get(BANS, query_string=query, headers=headers)
    assert response.status_code == 200, response.json
    return [b["target"][len("sub:") :] for b in response.json["items"]], response


def walk(client, headers, limit: int) -> list[str]:
    """Every page, following each answer's Link header; checks it says what next_cursor does."""
    seen: list[str] = []
    url = f"{BANS}?limit={limit}"
    while url:
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.json
        assert len(response.json["items"]) <= limit
        seen += [b["target"][len("sub:") :] for b in response.json["items"]]
        cursor = response.json["next_cursor"]
        link = response.headers.get("Link")
        if cursor is None:
            assert link is None
            url = ""
        else:
            assert link == f'<{BANS}?limit={limit}&cursor={cursor}>; rel="next"'
            url = link[1 : link.index(">")]
    return seen


def problem(response) -> str:
    assert response.status_code == 400, response.data
    assert response.mimetype == "application/problem+json"
    assert [e["field"] for e in response.json["errors"]] == ["cursor"]
    message: str = response.json["errors"][0]["message"]
    return message


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 12, 7, 9, 0, 0, 123456, tzinfo=UTC))


def test_paging_returns_every_ban_once_newest_first(build, clock):
    app = build(clock=clock)
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    # 9 bans over 4 instants, several in one instant: the target breaks the tie (descending),
    # so a page may end between two bans of one instant.
    made: list[tuple[datetime, str]] = []
    for n, subject in enumerate(["m", "c", "x", "a", "q", "b", "z", "k", "e"]):
        if n % 3 == 0:
            clock.advance(1.5)
        ban(client, mod, subject)
        made.append((clock.now, subject))
    newest_first = [s for _, s in sorted(made, reverse=True)]
    assert newest_first[:3] == ["z", "k", "e"]

    for limit in (1, 2, 4, 9, 100):
        assert walk(client, mod, limit) == newest_first, limit
    # Without limit: the same default page size as the other listings, and the first page
    # of every ban, not all of them.
    everything, response = page(client, mod)
    assert everything == newest_first
    assert response.json["next_cursor"] is None
    assert "Link" not in response.headers
    first, response = page(client, mod, limit=4)
    assert first == newest_first[:4]
    assert response.headers["Cache-Control"] == "no-store"
    for item in response.json["items"]:
        assert set(item) == {"target", "reason", "created_by", "created_at"}
    spec = client.get("/openapi.json").json
    documented(spec, BANS, "get", response)  # next_cursor and Link, as published
    rest, _ = page(client, mod, limit=100, cursor=response.json["next_cursor"])
    assert rest == newest_first[4:]


def test_the_default_page_is_25_bans_and_the_largest_100(build):
    app = build()
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    subjects = [f"s{n:03}" for n in range(DEFAULT_PAGE_SIZE + 1)]
    for subject in subjects:
        ban(client, mod, subject)
    first, response = page(client, mod)
    assert len(first) == DEFAULT_PAGE_SIZE
    assert response.json["next_cursor"]
    assert response.headers["Link"].startswith(f"<{BANS}?limit={DEFAULT_PAGE_SIZE}&cursor=")
    last, response = page(client, mod, cursor=response.json["next_cursor"])
    assert len(last) == 1
    assert response.json["next_cursor"] is None
    assert sorted(first + last) == subjects
    assert len(page(client, mod, limit=MAX_PAGE_SIZE)[0]) == len(subjects)
    for limit in ("0", str(MAX_PAGE_SIZE + 1), "x"):
        refused = client.get(BANS, query_string={"limit": limit}, headers=mod)
        assert refused.status_code == 400, limit
        assert [e["field"] for e in refused.json["errors"]] == ["limit"]


def test_a_ban_added_or_lifted_between_pages_moves_no_other(build, clock):
    app = build(clock=clock)
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    for subject in ["a", "b", "c", "d", "e", "f", "g", "h"]:
        clock.advance(1)
        ban(client, mod, subject)
    clock.advance(1)
    ban(client, mod, "h2")  # h and h2 share no instant; i and its twin below do
    ban(client, mod, "i")
    # newest first: i, h2, h, g, f, e, d, c, b, a
    first, response = page(client, mod, limit=3)
    assert first == ["i", "h2", "h"]
    cursor = response.json["next_cursor"]

    # Meanwhile: a new ban (newest, so before the position: the next fresh listing shows
    # it), the ban the cursor stands on and another already read are lifted, one not yet
    # read is lifted too, and one is lifted and banned again (now the newest).
    clock.advance(1)
    ban(client, mod, "new")
    for subject in ("h", "i", "e"):
        lift(client, mod, subject)
    lift(client, mod, "c")
    ban(client, mod, "c")
    # A ban stamped before the position (another replica's clock behind this one's): it is
    # on a later page, once, in its place.
    clock.now -= timedelta(seconds=5.5)
    ban(client, mod, "late")
    clock.now += timedelta(seconds=10)

    second, response = page(client, mod, limit=3, cursor=cursor)
    assert second == ["g", "f", "late"]  # e lifted: not there; nothing repeated or skipped
    third, response = page(client, mod, limit=3, cursor=response.json["next_cursor"])
    assert third == ["d", "b", "a"]  # c is no longer here: banned again, it is the newest
    assert response.json["next_cursor"] is None
    # A fresh listing starts with what was added since (one instant: by target, descending).
    assert walk(client, mod, 2) == ["new", "c", "h2", "g", "f", "late", "d", "b", "a"]


def _raw_cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


BAD_CURSORS = [
    ("", NOT_ISSUED),
    ("nonsense", NOT_ISSUED),
    ("Yj", NOT_ISSUED),
    ("YjE", NOT_ISSUED),
    ("%%%", NOT_ISSUED),
    (_raw_cursor(b"b12.sub:x") + "=", NOT_ISSUED),  # padded: not as the API writes it
    ("YjEyLnN1Yjp4eR", NOT_ISSUED),  # b12.sub:xy in non-canonical base64 (...eQ)
    (_raw_cursor(b"b12.sub:x") + "\n", NOT_ISSUED),
    (_raw_cursor(b"b12sub:x"), NOT_ISSUED),  # no separator
    (_raw_cursor(b"b12."), NOT_ISSUED),  # no target
    (_raw_cursor(b"b12.sub:\x00"), NOT_ISSUED),  # a NUL PostgreSQL's text cannot take
    (_raw_cursor(b"b12.sub:\xff\xfe"), NOT_ISSUED),  # not UTF-8
    (_raw_cursor(b"b1234567890123456789.sub:x"), NOT_ISSUED),  # 19 digits
    (_raw_cursor(b"b999999999999999999.sub:x"), NOT_ISSUED),  # past year 9999
    (_raw_cursor(b"b12.sub:" + b"x" * 1300), NOT_ISSUED),  # longer than any ban's
    (encode_cursor(3, "oldest"), ANOTHER_LIST),  # a comment list's
    (encode_cursor(3, "newest"), ANOTHER_LIST),
    (encode_cursor(3, AUDIT_LOG), ANOTHER_LIST),  # the audit log's
    (encode_cursor(3, "oldest") + ".AAAAAAAA", ANOTHER_LIST),  # a moderation listing's
]


def test_a_malformed_or_foreign_cursor_is_a_400_problem(build):
    app = build()
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    admin = bearer(api_key(app, SCOPE_ADMIN))
    spec = client.get("/openapi.json").json
    for subject in ("a", "b", "c"):
        ban(client, mod, subject)
    for cursor, message in BAD_CURSORS:
        response = client.get(BANS, query_string={"cursor": cursor}, headers=mod)
        assert problem(response) == message, cursor
    documented(spec, BANS, "get", response)
    # Real cursors of the other lists, as they issue them.
    client.post("/api/v1/contents/c1/comments", json={"body": "one"})
    client.post("/api/v1/contents/c1/comments", json={"body": "two"})
    others = [
        client.get("/api/v1/contents/c1/comments?limit=1").json["next_cursor"],
        client.get(
            "/api/v1/moderation/comments?status=published&content_id=c1&limit=1", headers=mod
        ).json["next_cursor"],
        client.get("/api/v1/admin/audit-log?limit=1", headers=admin).json["next_cursor"],
    ]
    for cursor in others:
        assert cursor
        assert problem(client.get(BANS, query_string={"cursor": cursor}, headers=mod)) == (
            ANOTHER_LIST
        )
    # ...and the ban list's cursor is refused by each of them.
    of_bans = client.get(f"{BANS}?limit=1", headers=mod).json["next_cursor"]
    assert of_bans
    for url, headers in (
        ("/api/v1/contents/c1/comments", None),
        ("/api/v1/contents/c1/comments?order=newest", None),
        ("/api/v1/moderation/pending", mod),
        ("/api/v1/moderation/comments?status=hidden", mod),
        ("/api/v1/admin/audit-log", admin),
    ):
        joined = "&" if "?" in url else "?"
        response = client.get(f"{url}{joined}cursor={of_bans}", headers=headers)
        assert problem(response) == ANOTHER_LIST, url
    # A cursor is judged after the credential: no scope, no verdict on it.
    assert client.get(BANS, query_string={"cursor": "nonsense"}).status_code == 401


def test_the_ban_list_reads_its_page_off_the_index(build):
    """Each page, the first or one after a position, is a backward range read of
    ix_bans_created_at_target (0017), never a sort of every ban: the statements storage
    runs, explained by each database."""
    app = build()
    repo = app.extensions[EXTENSION_KEY].repo
    ran: list[tuple[str, object]] = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        if "FROM bans" in statement:
            ran.append((statement, parameters))

    event.listen(repo.engine, "before_cursor_execute", grab)
    try:
        repo.ban_page(limit=25, before=None)
        repo.ban_page(limit=25, before=(datetime(2026, 12, 7, 9, 0, tzinfo=UTC), "sub:m"))
    finally:
        event.remove(repo.engine, "before_cursor_execute", grab)
    assert len(ran) == 2
    postgres = repo.engine.dialect.name == "postgresql"
    with repo.engine.connect() as conn:
        if postgres:
            # A table this small is read whole or by bitmap; what matters is that the index
            # gives the order, with no sort.
            conn.exec_driver_sql("SET enable_seqscan = off")
            conn.exec_driver_sql("SET enable_bitmapscan = off")
        for statement, parameters in ran:
            explain = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
            rows = conn.exec_driver_sql(explain + statement, parameters).all()  # type: ignore[arg-type]
            plan = " ".join(str(row) for row in rows)
            assert "ix_bans_created_at_target" in plan, plan
            assert "TEMP B-TREE" not in plan, plan  # SQLite's sort
            assert "Sort" not in plan, plan  # PostgreSQL's
