"""Storage properties the API relies on: list cost follows the page, not the table."""

from __future__ import annotations

from sqlalchemy import insert, text

from comments_api.comments.rules import STATUS_DELETED, STATUS_PUBLISHED
from comments_api.store.repository import comments, make_engine, migrate, utcnow


def _compiled(engine, query) -> str:
    return str(query.compile(engine, compile_kwargs={"literal_binds": True}))


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


def _plan(engine, sql: str) -> str:
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            return "\n".join(str(r[-1]) for r in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
        return "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {sql}")))


def test_page_and_list_queries_read_the_content_index_in_order(database_url):
    from sqlalchemy import select

    engine = make_engine(database_url)
    migrate(engine)
    _seed(engine)
    queries = {
        "v1 page": select(comments.c.id)
        .where(comments.c.content_id == "big",
               comments.c.status.in_([STATUS_PUBLISHED, STATUS_DELETED]), comments.c.id > 3)
        .order_by(comments.c.id).limit(26),
        "legacy list": select(comments.c.email, comments.c.body)
        .where(comments.c.content_id == "big", comments.c.status == STATUS_PUBLISHED)
        .order_by(comments.c.id).limit(1001),
    }  # fmt: skip
    for name, query in queries.items():
        plan = _plan(engine, _compiled(engine, query))
        assert "ix_comments_content_id" in plan, f"{name}: {plan}"
        # No full scan and no sort of the whole thread.
        assert "SCAN comments" not in plan, f"{name}: {plan}"
        assert "Seq Scan" not in plan, f"{name}: {plan}"
        assert "TEMP B-TREE" not in plan, f"{name}: {plan}"
        assert "Sort" not in plan, f"{name}: {plan}"
    engine.dispose()
