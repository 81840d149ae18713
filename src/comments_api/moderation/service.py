"""ModerationService: the queue, bulk actions, bans and the audit log. Plain Python, no Flask.

Which status an action may move a comment out of is a rule (moderation/rules.py); storage
applies an action and its audit row in one transaction. Time comes from the injected clock,
read by storage once the action holds its locks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from ..clock import Clock, utcnow
from ..comments.rules import NotFound, Page, encode_ban_cursor
from ..contract.models import MAX_AUTHOR_DELETE
from ..store.repository import Repository
from .rules import (
    ACTION_DELETE,
    AuditEntry,
    author_digest,
    check_listing_filter,
    encode_listing_cursor,
    transition,
)

NOT_BANNED = "this author is not banned"


class ModerationService:
    def __init__(self, repo: Repository, clock: Clock = utcnow) -> None:
        self.repo = repo
        self.clock = clock

    def listing(
        self,
        status: str,
        *,
        content_id: str | None,
        limit: int,
        after_id: int | None,
        author: str | None = None,
    ) -> Page:
        """Comments a moderator acts on (``pending`` or ``hidden``; ``published`` of one
        content or author), oldest first, across all contents or of one, of every author or
        of one author key; the next cursor is bound to this filter."""
        check_listing_filter(status, content_id, author)
        page = self.repo.moderation_page(
            status,
            content_id=content_id,
            limit=limit,
            after_id=after_id,
            author_key=author,
            clock=self.clock,
        )
        return replace(
            page, next_cursor=encode_listing_cursor(page.next_cursor, status, content_id, author)
        )

    def bulk(
        self,
        action: str,
        ids: Sequence[int],
        actor: str,
        if_status: Sequence[str] | None = None,
        unedited_since: datetime | None = None,
    ) -> list[int]:
        """One transaction, one audit row; returns the ids that actually changed. With
        ``if_status``, only comments found in one of those statuses change, and with
        ``unedited_since`` only those whose text was not edited after it."""
        details: dict[str, Any] = {"requested": list(ids)}
        if if_status is not None:
            details["if_status"] = list(if_status)
        if unedited_since is not None:
            details["if_unedited_since"] = unedited_since.isoformat()
        return self.repo.moderate(
            ids, transition(action, if_status, unedited_since), actor, details, clock=self.clock
        )

    def delete_author(
        self, author: str, actor: str, *, limit: int = MAX_AUTHOR_DELETE
    ) -> tuple[list[int], bool]:
        """Delete the oldest ``limit`` comments of an author key, in every status, as a
        delete by ids would (tombstone, or gone when never public and unreplied; stored
        answers erased): one transaction, one audit row. Returns the ids that changed and
        whether more are left. The audit row keeps a digest of the key, not the key."""
        return self.repo.moderate_author(
            author,
            transition(ACTION_DELETE),
            actor,
            {"author_sha256": author_digest(author)},
            limit=limit,
            clock=self.clock,
        )

    def bans(
        self, *, limit: int, before: tuple[datetime, str] | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of bans, newest first, after the position ``before`` (a ban's created_at
        and target, from the previous page's cursor); the bans and the next page's cursor."""
        items, more = self.repo.ban_page(limit=limit, before=before)
        if not more:
            return items, None
        last = items[-1]
        return items, encode_ban_cursor(last["created_at"], last["target"])

    def ban(self, target: str, reason: str | None, actor: str, *other_forms: str) -> bool:
        """False when the author was already banned, under ``target`` or one of its other
        forms (``email_key_forms``): the first ban stands."""
        return self.repo.ban(target, reason, actor, also=other_forms, clock=self.clock)

    def is_banned(self, *targets: str) -> bool:
        return self.repo.is_banned(*targets)

    def ban_of(self, target: str, *other_forms: str) -> dict[str, Any]:
        """The ban standing under ``target`` or one of its other forms, as the ban list
        gives it; NotFound when there is none."""
        found = self.repo.find_ban(target, *other_forms)
        if found is None:
            raise NotFound(NOT_BANNED)
        return found

    def unban(self, target: str, actor: str, *other_forms: str) -> None:
        """Lifts the ban in each form it stands in (``ban_keys`` looks up every one), in
        one transaction."""
        if not self.repo.unban(target, actor, also=other_forms, clock=self.clock):
            raise NotFound(NOT_BANNED)

    def audit(self, *, limit: int, before_id: int | None) -> tuple[list[AuditEntry], int | None]:
        """Newest first; the entries and the id to continue before, if any."""
        return self.repo.audit_page(limit=limit, before_id=before_id)
