"""Storage properties the API relies on: list cost follows the page, not the table.

The plans are of the statements the repository itself sends (captured from the engine),
so a change to storage's queries is what these tests judge.
"""

from __future__ import annotations

from sqlalchemy import event, insert, text

from comments_api.clock import utcnow
from comments_api.comments.rules import STATUS_PUBLISHED
from comments_api.comments.service import PUBLIC_STATUSES
from comments_api.moderation.rules import ACTION_DELETE, transition
from comments_api.store.repository import Repository, comments, make_engine, migrate

from .support import marker_rows


def _seed(engine, contents: int = 2000, per_content: int = 20, big: int = 5000) -> None:
    now = utcnow()
    rows = [
        {"content_id": f"c{c}", "body": f"b{i}", "status": STATUS_PUBLISHED,
         "created_at": now, "updated_at": now}
        for c in range(contents) for i in range(per_content)
    ]  # fmt: skip
    # One very long thread: its page must not cost a scan or sort of all of it.
    rows += [
        {"content_id": "big", "body": f"b{i}", "status": STATUS_PUBLISHED,
         "created_at": now, "updated_at": now}
        for i in range(big)
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(comments), rows)
        if conn.dialect.name == "postgresql":
            conn.execute(text("ANALYZE comments"))
        else:
            conn.execute(text("ANALYZE"))


def _statements(engine, call) -> list[tuple[str, object]]:
    """The SELECTs the repository itself sends while ``call`` runs, with their parameters."""
    seen: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return [(sql, params) for sql, params in seen if sql.lstrip().upper().startswith("SELECT")]


def _plan(engine, sql: str, params: object) -> str:
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)
            return "\n".join(str(r[-1]) for r in rows)
        return "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {sql}", params))


def test_page_and_list_queries_read_the_content_index_in_order(database_url):
    engine = make_engine(database_url)
    migrate(engine)
    _seed(engine)
    repo = Repository(engine)
    calls = {
        "v1 page, oldest first": lambda: repo.list_page(
            "big", limit=25, order="oldest", after_id=3, statuses=PUBLIC_STATUSES
        ),
        "v1 page, newest first": lambda: repo.list_page(
            "big", limit=25, order="newest", after_id=40_000, statuses=PUBLIC_STATUSES
        ),
        "legacy list": lambda: repo.legacy_list("big", 1000),
    }
    for name, call in calls.items():
        statements = _statements(engine, call)
        assert len(statements) == 1, f"{name}: {statements}"
        sql, params = statements[0]
        plan = _plan(engine, sql, params)
        assert "ix_comments_content_id" in plan, f"{name}: {plan}"
        # No full scan and no sort of the whole thread.
        assert "SCAN comments" not in plan, f"{name}: {plan}"
        assert "Seq Scan" not in plan, f"{name}: {plan}"
        assert "TEMP B-TREE" not in plan, f"{name}: {plan}"
        assert "Sort" not in plan, f"{name}: {plan}"
    # The calls above really read the thread: the plans are of working queries.
    assert len(repo.list_page("big", limit=25, order="oldest", after_id=3,
                              statuses=PUBLIC_STATUSES).items) == 25  # fmt: skip
    assert len(repo.legacy_list("big", 1000)[0]) == 1000
    engine.dispose()


