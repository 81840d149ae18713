"""The JSON shapes of a comment, shared by the comment and moderation views."""

from __future__ import annotations

from .rules import STATUS_DELETED, Comment, display_name, email_hash, iso_timestamp


def comment_view(comment: Comment) -> dict[str, object]:
    """The public representation: never the raw email address."""
    view: dict[str, object] = {
        "id": comment.id,
        "content_id": comment.content_id,
        "parent_id": comment.parent_id,
        "status": comment.status,
        "created_at": iso_timestamp(comment.created_at),
        "updated_at": iso_timestamp(comment.updated_at),
        # Only the author's edits: updated_at moves on moderation too.
        "edited_at": iso_timestamp(comment.edited_at),
    }
    if comment.status == STATUS_DELETED:
        view.update(body=None, author=None, deleted_at=iso_timestamp(comment.deleted_at))
    else:
        view.update(
            body=comment.body,
            author={"name": display_name(comment), "email_hash": email_hash(comment.email)},
        )
    return view


def moderator_view(comment: Comment) -> dict[str, object]:
    """Moderators see who wrote a pending comment (the public never sees the address)."""
    view = comment_view(comment)
    view["author_email"] = comment.email
    view["author_subject"] = comment.author_subject
    return view
