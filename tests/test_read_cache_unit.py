"""comments/cache.py and store/versions.py on a real SQLite file (unit tier, no servers)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from comments_api.comments.cache import Read, ReadCache, Rendered
from comments_api.store.repository import make_engine, migrate
from comments_api.store.versions import UNWRITTEN, ChangeMarkers

pytestmark = pytest.mark.unit


@pytest.fixture
def engine(tmp_path) -> Iterator:
    engine = make_engine(f"sqlite:///{tmp_path / 'unit.db'}")
    migrate(engine)  # the triggers come with the migration
    yield engine
    engine.dispose()


def write(engine, content_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO comments (content_id, body, status, created_at, updated_at)"
                " VALUES (:c, 'x', 'published', '2026-12-02', '2026-12-02')"
            ),
            {"c": content_id},
        )


def cache(engine, **kw) -> ReadCache:
    options = {"max_entries": 100, "max_bytes": 10_000, "fingerprint": "test", **kw}
    return ReadCache(ChangeMarkers(engine), **options)


def never(_etag: str) -> bool:
    return False


def test_markers_move_with_every_write_to_their_content_only(engine):
    markers = ChangeMarkers(engine)
    assert markers.versions(["a", "b"]) == (UNWRITTEN, UNWRITTEN)
    generation = markers.generation()
    assert markers.generation() == generation  # nothing written: it stands still
    write(engine, "a")
    a1, b1 = markers.versions(["a", "b"])
    assert a1 != UNWRITTEN
    assert b1 == UNWRITTEN
    assert markers.generation() != generation
    write(engine, "a")
    assert markers.versions(["a"])[0] not in (UNWRITTEN, a1)
    assert markers.versions(["b"]) == (UNWRITTEN,)


def test_hits_until_a_write_then_rebuilds(engine):
    c = cache(engine)
    builds = []

    def build() -> Rendered:
        builds.append(1)
        return Rendered(f"build {len(builds)}".encode())

    first = c.read(("k",), ["a"], build, never)
    second = c.read(("k",), ["a"], build, never)
    assert (first.value, second.value) == (Rendered(b"build 1"), Rendered(b"build 1"))
    assert first.etag == second.etag
    assert c.read(("k",), ["a"], build, lambda etag: etag == first.etag) == Read(
        first.etag, None, not_modified=True
    )
    write(engine, "b")  # another content: still a hit (its marker is unchanged)
    assert c.read(("k",), ["a"], build, never).value == Rendered(b"build 1")
    write(engine, "a")
    third = c.read(("k",), ["a"], build, never)
    assert third.value == Rendered(b"build 2")
    assert third.etag != first.etag
    assert len(builds) == 2


def test_a_page_that_keeps_changing_while_built_is_served_tagged_but_not_cached(engine):
    # It went untagged: a reader polling a list saw its ETag vanish while writes no reader
    # sees (comments held for moderation) landed on that content. A tag names the bytes.
    c = cache(engine)
    calls = []

    def build() -> Rendered:
        calls.append(1)
        write(engine, "a")  # every build is overtaken by a write
        return Rendered(b"page")

    read = c.read(("k",), ["a"], build, never)
    assert read == Read(c.etag(("k",), Rendered(b"page")), Rendered(b"page"))
    assert len(calls) == 2  # built once more under the new marker, then given up
    assert len(c) == 0
    # The same bytes built quietly later carry the same tag, so a revalidation is a 304.
    quiet = c.read(("k",), ["a"], lambda: Rendered(b"page"), lambda tag: tag == read.etag)
    assert quiet.not_modified


def test_a_page_built_not_to_be_kept_is_built_every_time_and_tagged_by_its_bytes(engine):
    c = cache(engine)
    builds = []

    def build() -> Rendered:
        builds.append(1)
        return Rendered(f"build {len(builds)}".encode(), keep=False)

    first = c.read(("k",), ["a"], build, never)
    second = c.read(("k",), ["a"], build, never)
    assert (first, second) == (
        Read(c.etag(("k",), first.value), Rendered(b"build 1", keep=False)),
        Read(c.etag(("k",), second.value), Rendered(b"build 2", keep=False)),
    )
    assert first.etag != second.etag
    assert len(c) == 0
    # A 304 only once this request's own build has the bytes the client holds.
    third = c.read(("k",), ["a"], build, lambda tag: tag == second.etag)
    assert (third.not_modified, len(builds)) == (False, 3)
    same = c.read(("k",), ["a"], lambda: Rendered(b"build 3", keep=False), lambda t: True)
    assert same.not_modified
    assert same.etag == third.etag


def test_lru_bounds_entries_and_bytes(engine):
    c = cache(engine, max_entries=2, max_bytes=25)
    for key in ("a", "b", "c"):
        c.read((key,), [key], lambda: Rendered(b"x" * 10), never)
    assert len(c) == 2
    built = []
    c.read(("a",), ["a"], lambda: built.append(1) or Rendered(b"y"), never)
    assert built == [1]  # "a" was the least recently used: evicted
    c.read(("big",), ["big"], lambda: Rendered(b"z" * 26), never)
    assert len(c) == 2  # larger than the whole budget: served, never stored
    c.read(("d",), ["d"], lambda: Rendered(b"w" * 20), never)
    assert len(c) == 2  # "c" (oldest) evicted: a + d = 21 bytes
    c.read(("e",), ["e"], lambda: Rendered(b"v" * 20), never)
    assert len(c) == 1  # a + d + e = 41 bytes > 25: evicted down to the budget


def test_etags_name_the_bytes_the_query_and_the_fingerprint(engine):
    one, other = cache(engine), cache(engine, fingerprint="v2")
    page, linked = Rendered(b"1"), Rendered(b"1", (("Link", "<next>"),))
    assert one.etag(("k",), page) == cache(engine).etag(("k",), page)
    tags = {one.etag(("k",), page), one.etag(("k",), Rendered(b"2")), one.etag(("j",), page)}
    assert len(tags | {one.etag(("k",), linked)}) == 4
    assert one.etag(("k",), page) != other.etag(("k",), page)
    assert one.etag(("k",), None) is None  # nothing to show: no tag


def test_a_write_that_leaves_the_bytes_as_they_were_leaves_the_etag(engine):
    """The markers move with every write to a content, a pending comment's included: an ETag
    made from them told a reader watching it that something no one may see was written."""
    c = cache(engine)
    first = c.read(("k",), ["a"], lambda: Rendered(b"page"), never)
    write(engine, "a")
    built = []
    again = c.read(("k",), ["a"], lambda: built.append(1) or Rendered(b"page"), never)
    assert built == [1]  # the markers moved: built again, to the same bytes
    assert again == first
    held = c.read(("k",), ["a"], lambda: Rendered(b"other"), lambda etag: etag == first.etag)
    assert held == Read(first.etag, None, not_modified=True)  # the entry, not this build
    write(engine, "a")
    changed = c.read(("k",), ["a"], lambda: Rendered(b"new"), lambda etag: etag == first.etag)
    assert changed.value == Rendered(b"new")
    assert changed.etag not in (None, first.etag)


def test_marker_selects_feed_the_statement_observer_and_the_pragma_does_not(engine) -> None:
    seen: list[tuple[str, float]] = []
    markers = ChangeMarkers(engine, lambda sql, seconds: seen.append((sql, seconds)))
    markers.generation()  # PRAGMA data_version: shared memory, not a statement to time
    assert seen == []
    markers.versions(["a", "b"])
    markers.versions(["a"])
    # Reads both (SQLite's starts with its CTE: counted as a select by the DB histogram).
    assert len(seen) == 2
    assert {sql.split(None, 1)[0] for sql, _ in seen} <= {"SELECT", "WITH"}
    assert all("content_versions" in sql for sql, _ in seen)
    assert all(0 <= seconds < 5 for _, seconds in seen)


def test_a_forked_child_opens_its_own_marker_connection(engine) -> None:
    # The pid is remembered at fork, not asked per read: the child must still notice it
    # is not the process that opened the connection (sharing one sqlite3 connection
    # across processes corrupts its state).
    markers = ChangeMarkers(engine)
    write(engine, "a")
    before = markers.versions(["a"])
    parent_conn = markers._local.conn
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        try:
            seen = markers.versions(["a"])
            own = markers._local.conn is not parent_conn
            os.write(write_fd, f"{own} {seen == before}".encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    report = os.read(read_fd, 100).decode()
    os.close(read_fd)
    assert status == 0
    assert report == "True True"
    # The parent keeps its own connection, still working.
    assert markers._local.conn is parent_conn
    write(engine, "a")
    assert markers.versions(["a"]) != before
