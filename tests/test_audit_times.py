"""The audit log's times follow its order: an action is stamped once it holds its locks."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from comments_api.web.common import EXTENSION_KEY

from .support import flock_held, locks_waited_for, wait_until
from .test_moderation_preconditions import _another_write_on, pre_moderated

AUDIT = "/api/v1/admin/audit-log"
BULK = "/api/v1/moderation/comments"


def _waiting(app: Flask, count: int) -> None:
    """Until ``count`` requests wait for the held write (PostgreSQL: its content lock)."""
    engine = app.extensions[EXTENSION_KEY].repo.engine
    if engine.dialect.name == "postgresql":
        assert wait_until(lambda: locks_waited_for(engine, "advisory") == count, 10, 0.01)
    elif count == 1:
        # The edit holds the writer's turn, retrying BEGIN IMMEDIATE behind the held write:
        # the approve queues behind it for the turn.
        turn = Path(f"{engine.url.database}-writer.lock")
        assert wait_until(lambda: flock_held(turn), 10, 0.01)
    else:
        # The approve waiting for the turn shows nowhere. Not started by the advance, it
        # would read the clock after it even on the code before: that run would miss the
        # old defect, but no run can fail on this code for it.
        time.sleep(0.3)


def test_an_approve_that_waited_for_an_edit_is_stamped_after_it(build, signer) -> None:
    """Pre-moderation: an approve (no if_unedited_since) waited for the content's lock
    behind an author's edit, then published the edited text. It was stamped with the time
    it began, before the wait: the audit log put it above the edit yet dated it earlier,
    and the comment said it was approved before the text it shows was written."""
    setup = pre_moderated(build, signer)
    app, clock, client, moderator, author = (
        setup.app, setup.clock, setup.client, setup.moderator, setup.author
    )  # fmt: skip
    cid = setup.pending("a nice comment")
    # Its key's use noted now: a request does that write before its action's.
    assert client.get("/api/v1/moderation/pending", headers=moderator).status_code == 200
    answers: dict[str, object] = {}

    def send(name: str, call: str, url: str, body: dict[str, object], who: dict) -> None:
        tester: FlaskClient = app.test_client()
        answers[name] = getattr(tester, call)(url, json=body, headers=who)

    editing = threading.Thread(
        target=send,
        args=("edit", "patch", f"/api/v1/comments/{cid}", {"body": "BUY PILLS"}, author),
        daemon=True,
    )
    approving = threading.Thread(
        target=send,
        args=("approve", "post", BULK, {"action": "approve", "ids": [cid]}, moderator),
        daemon=True,
    )
    engine = app.extensions[EXTENSION_KEY].repo.engine
    with _another_write_on("a1", engine):
        editing.start()
        _waiting(app, 1)
        approving.start()
        _waiting(app, 2)
        clock.advance(5)  # the held write ends five seconds later: the edit goes first
    editing.join(10)
    approving.join(10)
    assert answers["edit"].status_code == 200, answers["edit"].get_data(as_text=True)
    assert answers["approve"].json["changed"] == [cid]

    audit = client.get(AUDIT, headers=moderator).json["items"]
    assert [e["action"] for e in audit[:2]] == ["approve", "edit"]
    approved, edited = (datetime.fromisoformat(e["created_at"]) for e in audit[:2])
    assert approved >= edited, audit[:2]
    comment = client.get(f"/api/v1/comments/{cid}").json
    assert comment["body"] == "BUY PILLS"
    assert comment["updated_at"] >= comment["edited_at"], comment
