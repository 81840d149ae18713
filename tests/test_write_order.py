"""Creates on one content commit in id order on PostgreSQL, so a reader paging oldest-first
(cursor = "after the last id seen") never steps past a comment that commits later.

PostgreSQL takes a comment's id from a sequence at INSERT time, before the transaction
commits: without an order between the creates of one content, a later id can become
visible first. SQLite serialises writers (BEGIN IMMEDIATE), so this is PostgreSQL's alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from comments_api.comments.rules import NewComment
from comments_api.store.repository import AuthorCheck, Repository

from .support import gated_postgres, locks_waited_for, wait_until

CONTENT = "ordered"
HELD_BODY = "held between its id and its commit"
GATE = (7301, 1)  # a two-int advisory lock (support.hold_inserts_at_gate)
WAIT = 5.0  # seconds any step of the test may take at most


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    # A create of HELD_BODY waits, after its id was taken, until the test lets it go.
    with gated_postgres(postgres_url, HELD_BODY, GATE) as engine:
        yield engine


def _waiting_for_locks(engine: Engine) -> int:
    return locks_waited_for(engine, "advisory")


def _until(condition, what: str) -> None:
    assert wait_until(condition, WAIT, 0.01), f"timed out waiting for {what}"


def _read_on(repo: Repository, after_id: int | None) -> list[int]:
    """What a reader paging oldest-first, one comment per page, sees from ``after_id``."""
    seen: list[int] = []
    for _ in range(20):
        page = repo.list_page(
            CONTENT, limit=1, order="oldest", after_id=after_id, statuses=("published",)
        )
        seen += [c.id for c in page.items]
        if page.next_cursor is None:
            break
        after_id = seen[-1]
    return seen


def test_a_reader_paging_oldest_first_sees_a_create_that_commits_late(engine) -> None:
    repo = Repository(engine)
    now = datetime.now(UTC)
    # With the author check on, as the app runs: its lock used to be per author.
    check = AuthorCheck(now - timedelta(hours=1), now - timedelta(minutes=10), lambda _: None)
    errors: list[BaseException] = []

    def create(*news: NewComment) -> None:
        try:
            for new in news:
                repo.create(new, check, now=now)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    held = threading.Thread(
        target=create, args=(NewComment(CONTENT, HELD_BODY, email="ann@example.com"),)
    )
    later = threading.Thread(
        target=create,
        args=(
            NewComment(CONTENT, "second", email="bob@example.com"),
            NewComment(CONTENT, "third", email="cy@example.com"),
        ),
    )
    with engine.connect() as gate:
        gate.execute(text("SELECT pg_advisory_lock(:a, :b)"), {"a": GATE[0], "b": GATE[1]})
        try:
            held.start()
            _until(lambda: _waiting_for_locks(engine) == 1, "the held create at the gate")
            later.start()
            # The later creates either commit (ids after the held one's) or wait for it.
            _until(
                lambda: not later.is_alive() or _waiting_for_locks(engine) == 2,
                "the later creates to commit or wait",
            )
            seen = _read_on(repo, None)
        finally:
            gate.execute(text("SELECT pg_advisory_unlock(:a, :b)"), {"a": GATE[0], "b": GATE[1]})
            gate.commit()
    held.join(WAIT)
    later.join(WAIT)
    assert not errors
    assert not held.is_alive()
    assert not later.is_alive()

    seen += _read_on(repo, seen[-1] if seen else None)
    everything = _read_on(repo, None)
    assert len(everything) == 3
    assert seen == everything  # every comment once, in id order: the held one included
