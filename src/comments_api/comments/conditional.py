"""HTTP caching on the cached reads: ETag, If-Match -> 412, If-None-Match -> 304,
Cache-Control; and the preconditions of the v1 writes (If-Match, If-None-Match -> 412).

The service decides (comments/cache.py); this module only speaks HTTP. See docs/caching.md.
"""

from __future__ import annotations

from flask import Response, current_app, request
from werkzeug.datastructures import ETags
from werkzeug.http import parse_etags

from ..settings import Settings
from ..web.errors import error_response
from .cache import Read, Rendered
from .rules import DomainError

# A 412 answers the If-Match of one request, a header no cache keys on (and no Vary could
# name usefully): a cache in front must never store it and serve it to other readers.
_PRECONDITION_FAILED_HEADERS = {"Cache-Control": "no-store"}


class Preconditions:
    """The request's If-Match and If-None-Match, judged against a read's strong ETag.

    RFC 9110, section 13.2.2: If-Match first (strong comparison: a weak tag never
    matches; ``*`` matches any current representation), then If-None-Match (weak
    comparison). A 404 wins over both (section 13.2.1: preconditions are ignored when the
    answer without them would not be a 2xx), so the views ask only once a read exists.
    """

    def __init__(self) -> None:
        raw = request.headers.get("If-Match", "")
        # A field with no list element ("", " , ", RFC 9110 section 5.6.1) names nothing to
        # compare: as if absent. Any other value is judged, garbage included (it matches
        # no ETag of ours, so it fails).
        self._if_match: ETags | None = parse_etags(raw) if raw.strip(" \t,") else None
        self._if_none_match = request.if_none_match

    def if_match_holds(self, etag: str | None) -> bool:
        """False when If-Match names no ETag the current representation has (``etag``:
        None when it has none, as a read built while its content kept changing)."""
        tags = self._if_match
        if tags is None or tags.star_tag:
            return True
        return etag is not None and tags.contains(etag.strip('"'))

    def not_modified(self, etag: str) -> bool:
        """Whether the client already holds ``etag``: the service's ``not_modified``.

        Never while If-Match fails: the 412 takes precedence, and is decided once the read
        is known to exist. ``*`` matches: it is asked only about a read that exists (a 404
        has no ETag, so never gets here), and RFC 9110 section 13.1.2 makes ``*`` false,
        so a 304 a MUST (13.2.2), whenever a current representation exists. Ignoring it
        sent the full page, while the same list's create said "it exists" (412).
        """
        if not self.if_match_holds(etag):
            return False
        tags = self._if_none_match
        if not tags:
            return False
        return tags.star_tag or tags.contains_weak(etag.strip('"'))

    def if_none_match_holds_on_write(self) -> bool:
        """For a write to a resource that exists and carries no ETag: ``*`` fails ("only
        if it does not exist yet", RFC 9110, section 13.1.2); tags hold (none can match)."""
        tags = self._if_none_match
        return not (tags and tags.star_tag)


_PRECONDITION_FAILED = (
    "If-Match names no current ETag of this resource (compared strongly: a weak "
    "W/ tag never matches); fetch it again without If-Match for its current ETag"
)


# A create's target, a content's comment list, has ETags for its pages only: a create is not
# conditional on one (no check could be atomic with the insert), so a tag fails.
_CREATE_IF_MATCH_FAILED = (
    "If-Match names an ETag, but a create is not conditional on one (a list's ETags name its "
    "pages, not what a new comment is added to): only If-Match: * holds"
)

_IF_NONE_MATCH_FAILED = (
    "If-None-Match: * asks to act only if the target does not exist yet, and it exists; "
    "nothing was changed"
)


class PreconditionFailed(DomainError):
    """If-Match failed on a write: 412, and nothing changes (RFC 9110, section 13.1.1)."""

    code = "if-match-failed"
    http_status = 412
    headers = _PRECONDITION_FAILED_HEADERS

    def __init__(self, detail: str = _PRECONDITION_FAILED) -> None:
        super().__init__(detail)


class IfNoneMatchFailed(DomainError):
    """``If-None-Match: *`` on a write to a resource that exists: 412, and nothing changes
    (RFC 9110, section 13.1.2)."""

    code = "if-none-match-failed"
    http_status = 412
    headers = _PRECONDITION_FAILED_HEADERS

    def __init__(self) -> None:
        super().__init__(_IF_NONE_MATCH_FAILED)


def require_no_tag(if_match_failed: str = _PRECONDITION_FAILED) -> None:
    """For a write to a resource that exists and carries no ETag (one comment, a content's
    comment list as a create's target): only ``If-Match: *`` holds, and ``If-None-Match:
    *`` fails. A client naming a tag meant "only if nothing changed since", one sending
    ``If-None-Match: *`` "only if there is nothing yet"; acting anyway would apply its
    write to a state it never saw. If-Match is judged first (RFC 9110, section 13.2.2)."""
    conditions = Preconditions()
    if not conditions.if_match_holds(None):
        raise PreconditionFailed(if_match_failed)
    if not conditions.if_none_match_holds_on_write():
        raise IfNoneMatchFailed()


def require_create_preconditions() -> None:
    """A create's If-Match and If-None-Match, judged as :func:`require_no_tag` does."""
    require_no_tag(_CREATE_IF_MATCH_FAILED)


def precondition_failed() -> Response:
    """412 for a read whose If-Match names none of its current ETags."""
    return error_response(
        412,
        _PRECONDITION_FAILED,
        problem_type="if-match-failed",
        headers=_PRECONDITION_FAILED_HEADERS,
    )


def rendered(response: Response, *header_names: str) -> Rendered:
    """Freeze a built response (body bytes and the named headers) for the cache."""
    return Rendered(
        body=response.get_data(),
        headers=tuple((n, response.headers[n]) for n in header_names if n in response.headers),
    )


def respond(read: Read, settings: Settings, conditions: Preconditions) -> Response:
    """The 200, 304 or 412 for a read whose ``value`` is not None (or that is not modified)."""
    if read.not_modified:
        response = Response(status=304)
    elif not conditions.if_match_holds(read.etag):
        return precondition_failed()
    else:
        assert read.value is not None
        response = current_app.response_class(
            read.value.body,
            mimetype=current_app.json.mimetype,  # type: ignore[attr-defined]
        )
        # A new response carries none of these yet: add, not set, which scans every header
        # already there for the name (a visible share of a cached read's CPU).
        for name, value in read.value.headers:
            response.headers.add(name, value)
    if read.etag is not None:
        response.headers.add("ETag", read.etag)
    response.headers.add("Cache-Control", settings.read_cache_control)
    return response