def test_a_recent_busy_content_is_read_off_its_index_not_the_primary_key(database_url):
    """A busy story's comments come after most of the table's and make ~10 % of it. With
    ``content_id = :c ... ORDER BY id`` PostgreSQL, ANALYZEd, walked the primary key from
    the first comment and filtered out every other content's: at 1,000,000 comments the
    first page of such a content read 880,000 rows (~0.4 s), however short the page. The
    seed interleaves the other contents, as posting does, so their index is not in heap
    order (the seed above writes content after content, which hid this)."""
    engine = make_engine(database_url)
    migrate(engine)
    now = utcnow()
    rows = [
        {"content_id": f"c{i % 2000}", "body": f"b{i}", "status": STATUS_PUBLISHED,
         "created_at": now, "updated_at": now, "author_key": f"email:{i % 3000}@example.com"}
        for i in range(40_000)
    ] + [
        {"content_id": "recent", "body": f"b{i}", "created_at": now, "updated_at": now,
         "status": "pending" if i % 20 == 1 else "hidden" if i % 20 == 2 else STATUS_PUBLISHED,
         "author_key": "email:busy@example.com"}
        for i in range(5_000)
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(comments), rows)
        conn.execute(text("ANALYZE comments" if conn.dialect.name == "postgresql" else "ANALYZE"))
    repo = Repository(engine)
    calls = {
        "legacy list": lambda: repo.legacy_list("recent", 1000),
        "v1 page, oldest first": lambda: repo.list_page(
            "recent", limit=25, order="oldest", after_id=None, statuses=PUBLIC_STATUSES
        ),
        "v1 page, newest first": lambda: repo.list_page(
            "recent", limit=25, order="newest", after_id=None, statuses=PUBLIC_STATUSES
        ),
        "moderation listing of the content": lambda: repo.moderation_page(
            STATUS_PUBLISHED, content_id="recent", limit=25, after_id=None
        ),
    }
    for name, call in calls.items():
        statements = [(sql, p) for sql, p in _statements(engine, call) if "FROM comments" in sql]
        assert len(statements) == 1, f"{name}: {statements}"
        plan = _plan(engine, *statements[0])
        assert "ix_comments_content_id" in plan, f"{name}: {plan}"
        assert "pk_comments" not in plan, f"{name}: {plan}"
        assert "SCAN comments" not in plan, f"{name}: {plan}"
        assert "Seq Scan" not in plan, f"{name}: {plan}"
        assert "TEMP B-TREE" not in plan, f"{name}: {plan}"
        assert "Sort" not in plan, f"{name}: {plan}"
    # The plans are of working queries: the content's own comments, in order.
    listed, truncated = repo.legacy_list("recent", 1000)
    assert (len(listed), truncated, listed[0][1], listed[1][1]) == (1000, True, "b0", "b3")
    newest = repo.list_page("recent", limit=25, order="newest", after_id=None,
                            statuses=PUBLIC_STATUSES).items  # fmt: skip
    assert [c.body for c in newest[:2]] == ["b4999", "b4998"]
    assert {c.content_id for c in newest} == {"recent"}
    listing = repo.moderation_page(STATUS_PUBLISHED, content_id="recent", limit=25, after_id=None)
    assert [c.body for c in listing.items[:2]] == ["b0", "b3"]

    # An erasure of the author who wrote them (the last call: it deletes): one statement
    # (one snapshot) in which each status is read off an index (the author's, or a
    # moderation list's partial one, whose rows it holds), none by the primary key; the
    # oldest 1000 go, oldest first.
    def erase() -> None:
        erased.append(
            repo.moderate_author(
                "email:busy@example.com", transition(ACTION_DELETE), "t", limit=1000
            )
        )

    erased: list[tuple[list[int], bool]] = []
    plans = [
        _plan(engine, sql, params)
        for sql, params in _statements(engine, erase)
        if "comments.author_key" in sql
    ]
    assert len(plans) == 1, plans  # published, pending and hidden in one statement
    (plan,) = plans
    assert "pk_comments" not in plan, f"erasure: {plan}"
    assert "SCAN comments\n" not in plan + "\n", f"erasure: {plan}"
    assert "Seq Scan" not in plan, f"erasure: {plan}"
    # The published comments, 90 % of the author's, in order off the author's index: its
    # scan stops at the branch's LIMIT, no sort of all of them between (what is sorted
    # after is at most LIMIT rows a branch).
    lines = plan.splitlines()
    author_index = [i for i, line in enumerate(lines) if "ix_comments_status_author_key_id" in line]
    assert author_index, plan
    for at in author_index:
        assert "Limit" in lines[at - 1] or "CO-ROUTINE" in lines[at - 1], plan
    ((changed, more),) = erased
    assert (len(changed), more, changed == sorted(changed)) == (1000, True, True)
    assert changed[0] == min(c.id for c in repo.list_page(
        "recent", limit=1, order="oldest", after_id=None, statuses=("deleted",)).items)  # fmt: skip
    engine.dispose()


def test_the_create_author_check_reads_its_index_before_any_analyze(database_url):
    """Each create checks its author's recent comments on the content (flood, duplicate,
    ban) in one statement, which must read the (content_id, author_key, created_at)
    index. 0009's index led by author_key let PostgreSQL read every comment of the author
    on every content instead, before the table's first ANALYZE, when their estimates tie:
    creates grew slower with each comment (bench/README.md, "A plan that grew with the
    author"). No ANALYZE here, as in a young database."""
    engine = make_engine(database_url)
    migrate(engine)
    now = utcnow()
    author = "email:a@example.com"
    rows = [
        {"content_id": f"c{i % 50}", "body": f"b{i}", "status": STATUS_PUBLISHED,
         "created_at": now, "updated_at": now, "author_key": author}
        for i in range(3000)
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(comments), rows)
    statement = Repository(engine)._author_activity_sql
    values = {
        "content_id": "c1",
        "author_key": author,
        "email_key": author,
        "decomposed_key": author,
        "legacy_key": author,
        "thread_since": now,
        "dup_since": now,
        "body": "b1",
    }
    plan = _plan(engine, statement.sql, statement.parameters(values))
    assert plan.count("ix_comments_content_id_author_key_created_at") == 2, plan
    assert "ix_comments_status_author_key_id" not in plan, plan
    assert "Seq Scan on comments" not in plan, plan
    assert "SCAN comments" not in plan, plan
    engine.dispose()


