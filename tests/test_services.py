"""The services without HTTP: rules, transactions and time windows, on a real SQLite file.

Time is a FakeClock the tests move, so windows (edit, duplicates, flood, idempotency keys)
are checked at their edges without sleeping. These run in the unit tier (make test-fast).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from comments_api.comments.rules import (
    STATUS_DELETED,
    STATUS_HIDDEN,
    STATUS_PENDING,
    STATUS_PUBLISHED,
    InvalidInput,
    NewComment,
    NotFound,
)
from comments_api.comments.service import CommentService
from comments_api.identity.credentials import (
    KIND_API_KEY,
    KIND_JWT,
    SCOPE_MODERATE,
    SCOPE_WRITE,
    AuthError,
    Forbidden,
    Identity,
)
from comments_api.identity.service import IdentityService
from comments_api.moderation.rules import (
    AbuseRules,
    Banned,
    Duplicate,
    TooManyComments,
    transition,
)
from comments_api.moderation.service import ModerationService
from comments_api.settings import Settings
from comments_api.store.repository import IdempotentRequest, Repository, make_engine, metadata

from .clock import FakeClock

pytestmark = pytest.mark.unit

ALICE = Identity(kind=KIND_JWT, id="alice", scopes=frozenset({SCOPE_WRITE}), email="a@x.example")
BOB = Identity(kind=KIND_JWT, id="bob", scopes=frozenset({SCOPE_WRITE}))
MODERATOR = Identity(kind=KIND_API_KEY, id="0123456789ab", scopes=frozenset({SCOPE_MODERATE}))


@pytest.fixture
def repo(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'unit.db'}")
    metadata.create_all(engine)
    yield Repository(engine)
    engine.dispose()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make_service(repo, clock):
    def make(abuse: AbuseRules | None = None, **settings: object) -> CommentService:
        return CommentService(repo, replace(Settings(), **settings), abuse, clock)

    return make


def new(body="hello", content_id="c1", email="ann@example.com", **extra) -> NewComment:
    return NewComment(content_id=content_id, body=body, email=email, **extra)


def post(svc: CommentService, identity: Identity | None = None, **fields):
    return svc.create(svc.prepare(new(**fields), identity))


# --- creating ---------------------------------------------------------------------------
def test_create_stamps_the_clock_and_pre_moderation_holds_all_but_moderators(make_service, clock):
    svc = make_service()
    comment = post(svc)
    assert (comment.status, comment.created_at, comment.updated_at) == (
        STATUS_PUBLISHED,
        clock.now,
        clock.now,
    )
    held = make_service(moderation_mode="pre")
    assert post(held).status == STATUS_PENDING
    assert post(held, MODERATOR, body="from staff").status == STATUS_PUBLISHED


def test_a_reader_token_decides_the_author(make_service):
    comment = post(make_service(), ALICE, email="forged@example.com")
    assert (comment.author_subject, comment.email) == ("alice", "a@x.example")


def test_replies_need_a_visible_parent_of_the_same_content(make_service, repo):
    svc = make_service()
    parent = post(svc)
    assert post(svc, parent_id=parent.id, body="reply").parent_id == parent.id
    with pytest.raises(InvalidInput, match="another content_id"):
        post(svc, content_id="c2", parent_id=parent.id)
    repo.moderate([parent.id], transition("hide"), "tests")
    with pytest.raises(InvalidInput, match="no such comment"):
        post(svc, parent_id=parent.id, body="reply to hidden")
    with pytest.raises(InvalidInput, match="no such comment"):
        post(svc, parent_id=10**6)


def test_a_pending_comment_cannot_be_replied_to_nor_found_by_replying(make_service, repo):
    """Under pre-moderation a held comment is a 404 to the public; a reply to it was stored,
    and a reply from another content said "belongs to another content_id", so anyone could
    find held comments (and their contents) by walking the sequential ids."""
    held = make_service(moderation_mode="pre")
    parent = post(held)
    assert parent.status == STATUS_PENDING
    for content_id in ("c1", "c2"):
        with pytest.raises(InvalidInput, match="no such comment to reply to"):
            post(held, content_id=content_id, parent_id=parent.id, body=f"reply on {content_id}")
    assert repo.counts(["c1", "c2"]) == {"c1": 0, "c2": 0}
    repo.moderate([parent.id], transition("approve"), "tests")
    assert post(make_service(), parent_id=parent.id, body="reply").parent_id == parent.id


def test_banned_words_are_refused_before_anything_is_stored(make_service, repo):
    svc = make_service(banned_words=("scam",))
    with pytest.raises(InvalidInput) as refused:
        svc.prepare(new("a SCAM here"), None, body_field="comment")
    assert refused.value.errors[0].field == "comment"
    # The author's name is shown beside the body: the same words are refused there.
    with pytest.raises(InvalidInput) as refused:
        svc.prepare(new("fine", author_name="Scam Bot"), None)
    assert [(e.field, e.message) for e in refused.value.errors] == [
        ("author_name", "contains language this site does not accept; please rephrase")
    ]
    assert repo.counts(["c1"]) == {"c1": 0}
    assert post(svc, author_name="Scamander").author_name == "Scamander"  # whole words only


def test_duplicates_are_refused_inside_the_window_only(make_service, clock):
    svc = make_service(AbuseRules(duplicate_window=600))
    post(svc)
    clock.advance(600)  # the window includes its last instant
    with pytest.raises(Duplicate):
        post(svc, email="ANN@example.com")  # same author, whatever the case
    clock.advance(0.001)
    assert post(svc).body == "hello"


def test_a_zero_duplicate_window_turns_the_check_off(make_service):
    svc = make_service(AbuseRules(duplicate_window=0))
    post(svc)
    assert post(svc).id == 2


def test_flood_limit_per_author_per_content_with_retry_after(make_service, clock):
    svc = make_service(AbuseRules(thread_author_max=2, thread_author_window=60))
    first = post(svc, body="1")
    post(svc, body="2")
    with pytest.raises(TooManyComments) as flood:
        post(svc, body="3")
    assert flood.value.headers == {"Retry-After": "60"}
    assert post(svc, body="3", content_id="other").content_id == "other"
    clock.now = first.created_at + timedelta(seconds=60, microseconds=1)
    assert post(svc, body="3").body == "3"


def test_banned_authors_cannot_post(make_service, repo):
    svc = make_service(AbuseRules())
    ModerationService(repo).ban("email:ann@example.com", None, "tests")
    with pytest.raises(Banned):
        post(svc)
    assert repo.counts(["c1"]) == {"c1": 0}
    assert post(make_service(None)).id == 1  # no rules: no checks at all


def test_idempotency_keys_replay_within_their_ttl_then_expire(make_service, repo, clock):
    svc = make_service(AbuseRules(duplicate_window=0))
    request = IdempotentRequest(scope="anonymous", key="k", request_hash="h1", ttl=10.0)

    def render(comment):
        return 201, json.dumps({"id": comment.id}), f"/c/{comment.id}"

    first = svc.create_idempotent(svc.prepare(new(), None), request, render)
    clock.advance(9.999)
    again = svc.create_idempotent(svc.prepare(new(), None), request, render)
    assert (again.replayed, again.body) == (True, first.body)
    clock.advance(0.001)  # a key lives IDEMPOTENCY_TTL seconds, its last instant excluded
    later = svc.create_idempotent(svc.prepare(new(), None), request, render)
    assert later.replayed is False
    assert later.body != first.body
    assert repo.counts(["c1"]) == {"c1": 2}


# --- editing and deleting ------------------------------------------------------------------
def test_authors_edit_within_the_window(make_service, clock):
    svc = make_service(edit_window=30)
    mine = post(svc, ALICE)
    clock.advance(30)
    edited = svc.edit(ALICE, mine.id, lambda: "second")
    assert (edited.body, edited.updated_at, edited.created_at) == (
        "second",
        clock.now,
        mine.created_at,
    )
    clock.advance(0.001)
    with pytest.raises(Forbidden, match="edited for 30 seconds"):
        svc.edit(ALICE, mine.id, lambda: "too late")
    assert svc.get_public(mine.id).body == "second"


def test_edit_permissions_are_checked_before_the_body_is_read(make_service, repo):
    svc = make_service()
    mine = post(svc, ALICE)

    def must_not_read() -> str:
        raise AssertionError("the body was read before the permission checks")

    with pytest.raises(Forbidden, match="author may edit"):
        svc.edit(BOB, mine.id, must_not_read)
    with pytest.raises(Forbidden):
        svc.edit(MODERATOR, mine.id, must_not_read)  # moderators delete, they don't rewrite
    with pytest.raises(NotFound):
        svc.edit(ALICE, 10**6, must_not_read)
    ModerationService(repo).ban("sub:alice", "spam", "tests")
    with pytest.raises(Banned):
        svc.edit(ALICE, mine.id, must_not_read)


def test_edits_follow_banned_words_and_pre_moderation(make_service):
    svc = make_service(moderation_mode="pre", banned_words=("scam",))
    mine = post(make_service(), ALICE)
    with pytest.raises(InvalidInput):
        svc.edit(ALICE, mine.id, lambda: "a scam")
    # Changed text is new text: under pre-moderation it waits for a moderator again.
    assert svc.edit(ALICE, mine.id, lambda: "fine").status == STATUS_PENDING


def test_authors_correct_their_pending_comments_and_nobody_else_finds_them(make_service, repo):
    """Under pre-moderation an author's comment, and every edit of it, waits for a
    moderator: its author may still fix a typo in it (a 404 before), while to anyone
    else, moderators included, an edit finds nothing, as a GET does. A comment a
    moderator hid is not the author's to edit."""
    svc = make_service(moderation_mode="pre")
    mine = post(svc, ALICE)
    assert mine.status == STATUS_PENDING
    first = svc.edit(ALICE, mine.id, lambda: "fixed")
    second = svc.edit(ALICE, mine.id, lambda: "fixed twice")
    assert (first.status, second.status, second.body) == (STATUS_PENDING,) * 2 + ("fixed twice",)

    def must_not_read() -> str:
        raise AssertionError("the body was read")

    for stranger in (BOB, MODERATOR):
        with pytest.raises(NotFound):
            svc.edit(stranger, mine.id, must_not_read)
    repo.moderate([mine.id], transition("hide"), "tests")
    with pytest.raises(NotFound):
        svc.edit(ALICE, mine.id, must_not_read)
    assert repo.get(mine.id).body == "fixed twice"


