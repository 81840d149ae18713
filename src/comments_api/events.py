"""Domain events the HTTP layer announces; metrics and audit subscribe to them.

Keeps business metrics out of the handlers: a handler says what happened, once.
"""

from blinker import Namespace

_signals = Namespace()

# kwargs: api ("legacy" | "v1"), status (the stored comment's status)
comment_created = _signals.signal("comment-created")
# kwargs: reason (the problem slug: validation-error, content-too-large, duplicate, ...;
# telemetry.metrics.reject_reasons() lists every one the app can emit)
comment_rejected = _signals.signal("comment-rejected")
# kwargs: action (approve | hide | delete | ban | unban | edit), count
moderation_action = _signals.signal("moderation-action")

# Endpoints whose failures count as rejected comments.
COMMENT_WRITE_ENDPOINTS = frozenset({"legacy.create", "v1.create_comment"})