def test_sqlite_counts_and_change_markers_read_one_content_index(tmp_path):
    """SQLite since 0011: one (content_id, id, status) index serves lists, counts and the
    read cache's marker for inserts (a content's newest id), each without reading the
    table; the lists are held to it above."""
    from comments_api.store.versions import ChangeMarkers

    engine = make_engine(f"sqlite:///{tmp_path / 'counts.db'}")
    migrate(engine)
    _seed(engine)
    repo = Repository(engine)
    ids = [f"c{i}" for i in range(50)] + ["big"]
    statements = _statements(engine, lambda: repo.counts(ids))
    assert len(statements) == 1, statements
    plan = _plan(engine, *statements[0])
    assert "COVERING INDEX ix_comments_content_id_id_status" in plan, plan
    assert "SCAN comments" not in plan, plan
    assert "TEMP B-TREE" not in plan, plan
    counts = repo.counts(ids)
    assert (counts["c0"], counts["c49"], counts["big"]) == (20, 20, 5000)

    markers = ChangeMarkers(engine)
    try:
        statement = markers._select(2)
        plan = _plan(engine, statement.sql, statement.parameters({"id_0": "big", "id_1": "c7"}))
        # For each content asked (a row of the statement's CTE): one seek in each, and the
        # newest comment's row by its id (its created_at: a restored backup's next comment).
        assert "SEARCH ranged USING COVERING INDEX ix_comments_content_id_id_status" in plan
        assert "SEARCH content_versions USING PRIMARY KEY" in plan, plan
        assert "SEARCH comments USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan
        assert "SCAN comments" not in plan, plan
        assert "SCAN content_versions" not in plan, plan
        with engine.connect() as conn:
            newest = {
                content: (top, created)
                for content, top, created in conn.exec_driver_sql(
                    "SELECT content_id, id, created_at FROM comments WHERE id IN "
                    "(SELECT max(id) FROM comments WHERE content_id IN ('big', 'c7') "
                    "GROUP BY content_id)"
                ).all()
            }
        rows = marker_rows(engine)
        # Each marker: the content's marker row value above its newest id's 64 bits, and
        # that comment's created_at as stored.
        for content, marker in zip(("big", "c7"), markers.versions(["big", "c7"]), strict=True):
            packed, created = marker
            assert packed >> 64 == rows[content]
            assert (packed & (2**64 - 1), created) == newest[content]
    finally:
        markers.close()
        engine.dispose()


def test_an_erasure_reads_every_status_at_one_instant(postgres_url):
    """PostgreSQL's READ COMMITTED gives each statement its own snapshot. The erasure read
    published, pending and hidden in three statements: a comment a moderator approved
    between the first two was in neither read, and the erasure answered more: false with
    that comment left published. Here the approve commits right after the erasure's first
    read (SQLite's erasure holds the write lock: nobody can move a comment meanwhile)."""
    engine = make_engine(postgres_url)
    migrate(engine)
    now = utcnow()
    author = "email:erased@example.com"
    stamps = {"content_id": "c", "created_at": now, "updated_at": now, "author_key": author}
    with engine.begin() as conn:
        ids = [
            conn.execute(
                insert(comments).returning(comments.c.id),
                {**stamps, "body": status, "status": status},
            ).scalar_one()
            for status in (STATUS_PUBLISHED, "pending")
        ]
    queued = ids[1]
    moved: list[int] = []

    def approve_after_the_first_read(conn, cursor, statement, parameters, context, many):
        if moved or "comments.author_key" not in statement:
            return
        # Another moderator's approve, committed on its own connection.
        with engine.begin() as other:
            other.execute(
                text("UPDATE comments SET status = 'published' WHERE id = :id"), {"id": queued}
            )
        moved.append(queued)

    repo = Repository(engine)
    event.listen(engine, "after_cursor_execute", approve_after_the_first_read)
    try:
        changed, more = repo.moderate_author(author, transition(ACTION_DELETE), "t", limit=1000)
    finally:
        event.remove(engine, "after_cursor_execute", approve_after_the_first_read)
    with engine.connect() as conn:
        left = conn.execute(
            text("SELECT id FROM comments WHERE author_key = :a AND status <> 'deleted'"),
            {"a": author},
        ).all()
    assert moved == [queued]
    assert (sorted(changed), more, left) == (ids, False, [])
    engine.dispose()
