"""The read cache (docs/caching.md): never stale, ETag / If-None-Match / 304, Cache-Control.

Two apps on one database stand for two workers (or two instances): each has its own
cache, and a write through one must show in the very next read from the other. Every
test runs on SQLite and on a real PostgreSQL server. The serve-level proof (real workers,
two instances on one PostgreSQL) is tests/test_read_cache_serve.py.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from comments_api.app import create_app
from comments_api.comments.cache import Rendered
from comments_api.comments.rules import encode_cursor
from comments_api.identity.credentials import SCOPE_MODERATE
from comments_api.settings import Settings
from comments_api.store.repository import _alembic_config, make_engine, migrate
from comments_api.store.transfer import sqlite_backup
from comments_api.web.common import EXTENSION_KEY

from .authkit import AUDIENCE, ISSUER, api_key, bearer, hs_signer
from .support import marker_rows

LEGACY = "/api/comment/list/{}"
PAGE = "/api/v1/contents/{}/comments"
COUNTS = "/api/v1/counts?content_id=a1&content_id=a2&content_id=zz"
BULK = "/api/v1/moderation/comments"


def legacy_post(client, content_id="a1", comment="hello", email="anon@example.com"):
    response = client.post(
        "/api/comment/new", json={"email": email, "comment": comment, "content_id": content_id}
    )
    assert response.status_code == 200, response.json
    return response


def v1_post(client, content_id="a1", body="hello", headers=None):
    response = client.post(PAGE.format(content_id), json={"body": body}, headers=headers)
    assert response.status_code == 201, response.json
    return response.json["id"]


def cache_of(app):
    return app.extensions[EXTENSION_KEY].comments.cache


@pytest.fixture
def signer():
    return hs_signer()


@pytest.fixture
def two(make_app, signer):
    """Two apps (two workers' caches) on one database, JWTs accepted by both."""
    settings = {"jwt_hs256_secret": signer.key, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE}
    return make_app(**settings), make_app(**settings)


def test_every_cached_route_has_etag_and_cache_control_and_answers_304(two):
    app, _ = two
    client = app.test_client()
    legacy_post(client, "a1")
    for url in (LEGACY.format("a1"), PAGE.format("a1"), COUNTS):
        first = client.get(url)
        assert first.status_code == 200
        etag = first.headers["ETag"]
        assert etag.startswith('"')  # strong: no W/ prefix
        assert etag.endswith('"')
        assert first.headers["Cache-Control"] == "private, no-cache"
        # Served from the cache now: same bytes, same tag.
        again = client.get(url)
        assert (again.data, again.headers["ETag"]) == (first.data, etag)
        for response in (first, again):  # each header once, built fresh or from the cache
            for name in ("ETag", "Cache-Control", "Content-Type", "Link"):
                assert len(response.headers.getlist(name)) <= 1, (name, response.headers)
        for header in (etag, f"W/{etag}", f'"nope", {etag}'):
            cached = client.get(url, headers={"If-None-Match": header})
            assert cached.status_code == 304, header
            assert cached.data == b""
            assert cached.headers["ETag"] == etag
            assert cached.headers["Cache-Control"] == "private, no-cache"
        assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
        # "*" matches the current representation (RFC 9110, 13.1.2): a 304 with its tag.
        star = client.get(url, headers={"If-None-Match": "*"})
        assert (star.status_code, star.data, star.headers["ETag"]) == (304, b"", etag)
    assert cache_of(app).hits >= 3 * 3


def test_a_write_through_one_worker_is_in_the_next_read_of_the_other(two):
    app_a, app_b = two
    a, b = app_a.test_client(), app_b.test_client()
    legacy_post(a, "a1", "first")
    # b caches its view of a1 (and of the counts) ...
    before = {url: b.get(url) for url in (LEGACY.format("a1"), PAGE.format("a1"), COUNTS)}
    assert [c["comment"] for c in before[LEGACY.format("a1")].json] == ["first"]
    for i in range(3):
        # ... and a's write is in b's very next read, every time.
        legacy_post(a, "a1", f"more {i}")
        assert b.get(LEGACY.format("a1")).json[-1]["comment"] == f"more {i}"
        assert b.get(PAGE.format("a1")).json["items"][-1]["body"] == f"more {i}"
        assert b.get(COUNTS).json["counts"] == {"a1": 2 + i, "a2": 0, "zz": 0}
    for url, old in before.items():
        # The old tag no longer validates: the client gets the new state.
        fresh = b.get(url, headers={"If-None-Match": old.headers["ETag"]})
        assert fresh.status_code == 200
        assert fresh.headers["ETag"] != old.headers["ETag"]
        # Both workers agree on the tag of one state (so do two instances: same code).
        assert a.get(url).headers["ETag"] == fresh.headers["ETag"]


def test_moderation_edit_and_delete_reach_the_other_worker(two, signer):
    app_a, app_b = two
    a, b = app_a.test_client(), app_b.test_client()
    mod = bearer(api_key(app_a, SCOPE_MODERATE))
    alice = bearer(signer.token("alice"))
    ids = [v1_post(a, "a1", f"c{i}", headers=alice) for i in range(3)]

    def seen():
        return [(c["id"], c["body"]) for c in b.get(PAGE.format("a1")).json["items"]]

    assert seen() == [(ids[0], "c0"), (ids[1], "c1"), (ids[2], "c2")]
    assert a.post(BULK, json={"action": "hide", "ids": [ids[0]]}, headers=mod).status_code == 200
    assert seen() == [(ids[1], "c1"), (ids[2], "c2")]
    assert [c["comment"] for c in b.get(LEGACY.format("a1")).json] == ["c1", "c2"]
    assert b.get(COUNTS).json["counts"]["a1"] == 2
    assert (
        a.patch(f"/api/v1/comments/{ids[1]}", json={"body": "c1!"}, headers=alice).status_code
        == 200
    )
    assert seen() == [(ids[1], "c1!"), (ids[2], "c2")]
    assert a.delete(f"/api/v1/comments/{ids[2]}", headers=mod).status_code == 204
    assert seen() == [(ids[1], "c1!"), (ids[2], None)]  # the tombstone keeps its place
    assert [c["comment"] for c in b.get(LEGACY.format("a1")).json] == ["c1!"]
    assert b.get(COUNTS).json["counts"]["a1"] == 1
    assert a.post(BULK, json={"action": "approve", "ids": [ids[0]]}, headers=mod).status_code == 200
    assert seen()[0] == (ids[0], "c0")
    # Every comment of a1 gone from the legacy list: 404 again, in the other worker too.
    assert (
        a.post(BULK, json={"action": "hide", "ids": [ids[0], ids[1]]}, headers=mod).status_code
        == 200
    )
    assert b.get(LEGACY.format("a1")).status_code == 404


def test_writes_outside_the_api_are_seen_too(two, database_url):
    """The triggers bump the marker for any write: an operator's SQL, an import."""
    app, _ = two
    client = app.test_client()
    legacy_post(client, "a1", "api")
    assert len(client.get(LEGACY.format("a1")).json) == 1
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO comments (content_id, body, email, status, created_at, updated_at)"
                " VALUES ('a1', 'sql', 'x@example.com', 'published', :t, :t)"
            ),
            {"t": "2026-12-02 00:00:00"},
        )
    assert [c["comment"] for c in client.get(LEGACY.format("a1")).json] == ["api", "sql"]
    with engine.begin() as conn:
        conn.execute(text("UPDATE comments SET body = 'SQL' WHERE body = 'sql'"))
    assert client.get(LEGACY.format("a1")).json[-1]["comment"] == "SQL"
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM comments WHERE body = 'SQL'"))
    assert [c["comment"] for c in client.get(LEGACY.format("a1")).json] == ["api"]
    # An insert under an id below the content's newest (a restore, an operator's SQL).
    legacy_post(client, "a2", "filler")
    legacy_post(client, "a1", "newest")
    with engine.begin() as conn:
        filler = conn.execute(text("SELECT id FROM comments WHERE body = 'filler'")).scalar_one()
        conn.execute(text("DELETE FROM comments WHERE id = :id"), {"id": filler})
    assert [c["comment"] for c in client.get(LEGACY.format("a1")).json] == ["api", "newest"]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO comments (id, content_id, body, email, status, created_at,"
                " updated_at) VALUES (:id, 'a1', 'older', 'x@example.com', 'published', :t, :t)"
            ),
            {"id": filler, "t": "2026-12-02 00:00:00"},
        )
    assert [c["comment"] for c in client.get(LEGACY.format("a1")).json] == [
        "api",
        "older",
        "newest",
    ]
    # A comment moved to another content leaves the list of the one it left.
    assert client.get(LEGACY.format("a2")).status_code == 404  # cached: no comment yet
    with engine.begin() as conn:
        conn.execute(text("UPDATE comments SET content_id = 'a2' WHERE body = 'older'"))
    assert [c["comment"] for c in client.get(LEGACY.format("a1")).json] == ["api", "newest"]
    assert [c["comment"] for c in client.get(LEGACY.format("a2")).json] == ["older"]
    engine.dispose()


