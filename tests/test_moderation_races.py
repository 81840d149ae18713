"""Moderation writes against creates and each other on PostgreSQL, in the orders that broke.

PostgreSQL lets writers of one content overlap; SQLite's BEGIN IMMEDIATE serialises every
writer, so these interleavings cannot happen there. Each test stops one transaction at a
chosen point (an advisory lock, a row lock, or a trigger waiting at a gate the test holds),
lets the other write run into it, then lets go: every outcome is one of the serial ones,
never a foreign-key 500 or a deadlock's 503.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from comments_api.comments.rules import STATUS_DELETED, InvalidInput, NewComment
from comments_api.comments.service import CommentService
from comments_api.moderation.rules import transition
from comments_api.settings import Settings
from comments_api.store.repository import IdempotentRequest, Repository, _lock_key

from .support import gated_postgres, locks_waited_for, wait_until

CONTENT = "raced"
HELD_BODY = "a reply held between its insert and its commit"
GATE = (7302, 1)  # a two-int advisory lock (support.hold_inserts_at_gate)
WAIT = 10.0  # seconds any step of a test may take at most


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    # An insert of HELD_BODY waits at GATE, inside its transaction, until the test lets go.
    with gated_postgres(postgres_url, HELD_BODY, GATE) as engine:
        yield engine


def _waiting(engine: Engine) -> int:
    """Locks some session waits for: advisory, row (tuple) or another transaction's."""
    return locks_waited_for(engine)


def _until(condition: Callable[[], bool], what: str) -> None:
    assert wait_until(condition, WAIT, 0.01), f"timed out waiting for {what}"


class Step(threading.Thread):
    """A write in a thread of its own; what it returned or raised, for the test to judge."""

    def __init__(self, write: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.write = write
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.write()
        except BaseException as exc:  # judged by the test, not lost in the thread
            self.error = exc

    def done(self) -> Step:
        self.join(WAIT)
        assert not self.is_alive(), "the write did not finish"
        return self


def _service(repo: Repository, postgres_url: str) -> CommentService:
    return CommentService(repo, Settings(database_url=postgres_url))


def _reply(service: CommentService, parent_id: int, body: str = "a reply") -> Callable[[], object]:
    new = NewComment(CONTENT, body, email="bob@example.com", parent_id=parent_id)
    return lambda: service.create(service.prepare(new, None))


def _comment_ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT id FROM comments ORDER BY id")).scalars())


def test_a_reply_whose_parent_is_removed_while_it_waits_is_refused_not_a_500(
    engine, postgres_url
) -> None:
    """The reply read its parent before it waited for its content's lock: the parent,
    removed for good meanwhile, failed the insert's foreign key, an internal error. The
    parent is now read under that lock, which the removal takes too: a 400."""
    repo = Repository(engine)
    service = _service(repo, postgres_url)
    parent = repo.create(NewComment(CONTENT, "the parent", email="ann@example.com"))
    reply = Step(_reply(service, parent.id))
    with engine.connect() as moderator:
        # As a removal by another instance: the content's lock first, then the rows.
        moderator.execute(
            text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key("content", CONTENT)}
        )
        reply.start()
        _until(lambda: _waiting(engine) == 1, "the reply to wait for its content")
        moderator.execute(
            text("UPDATE comments SET status = 'hidden' WHERE id = :i"), {"i": parent.id}
        )
        moderator.execute(text("DELETE FROM comments WHERE id = :i"), {"i": parent.id})
        moderator.commit()
    reply.done()
    assert isinstance(reply.error, InvalidInput), reply.error
    assert "parent_id" in str(reply.error.errors), reply.error.errors
    assert _comment_ids(engine) == []


def test_a_parent_removed_while_a_reply_to_it_commits_becomes_its_tombstone(
    engine, postgres_url
) -> None:
    """A moderator hid, then deleted a comment while a reply to it was being stored: the
    delete saw no reply yet and removed the row, and the reply's commit failed its foreign
    key (a 500). Both now take the content's lock: the delete waits for the reply and
    keeps the comment as the reply's tombstone."""
    repo = Repository(engine)
    service = _service(repo, postgres_url)
    parent = repo.create(NewComment(CONTENT, "the parent", email="ann@example.com"))

    def hide_then_delete() -> tuple[list[int], list[int]]:
        return (
            repo.moderate([parent.id], transition("hide"), "tests"),
            repo.moderate([parent.id], transition("delete"), "tests"),
        )

    with engine.connect() as gate:
        gate.execute(text("SELECT pg_advisory_lock(:a, :b)"), {"a": GATE[0], "b": GATE[1]})
        try:
            reply = Step(_reply(service, parent.id, HELD_BODY))
            reply.start()
            _until(lambda: _waiting(engine) == 1, "the reply to stop at the gate")
            moderation = Step(hide_then_delete)
            moderation.start()
            # It waits for the content's lock now; before, it ran to the end.
            _until(
                lambda: not moderation.is_alive() or _waiting(engine) == 2,
                "the moderator's writes to finish or wait",
            )
        finally:
            gate.execute(text("SELECT pg_advisory_unlock(:a, :b)"), {"a": GATE[0], "b": GATE[1]})
            gate.commit()
    reply.done()
    moderation.done()
    assert reply.error is None, reply.error
    assert moderation.error is None, moderation.error
    assert moderation.result == ([parent.id], [parent.id])
    stored = repo.get(parent.id)
    assert stored is not None
    assert stored.status == STATUS_DELETED
    assert _comment_ids(engine) == [parent.id, reply.result.id]  # type: ignore[attr-defined]


