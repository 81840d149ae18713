"""Helpers every blueprint shares: the app's services and strict JSON bodies."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from flask import Request, Response, current_app, request
from werkzeug.exceptions import (
    BadRequest,
    ClientDisconnected,
    HTTPException,
    RequestEntityTooLarge,
    UnsupportedMediaType,
)
from werkzeug.routing import PathConverter

from ..comments.rules import MAX_CONTENT_ID_LENGTH, Limits, has_unpaired_surrogate
from ..comments.service import CommentService
from ..contract.headers import ACCEPTED_BODY_TYPE, ACCEPTED_PATCH_TYPES
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

    # Any character, "\n" included ("." stops there): a control character in an id is the
    # validator's 400, not a 404 "no such route".
    regex = "[\\s\\S]+?"
    part_isolating = False  # werkzeug infers True from a regex without "/"


class BanTargetConverter(ContentIdConverter):
    """``<ban_target:...>``: a ban target in a route, any text, as ``ContentIdConverter``
    takes a content id. werkzeug's ``path`` converter stops at "\\n" and refuses a leading
    "/", so ``sub:a%0Ab`` or ``/sub:x`` was a 404 "no such route" on the ban routes, not
    the 400 the contract gives a target with a control character or without its kind."""


def emit(signal: Any, **data: object) -> None:
    """Announce a domain event (see events.py) with the real app object as sender."""
    signal.send(current_app._get_current_object(), **data)  # type: ignore[attr-defined]


def services() -> Services:
    # The app resolved once (an attribute read through the proxy costs a context lookup
    # and a bound lookup method, ~1 us): every view calls this.
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    return app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


def mounted_path(path: str) -> str:
    """``path`` (from the app's root, already percent-encoded) as clients reach it: under
    the prefix the server mounts the whole process at, gunicorn's ``SCRIPT_NAME``
    environment variable. For the links a view writes by hand (``Link`` headers).

    Not the request's root path: gunicorn also takes a ``SCRIPT_NAME`` request header from
    a trusted forwarder (``forwarded_allow_ips``, loopback by default), and these links are
    cached with the page they belong to and served to every reader of it.
    """
    return quote(os.environ.get("SCRIPT_NAME", "")) + path


def revalidated(response: Response, etag: str) -> Response:
    """A static file's answer: 304 when If-None-Match names ``etag`` (or is ``*``: the file
    always exists), else ``response`` unchanged.

    If-None-Match only (nothing sends If-Match for a script or a stylesheet). werkzeug's
    ``make_conditional`` also judged If-Match and If-Unmodified-Since, and answered 412 (to
    ``If-Match: *`` as well) with the file as the body and ``Cache-Control: public``: an
    error a shared cache could keep and serve to every reader.
    """
    tags = request.if_none_match
    if tags and (tags.star_tag or tags.contains_weak(etag)):
        response.status_code = 304  # werkzeug sends a 304 without body or entity headers
    return response


# A structured-syntax "+json" media type (RFC 6839): type "/" a subtype with a name before
# its suffix, tokens both (RFC 9110, section 8.3.1). "application/+json" and "+json" have no
# subtype name: they are no media type at all, and get the 415 any other one gets.
_TCHAR = "[!#$%&'*+.^_`|~0-9a-z-]"  # werkzeug's mimetype is lower case
_JSON_SUFFIX_TYPE = re.compile(f"{_TCHAR}+/{_TCHAR}+\\+json")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# Integers written with a fraction or exponent are converted exactly up to the longest id
# any field takes; longer ones fail every id's range as floats, and converting, say,
# 1e4299 exactly costs ~0.4 ms a number.
_EXACT_DIGITS = MAX_CONTENT_ID_LENGTH


# In the ValueError int() raises past sys.get_int_max_str_digits() (since Python 3.11).
_INT_DIGITS_LIMIT = "for integer string conversion"


class _InexactNumber(ValueError):
    """A fractional JSON number that a binary float would turn into a whole one."""


def _number(text: str) -> int | float:
    """A JSON number with a fraction or exponent (plain integers never come here).

    ``1e23`` and ``12345678901234567890.0`` are integers, but as binary floats they become
    99999999999999991611392 and 12345678901234567168: a legacy ``content_id`` sent that way
    was filed under another content. An integral text is read as that exact integer; a
    fractional one that would round to a whole float (``1e-400``, ``1.0000000000000000001``)
    is refused rather than taken as the id 0 or 1.
    """
    value = float(text)
    if not value.is_integer():
        return value  # 1.5, or inf: no field takes either
    if not text.lower().partition("e")[0].strip("-0."):
        # Zero whatever its exponent; Decimal refuses one past its range (0e99999999999999999999).
        return 0
    try:
        number = Decimal(text)
        exact = number == number.to_integral_value()
    except ArithmeticError:  # an exponent beyond Decimal's range, e.g. 1e-99999999999999999999
        exact = False
    if not exact:
        raise _InexactNumber(text)
    # Past the longest id, the float is as good: every field refuses it either way.
    return int(number) if number.adjusted() < _EXACT_DIGITS else value


class _DuplicateKey(ValueError):
    """An object that names the same key twice: the first key the parser met again."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Every JSON object, at any depth: its pairs as a dict, unless a key repeats.

    ``{"text": "hello", "text": "<other>"}`` kept the last value, while a proxy, WAF or
    moderation tool in front that keeps the first saw another comment than the one stored.
    RFC 8259 leaves such an object's meaning to the receiver, so refuse it (400). The C
    scanner calls this hook with each object's pairs; a dict shorter than its pairs is the
    only check a usual body pays. Decoding a create body went from 0.79 to 1.00 us (legacy,
    3 keys) and 0.93 to 1.18 us (v1, 4 keys), best of 7 x 100,000, of a ~208 us create.
    """
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


# Built once: json.loads with keyword arguments builds a decoder (and its scanner) per call.
_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_number, object_pairs_hook=_unique_keys
)


def _shown(text: str) -> str:
    """Client text named in a message: its first 40 characters as an ASCII JSON string.

    Escaped (``"caf\\u00e9"``), so nothing in it can hide or reorder the message (control
    or bidi characters) or fail to encode (an unpaired surrogate ``"\\ud800"``).
    """
    shown = json.dumps(text[:40])
    return shown if len(text) <= 40 else f"{shown}..."


def read_json() -> Any:
    """The request body as JSON, or a 4xx that says exactly what is wrong with it."""
    req = request._get_current_object()  # type: ignore[attr-defined]  # one context lookup
    mimetype = req.mimetype
    if mimetype != "application/json" and _JSON_SUFFIX_TYPE.fullmatch(mimetype) is None:
        raise _UnsupportedType(
            "send the body as JSON with the header 'Content-Type: application/json'"
        )
    raw = _read_body(req)
    try:
        # JSON between systems is UTF-8 and application/json defines no charset parameter
        # (RFC 8259, section 8.1 and 11): a charset is ignored, never handed to a codec.
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        _reject_content_coding(req)
        raise BadRequest(
            "the request body is not valid UTF-8 (JSON bodies are always UTF-8, whatever "
            "the Content-Type's charset says)"
        ) from None
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        # "[" x 30000 exhausts the parser's recursion limit; our bodies are flat objects.
        raise BadRequest("the request body is not valid JSON: nested too deeply") from None
    except _DuplicateKey as exc:
        raise BadRequest(
            f"the request body has the key {_shown(exc.args[0])} more than once in one "
            "object; send each key once (parsers disagree on which value counts)"
        ) from None
    except _InexactNumber as exc:
        shown = str(exc) if len(str(exc)) <= 40 else f"{str(exc)[:40]}..."
        raise BadRequest(
            f"the request body has the number {shown}, which is not a whole number "
            "but would be read as one; send ids as integers or strings"
        ) from None
    except ValueError as exc:
        _reject_content_coding(req)
        if _INT_DIGITS_LIMIT in str(exc) and not isinstance(exc, json.JSONDecodeError):
            # Python's own cap on int() (sys.set_int_max_str_digits); its message tells the
            # reader to raise it, advice for us, not for a client.
            raise BadRequest(
                "the request body has an integer of more than "
                f"{sys.get_int_max_str_digits()} digits; no field takes one"
            ) from None
        if text.startswith("\ufeff"):
            # RFC 8259 section 8.1: senders must not add one (json.loads words it for Python).
            raise BadRequest(
                "the request body is not valid JSON: it starts with a byte order mark"
            ) from None
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    # Strict UTF-8 never decodes to a surrogate, so only a \u escape can make one.
    if "\\u" in text and _any_unpaired_surrogate(value):
        # JSON allows "\ud800", but no UTF-8 text (our database, our responses) can hold it.
        raise BadRequest(
            "the request body is not valid UTF-8: it contains an unpaired surrogate escape"
        )
    return value


class _UnsupportedType(UnsupportedMediaType):
    """415 for a body that is not JSON, naming in ``Accept`` the media type taken (RFC
    9110, section 12.5.1): a client learnt it only from the detail's prose."""

    def get_headers(self, *args: object, **kwargs: object) -> list[tuple[str, str]]:
        headers = [("Accept", ACCEPTED_BODY_TYPE)]
        if request.method == "PATCH":
            headers.append(("Accept-Patch", ACCEPTED_PATCH_TYPES))  # RFC 5789, section 2.2
        return headers


class _UnsupportedCoding(_UnsupportedType):
    """415 for a compressed body, naming the one coding taken (RFC 9110, section 15.5.16)."""

    def get_headers(self, *args: object, **kwargs: object) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("Accept-Encoding", "identity")]


def _reject_content_coding(req: Request) -> None:
    """Asked only once a body failed to read as JSON: was it compressed?

    A gzip body was a 400 "not valid UTF-8", which sent the client looking for a charset
    problem. Looked up on the error path only: the usual request pays nothing.
    """
    coding = req.environ.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    if coding and coding != "identity":
        raise _UnsupportedCoding(
            "compressed request bodies (Content-Encoding) are not accepted; send the JSON "
            "uncompressed"
        )


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
