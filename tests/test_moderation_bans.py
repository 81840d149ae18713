"""The ban list a page at a time: ``GET /api/v1/moderation/bans?limit=&cursor=``, newest
first, keyset-paged on (created_at, target) off ix_bans_created_at_target (0017)."""

from __future__ import annotations

import base64
import threading
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


def test_a_forged_cursor_of_the_right_shape_is_a_position_not_a_500(build):
    """A cursor is base64 a client can write: any instant from year 1 to 9999 and any
    target (longer than a stored one can be, control characters, outside the BMP) is a
    position both databases compare with, never a database error."""
    app = build()
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    for subject in ("a", "b"):
        ban(client, mod, subject)
    last = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - datetime(1, 1, 1, tzinfo=UTC)
    latest = last // timedelta(microseconds=1)
    for raw, expected in (
        (f"b{latest}.sub:\U0010ffff".encode(), ["b", "a"]),  # after every ban
        (b"b0.sub:a", []),  # year 1: before every ban
        (f"b{latest}.sub:".encode() + b"x" * 1000, ["b", "a"]),  # longer than a column holds
        (f"b{latest}.sub:\x01\u2028\U0001f600".encode(), ["b", "a"]),
    ):
        listed, _ = page(client, mod, cursor=_raw_cursor(raw))
        assert listed == expected, raw[:40]


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


# --- one ban, and an address's Unicode forms ---------------------------------------------
COMPOSED = "jos\u00e9@example.com"
DECOMPOSED = "jose\u0301@example.com"  # as the release before 0016 keyed it, typed so


def old_release_ban(app, clock, address: str, reason: str = "old") -> None:
    """A ban as the release before 0016 stored it on 0016's schema: under the key of the
    address as typed (lower-cased, not composed), written as that release's storage did."""
    repo = app.extensions[EXTENSION_KEY].repo
    assert repo.ban(f"email:{address}", reason, "key:old-release", clock=clock) is True


def test_one_ban_is_looked_up_as_the_list_gives_it(build, clock):
    app = build(clock=clock)
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    spec = client.get("/openapi.json").json
    one = f"{BANS}/{{target}}"
    made = client.post(BANS, json={"subject": "alice", "reason": "spam"}, headers=mod)
    assert made.status_code == 201
    clock.advance(1)
    ban(client, mod, "bob")

    found = client.get(made.headers["Location"], headers=mod)
    assert found.status_code == 200, found.json
    listed = client.get(BANS, headers=mod).json["items"]
    assert found.json == next(b for b in listed if b["target"] == "sub:alice")
    assert found.json["reason"] == "spam"
    assert found.headers["Cache-Control"] == "no-store"
    documented(spec, one, "get", found)
    assert client.get(f"{BANS}/sub:bob", headers=mod).json["target"] == "sub:bob"

    missing = client.get(f"{BANS}/sub:carol", headers=mod)
    assert missing.status_code == 404
    assert missing.mimetype == "application/problem+json"
    assert missing.json["detail"] == "this author is not banned"
    documented(spec, one, "get", missing)
    bad = client.get(f"{BANS}/nonsense", headers=mod)
    assert bad.status_code == 400
    assert [e["field"] for e in bad.json["errors"]] == ["target"]
    documented(spec, one, "get", bad)
    # The other moderation routes' credentials and preconditions.
    assert client.get(f"{BANS}/sub:alice").status_code == 401
    writer = bearer(api_key(app, "comments:write"))
    assert client.get(f"{BANS}/sub:alice", headers=writer).status_code == 403
    tagged = {**mod, "If-Match": '"abc"'}
    assert client.get(f"{BANS}/sub:alice", headers=tagged).status_code == 412
    assert client.get(f"{BANS}/sub:carol", headers=tagged).status_code == 404
    assert client.get(f"{BANS}/sub:alice", headers={**mod, "If-Match": "*"}).status_code == 200
    # A lifted ban is gone.
    lift(client, mod, "alice")
    assert client.get(made.headers["Location"], headers=mod).status_code == 404


def test_a_ban_standing_in_another_unicode_form_is_found_by_any(build, clock):
    """The release before 0016 banned ``josé`` typed decomposed under that form's key: the
    one-ban lookup finds it by the address as usually typed (precomposed), in any case, as
    well as by the form it was listed under, and answers the ban as stored."""
    app = build(clock=clock)
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    old_release_ban(app, clock, DECOMPOSED)
    for address in (COMPOSED, DECOMPOSED, COMPOSED.upper()):
        found = client.get(f"{BANS}/{quote(f'email:{address}')}", headers=mod)
        assert found.status_code == 200, (address, found.json)
        assert found.json["target"] == f"email:{DECOMPOSED}"
        assert found.json["reason"] == "old"