def test_sqlite_markers_hold_when_inserts_write_no_marker_row(tmp_path):
    """SQLite since 0012: a content's marker is its marker row's value and its newest id
    (0011), and an insert writes the row only for the content's first comment or an id
    under its newest (docs/caching.md). Every write must move the right markers, and no
    marker may come back: the read cache takes equal markers for an unchanged content."""
    from comments_api.store.versions import ChangeMarkers

    engine = make_engine(f"sqlite:///{tmp_path / 'markers.db'}")
    migrate(engine)
    markers = ChangeMarkers(engine)
    seen: dict[str, list[int]] = {"a": [], "b": []}

    def write(sql: str, **params: object) -> None:
        with engine.begin() as conn:
            conn.execute(text(sql), {"t": "2026-12-06 00:00:00", **params})

    def moved(*changed: str) -> None:
        for content, marker in zip("ab", markers.versions(["a", "b"]), strict=True):
            if content in changed:
                assert marker not in seen[content], (content, seen)
            else:
                assert marker == seen[content][-1], content
            seen[content].append(marker)

    rows = partial(marker_rows, engine)

    insert = (
        "INSERT INTO comments (content_id, body, status, created_at, updated_at)"
        " VALUES (:c, 'x', 'published', :t, :t)"
    )
    try:
        moved("a", "b")
        write(insert, c="a")  # a content's first comment writes its marker row
        first = rows()
        assert set(first) == {"a"}
        moved("a")
        write(insert, c="a")  # ... and the next do not
        moved("a")
        write(insert, c="b")
        moved("b")
        write(insert, c="b")
        moved("b")
        b_row = rows()["b"]
        assert rows() == {**first, "b": b_row}  # a's row as a's first insert left it
        write("UPDATE comments SET body = 'y' WHERE id = (SELECT min(id) FROM comments)")
        moved("a")
        # The newest comment of "a" deleted, then a new one: the marker row's value moved
        # with the delete, and the new id is above every id "a" has.
        write(
            "DELETE FROM comments WHERE id = (SELECT max(id) FROM comments WHERE content_id = 'a')"
        )
        moved("a")
        write(insert, c="a")
        moved("a")
        # An explicit id below "b"'s newest: the insert trigger writes the row.
        write(
            "INSERT INTO comments (id, content_id, body, status, created_at, updated_at)"
            " VALUES (:id, 'b', 'x', 'published', :t, :t)",
            id=-5,
        )
        moved("b")
        assert rows()["b"] != b_row
        # A comment moved to another content changes both.
        write(
            "UPDATE comments SET content_id = 'b'"
            " WHERE id = (SELECT min(id) FROM comments WHERE content_id = 'a')"
        )
        moved("a", "b")
    finally:
        markers.close()
        engine.dispose()


