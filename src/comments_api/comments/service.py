"""CommentService: creating, editing, deleting and listing comments. Plain Python, no Flask.

It owns the comment rules (who may edit or delete, the edit window, replies, banned words,
pre-moderation, the abuse checks) and the transaction boundaries: storage only stores, and
runs the abuse check the service hands it inside the insert's own transaction. Time comes
from an injected ``Clock`` so tests move it instead of sleeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from ..clock import Clock, utcnow
from ..identity.credentials import (
    SCOPE_MODERATE,
    Forbidden,
    Identity,
    edit_window_open,
    is_author,
    may_delete,
)
from ..moderation.rules import (
    ACTION_DELETE,
    AbuseRules,
    AuthorActivity,
    Banned,
    ban_keys,
    check_activity,
    check_banned_words,
    prepare_comment,
    transition,
)
from ..settings import Settings
from ..store.repository import (
    AuthorCheck,
    IdempotentRequest,
    ParentCheck,
    Renderer,
    Repository,
    StoredResponse,
)
from .cache import Read, ReadCache, Rendered
from .rules import (
    STATUS_DELETED,
    STATUS_PENDING,
    STATUS_PUBLISHED,
    Comment,
    Conflict,
    FieldError,
    InvalidInput,
    NewComment,
    NotFound,
    Page,
    check_reply,
)

# What the public sees in a thread: live comments and the tombstones that keep replies
# attached to their place.
PUBLIC_STATUSES = (STATUS_PUBLISHED, STATUS_DELETED)
# An edit whose comment a moderator moves between its checks and its write is judged
# again; this many times at most (each time needs another moderator's action).
EDIT_ATTEMPTS = 3


def _reply_check(new: NewComment) -> ParentCheck | None:
    """That a reply points at a visible comment of the same content; None for a comment
    that replies to nothing."""
    if new.parent_id is None:
        return None
    return lambda parent: check_reply(parent, new)


def _refuse_banned_edit() -> None:
    raise Banned("this author may not change comments")


class CommentService:
    def __init__(
        self,
        repo: Repository,
        settings: Settings,
        abuse: AbuseRules | None = None,
        clock: Clock = utcnow,
        cache: ReadCache | None = None,
    ) -> None:
        self.repo = repo
        self.settings = settings
        self.abuse = abuse  # None: no duplicate / flood / ban checks
        self.clock = clock
        self.cache = cache  # None: every read is built (no ETag either)

    # --- writes ----------------------------------------------------------------------
    def prepare(
        self, new: NewComment, identity: Identity | None, *, body_field: str = "body"
    ) -> NewComment:
        """The rules that need no database: banned words, the token's identity,
        pre-moderation. Whether a reply's parent may be replied to is checked by ``create``
        and ``create_idempotent``, inside the insert's transaction."""
        return prepare_comment(
            new,
            identity,
            pre_moderation=self.settings.moderation_mode == "pre",
            banned_words=self.settings.banned_words,
            body_field=body_field,
        )

    def create(self, prepared: NewComment) -> Comment:
        """Store a prepared comment; the reply and abuse checks and the insert are one
        transaction."""
        now = self.clock()
        return self.repo.create(
            prepared, self._author_check(now), now=now, parent_check=_reply_check(prepared)
        )

    def create_idempotent(
        self, prepared: NewComment, request: IdempotentRequest, render: Renderer
    ) -> StoredResponse:
        """``create`` once per (caller, key): a retry within the key's TTL gets the first
        answer, whatever happened since (its parent hidden, say; once the comment is
        deleted, without its text and author); the key, the checks and the insert share
        one transaction."""
        now = self.clock()
        return self.repo.create_idempotent(
            prepared,
            self._author_check(now),
            request,
            render,
            now=now,
            parent_check=_reply_check(prepared),
        )

    def _author_check(self, now: datetime) -> AuthorCheck | None:
        rules = self.abuse
        if rules is None:
            return None

        def decide(activity: AuthorActivity) -> None:
            if rules.duplicate_window <= 0:  # DUPLICATE_WINDOW=0 turns the check off
                activity = replace(activity, duplicates=0)
            check_activity(activity, rules, now)

        return AuthorCheck(
            thread_since=now - timedelta(seconds=rules.thread_author_window),
            duplicate_since=now - timedelta(seconds=rules.duplicate_window),
            decide=decide,
        )

    def edit(self, identity: Identity, comment_id: int, read_body: Callable[[], str]) -> Comment:
        """The author may change the text within EDIT_WINDOW seconds of posting.

        ``read_body`` parses the new text; it is called after the permission checks, so a
        stranger is told 403 before the body is judged.
        """
        body: str | None = None
        for _ in range(EDIT_ATTEMPTS):
            comment = self._editable(identity, comment_id)
            if body is None:
                body = read_body()
                check_banned_words(body, self.settings.banned_words)
            status = comment.status
            if self.settings.moderation_mode == "pre" and not identity.has(SCOPE_MODERATE):
                status = STATUS_PENDING  # changed text is new text: it waits for a moderator again
            updated = self.repo.edit_body(
                comment.id,
                body,
                status,
                identity.actor,
                expected_status=comment.status,
                # Read under the write's locks, not before waiting for them: edited_at must
                # not predate a moderator's read that could not see this edit yet.
                clock=self.clock,
                # Asked again under those locks: a ban committed while it waited stops it.
                refuse_if_banned=(
                    ban_keys(comment.email, comment.author_subject),
                    _refuse_banned_edit,
                ),
            )
            if updated is not None:
                return updated
            # Its status moved after it was read: judged again as it is now. Approved
            # meanwhile, it is still the author's to edit; hidden or deleted, it is not (404).
        raise Conflict("the comment changed while it was being edited; send the edit again")

    def _editable(self, identity: Identity, comment_id: int) -> Comment:
        """The comment, if ``identity`` may edit it now; else NotFound or Forbidden."""
        comment = self.repo.get(comment_id)
        if (
            comment is None
            or comment.status == STATUS_DELETED
            or not (
                comment.status in PUBLIC_STATUSES
                # Held for a moderator (pre-moderation, where each edit sends it back
                # there): its author may still correct it; to anyone else it does not
                # exist, as a GET says. A hidden one stays the moderators' decision.
                or (comment.status == STATUS_PENDING and is_author(identity, comment))
            )
        ):
            raise NotFound("comment not found")
        if not is_author(identity, comment):
            raise Forbidden("only the comment's author may edit it")
        if not edit_window_open(comment, self.clock(), self.settings.edit_window):
            raise Forbidden(
                f"comments can be edited for {int(self.settings.edit_window)} seconds after "
                "posting; this one can no longer be changed"
            )
        if self.repo.is_banned(*ban_keys(comment.email, comment.author_subject)):
            _refuse_banned_edit()
        return comment

    def delete(
        self,
        identity: Identity,
        comment_id: int,
        precondition: Callable[[], None] | None = None,
    ) -> bool:
        """The author (token subject) or a moderator; recorded in the audit log.

        ``precondition`` (the request's If-Match) is judged once the answer would
        otherwise be a success: a 404 or 403 wins over it (RFC 9110, section 13.2.1).
        True when this call deleted it (False: it was already gone)."""
        comment = self.repo.get(comment_id)
        if comment is None or not (
            comment.status in PUBLIC_STATUSES
            # Not public (pending, hidden): found only by those who may delete it, its
            # author and moderators ("delete any comment", as bulk delete does). Anyone
            # else is told it does not exist, as a GET would.
            or may_delete(identity, comment)
        ):
            raise NotFound("comment not found")
        # Idempotent: the end state holds. A tombstone names nobody any more, so its
        # author's retry (an answer lost on the way) cannot be told from anyone else's,
        # and the 403 it got said the delete had failed.
        gone = comment.status == STATUS_DELETED
        if not gone and not may_delete(identity, comment):
            raise Forbidden("only the comment's author or a moderator may delete it")
        if precondition is not None:
            precondition()
        if gone:
            return False
        return bool(
            self.repo.moderate(
                [comment.id], transition(ACTION_DELETE), identity.actor, clock=self.clock
            )
        )

    # --- reads -----------------------------------------------------------------------
    def get_public(self, comment_id: int) -> Comment:
        comment = self.repo.get(comment_id)
        if comment is None or comment.status not in PUBLIC_STATUSES:
            raise NotFound("comment not found")
        return comment

    def list_public(self, content_id: str, *, limit: int, order: str, after_id: int | None) -> Page:
        self._check_cursor(content_id, after_id)
        return self.repo.list_page(
            content_id, limit=limit, order=order, after_id=after_id, statuses=PUBLIC_STATUSES
        )

    def _check_cursor(self, content_id: str, after_id: int | None) -> bool:
        """Refuse a cursor of another content's list; True when it names a comment this list
        shows (or there is no cursor), False when it names none a reader can see.

        A cursor is a position: the id of the last comment of a page. Replayed on another
        content's list it would be taken as a position there, and page 2 of one thread would
        silently start somewhere in another. Content ids never change, so a comment the
        cursor names says which list it came from, but only a public one (published, or a
        tombstone) may say so: asked of a pending or hidden comment, the 400 on every list
        but its own told anyone walking the ids which article it is on. Such a cursor, like
        one naming no row, is taken as the position it is, for now: the comment may be
        approved, or an id past every one taken by a comment of another content, later.
        """
        if after_id is None:
            return True
        anchor = self.repo.get(after_id)
        if anchor is None or anchor.status not in PUBLIC_STATUSES:
            return False
        if anchor.content_id != content_id:
            raise InvalidInput(
                [
                    FieldError(
                        "cursor", "belongs to another content's list; restart without a cursor"
                    )
                ]
            )
        return True

    def legacy_list(self, content_id: str) -> tuple[list[tuple[str | None, str]], bool]:
        """Published (email, body) pairs, at most LEGACY_LIST_MAX; and whether truncated."""
        return self.repo.legacy_list(content_id, self.settings.legacy_list_max)

    def counts(self, content_ids: Iterable[str]) -> dict[str, int]:
        return self.repo.counts(content_ids)

    # --- cached reads (comments/cache.py: revalidated on every request, never stale) ----
    # ``render`` turns the data into the response body (the views' job); ``not_modified``
    # says whether the client already holds a given ETag (If-None-Match).
    def read_legacy_list(
        self,
        content_id: str,
        render: Callable[[list[tuple[str | None, str]], bool], Rendered],
        not_modified: Callable[[str], bool],
    ) -> Read:
        """The legacy list; ``value`` is None when the content has no published comment."""

        def build() -> Rendered | None:
            rows, truncated = self.legacy_list(content_id)
            return render(rows, truncated) if rows else None

        return self._read(("legacy", content_id), (content_id,), build, not_modified)

    def read_page(
        self,
        content_id: str,
        *,
        limit: int,
        order: str,
        after_id: int | None,
        render: Callable[[Page], Rendered],
        not_modified: Callable[[str], bool],
    ) -> Read:
        def build() -> Rendered:
            anchored = self._check_cursor(content_id, after_id)
            page = self.repo.list_page(
                content_id, limit=limit, order=order, after_id=after_id, statuses=PUBLIC_STATUSES
            )
            # A cursor naming no public comment answers 200 only until a comment of another
            # content takes its id or is approved (then 400), a write the markers of this
            # content never see: such a page is built on every request, so no worker answers
            # from an older state (its tag names its bytes: a 304 only after this check).
            return render(page) if anchored else replace(render(page), keep=False)

        key = ("page", content_id, limit, order, after_id)
        return self._read(key, (content_id,), build, not_modified)

    def read_counts(
        self,
        content_ids: Sequence[str],
        render: Callable[[dict[str, int]], Rendered],
        not_modified: Callable[[str], bool],
    ) -> Read:
        ids = tuple(content_ids)
        return self._read(("counts", ids), ids, lambda: render(self.counts(ids)), not_modified)

    def _read(
        self,
        key: tuple[object, ...],
        content_ids: Sequence[str],
        build: Callable[[], Rendered | None],
        not_modified: Callable[[str], bool],
    ) -> Read:
        if self.cache is None:
            return Read(None, build())
        return self.cache.read(key, content_ids, build, not_modified)
