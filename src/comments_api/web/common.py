"""Helpers every blueprint shares: the app's services and strict JSON bodies."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Request, current_app, request
from werkzeug.exceptions import (
    BadRequest,
    ClientDisconnected,
    HTTPException,
    RequestEntityTooLarge,
    UnsupportedMediaType,
)
from werkzeug.routing import PathConverter

from ..comments.rules import Limits, has_unpaired_surrogate
from ..comments.service import CommentService
from ..health import HealthService
from ..identity.service import IdentityService
from ..moderation.service import ModerationService
from ..settings import Settings
from ..store.repository import Repository

EXTENSION_KEY = "comments_api"

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything a request handler needs; built once by the app factory."""

    settings: Settings
    repo: Repository
    limits: Limits
    comments: CommentService
    moderation: ModerationService
    identity: IdentityService
    health: HealthService


class ContentIdConverter(PathConverter):
    """``<content_id:...>`` in a route: a content id as the contract allows it, slashes
    included ("news/2026/12/some-slug", "/a", "a//b"). Clients send them percent-encoded
    (``%2F``, as ``encodeURIComponent`` does); the server decodes the path before routing,
    so a one-segment converter answered 404 for such an id, and "//" was redirected (an
    HTML 308) to another content. Registered by the app factory; the route's metric label
    and access-log field show it as ``<content_id>`` (telemetry.http_hooks.route_label)."""

    regex = ".+?"
    part_isolating = False  # werkzeug infers True from a regex without "/"


def emit(signal: Any, **data: object) -> None:
    """Announce a domain event (see events.py) with the real app object as sender."""
    signal.send(current_app._get_current_object(), **data)  # type: ignore[attr-defined]


def services() -> Services:
    return current_app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json() -> Any:
    """The request body as JSON, or a 4xx that says exactly what is wrong with it."""
    req = request._get_current_object()  # type: ignore[attr-defined]  # one context lookup
    mimetype = req.mimetype
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType(
            "send the body as JSON with the header 'Content-Type: application/json'"
        )
    raw = _read_body(req)
    try:
        # JSON between systems is UTF-8 and application/json defines no charset parameter
        # (RFC 8259, section 8.1 and 11): a charset is ignored, never handed to a codec.
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(
            "the request body is not valid UTF-8 (JSON bodies are always UTF-8, whatever "
            "the Content-Type's charset says)"
        ) from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        # "[" x 30000 exhausts the parser's recursion limit; our bodies are flat objects.
        raise BadRequest("the request body is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    # Strict UTF-8 never decodes to a surrogate, so only a \u escape can make one.
    if "\\u" in text and _any_unpaired_surrogate(value):
        # JSON allows "\ud800", but no UTF-8 text (our database, our responses) can hold it.
        raise BadRequest(
            "the request body is not valid UTF-8: it contains an unpaired surrogate escape"
        )
    return value


def _read_body(req: Request) -> bytes:
    """The raw body: 413 when over MAX_BODY_BYTES, 400 when the stream itself is broken."""
    limit = req.max_content_length
    length = req.content_length
    try:
        if length is not None:
            # A declared length: read exactly it, as werkzeug's get_data would, without
            # its stream wrappers (~11 us of a JSON write's CPU).
            if limit is not None and length > limit:
                raise RequestEntityTooLarge()
            data = req.environ["wsgi.input"].read(length)
            if len(data) != length:
                raise ClientDisconnected()
            return bytes(data)
        data = req.get_data(cache=True)
        # A chunked body has no Content-Length: werkzeug stops reading at the limit and
        # returns what it has, so look for one more byte to tell "exactly the limit" from
        # "cut off".
        if limit is not None and len(data) >= limit and req.environ["wsgi.input"].read(1):
            raise RequestEntityTooLarge()
    except HTTPException:
        raise
    except Exception as exc:
        # Whatever the server raises while reading the client's bytes (gunicorn's
        # InvalidChunkSize, a reset connection) is about the request, not a bug of ours.
        log.info("unreadable request body: %s", exc.__class__.__name__)
        raise BadRequest("the request body could not be read: malformed framing") from None
    return data


def _any_unpaired_surrogate(value: Any) -> bool:
    # Iterative: the parser already bounded the depth, but a walk must not recurse again.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if has_unpaired_surrogate(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def iso_timestamp(value: datetime | None) -> str | None:
    """UTC timestamps on the wire: ``2026-11-29T20:07:08.790Z``."""
    if value is None:
        return None
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