def test_cached_answers_are_byte_identical_to_uncached_ones(make_app):
    cached = make_app()
    plain = make_app(read_cache_entries=0)
    client, other = cached.test_client(), plain.test_client()
    for i in range(30):
        legacy_post(client, "a1", f"comment {i} \u00e9\u263a", email=f"user{i}@example.com")
    urls = [
        LEGACY.format("a1"),
        PAGE.format("a1"),
        PAGE.format("a1") + "?limit=5&order=newest",
        COUNTS,
        LEGACY.format("nothing"),
    ]
    next_link = client.get(PAGE.format("a1") + "?limit=5").headers["Link"]
    urls.append(next_link[1 : next_link.index(">")])
    for url in urls:
        for _ in range(2):  # the second is a cache hit
            got, want = client.get(url), other.get(url)
            assert (got.status_code, got.data) == (want.status_code, want.data), url
            for name in ("Content-Type", "Link", "X-Comments-Truncated"):
                assert got.headers.get(name) == want.headers.get(name), (url, name)
            # Same state, same code, same settings: the same tag with the cache off.
            assert got.headers.get("ETag") == want.headers.get("ETag")
    assert len(cache_of(plain)) == 0
    assert client.get(LEGACY.format("nothing")).headers.get("ETag") is None  # 404s: no tag