def test_banning_again_in_another_unicode_form_is_a_repeat_ban(build, clock):
    """A ban of ``josé`` typed precomposed while the release before 0016's ban of it typed
    decomposed stands answered 201 and stored a second row (two bans of one mailbox in
    the list, two to lift): it answers as banning the same target again does, 200 with
    ``created: false`` and the ban's URL, and adds nothing."""
    app = build(clock=clock)
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    admin = bearer(api_key(app, SCOPE_ADMIN))
    old_release_ban(app, clock, DECOMPOSED)
    clock.advance(1)

    again = client.post(BANS, json={"email": COMPOSED, "reason": "new"}, headers=mod)
    assert again.status_code == 200, again.json
    assert again.json == {"target": f"email:{COMPOSED}", "created": False}
    documented(client.get("/openapi.json").json, BANS, "post", again)
    # As a repeat of the same target answers.
    same = client.post(BANS, json={"email": DECOMPOSED}, headers=mod)
    assert (same.status_code, same.json) == (200, again.json)
    assert same.headers["Location"] == again.headers["Location"]
    listed = client.get(BANS, headers=mod).json["items"]
    assert [(b["target"], b["reason"]) for b in listed] == [(f"email:{DECOMPOSED}", "old")]
    # Its Location finds the ban that stands; the audit log has no second ban.
    found = client.get(again.headers["Location"], headers=mod)
    assert found.json["target"] == f"email:{DECOMPOSED}"
    actions = [
        e["action"] for e in client.get("/api/v1/admin/audit-log", headers=admin).json["items"]
    ]
    assert actions == ["ban"]

    # One lift, by the Location, and the mailbox may post again in either form.
    assert client.delete(again.headers["Location"], headers=mod).status_code == 204
    assert client.get(BANS, headers=mod).json["items"] == []
    for address in (COMPOSED, DECOMPOSED):
        posted = client.post(
            "/api/v1/contents/c1/comments", json={"body": f"back {address}", "email": address}
        )
        assert posted.status_code == 201, posted.json


def test_lifting_by_any_form_lifts_every_form_at_once(build, clock):
    """Two rows of one mailbox (as the ban above used to store): a lift by either form
    lifts both in one transaction, an audit entry for each, and a second lift is a 404."""
    app = build(clock=clock)
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    admin = bearer(api_key(app, SCOPE_ADMIN))
    old_release_ban(app, clock, DECOMPOSED)
    clock.advance(1)
    old_release_ban(app, clock, COMPOSED, reason="twice")
    assert len(client.get(BANS, headers=mod).json["items"]) == 2
    # The one-ban lookup answers the first made, the one a repeat ban leaves standing.
    assert client.get(f"{BANS}/email:{quote(COMPOSED)}", headers=mod).json["reason"] == "old"
    clock.advance(1)
    assert client.delete(f"{BANS}/email:{quote(DECOMPOSED)}", headers=mod).status_code == 204
    assert client.get(BANS, headers=mod).json["items"] == []
    log = client.get("/api/v1/admin/audit-log", headers=admin).json["items"]
    lifts = [(e["target"], e["created_at"]) for e in log if e["action"] == "unban"]
    assert sorted(t for t, _ in lifts) == sorted([f"email:{COMPOSED}", f"email:{DECOMPOSED}"])
    assert len({at for _, at in lifts}) == 1
    assert client.delete(f"{BANS}/email:{quote(COMPOSED)}", headers=mod).status_code == 404


def test_bans_and_lifts_at_once_in_either_form_keep_one_row_and_an_honest_log(build):
    """Moderators banning and lifting one mailbox at once, typed in either Unicode form,
    through the HTTP API (threads, a real database): each answer is one the log shows, and
    what stands at the end is at most one ban, as the answers add up to."""
    app = build()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    admin = bearer(api_key(app, SCOPE_ADMIN))
    start = threading.Barrier(6)
    answers: list[tuple[str, int]] = []

    def moderator(n: int) -> None:
        client = app.test_client()
        address = COMPOSED if n % 2 else DECOMPOSED
        start.wait(timeout=30)
        for _ in range(8):
            if n < 4:
                made = client.post(BANS, json={"email": address}, headers=mod)
                answers.append(("ban", made.status_code))
            else:
                lifted = client.delete(f"{BANS}/{quote(f'email:{address}')}", headers=mod)
                answers.append(("lift", lifted.status_code))

    threads = [threading.Thread(target=moderator, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    client = app.test_client()
    assert {status for kind, status in answers if kind == "ban"} <= {200, 201}
    assert {status for kind, status in answers if kind == "lift"} <= {204, 404}
    standing = client.get(BANS, headers=mod).json["items"]
    assert len(standing) <= 1
    log = client.get("/api/v1/admin/audit-log?limit=100", headers=admin).json["items"]
    made = sum(1 for kind, status in answers if (kind, status) == ("ban", 201))
    lifted = sum(1 for kind, status in answers if (kind, status) == ("lift", 204))
    assert made == sum(1 for e in log if e["action"] == "ban")
    assert lifted == sum(1 for e in log if e["action"] == "unban")
    assert made - lifted == len(standing)


@pytest.mark.parametrize("method", ["get", "delete"])
@pytest.mark.parametrize("target", ["sub:a\nb", "sub:reader\n", "/sub:x"])
def test_a_target_with_a_line_break_or_a_leading_slash_is_a_400_not_no_such_route(
    build, method, target
):
    """A ban target with a line feed (werkzeug's ``path`` converter stops at "\\n", as "."
    does) or one starting with "/" matched no route: 404 "no such route; see
    /openapi.json", on the one route that is there, where the contract says 400 (a target
    holds no control character and starts with its kind)."""
    app = build()
    client = app.test_client()
    mod = bearer(api_key(app, SCOPE_MODERATE))
    ban(client, mod, "a")  # a ban to find, were the target read wrongly
    response = getattr(client, method)(f"{BANS}/{quote(target, safe='/')}", headers=mod)
    assert response.status_code == 400, response.json
    assert response.mimetype == "application/problem+json"
    assert response.json["errors"] == [
        {"field": "target", "message": "must look like email:<address> or sub:<id>"}
    ]
    documented(client.get("/openapi.json").json, f"{BANS}/{{target}}", method, response)
    assert client.get(f"{BANS}/sub:a", headers=mod).status_code == 200