def test_a_bulk_delete_and_a_hide_of_one_comment_take_their_locks_in_one_order(engine) -> None:
    """A delete of a hidden and a published comment removes the first (its statement
    trigger then holds the content's change marker) and tombstones the second; a hide of
    the second locks its row, then the marker: opposite orders, a deadlock, and one of the
    two answered 503 after a second. Both now take the content's lock first."""
    repo = Repository(engine)
    now = datetime.now(UTC)
    hidden = repo.create(NewComment(CONTENT, "hidden", email="ann@example.com"), now=now)
    public = repo.create(NewComment(CONTENT, "published", email="bob@example.com"), now=now)
    repo.moderate([hidden.id], transition("hide"), "tests")
    with engine.connect() as holder:
        # A third writer holds the published row, so that the hide waits for it first,
        # and the delete then comes to it with the marker already taken.
        holder.execute(text("SELECT id FROM comments WHERE id = :i FOR UPDATE"), {"i": public.id})
        hide = Step(lambda: repo.moderate([public.id], transition("hide"), "tests"))
        hide.start()
        _until(lambda: _waiting(engine) == 1, "the hide to wait for the row")
        delete = Step(lambda: repo.moderate([hidden.id, public.id], transition("delete"), "tests"))
        delete.start()
        _until(lambda: _waiting(engine) == 2, "the delete to wait")
        holder.commit()
    hide.done()
    delete.done()
    assert hide.error is None, hide.error
    assert delete.error is None, delete.error
    assert hide.result == [public.id]
    assert delete.result == [hidden.id, public.id]
    # The hide went first (it waited first): the delete found both hidden, with no reply.
    assert repo.get(hidden.id) is None
    assert repo.get(public.id) is None


def test_a_create_reusing_an_expired_key_and_a_delete_of_its_old_comment_do_not_deadlock(
    engine,
) -> None:
    """A create whose Idempotency-Key had expired removed the key's old row (row lock),
    then waited for its content's lock; a delete of the comment that row names held that
    lock and came to erase the row's answer: a deadlock, one of them a 503 after a second.
    The create now takes its content's lock before it removes the row."""
    repo = Repository(engine)
    first_at = datetime.now(UTC)

    def render(comment) -> tuple[int, str, None]:
        return 201, f'{{"id": {comment.id}}}', None

    def keyed(request_hash: str) -> IdempotentRequest:
        return IdempotentRequest(scope="anonymous", key="K", request_hash=request_hash, ttl=60)

    old = repo.create_idempotent(
        NewComment(CONTENT, "old", email="ann@example.com"), None, keyed("h1"), render,
        now=first_at,
    )  # fmt: skip
    old_id = int(old.body.split(":")[1].strip(" }"))
    with engine.connect() as holder:
        # Stops the delete after its content's lock, before its rows and the key's answer.
        holder.execute(text("SELECT id FROM comments WHERE id = :i FOR UPDATE"), {"i": old_id})
        delete = Step(lambda: repo.moderate([old_id], transition("delete"), "tests"))
        delete.start()
        _until(lambda: _waiting(engine) == 1, "the delete to wait for the row")
        create = Step(
            lambda: repo.create_idempotent(
                NewComment(CONTENT, "new", email="ann@example.com"),
                None,
                keyed("h2"),
                render,
                now=first_at + timedelta(seconds=120),  # the key has expired
            )
        )
        create.start()
        _until(lambda: _waiting(engine) == 2, "the create to wait")
        holder.commit()
    delete.done()
    create.done()
    assert delete.error is None, delete.error
    assert create.error is None, create.error
    assert delete.result == [old_id]
    assert create.result.status == 201  # type: ignore[attr-defined]
    assert not create.result.replayed  # type: ignore[attr-defined]