def test_truncated_legacy_list_keeps_its_headers_when_cached(make_app):
    app = make_app(legacy_list_max=2)
    client = app.test_client()
    for i in range(3):
        legacy_post(client, "a1", f"c{i}")
    for _ in range(2):
        response = client.get(LEGACY.format("a1"))
        assert len(response.json) == 2
        assert response.headers["X-Comments-Truncated"] == "true"
        assert response.headers["Link"] == '</api/v1/contents/a1/comments>; rel="alternate"'


def test_cache_control_is_configurable_and_moderators_get_the_same_page(make_app):
    app = make_app(read_cache_control="public, no-cache")
    client = app.test_client()
    v1_post(client, "a1")
    anonymous = client.get(PAGE.format("a1"))
    assert anonymous.headers["Cache-Control"] == "public, no-cache"
    # The page does not depend on who asks, so it needs no Vary: Authorization.
    moderator = client.get(PAGE.format("a1"), headers=bearer(api_key(app, SCOPE_MODERATE)))
    assert (moderator.data, moderator.headers["ETag"]) == (
        anonymous.data,
        anonymous.headers["ETag"],
    )
    assert "Authorization" not in anonymous.headers.get("Vary", "")


def test_a_write_while_a_page_is_built_is_never_cached_under_the_old_marker(make_app):
    """The race: markers read, then a write commits, then the page is rendered."""
    app_a, app_b = make_app(), make_app()
    a = app_a.test_client()
    legacy_post(a, "a1", "first")
    service = app_b.extensions[EXTENSION_KEY].comments
    written = []

    def render(rows, truncated):
        if not written:  # a write lands after this build read its rows
            legacy_post(a, "a1", "during")
            written.append(True)
        return Rendered(repr(rows).encode())

    read = service.read_legacy_list("a1", render, lambda etag: False)
    # Rebuilt after the markers moved: the answer shows the write, under the new marker.
    assert b"during" in read.value.body
    again = service.read_legacy_list("a1", render, lambda etag: False)
    assert again.value.body == read.value.body
    assert again.etag == read.etag
    # And the tag names these bytes: a worker that never saw the race agrees on it.
    fresh = make_app().extensions[EXTENSION_KEY].comments
    assert fresh.read_legacy_list("a1", render, lambda etag: etag == read.etag).not_modified


def test_the_cache_is_bounded(make_app):
    app = make_app(read_cache_entries=3)
    client = app.test_client()
    for i in range(6):
        legacy_post(client, f"c{i}")
        client.get(LEGACY.format(f"c{i}"))
    assert len(cache_of(app)) == 3
    small = make_app(read_cache_bytes=200)
    other = small.test_client()
    for i in range(6):
        other.get(LEGACY.format(f"c{i}"))
    assert 0 < len(cache_of(small)) <= 200 // len(other.get(LEGACY.format("c0")).data)