@pytest.mark.parametrize("meanwhile", ["hide", "delete"])
def test_an_edit_never_undoes_a_hide_or_delete_that_committed_during_it(
    make_service, repo, meanwhile
):
    """The edit read the comment published, then a moderator hid it (or the author deleted
    it from another tab) before the edit wrote: writing back the status read first would
    publish it again. The body reader runs between the two, where a request of its own
    would commit."""
    svc = make_service()
    mine = post(svc, ALICE, body="first")

    def body_after_the_other_write() -> str:
        if meanwhile == "hide":
            repo.moderate([mine.id], transition("hide"), "tests")
        else:
            assert svc.delete(ALICE, mine.id) is True
        return "edited"

    with pytest.raises(NotFound):
        svc.edit(ALICE, mine.id, body_after_the_other_write)
    stored = repo.get(mine.id)
    assert stored.status == (STATUS_HIDDEN if meanwhile == "hide" else STATUS_DELETED)
    assert stored.body != "edited"


def test_an_edit_never_lands_after_a_ban_that_committed_during_it(make_service, repo):
    """The edit checked for a ban, then a moderator banned its author before the edit wrote
    (on PostgreSQL while it waited for its content's lock: a ban takes none): the banned
    author's new text was stored and published after the ban's 201. The ban is asked again
    in the edit's own transaction, as a create asks it in its insert's: a 403."""
    svc = make_service()
    mine = post(svc, ALICE, body="harmless")

    def body_after_the_ban() -> str:
        assert repo.ban("sub:alice", "spam", "tests") is True
        return "SPAM LINK"

    with pytest.raises(Banned):
        svc.edit(ALICE, mine.id, body_after_the_ban)
    assert repo.get(mine.id).body == "harmless"
    assert [e.action for e in repo.audit_page(limit=10, before_id=None)[0]] == ["ban"]


