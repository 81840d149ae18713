"""HTTP caching on the cached reads: ETag, If-None-Match -> 304, Cache-Control.

The service decides (comments/cache.py); this module only speaks HTTP. See docs/caching.md.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Response, current_app, request

from ..settings import Settings
from .cache import Read, Rendered


def client_has() -> Callable[[str], bool]:
    """Whether the request's If-None-Match names a given ETag.

    Weak comparison, as RFC 9110 wants for If-None-Match. ``*`` is ignored: it means "any
    representation", and a 304 must never stand in for a 404 the client has not seen.
    """
    tags = request.if_none_match
    if not tags or tags.star_tag:
        return lambda etag: False
    return lambda etag: tags.contains_weak(etag.strip('"'))


def rendered(response: Response, *header_names: str) -> Rendered:
    """Freeze a built response (body bytes and the named headers) for the cache."""
    return Rendered(
        body=response.get_data(),
        headers=tuple((n, response.headers[n]) for n in header_names if n in response.headers),
    )


def respond(read: Read, settings: Settings) -> Response:
    """The 200 or 304 for a read whose ``value`` is not None (or that is not modified)."""
    if read.not_modified:
        response = Response(status=304)
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