def test_migration_0004_goes_down_and_up(database_url):
    engine = make_engine(database_url)
    migrate(engine)
    config = _alembic_config(engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    with engine.connect() as conn:
        tables = conn.dialect.get_table_names(conn)
    assert "content_versions" not in tables
    with engine.begin() as conn:  # no trigger left behind: plain writes still work
        conn.execute(
            text(
                "INSERT INTO comments (content_id, body, status, created_at, updated_at)"
                " VALUES ('m', 'x', 'published', :t, :t)"
            ),
            {"t": "2026-12-02 00:00:00"},
        )
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE comments SET body = 'y' WHERE content_id = 'm'"))
        version = conn.execute(
            text("SELECT version FROM content_versions WHERE content_id = 'm'")
        ).scalar_one()
    assert version != 0
    engine.dispose()


def test_marker_reads_are_in_the_db_latency_histogram(make_app):
    # PostgreSQL: every cached read asks the marker of its content (one round trip), and
    # that SELECT is timed like any other. SQLite: nothing was written in between, so
    # PRAGMA data_version answers alone and no SELECT runs.
    from prometheus_client.parser import text_string_to_metric_families

    app = make_app(metrics_enabled=True)
    client = app.test_client()

    def selects() -> float:
        families = text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))
        family = next(f for f in families if f.name == "comments_api_db_query_duration_seconds")
        return sum(
            s.value
            for s in family.samples
            if s.name.endswith("_count") and s.labels.get("operation") == "select"
        )

    legacy_post(client, "mh")
    assert client.get(LEGACY.format("mh")).status_code == 200  # built: the cache holds it
    first = selects()
    scrape = selects() - first  # what a scrape itself reads (the readiness check)
    for _ in range(3):
        assert client.get(LEGACY.format("mh")).status_code == 200
    marker_reads = selects() - first - 2 * scrape
    assert marker_reads == (0 if app.extensions[EXTENSION_KEY].repo.is_sqlite else 3)


def test_a_cursor_naming_no_row_answers_as_a_fresh_build_does_on_every_worker(two):
    """Such a cursor is a position (200) until a comment of another content takes its id
    (400): a write to that other content, which this content's markers never see."""
    app_a, app_b = two
    a, b = app_a.test_client(), app_b.test_client()
    first = v1_post(a, "a1")
    target = first + 2
    url = PAGE.format("a1") + "?cursor=" + encode_cursor(target, "oldest")
    for _ in range(2):  # the second would be served from a's cache
        past = a.get(url)
        assert (past.status_code, past.json["items"]) == (200, [])
        assert a.get(url, headers={"If-None-Match": past.headers["ETag"]}).status_code == 304
    taken = [v1_post(b, "b1") for _ in range(2)]
    assert taken[-1] == target
    fresh = b.get(url)  # b never built this page
    assert fresh.status_code == 400
    assert fresh.json["errors"][0]["field"] == "cursor"
    again = a.get(url)  # a did, before the id was taken
    assert (again.status_code, again.json) == (fresh.status_code, fresh.json)
    # Its tag never stands in for the 400: a 304 is answered only from a build of its own.
    revalidated = a.get(url, headers={"If-None-Match": past.headers["ETag"]})
    assert (revalidated.status_code, revalidated.json) == (fresh.status_code, fresh.json)


def test_a_restored_sqlite_backup_gives_no_old_etag_to_a_new_list(tmp_path: Path):
    """A restored file hands out again the ids of the comments posted after its backup, and
    a SQLite marker was its row's value and the newest id (0012): the first comment after a
    restore carried the marker a lost comment had carried, and the ETag a browser or CDN
    kept from that lost list was answered 304 for the new one (found by a review helper).
    Each restore is a copy of the backup under a path of its own: an app of this process
    still holds the file before (an ETag does not depend on the path)."""
    backup = tmp_path / "backup.db"

    def start(db: Path):  # docs/operations.md, SQLite, Restore: the copy, then migrate
        url = f"sqlite:///{db}"
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        return create_app(Settings(database_url=url, ratelimit_enabled=False)).test_client()

    def restore(n: int):
        shutil.copy(backup, tmp_path / f"restored-{n}.db")
        return start(tmp_path / f"restored-{n}.db")

    before = start(tmp_path / "comments.db")
    legacy_post(before, "a1", "kept")
    sqlite_backup(str(tmp_path / "comments.db"), str(backup))
    seen = []
    for client, comment in ((before, "lost"), (restore(1), "lost too"), (restore(2), "new")):
        legacy_post(client, "a1", comment)
        for etag in seen:
            answer = client.get(LEGACY.format("a1"), headers={"If-None-Match": etag})
            assert answer.status_code == 200, (comment, etag)
            assert [c["comment"] for c in answer.json] == ["kept", comment]
        seen.append(client.get(LEGACY.format("a1")).headers["ETag"])
    assert len(set(seen)) == 3, seen