def test_an_edit_meeting_an_approve_is_judged_again_and_applies(make_service, repo):
    """Under pre-moderation the edit read the comment pending, then a moderator approved it
    before the edit wrote: the edit found its status moved and said 404, the comment was
    public with its old text and the author's correction lost. Judged again, a published
    comment is still its author's to edit (and goes back to the queue)."""
    svc = make_service(moderation_mode="pre")
    mine = post(svc, ALICE, body="first")
    approved: list[int] = []

    def body_after_an_approve() -> str:
        approved.extend(repo.moderate([mine.id], transition("approve"), "tests"))
        return "corrected"

    edited = svc.edit(ALICE, mine.id, body_after_an_approve)
    assert approved == [mine.id]
    assert (edited.body, edited.status) == ("corrected", STATUS_PENDING)
    assert (repo.get(mine.id).body, repo.get(mine.id).status) == ("corrected", STATUS_PENDING)


def test_deleted_comments_are_tombstones_that_cannot_be_edited(make_service, repo):
    svc = make_service()
    mine = post(svc, ALICE)
    with pytest.raises(Forbidden, match="author or a moderator"):
        svc.delete(BOB, mine.id)
    assert svc.delete(ALICE, mine.id) is True
    assert svc.delete(MODERATOR, mine.id) is False  # already gone: nothing changed
    tombstone = svc.get_public(mine.id)
    assert (tombstone.status, tombstone.body, tombstone.email) == (STATUS_DELETED, None, None)
    with pytest.raises(NotFound):
        svc.edit(ALICE, mine.id, lambda: "zombie")


