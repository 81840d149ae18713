"""Alembic environment: runs against the connection handed over by storage.migrate()."""

from alembic import context
from sqlalchemy import create_engine

from comments_api.store.repository import metadata

config = context.config


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        _run(conn)


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place: batch mode copies the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # PostgreSQL: each migration commits on its own, so one may step outside any
        # transaction (autocommit_block) for CREATE INDEX CONCURRENTLY. SQLite: the caller's
        # single transaction (storage.migrate()).
        transaction_per_migration=connection.dialect.name == "postgresql",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `comments-api migrate`")
run_migrations()