def test_public_reads_hide_pending_and_hidden_comments(make_service, repo):
    svc = make_service()
    shown, hidden = post(svc, body="shown"), post(svc, body="hidden")
    pending = post(make_service(moderation_mode="pre"), body="pending")
    repo.moderate([hidden.id], transition("hide"), "tests")
    page = svc.list_public("c1", limit=10, order="oldest", after_id=None)
    assert [c.id for c in page.items] == [shown.id]
    for invisible in (hidden.id, pending.id):
        with pytest.raises(NotFound):
            svc.get_public(invisible)
    assert svc.counts(["c1", "none"]) == {"c1": 1, "none": 0}
    assert svc.legacy_list("c1") == ([("ann@example.com", "shown")], False)


# --- moderation ---------------------------------------------------------------------------
def test_bulk_actions_move_only_what_they_may_and_audit_once(make_service, repo, clock):
    held = make_service(moderation_mode="pre")
    a, b = post(held, body="a"), post(held, body="b")
    moderation = ModerationService(repo, clock)
    assert moderation.bulk("approve", [a.id, b.id, 999], "key:mod") == [a.id, b.id]
    assert moderation.bulk("approve", [a.id], "key:mod") == []  # already published
    assert moderation.bulk("hide", [a.id], "key:mod") == [a.id]
    assert repo.get(a.id).status == STATUS_HIDDEN
    assert moderation.bulk("delete", [b.id], "key:mod") == [b.id]
    assert moderation.bulk("approve", [b.id], "key:mod") == []  # no resurrection
    entries, more = moderation.audit(limit=10, before_id=None)
    assert more is None
    assert [(e.action, e.comment_ids) for e in entries] == [
        ("approve", []),
        ("delete", [b.id]),
        ("hide", [a.id]),
        ("approve", []),
        ("approve", [a.id, b.id]),
    ]
    assert entries[-1].details == {"requested": [a.id, b.id, 999]}
    assert {e.created_at for e in entries} == {clock.now}


def test_a_hidden_comment_and_its_hidden_reply_deleted_together_leave_nothing(
    make_service, repo, clock
):
    """Deleted one call after the other, neither left a row (nobody could read them); in
    one call the parent was judged to have a reply before the reply went, and became a
    public tombstone that nothing replies to."""
    svc = make_service()
    parent = post(svc, body="parent")
    reply = post(svc, body="reply", parent_id=parent.id)
    kept = post(svc, body="kept")
    kept_reply = post(svc, body="public reply", parent_id=kept.id)
    moderation = ModerationService(repo, clock)
    hidden = [parent.id, reply.id, kept.id]
    assert moderation.bulk("hide", hidden, "key:mod") == hidden
    everything = [parent.id, reply.id, kept.id]
    assert moderation.bulk("delete", everything, "key:mod") == everything
    assert (repo.get(parent.id), repo.get(reply.id)) == (None, None)
    # A hidden comment with a reply that stays keeps its place as a tombstone.
    assert repo.get(kept.id).status == STATUS_DELETED
    assert repo.get(kept_reply.id).status == STATUS_PUBLISHED
    page = svc.list_public("c1", limit=10, order="oldest", after_id=None)
    assert [c.id for c in page.items] == [kept.id, kept_reply.id]


def test_an_approve_leaves_pending_comments_edited_after_the_moderator_read_them(
    make_service, repo, clock
):
    """``unedited_since``: the queue was read, then an author changed a pending comment's
    text; the approve of what the moderator read publishes the other one only."""
    held = make_service(moderation_mode="pre")
    quiet, changed = post(held, ALICE, body="a fine comment"), post(held, ALICE, body="fine too")
    read_at = clock.now
    clock.advance(1)
    held.edit(ALICE, changed.id, lambda: "BUY CHEAP PILLS")
    moderation = ModerationService(repo, clock)
    ids = [quiet.id, changed.id]
    assert moderation.bulk("approve", ids, "key:mod", ("pending",), read_at) == [quiet.id]
    assert repo.get(changed.id).status == STATUS_PENDING
    # Read again after the edit: now the moderator has seen its text.
    assert moderation.bulk("approve", ids, "key:mod", ("pending",), clock.now) == [changed.id]
    entries, _ = moderation.audit(limit=1, before_id=None)
    assert entries[0].details["if_unedited_since"] == clock.now.isoformat()


def test_bans_and_unbans(repo, clock):
    moderation = ModerationService(repo, clock)
    assert moderation.ban("email:ann@example.com", "spam", "key:mod") is True
    assert moderation.ban("email:ann@example.com", "again", "key:mod") is False
    assert moderation.bans(limit=25, before=None) == (
        [
            {
                "target": "email:ann@example.com",
                "reason": "spam",
                "created_by": "key:mod",
                "created_at": clock.now,
            }
        ],
        None,  # no next page
    )
    moderation.unban("email:ann@example.com", "key:mod")
    with pytest.raises(NotFound, match="not banned"):
        moderation.unban("email:ann@example.com", "key:mod")


# --- identity -----------------------------------------------------------------------------
def test_api_keys_are_issued_used_and_revoked(repo, clock):
    identity = IdentityService(repo, None, clock)
    issued = identity.issue_key("  backend  ", ["comments:write", "comments:write"])
    (record,) = identity.list_keys()
    assert (record.name, record.scopes, record.created_at) == (
        "backend",
        ("comments:write",),
        clock.now,
    )
    assert record.key_hash != issued.key  # only the hash is kept
    clock.advance(5)
    who = identity.authenticate(issued.key)
    assert (who.kind, who.id, who.scopes) == (KIND_API_KEY, issued.key_id, {"comments:write"})
    assert identity.list_keys()[0].last_used_at == clock.now
    assert identity.revoke_key(issued.key_id) is True
    assert identity.revoke_key(issued.key_id) is False
    with pytest.raises(AuthError, match="revoked"):
        identity.authenticate(issued.key)


def test_key_names_scopes_and_unknown_tokens_are_refused(repo):
    identity = IdentityService(repo)
    for name in ("", "   ", "x" * 101):
        with pytest.raises(ValueError, match="1 to 100"):
            identity.issue_key(name, ["admin"])
    with pytest.raises(ValueError, match="unknown scope"):
        identity.issue_key("ok", ["root"])
    with pytest.raises(AuthError, match="does not accept JWTs"):
        identity.authenticate("eyJhbGciOiJIUzI1NiJ9.e30.x")
    with pytest.raises(AuthError, match="unknown API key"):
        identity.authenticate("cak_0123456789ab_" + "x" * 43)
    assert repo.list_api_keys() == []
