"""gunicorn workers that read each request in full before a worker thread sees it.

gunicorn's own workers hand a connection to the application as soon as it is accepted
(sync) or its first byte arrives (gthread); the request is then parsed with blocking reads.
A client that sends its headers or body slowly, or never finishes them, holds that process
or thread until gunicorn's worker timeout (30 s), and two such connections stopped all
traffic on two sync workers. Here the main loop of every worker buffers requests from many
connections at once with non-blocking reads, and only a complete request (headers and a
body of known length or a finished chunked body) is dispatched to the application. Slow
connections cost memory (bounded: request line, header section and ``MAX_BODY_BYTES``)
and a file descriptor, never a worker; each must finish its headers within
``REQUEST_HEADER_TIMEOUT`` seconds of being accepted and its body within
``REQUEST_BODY_TIMEOUT`` seconds after that (totals, so trickling bytes cannot extend them)
or it is answered 408 and closed.

The same classes answer the server's own errors (malformed request line or headers, request
line or headers too large, read timeouts, a transfer coding other than chunked, a
request-target that is not a path, a worker aborted by gunicorn's timeout) as JSON in the
shape of the API the path belongs to (and ``OPTIONS *`` with the methods the API serves),
log them without the raw path or client address, and, when the worker stops, accept and
serve the connections still queued in the listen backlog instead of letting the kernel
reset them.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import re
import secrets
import select
import selectors
import socket
import ssl
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from gunicorn import http, util
from gunicorn.http import errors as http_errors
from gunicorn.http import wsgi
from gunicorn.http.message import TOKEN_RE
from gunicorn.workers.gthread import _DEFER, STOP_KEEPALIVE_LINGER, TConn, ThreadWorker
from gunicorn.workers.sync import SyncWorker
from werkzeug.exceptions import RequestTimeout

from .app import SECURITY_HEADERS

# The registry web/errors.py answers from: same titles, slugs and both shapes.
from .contract.problems import (
    BODY_TOO_LARGE,
    LEGACY_PREFIX,
    PROBLEM_JSON,
    problem_type_uri,
    status_slug,
    status_title,
)
from .lean_requests import LeanReader
from .telemetry.http_hooks import REQUEST_ID_ENVIRON, REQUEST_ID_RE, record_abort
from .telemetry.log_format import hold_access_lines
from .telemetry.metrics import ANSWERS_FULL, CLIENT_GONE, SEND_TIMED_OUT, count_server_refusal
from .web.common import EXTENSION_KEY, Services
from .web.protection import cors_headers

log = logging.getLogger("comments_api.server")


# 100 content ids of 30 characters, each character 4 UTF-8 bytes percent-encoded
# (`content_id=` + 360 bytes + `&`), is 37.2 KB: schema-valid, so it must fit.
LIMIT_REQUEST_LINE = 48 * 1024
# Header fields after the request line (JWTs and cookies are a few KB at most).
LIMIT_HEADER_SECTION = 64 * 1024
# What a request must start with: a method is an RFC 9110 token. Anything else (a TLS
# handshake, 0x16, sent to this plain-HTTP port; binary) is refused at once, not after
# REQUEST_HEADER_TIMEOUT with a 408 that blames the client's speed.
_TOKEN_BYTES = frozenset(
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
# A line ending in LF alone. Until the head is complete it means the CRLF (RFC 9112 2.2)
# that would end it never comes; a complete head with one is gunicorn's parser's 400.
_BARE_LF = re.compile(rb"(?<!\r)\n")
# HTTP/1.2 to 1.9, which gunicorn's parser accepts: served as HTTP/1.1 (RFC 9110 2.5),
# so a Host is required and the answer says HTTP/1.1, not a version this server is not.
_LATER_HTTP1 = re.compile(rb" HTTP/1\.[2-9]$")
NOT_HTTP = (
    "this port speaks plain HTTP/1.1 and the request does not start with a method "
    "(TLS sent to a plain-HTTP port?)"
)
BARE_LF = "the request's lines must end with CRLF (\\r\\n), not a bare LF"
# RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without Host. gunicorn
# served it, and Flask then took SERVER_NAME's place for the host the client never named.
MISSING_HOST = "an HTTP/1.1 request needs a Host header"
# RFC 9112 6.1: a transfer coding the server does not decode is its 501. gunicorn's parser
# decodes none but chunked, yet let gzip, deflate and compress stand before it: the app got
# the body still compressed and refused it as "not valid JSON" (400).
UNSUPPORTED_CODING = "this transfer coding is not supported: only chunked is"
# A field the app reads as one value, not a list: sent twice, gunicorn's parser joins the
# two with "," and the app would take "a,b" for one key (a comma may be part of a key), so
# a later request sending that one key got the first one's answer. The worker refuses it.
REPEATED_IDEMPOTENCY_KEY = "the Idempotency-Key header field must be sent once"
# Request-targets that are not a path (RFC 9112 3.2), which gunicorn's parser let through
# with a "path" that is none: the app answered `OPTIONS *` and `CONNECT example.com:443`
# with a 404 whose `instance` was "/*" or "/443". The worker answers them itself.
ASTERISK_NOT_OPTIONS = "the request-target * is only valid with OPTIONS"
NOT_A_PATH = "the request-target must be a path starting with /"
CONNECT_NOT_SERVED = "CONNECT is not served: this is an origin server, not a proxy"
# Every method the app's routes serve (a test compares it with the app's URL map): the
# Allow of the answer to OPTIONS * and of the 405 to CONNECT.
SERVED_METHODS = "DELETE, GET, HEAD, OPTIONS, PATCH, POST"
# Absolute-form (RFC 9112 3.2.2), which a server MUST accept: gunicorn serves its path.
_ABSOLUTE_FORM = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]+(?:[/?].*)?")
# A chunked body still unfinished after this many times MAX_BODY_BYTES in raw bytes is
# refused (413): room for the framing of any body within the limit (a single chunk of the
# limit's size needs a few bytes more than it), but never more than a bounded buffer.
CHUNKED_FRAMING_FACTOR = 2
# Connections a worker holds at once (being read, or kept alive and idle); when full, the
# idle kept-alive one that waited longest is closed for a new one, and without one to
# close the rest wait in the kernel's backlog, where they cost this process nothing.
# Memory is bounded by what each may hold (request line + headers + a body's bytes,
# at most CHUNKED_FRAMING_FACTOR x MAX_BODY_BYTES).
MAX_BUFFERING = 512
# accept() failing for lack of descriptors or memory: wait a little, do not crash.
_ACCEPT_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# When a worker stops, at most this many connections are taken from the backlog.
MAX_BACKLOG_DRAIN = 256
# ...and a connection that has not sent a byte yet is waited for this long (as gthread
# does for kept-alive connections), not its whole header timeout.
STOP_IDLE_LINGER = 2.0
# A stopping worker is done (requests still being read answered 503, then it exits) this
# long before GRACEFUL_TIMEOUT has passed since the SIGTERM: a fifth of it, at most
# STOP_MARGIN_MAX seconds. The master SIGKILLs the workers left at GRACEFUL_TIMEOUT, timed
# from just before its SIGTERM, and with the same deadline the two raced and the 503s were
# sometimes lost (a bare close). The margin covers the signal's way to the worker, the
# loop's wake-up and the 503s themselves (one send and one log line each, a few ms for
# hundreds) on a loaded machine; a request in the app gets GRACEFUL_TIMEOUT minus it.
STOP_MARGIN_FRACTION = 0.2
STOP_MARGIN_MAX = 0.5
# Seconds between heartbeats to gunicorn's arbiter from a busy worker's loop.
HEARTBEAT_EVERY = 0.5
# A worker leaves a new connection to the others for a while before taking it: 0.25 ms
# for each connection it holds while busy (or has accepted in the current burst while
# idle), so the worker with fewer connections takes it first; never more than
# ACCEPT_DEFER (seconds), so a new connection (a kubelet probe) never waits long.
ACCEPT_DEFER = 0.005
ACCEPT_DEFER_PER_CONNECTION = 0.00025
# How often the main loop looks for connections past their deadlines (seconds long): a
# look walks every buffered connection, too much to repeat for every request served.
EXPIRE_EVERY = 0.05
# How often the threaded worker looks for a request held past WORKER_TIMEOUT.
OVERDUE_CHECK_EVERY = 0.25
# After the sync worker has answered a request aborted at WORKER_TIMEOUT: how long its
# SystemExit gets to leave the app before the worker leaves without it (the master's
# SIGKILL comes about a second after its SIGABRT).
ABORT_EXIT_AFTER = 0.5
# Requests per kept-alive connection; then "Connection: close" (nginx's keepalive_requests
# idea). The client reconnects and the accept goes to the worker holding fewer connections
# (ACCEPT_DEFER_PER_CONNECTION), so an uneven share does not last.
KEEPALIVE_REQUESTS = 100
# A body larger than this goes out in a send of its own after the head, so what is left
# waiting is the app's own bytes object (a cached document is shared, not copied per client).
COALESCE_MAX = 64 * 1024
# Requests dropped unserved because their client had already closed the connection
# (CLIENT_GONE): after an answer that took this long (seconds), the requests queued
# meanwhile are checked for that before they are served, until the queue is empty.
SLOW_ANSWER = 1.0
# After a response, how long the client gets to close its side (gunicorn's value).
LINGER = 2.0
LINGER_MAX_BYTES = 64 * 1024

_INTERNAL_ERROR = "an internal error occurred; it has been logged"


def _leave_after_abort() -> None:
    """End a worker whose aborted request is answered but still held in the app (psycopg
    waiting up to 5 s for a frozen backend to take a cancel): its lines flushed, exit 1,
    as the abort's SystemExit would have ended it."""
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(1)


def stop_margin(graceful_timeout: float) -> float:
    """Seconds before GRACEFUL_TIMEOUT by which a stopping worker is done (STOP_MARGIN_MAX)."""
    return min(STOP_MARGIN_FRACTION * max(graceful_timeout, 0.0), STOP_MARGIN_MAX)


def accept_defer(held: int, workers: int) -> float:
    """Seconds to leave a waiting connection to the other workers before taking it: none
    when there are no others (``WORKERS=1``), where waiting only delays it."""
    if workers <= 1:
        return 0.0
    return min(ACCEPT_DEFER, ACCEPT_DEFER_PER_CONNECTION * held)


# --------------------------------------------------------------------------- JSON errors


def error_document(status: int, detail: str, path: str | None) -> tuple[str, bytes]:
    """(content type, body) of an error in the shape the API under ``path`` uses.

    The legacy API (``/api/comment/…``) answers ``{"message": …, "status": "BAD-REQUEST"}``,
    everything else RFC 9457 problem+json, like the application's own errors. The raw path
    is echoed only for a 413 or a 408, as the app's ``instance``: there the request line
    was read whole (a 408's target is known only then) and the body or the client's pace
    is what was wrong; in a 400, 414 or 431 the path may be what the client got wrong.
    Pure, so the tests can call it.
    """
    title = status_title(status)
    if path is not None and _app_path(path).startswith(LEGACY_PREFIX):
        # The legacy shape as the app writes it (web/errors.py): the original's key order.
        doc: dict[str, object] = {"message": detail, "status": title.upper().replace(" ", "-")}
        return "application/json", json.dumps(doc, separators=(",", ":")).encode()
    doc = {
        "type": problem_type_uri(status_slug(status)),
        "title": title,
        "status": status,
        "detail": detail,
    }
    if status in (408, 413) and path is not None:
        instance = path.partition("?")[0]
        if _ORIGIN_FORM_PATH.fullmatch(instance):
            doc["instance"] = instance
    return PROBLEM_JSON, json.dumps(doc, separators=(",", ":")).encode()


_SCHEME_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*")


def _app_path(target: str) -> str:
    """The path the app routes ``target`` by, to pick the error shape as the app would: an
    absolute URI's path (gunicorn's parser serves it), without the mount prefix
    (``SCRIPT_NAME``, gunicorn's environment variable) and with leading slashes merged into
    one (werkzeug's ``request.path``), so ``/c/api/comment/…``, ``//api/comment/…`` and
    ``http://host/api/comment/…``, which the app answers in the legacy shape, get it from
    the worker too (they got problem+json)."""
    scheme = _SCHEME_AUTHORITY.match(target)
    if scheme:
        target = target[scheme.end() :] or "/"
    script_name = os.environ.get("SCRIPT_NAME", "").rstrip("/")
    if script_name and target.startswith(script_name):
        target = target[len(script_name) :]
    return "/" + target.lstrip("/")


# An origin-form path of URI characters only (RFC 3986), fit to be echoed as `instance`.
_ORIGIN_FORM_PATH = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/%]{0,2047}")


# The app's security headers (app.py), on the answers the worker gives itself too.
_SECURITY_LINES = "".join(f"{name}: {value}\r\n" for name, value in SECURITY_HEADERS)
_ALLOW_LINE = f"Allow: {SERVED_METHODS}\r\n"
# A stopping worker's 503 (a request still being read when it stops): retry after 1 s,
# the shortest wait the API announces (its other waits are at least 1: the rate limits'
# and the flood check's max(1, ...)). Any other worker or replica takes the retry at once,
# as this one's listener is closed; 0 would read as "no wait" to a client that loops on
# it, and a replica rolled out in the same deploy may be stopping too. The app's own 503s
# carry a Retry-After as well (2, or 5 for readiness and the identity provider), so every
# 503 does: the OpenAPI document marks it required.
STOPPING_RETRY_AFTER = 1
_RETRY_AFTER_LINE = f"Retry-After: {STOPPING_RETRY_AFTER}\r\n"


def new_request_id() -> str:
    """An id for an answer the worker gives itself, as the app makes one (32 hex digits):
    the OpenAPI promises `X-Request-ID` on every response, and the log line names it."""
    return secrets.token_hex(16)


def error_response_bytes(
    status: int, detail: str, path: str | None, request_id: str | None = None, cors: str = ""
) -> bytes:
    """The worker's own error answer; ``cors``: its CORS header lines (cors_lines)."""
    content_type, body = error_document(status, detail, path)
    head = (
        f"HTTP/1.1 {status} {status_title(status)}\r\n"
        "Connection: close\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        f"Date: {util.http_date()}\r\n"  # RFC 9110 6.6.1: a server with a clock MUST send it
        f"X-Request-ID: {request_id or new_request_id()}\r\n"
        f"{_ALLOW_LINE if status == 405 else ''}"  # RFC 9110 15.5.6: a 405 MUST list them
        f"{_RETRY_AFTER_LINE if status == 503 else ''}"
        f"{_SECURITY_LINES}"
        f"{cors}"
        "\r\n"
    )
    return head.encode("latin-1") + body


def options_asterisk_bytes(request_id: str | None = None, cors: str = "") -> bytes:
    """OPTIONS * (RFC 9110 9.3.7): what the server as a whole serves, as the app answers
    OPTIONS on one of its routes (200, Allow, no body), with the worker's own answers'
    Connection."""
    return (
        "HTTP/1.1 200 OK\r\n"
        "Connection: close\r\n"
        "Content-Length: 0\r\n"
        f"Date: {util.http_date()}\r\n"
        f"X-Request-ID: {request_id or new_request_id()}\r\n"
        f"{_ALLOW_LINE}"
        f"{_SECURITY_LINES}"
        f"{cors}"
        "\r\n"
    ).encode("latin-1")


# gunicorn's parse errors → (status, detail). The detail is ours, never the exception's
# text: gunicorn's messages quote the raw request line or header.
_BAD = "the request is not valid HTTP/1.1"
CHUNKED_MALFORMED = "the chunked body is malformed"
_CLIENT_ERRORS: tuple[tuple[type[BaseException], int, str], ...] = (
    (http_errors.LimitRequestLine, 414, "the request line is too long"),
    (http_errors.LimitRequestHeaders, 431, "the request header fields are too large"),
    (http_errors.UnsupportedTransferCoding, 501, UNSUPPORTED_CODING),
    (http_errors.ExpectationFailed, 417, "only 'Expect: 100-continue' is supported"),
    (http_errors.ForbiddenProxyRequest, 403, "request forbidden"),
    # gunicorn's only one: a target outside the SCRIPT_NAME the server is mounted at. The
    # client asked for a path this server does not serve; the mount is not broken.
    (
        http_errors.ConfigurationProblem,
        404,
        "this server serves only paths under its mount prefix (SCRIPT_NAME)",
    ),
    (http_errors.InvalidRequestLine, 400, "the request line is malformed"),
    (http_errors.InvalidRequestMethod, 400, "the request method is malformed"),
    (http_errors.InvalidHTTPVersion, 400, "unsupported HTTP version"),
    (http_errors.InvalidHeaderName, 400, "a header field name is malformed"),
    (http_errors.InvalidHeader, 400, "a header field is malformed"),
    (http_errors.ObsoleteFolding, 400, "obsolete header line folding is not accepted"),
    (http_errors.InvalidChunkSize, 400, CHUNKED_MALFORMED),
    (http_errors.ChunkMissingTerminator, 400, CHUNKED_MALFORMED),
    (http_errors.InvalidChunkExtension, 400, CHUNKED_MALFORMED),
    (http_errors.InvalidProxyLine, 400, _BAD),
    (http_errors.InvalidSchemeHeaders, 400, "contradictory scheme headers"),
    (http_errors.InvalidH2CPreface, 400, _BAD),
    (http_errors.ParseException, 400, _BAD),
)


class ReadTimeout(RequestTimeout):
    """The client did not send its request within the read deadline.

    A werkzeug HTTPException, so if it surfaces while the application reads the body,
    Flask's error handlers answer 408 in the API's own shape.
    """

    description = "the request was not received in time"


def classify(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, ReadTimeout):
        return 408, ReadTimeout.description
    if isinstance(exc, ssl.SSLError):
        return 400, _BAD
    for cls, status, detail in _CLIENT_ERRORS:
        if isinstance(exc, cls):
            return status, detail
    if isinstance(exc, SystemExit):
        return 500, "the request took too long and was aborted"
    return 500, _INTERNAL_ERROR


# --------------------------------------------------------------------------- buffering


class DeadlineReader:
    """What gunicorn's parser reads from: buffered bytes first (the parser's unreader
    holds them), then the socket, but never past ``deadline`` in total."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline

    def recv(self, size: int) -> bytes:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise ReadTimeout()
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN | select.POLLPRI)
        if not poller.poll(remaining * 1000):
            raise ReadTimeout()
        return self.sock.recv(size)


@dataclass
class PendingRequest:
    """Bytes of one request as they arrive, and whether it is complete yet."""

    header_deadline: float
    body_timeout: float
    body_limit: int
    data: bytearray = field(default_factory=bytearray)
    deadline: float = 0.0
    target: str | None = None  # the request-target, once the request line is in
    header_end: int = -1
    content_length: int = 0
    chunked: bool = False
    malformed: bool = False
    # Every byte of the request is here (not handed over early: too large, malformed).
    complete: bool = False
    chunk_pos: int = 0  # where the next chunk-size line starts (chunked bodies)
    chunked_size: int = 0  # the sizes of the chunks walked past, decoded
    lf_checked: int = 0  # how far the head has been searched for a bare LF
    expects_continue: bool = False
    sent_continue: bool = False
    # A response the server writes itself (400, 414, 431...; 200 to OPTIONS *), decided
    # while buffering.
    refuse: tuple[int, str] | None = None
    # Until the first byte: a kept-alive connection waiting for its next request is
    # closed silently at its keep-alive timeout (a 408 there could be read as the answer
    # to a request the client is just sending).
    idle_deadline: float = 0.0
    # The connection's previous request was answered and it was kept open.
    kept_alive: bool = False
    # Requests answered on this connection before this one.
    served: int = 0
    # (expects_continue, close option) for gunicorn's parser (unusual_request); None for
    # most requests. A class attribute, not a dataclass field: nothing to set per request.
    # Where a complete chunked request ends in ``data`` (after its trailer section); -1
    # until then, and for any other request. A class attribute too.
    if TYPE_CHECKING:
        unusual: tuple[bool, bool] | None = None
        chunked_end: int = -1
    else:
        unusual = None
        chunked_end = -1

    def __post_init__(self) -> None:
        self.deadline = self.header_deadline
        self.idle_deadline = self.idle_deadline or self.header_deadline

    @property
    def exact(self) -> bool:
        """Every byte is here and where the request ends is known (no chunked body), so
        whatever follows it in ``data`` is the client's next request."""
        return self.complete and not self.chunked and not self.malformed

    def expired(self, now: float) -> str | None:
        """None while in time; "idle" (nothing received: close silently) or "timeout"."""
        if not self.data:
            return "idle" if now >= self.idle_deadline else None
        return "timeout" if now >= self.deadline else None

    def feed(self, chunk: bytes, now: float) -> bool:
        """Add bytes; True once the request can be dispatched (complete, or hopeless)."""
        self.data += chunk
        if self.header_end < 0 and not self._scan_headers(now):
            return self.refuse is not None
        return self._body_complete()

    def _scan_headers(self, now: float) -> bool:
        data = self.data
        if self.target is None:
            line_end = data.find(b"\r\n")
            # Blank lines before a request are allowed (RFC 9112 2.2): skip them.
            while line_end == 0:
                del data[:2]
                line_end = data.find(b"\r\n")
                self.lf_checked = 0
            if data and data[0] not in _TOKEN_BYTES and data != b"\r":
                if data[0] == 0x0A:  # a blank line ended by LF alone
                    return self._refuse_bare_lf()
                self.target = ""
                self.refuse = (400, NOT_HTTP)
                return False
            if line_end < 0:
                if self._bare_lf():
                    return self._refuse_bare_lf()
                if len(data) > LIMIT_REQUEST_LINE:
                    self.target = _target(bytes(data[:512]))
                    self.refuse = (414, "the request line is too long")
                return False
            if line_end > LIMIT_REQUEST_LINE:
                self.target = _target(bytes(data[:512]))
                self.refuse = (414, "the request line is too long")
                return False
            self.target = _target(bytes(data[:line_end])) or ""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > LIMIT_REQUEST_LINE + LIMIT_HEADER_SECTION:
                self.refuse = (431, "the request header fields are too large")
            elif self._bare_lf():
                return self._refuse_bare_lf()
            return False
        if end > LIMIT_REQUEST_LINE + LIMIT_HEADER_SECTION:
            self.refuse = (431, "the request header fields are too large")
            return False
        self.header_end = end + 4
        self.chunk_pos = self.header_end
        self.deadline = now + self.body_timeout
        request_line = data[: data.find(b"\r\n")].rstrip()
        http11 = request_line.endswith(b"HTTP/1.1")
        later = not http11 and _LATER_HTTP1.search(request_line) is not None
        if later:
            http11 = True
        seen_length = seen_host = seen_idempotency_key = close = False
        codings = b""  # every Transfer-Encoding value, each followed by ","
        for line in bytes(data[:end]).split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            # Each value is cleaned only where it is looked at.
            if name == b"host":
                seen_host = True  # twice: gunicorn's parser answers 400 itself
            elif name == b"content-length":
                length = _content_length(value.strip())
                if length is None or (seen_length and length != self.content_length):
                    # Malformed or conflicting: the parser answers it at once.
                    self.malformed = True
                else:
                    self.content_length = length
                seen_length = True
            elif name == b"transfer-encoding":
                value = value.lower()
                codings += value + b","
                if b"chunked" in value:
                    self.chunked = True
            elif name == b"expect":
                if http11 and value.strip().lower() == b"100-continue":
                    self.expects_continue = True
            elif name == b"connection":
                value = value.strip().lower()
                if value != b"keep-alive" and close_option(value):
                    close = True
            elif name == b"idempotency-key":
                if seen_idempotency_key:
                    self.refuse = (400, REPEATED_IDEMPOTENCY_KEY)
                    return False
                seen_idempotency_key = True
        if http11 and not seen_host:
            self.refuse = (400, MISSING_HOST)
            return False
        target = self.target
        if target and target[0] != "/":
            # Not a path (rare): "*", "host:port", an absolute URI, or neither.
            answer = _other_target_form(bytes(request_line.partition(b" ")[0]), target)
            if answer is not None:
                self.refuse = answer
                return False
        if self.chunked:
            framing = _chunked_framing(codings)
            if seen_length or not http11 or framing is None:
                # Framings gunicorn's parser refuses whatever follows (RFC 9112 6.1, 6.3:
                # chunked with a Content-Length too, in HTTP/1.0, twice, or not last): to
                # it at once. Buffered, a body framed two ways rarely ended as chunked, and
                # the client got a 408 after REQUEST_BODY_TIMEOUT instead of the 400.
                self.malformed = True
            elif not framing:
                # A coding before chunked (gzip, br...): the 501 at once, body unread.
                self.refuse = (501, UNSUPPORTED_CODING)
                return False
        if close or self.expects_continue or later:
            self.unusual = (self.expects_continue, close)
        return True

    def _bare_lf(self) -> bool:
        # Only the bytes new since the last search (the look-behind still sees the byte
        # before them): a head trickled in one byte at a time is searched once, not again
        # per byte.
        found = _BARE_LF.search(self.data, self.lf_checked) is not None
        self.lf_checked = len(self.data)
        return found

    def _refuse_bare_lf(self) -> bool:
        if self.target is None:
            newline = self.data.find(b"\n")
            self.target = _target(bytes(self.data[:newline]).rstrip(b"\r")) or ""
        self.refuse = (400, BARE_LF)
        return False

    def _body_complete(self) -> bool:
        if self.malformed:
            return self._cut_short()
        if not self.chunked:
            if self.content_length > self.body_limit:
                # Too large: the application answers 413 without reading it.
                return self._cut_short()
            # What follows the body is the client's next requests (pipelined), however
            # many: not more body (they cut the connection after this request when they
            # passed MAX_BODY_BYTES).
            self.complete = len(self.data) - self.header_end >= self.content_length
            return self.complete
        if self._chunks_end():
            return True
        if len(self.data) - self.header_end > CHUNKED_FRAMING_FACTOR * self.body_limit:
            # Still no end after more bytes than any body within the limit needs with its
            # framing (tiny chunks, long extensions, an endless trailer section): refused
            # here. Handed to the app unfinished, its read waited on the socket and held
            # the worker (or a thread) until REQUEST_BODY_TIMEOUT.
            self.refuse = (413, BODY_TOO_LARGE)
        return self.refuse is not None

    def _chunks_end(self) -> bool:
        # Walk the chunk-size lines seen so far; anything unexpected is handed to
        # gunicorn's parser, which answers it with the right error.
        data = self.data
        while True:
            line_end = data.find(b"\r\n", self.chunk_pos)
            if line_end < 0:
                if len(data) - self.chunk_pos > 1024:  # a size line is never this long
                    # Refused here, not handed to gunicorn's parser, which would wait on
                    # the socket for the line's end (up to 8190 bytes) and hold the worker.
                    self.refuse = (400, CHUNKED_MALFORMED)
                    return True
                return False
            size_text = bytes(data[self.chunk_pos : line_end]).split(b";", 1)[0].strip()
            if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                return self._cut_short()  # not a chunk size (int() would take "+5", "0x5")
            size = int(size_text, 16)
            if self.chunked_size + size > self.body_limit:
                # Refused here, as soon as the sizes say so: the application could only
                # find out by reading, and would wait for bytes the client may never send.
                self.refuse = (413, BODY_TOO_LARGE)
                return True
            if size == 0:
                # Last chunk, then optional trailer fields and an empty line: the request
                # ends after the first CRLF CRLF from the CRLF of this line, where gunicorn's
                # parser ends it too; what follows is the next request.
                end = data.find(b"\r\n\r\n", line_end)
                if end < 0:
                    return False
                self.chunked_end = end + 4
                self.complete = True
                return True
            next_pos = line_end + 2 + size + 2
            if len(data) < next_pos:
                return False
            self.chunked_size += size
            self.chunk_pos = next_pos

    def _cut_short(self) -> bool:
        """Dispatched before the request's end (a body over the limit, or framing that
        cannot be read): whatever answers it closes the connection, as the rest of the
        request is never read. The threaded worker kept it alive after the app's 413 and
        had gthread drain the unread body in a thread, held until the body deadline."""
        self.unusual = (self.expects_continue, True)
        return True


def _content_length(value: bytes) -> int | None:
    """A Content-Length field's value as a number; None when it is not one. More digits
    than int() reads (``sys.get_int_max_str_digits()``, 4,300) raised ValueError in the main
    loop and ended the worker with every connection it held: one request per restart.
    gunicorn's parser answers such a value 400, as any malformed one."""
    if not value.isdigit():
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _chunked_framing(codings: bytes) -> bool | None:
    """Transfer-Encoding values ("a, b," per field, lowercased) that name chunked: None when
    it is not named once and last (gunicorn's parser answers 400, or 501 for a coding it
    does not know), True when nothing but identity (no coding) precedes it, False when a
    coding does. gunicorn's parser would let gzip, deflate or compress stand there and hand
    the app the body still compressed (it decodes none of them): the worker answers those
    501 itself (RFC 9112 6.1), and any other coding too, before the body is awaited."""
    *before, last = [name.strip(b" \t") for name in codings.split(b",")][:-1]
    if last != b"chunked" or b"chunked" in before:
        return None
    return all(name == b"identity" for name in before)


def _other_target_form(method: bytes, target: str) -> tuple[int, str] | None:
    """The worker's answer to a request-target that is not a path (RFC 9112 3.2), or None
    for an absolute URI, which is served (gunicorn's parser takes its path). gunicorn's
    parser refuses "*" without OPTIONS and "host:port" without CONNECT, but let both
    through with a "path" that is none (the app then answered 404 for "/*" or "/443")."""
    if method == b"CONNECT":
        # Whatever its target: tunnels are a proxy's work. 405, as the app answers CONNECT
        # to one of its routes (and nginx to any target).
        return (405, CONNECT_NOT_SERVED)
    if target == "*":
        # 200: asked of the server as a whole (RFC 9110 9.3.7); answered, not refused.
        return (200, "") if method == b"OPTIONS" else (400, ASTERISK_NOT_OPTIONS)
    if _ABSOLUTE_FORM.fullmatch(target):
        return None
    return (400, NOT_A_PATH)


def close_option(value: bytes) -> bool:
    """Whether a Connection field value (lowercased) lists the "close" option."""
    return b"close" in (token.strip(b" \t") for token in value.split(b","))


def unusual_request(req: Any, unusual: tuple[bool, bool]) -> None:
    """What the buffering decided about a request, applied to gunicorn's parse of it."""
    expects_continue, close = unusual
    if req.version > (1, 1):
        req.version = (1, 1)  # HTTP/1.2-1.9: answered as the HTTP/1.1 it must be
    if expects_continue:
        # Answered while buffering, or not at all (_maybe_continue): never by gunicorn.
        req._expected_100_continue = False
    if close:
        # RFC 9112 9.6: "close" among other options (Connection: TE, close) closes the
        # connection too; gunicorn's parser honours only a field that is exactly "close".
        req.must_close = True


def _target(line: bytes) -> str | None:
    parts = line.split(b" ", 2)
    if len(parts) < 2:
        return None
    return parts[1].decode("latin-1")


def _single_field(pending: PendingRequest, wanted: bytes) -> str | None:
    """The value of the header field ``wanted`` (lowercase), looked for only when the
    worker answers a request itself (the buffering's header walk, which every request
    pays, never looks at it). None until the whole header section is in (a 414, a 431, a
    408 before the headers' end: a later field could still be another one), and when
    there are several: the app would see them joined by a comma."""
    if pending.header_end < 0:
        return None
    found = None
    for line in bytes(pending.data[: pending.header_end - 4]).split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.lower() == wanted:
            if found is not None:
                return None
            found = value.strip(b" \t").decode("latin-1")
    return found


def request_origin(pending: PendingRequest) -> str | None:
    """The request's Origin field (None: none, several, or the headers are not all in)."""
    return _single_field(pending, b"origin")


def request_id_for(pending: PendingRequest | None) -> str:
    """The id of the worker's own answer to ``pending``: its X-Request-ID (an ingress's)
    when the app would adopt it (http_hooks.REQUEST_ID_RE), so the refusal's header and
    log line carry the id the ingress logged; a new one when it has none, an invalid one,
    or its header section was never read whole (a 414, a 431, a 408 before its end)."""
    incoming = None if pending is None else _single_field(pending, b"x-request-id")
    if incoming is not None and REQUEST_ID_RE.fullmatch(incoming):
        return incoming
    return new_request_id()


def cors_lines(pending: PendingRequest | None, allowed: frozenset[str]) -> str:
    """The CORS header lines of the worker's own answer to ``pending`` (None: its bytes
    are not known, so no origin is echoed): the app's (protection.cors_headers), so a page
    on an allowed origin can read a 413 or 408 instead of seeing a network error."""
    if not allowed:
        return ""
    headers = cors_headers(None if pending is None else request_origin(pending), allowed)
    return "".join(f"{name}: {value}\r\n" for name, value in headers)


class ServerLimits(NamedTuple):
    """The settings the workers enforce themselves, outside the app."""

    header_timeout: float
    body_timeout: float
    body_limit: int
    send_timeout: float
    waiting_max: int  # bytes of answers waiting for slow clients, per worker
    queue_timeout: float  # QUEUE_TIMEOUT: longest wait for a thread (THREADS > 1); 0 = none
    cors_origins: frozenset[str]  # CORS_ORIGINS, for the answers the worker writes itself


def _settings_from(wsgi: Any) -> ServerLimits:
    """The limits of the app gunicorn serves: the settings it was built with, read once in
    the master before the fork. Read again here from the environment, a ``*_FILE`` secret
    emptied or removed since the start failed every new worker (a replaced one, a SIGHUP's):
    a crash loop of the sync workers, and with THREADS > 1 the master itself, whose
    ``spawn_worker`` builds the worker. Only an app this module cannot find reads them."""
    from .settings import Settings

    services = app_services(wsgi)
    settings = services.settings if services is not None else Settings.from_env()
    return ServerLimits(
        settings.request_header_timeout,
        settings.request_body_timeout,
        settings.max_body_bytes,
        settings.response_send_timeout,
        settings.waiting_answers_max_bytes,
        settings.queue_timeout,
        frozenset(settings.cors_origins),
    )


# --------------------------------------------------------------------------- shared


class _StopClock:
    """When the stop began, for both workers' stop deadline: at the SIGTERM, as the
    master's GRACEFUL_TIMEOUT, not when the worker's loop gets to it (the sync worker's
    only after the request it is serving, which could leave it no time before the
    master's SIGKILL to answer the requests it is still reading)."""

    cfg: Any
    _stop_began: float | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self._stop_began is None:
            self._stop_began = time.monotonic()
        super().handle_exit(sig, frame)  # type: ignore[misc]

    def stop_deadline(self) -> float:
        """When a stopping worker answers what it is still reading with 503 and exits:
        GRACEFUL_TIMEOUT after the SIGTERM (or after now, a stop of the worker's own: max
        requests, an aborted thread), less stop_margin, before the master's SIGKILL."""
        now = time.monotonic()
        began = min(now, self._stop_began if self._stop_began is not None else now)
        graceful = float(self.cfg.graceful_timeout)
        return began + graceful - stop_margin(graceful)


class _ErrorsMixin:
    """JSON errors and path/IP-free log lines for what gunicorn itself refuses."""

    log: Any
    # CORS_ORIGINS (ServerLimits.cors_origins), set once the worker has read its settings.
    _cors_origins: frozenset[str] = frozenset()

    def _request_of(self, client: Any) -> PendingRequest | None:
        """The buffered request being served on ``client`` (None: not known here)."""
        return None

    def handle_error(
        self,
        req: Any,
        client: Any,
        addr: Any,
        exc: BaseException,
        pending: PendingRequest | None = None,
    ) -> None:
        """gunicorn's hook for an error while parsing or serving a request; ``pending``:
        its buffered bytes (the sync worker passes them, the threaded one looks them up),
        where the answer finds the request's target and Origin."""
        status, detail = classify(exc)
        if pending is None:
            pending = self._request_of(client)
        path = getattr(req, "path", None)
        if path is None:
            path = getattr(getattr(exc, "req", None), "path", None)
        if path is None and pending is not None:
            path = pending.target or ""
        # The app's id when the app had the request (a timeout abort), else the request's
        # own (an ingress's) or a new one.
        rid = getattr(exc, "comments_request_id", None) or request_id_for(pending)
        if status == 500:  # ours; 501 (a transfer coding not served) is the client's
            if isinstance(exc, SystemExit):
                log.error(
                    "request aborted: the worker exceeded its timeout", extra={"request_id": rid}
                )
            else:
                # The traceback, but not gunicorn's "Error handling request <raw uri>".
                log.error("error handling request", exc_info=exc, extra={"request_id": rid})
        else:
            log.warning(
                "refused a request the server could not parse",
                extra={"status": status, "error": type(exc).__name__, "request_id": rid},
            )
        count_server_refusal(status_slug(status))
        # The request was read up to its header section's end (the buffering hands over
        # nothing less), so a page on an allowed origin can read this answer too.
        cors = cors_lines(pending, self._cors_origins)
        _send(client, _for_method(pending, error_response_bytes(status, detail, path, rid, cors)))

    def _answer_timeout_abort(
        self,
        resp: CoalescingResponse,
        client: socket.socket | None,
        addr: Any,
        environ: dict[str, Any],
        pending: PendingRequest | None,
    ) -> None:
        """Both workers' answer to a request aborted at WORKER_TIMEOUT while the app still
        holds it: the JSON 500 with the app's request id on ``client`` (None: part of the
        app's own answer is out, and an error after it would corrupt it: only logged),
        its error line, and its access line and request count (record_abort), which the
        app's teardown then does not write again."""
        rid = environ.get(REQUEST_ID_ENVIRON)
        record_abort(environ)
        if client is None:
            log.error(
                "request aborted: the worker exceeded its timeout",
                extra={"request_id": rid or request_id_for(pending)},
            )
            return
        aborted = SystemExit(1)
        if rid is not None:
            aborted.comments_request_id = rid  # type: ignore[attr-defined]
        self.handle_error(resp.req, client, addr, aborted, pending)


def _send(sock: Any, data: bytes) -> None:
    try:
        util.write_nonblock(sock, data)
    except Exception:  # the client is gone or its buffer is full: nothing to tell it
        log.debug("failed to send an error response")


# The kind of error a refusal's log line names ("limit" otherwise: 413, 414, 431); a 501
# is named as when gunicorn's parser refuses the coding: the same refusal either way.
_REFUSAL_KINDS = {
    400: "malformed",
    405: "method",
    408: "timeout",
    501: "UnsupportedTransferCoding",
    503: "draining",
}


def _refuse(
    sock: socket.socket,
    pending: PendingRequest,
    status: int,
    detail: str,
    linger: Callable[[socket.socket], None] | None = None,
    cors_origins: frozenset[str] = frozenset(),
) -> None:
    rid = request_id_for(pending)
    cors = cors_lines(pending, cors_origins)
    if status == 200:  # OPTIONS *: answered, not refused
        log.info("answered OPTIONS * with the methods the server serves", extra={"request_id": rid})
        _send(sock, options_asterisk_bytes(rid, cors))
    else:
        log.warning(
            "refused a request the server could not read",
            extra={
                "status": status,
                "error": _REFUSAL_KINDS.get(status, "limit"),
                "request_id": rid,
            },
        )
        count_server_refusal(status_slug(status))
        _send(
            sock,
            _for_method(pending, error_response_bytes(status, detail, pending.target, rid, cors)),
        )
    if linger is not None:
        # Refused before the request's end (a body, a request line or headers over their
        # limit, bytes that cannot be parsed, a request too slow): the client may still be
        # sending. Closed outright, what it sends next makes the kernel answer with a
        # reset, and the client loses the answer: its send or its read fails first.
        linger(sock)
        return
    util.close(sock)


def _shed_overdue(
    sock: socket.socket,
    pending: PendingRequest | None,
    waited: float,
    cors_origins: frozenset[str],
) -> None:
    """Answer a request that waited ``QUEUE_TIMEOUT`` or more for a thread with a JSON 503
    and ``Retry-After``, unserved; its whole request was read, so a plain close follows."""
    rid = request_id_for(pending)
    log.warning(
        "shed a request that waited %.1f s for a thread (QUEUE_TIMEOUT)",
        waited,
        extra={"status": 503, "error": "queue_timeout", "request_id": rid},
    )
    count_server_refusal(status_slug(503))
    detail = "the server is overloaded: the request waited too long for a worker thread"
    target = None if pending is None else pending.target
    answer = error_response_bytes(503, detail, target, rid, cors_lines(pending, cors_origins))
    _send(sock, _for_method(pending, answer))


def _for_method(pending: PendingRequest | None, answer: bytes) -> bytes:
    """``answer`` as the request's method takes it: to a HEAD, the head alone (RFC 9110
    9.3.2: GET's head, its Content-Length kept, no content), as the app's own answers to a
    HEAD are. The worker's answers sent their JSON body after the head."""
    if pending is not None and bytes(pending.data).lstrip(b"\r\n").startswith(b"HEAD "):
        return answer[: answer.index(b"\r\n\r\n") + 4]
    return answer


def _chunked_end_agrees(cfg: Any, pending: PendingRequest, addr: Any) -> bool:
    """Whether gunicorn's parser, given a complete chunked request's bytes up to where the
    buffering says it ends (``chunked_end``) and then an end of input, reads its body and
    trailer section without an error and ends exactly there. Only then may what follows be
    served as the next request: two readings of where a request ends are how requests are
    smuggled. A trial parse, before the app reads the body (whose errors the app answers),
    so the answer's Connection header says what will happen."""
    parser = http.get_parser(cfg, (), addr)
    parser.unreader.unread(bytes(pending.data[: pending.chunked_end]))
    try:
        req = next(parser)
        while req.body.read(65536):
            pass
    except (http_errors.ParseException, OSError, StopIteration):  # OSError: NoMoreData
        return False
    return not parser.unreader.take_buffered()


def _nothing_pending(sock: socket.socket) -> bool:
    """True when the client has sent nothing we have not read (or has closed).

    Closing a socket with unread bytes makes the kernel send RST, which can destroy the
    response still on its way; that is what lingering prevents. When the whole request was
    read and nothing more is queued, a plain close sends FIN like any other: nginx's
    ``lingering_close auto`` makes the same choice, and it spares a main-loop round trip
    per request (about 0.4 ms of CPU measured here).
    """
    return not _peek(sock)


def _client_gone(sock: socket.socket) -> bool:
    """True when the client has closed (or reset) the connection after its request: the
    end of input is all that is left to read. A pipelined next request is not an end."""
    return _peek(sock) == b""


def _dropped_client_gone(pending: PendingRequest | None) -> None:
    """Log and count a request dropped unserved because its client closed while it
    waited: nginx's 499 ("client closed request")."""
    log.warning(
        "dropped a request whose client closed the connection while it waited",
        extra={"status": 499, "error": "client_gone", "request_id": request_id_for(pending)},
    )
    count_server_refusal(CLIENT_GONE)


def _peek(sock: socket.socket) -> bytes | None:
    """The next byte the client sent that we have not read, without taking it: b"" when
    the client has closed or reset the connection, None when nothing is there yet."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


def _exhausted() -> None:
    log.error("cannot accept connections: out of file descriptors or memory")
    time.sleep(0.05)  # the listener stays readable: do not spin


def _recv_into(sock: socket.socket, pending: PendingRequest, now: float) -> bool | None:
    """Read what is available. True: ready to dispatch; False: wait; None: gone."""
    try:
        chunk = sock.recv(65536)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return None
    if not chunk:
        return None
    return pending.feed(chunk, now)


def _maybe_continue(sock: socket.socket, pending: PendingRequest) -> None:
    # curl and others wait for "100 Continue" before sending a body; we are the ones
    # reading it now, so we answer (gunicorn would only do so once the app reads). Only
    # while the body is still awaited (callers: not yet done): a request already whole,
    # or refused, or too large to be read (413) gets its final answer and no 100, which
    # would tell the client to send a body nobody reads (RFC 9110 10.1.1). gunicorn's own
    # 100 is then turned off (expects_continue), whether this one was sent or not.
    if pending.expects_continue and not pending.sent_continue and pending.header_end >= 0:
        pending.sent_continue = True
        with contextlib.suppress(OSError):
            sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")


class Lingering:
    """Connections whose response is complete, closed the RFC 9112 (9.6) way without
    blocking: FIN sent at once, whatever the client still sends is read and dropped by the
    main loop, and the socket is closed at the client's EOF, after 64 KiB, or after
    ``LINGER`` seconds. gunicorn does this with a blocking loop of up to 2 s per
    connection, so a client that never closes held a sync worker (or gthread's main loop)
    for 2 s per request. Used only when the client may still be sending (see
    ``_nothing_pending``)."""

    def __init__(self) -> None:
        self.socks: dict[socket.socket, tuple[float, int]] = {}

    def start(self, sock: socket.socket, register: Any) -> bool:
        """True if the socket is now lingering (``register`` was called)."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
        except OSError:
            util.close(sock)
            return False
        self.socks[sock] = (time.monotonic() + LINGER, 0)
        register(sock)
        return True

    def readable(self, sock: socket.socket, unregister: Any) -> None:
        deadline, drained = self.socks[sock]
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        drained += len(data)
        if not data or drained >= LINGER_MAX_BYTES:
            self.finish(sock, unregister)
        else:
            self.socks[sock] = (deadline, drained)

    def expire(self, now: float, unregister: Any) -> None:
        for sock, (deadline, _) in list(self.socks.items()):
            if deadline <= now:
                self.finish(sock, unregister)

    def finish(self, sock: socket.socket, unregister: Any) -> None:
        self.socks.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            unregister(sock)
        util.close(sock)


# --------------------------------------------------------------------------- responses


@dataclass
class Outbound:
    """The rest of an answer the client did not take at once, sent by the worker's main
    loop as the client reads (``EVENT_WRITE``), so a client that reads slowly or not at
    all never holds the sync worker or a thread. The sync worker then puts the connection
    back to wait for its next request (``after``: bytes it pipelined) or closes it
    (``after`` None); the threaded worker leaves that to gthread (finish_request)."""

    chunks: deque[memoryview]
    size: int
    listener: Any
    addr: Any
    after: bytes | None
    served: int
    complete: bool  # the request was read to its end (a clean close needs no linger)
    progress_at: float  # when the client last took bytes

    @classmethod
    def waiting(
        cls,
        unsent: list[memoryview],
        complete: bool,
        listener: Any = None,
        addr: Any = None,
        after: bytes | None = None,
        served: int = 0,
    ) -> Outbound:
        size = sum(len(chunk) for chunk in unsent)
        return cls(deque(unsent), size, listener, addr, after, served, complete, time.monotonic())

    def fits(self, held: int, limit: int) -> bool:
        """Whether a worker already holding ``held`` bytes of answers may hold this one too
        (``limit``: WAITING_ANSWERS_MAX_BYTES); says so in the log when not."""
        if held + self.size <= limit:
            return True
        log.warning(
            "closed a connection that did not take its answer at once: %d bytes already "
            "wait for slower clients",
            held,
        )
        count_server_refusal(ANSWERS_FULL)
        return False

    def stalled(self, now: float, timeout: float) -> bool:
        """Whether the client took none of it for ``timeout`` seconds (RESPONSE_SEND_TIMEOUT):
        then the caller closes the connection; says so in the log."""
        if now - self.progress_at <= timeout:
            return False
        log.warning(
            "closed a connection that took none of its answer for %.0f s (RESPONSE_SEND_TIMEOUT)",
            timeout,
        )
        count_server_refusal(SEND_TIMED_OUT)
        return True

    def send(self, sock: socket.socket) -> bool:
        """Send what the socket takes now; True once nothing is left. Raises OSError when
        the client is gone."""
        chunks = self.chunks
        while chunks:
            chunk = chunks[0]
            try:
                sent = sock.send(chunk, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return False
            if sent:
                self.progress_at = time.monotonic()
                self.size -= sent
            if sent < len(chunk):
                chunks[0] = chunk[sent:]
                return False
            chunks.popleft()
        return True


class _DateHeader:
    """The ``Date`` value, formatted once per second instead of once per response."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def __call__(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._value = second, util.http_date(second)
        return self._value


@functools.lru_cache(maxsize=512)
def _header_name(name: str) -> tuple[str, bool]:
    """A response header name checked as gunicorn checks it: (lowercased, hop-by-hop?)."""
    if not TOKEN_RE.fullmatch(name):
        raise http_errors.InvalidResponseHeaderName(repr(name))
    return name.lower(), bool(util.is_hoppish(name))


class CoalescingResponse(wsgi.Response):  # type: ignore[misc]
    """gunicorn's response writer, except that the status line and headers go out in the
    same ``send`` as the first piece of the body (gunicorn sends them separately: two
    syscalls and two TCP segments for every response where one does, measured in
    bench/README.md), and that it never waits for the client: what the socket does not
    take at once is appended to ``unsent``, in order, for the worker's main loop to send
    (Outbound). Its header checks are gunicorn's, run once per header name
    (``process_headers``); framing, HEAD and keep-alive are gunicorn's own. It sends no
    ``Server`` header (``default_headers``)."""

    headers_sent: bool
    chunked: bool

    def __init__(
        self,
        req: Any,
        sock: socket.socket,
        cfg: Any,
        date: _DateHeader,
        unsent: list[memoryview],
    ) -> None:
        super().__init__(req, sock, cfg)
        self._date = date
        self._head = b""
        self._unsent = unsent

    def _send(self, data: bytes) -> None:
        unsent = self._unsent
        if unsent:  # earlier bytes still wait: these go after them
            unsent.append(memoryview(data))
            return
        try:
            # MSG_DONTWAIT: never blocks, whatever the socket's mode (the sync worker's lean
            # path leaves it non-blocking, gunicorn's parser blocking).
            sent = self.sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            unsent.append(memoryview(data)[sent:])

    def process_headers(self, headers: list[tuple[str, str]]) -> None:
        # gunicorn's Response.process_headers (23.x), the same checks and framing, except
        # that a name's checks run once per name (_header_name): ~4 of gunicorn's 8 us for
        # a dozen headers. tests/test_response_writer.py compares the two on generated
        # header lists, errors included.
        append = self.headers.append
        for name, value in headers:
            if not isinstance(name, str):
                raise TypeError(f"{name!r} is not a string")
            lname, hoppish = _header_name(name)
            if not isinstance(value, str):
                raise TypeError(f"{value!r} is not a string")
            if not wsgi.HEADER_VALUE_RE.fullmatch(value):
                # The name only: the value may carry a secret.
                raise http_errors.InvalidResponseHeader(repr(name))
            value = value.strip(" \t")
            if lname == "content-length":
                self.response_length = int(value)
            elif hoppish:
                if lname == "connection":
                    if value.lower() == "upgrade":
                        self.upgrade = True
                elif lname == "upgrade" and value.lower() == "websocket":
                    append((name, value))
                continue
            append((name, value))

    def default_headers(self) -> list[str]:
        if self.upgrade:
            connection = "upgrade"
        elif self.should_close():
            connection = "close"
        else:
            connection = "keep-alive"
        version = self.req.version
        # No Server header (RFC 9110 10.2.4: optional): gunicorn's "Server: gunicorn" names
        # the software to probe for its known flaws and helps no client. The worker's own
        # answers (error_response_bytes) never sent one either.
        headers = [
            f"HTTP/{version[0]}.{version[1]} {self.status}\r\n",
            f"Date: {self._date()}\r\n",
            f"Connection: {connection}\r\n",
        ]
        if self.chunked:
            headers.append("Transfer-Encoding: chunked\r\n")
        return headers

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        lines = self.default_headers()
        lines.extend([f"{name}: {value}\r\n" for name, value in self.headers])
        self._head = ("".join(lines) + "\r\n").encode("latin-1")
        self.headers_sent = True

    @property
    def on_the_wire(self) -> bool:
        """Some of this response has been sent (gunicorn's ``headers_sent`` is already
        True while the head waits for the body)."""
        return bool(self.headers_sent and not self._head)

    def _flush_head(self) -> None:
        if self._head:
            head, self._head = self._head, b""
            self._send(head)

    def _emit_body(self, data: bytes) -> None:
        if self.chunked:  # gunicorn's framing (util.write_chunk)
            data = b"%X\r\n%s\r\n" % (len(data), data)
        head, self._head = self._head, b""
        if head and len(data) <= COALESCE_MAX:
            self._send(head + data)
            return
        if head:
            self._send(head)
        self._send(data)

    def sendfile(self, respiter: Any) -> bool:
        return False  # a blocking sendfile(): gunicorn then write()s the file's chunks

    def close(self) -> None:
        if not self.headers_sent:
            self.send_headers()
        if self.chunked:
            # The last chunk, with the head when no body was written.
            head, self._head = self._head, b""
            self._send(head + b"0\r\n\r\n")
            return
        self._flush_head()


def _write_answer(app: Any, environ: dict[str, Any], resp: CoalescingResponse) -> None:
    """Run the WSGI app and write its answer through ``resp`` (both workers; gunicorn's
    access log is off: the app writes one line per request itself)."""
    respiter = app(environ, resp.start_response)
    try:
        if isinstance(respiter, environ["wsgi.file_wrapper"]):
            resp.write_file(respiter)
        else:
            for item in respiter:
                resp.write(item)
        resp.close()
    finally:
        if hasattr(respiter, "close"):
            respiter.close()


def _give_up_started(resp: CoalescingResponse | None, sock: Any, unsent: list[memoryview]) -> None:
    """In ``except``: nothing of a failed answer is sent later. If some of it is on its way
    already, the connection is closed (StopIteration): an error written after it would
    corrupt it. A timeout abort is SystemExit. Headers built but not sent yet still leave
    room for the JSON 500 (the caller re-raises)."""
    unsent.clear()
    if resp is not None and resp.on_the_wire:
        log.exception("error handling request after the response started")
        util.close_graceful(sock)
        raise StopIteration from None


def _answer(
    worker: Any,
    req: Any,
    sock: socket.socket,
    unsent: list[memoryview],
    build: Callable[[], tuple[CoalescingResponse, dict[str, Any]]],
    keep_alive: bool,
) -> bool:
    """Both workers' ``handle_request``: gunicorn's, except that the connection may be kept
    alive (``keep_alive``; the sync worker's main loop is the buffer gunicorn waits for, see
    BufferedSyncWorker.handle_request) and the answer is written by CoalescingResponse,
    which leaves what the socket does not take at once in ``unsent`` for the main loop
    instead of blocking until the client reads it. ``build`` makes the response and its
    environ. True: keep the connection open."""
    environ: dict[str, Any] = {}
    resp = None
    try:
        worker.cfg.pre_request(worker, req)
        resp, environ = build()
        if not keep_alive:
            resp.force_close()
        worker.nr += 1
        if worker.nr >= worker.max_requests:
            if worker.alive:
                worker.log.info("Autorestarting worker after current request.")
                worker.alive = False
            resp.force_close()
        _write_answer(worker.wsgi, environ, resp)
    except OSError:
        raise
    except (Exception, SystemExit) as exc:
        rid = environ.get(REQUEST_ID_ENVIRON)
        if rid is not None:
            # handle_error's answer and line then carry the id of the app's lines.
            with contextlib.suppress(AttributeError):
                exc.comments_request_id = rid  # type: ignore[union-attr]
        _give_up_started(resp, sock, unsent)
        raise
    finally:
        try:
            worker.cfg.post_request(worker, req, environ, resp)
        except Exception:
            log.exception("exception in the post_request hook")
    return not resp.should_close()


# --------------------------------------------------------------------------- sync


class BufferedSyncWorker(_StopClock, _ErrorsMixin, SyncWorker):  # type: ignore[misc]
    """``THREADS=1``: one request at a time per process, gunicorn's sync semantics
    (every connection closed after its response), but requests are buffered first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._aborting = False
        self._lingering = Lingering()
        self._selector: selectors.BaseSelector | None = None
        # Client sockets registered in the selector. A kept-alive connection stays
        # registered while its request is served (nothing selects meanwhile), sparing two
        # epoll_ctl calls per request; only a connection that is closed leaves it.
        self._watched: set[socket.socket] = set()
        self._keepalive = 0.0
        self._date = _DateHeader()
        self._lean = LeanReader(self.cfg)
        # What the response being served could not send at once (CoalescingResponse).
        self._unsent: list[memoryview] = []
        # The request in the app: its response, client, address, environ and buffered
        # bytes, for the abort to answer; and whether it did.
        self._serving: (
            tuple[CoalescingResponse, socket.socket, Any, dict[str, Any], PendingRequest] | None
        ) = None
        self._abort_answered = False

    def handle_abort(self, sig: int, frame: Any) -> None:
        """gunicorn's SIGABRT at WORKER_TIMEOUT: the request in the app is answered here,
        not after the SystemExit raised below has left the app. psycopg, waiting on a
        frozen database backend, catches that SystemExit to cancel the query and waits up
        to 5 s more for it, while the master SIGKILLs the worker about a second after its
        SIGABRT: the client got its connection closed without an answer. Runs in the main
        thread between two bytecodes: the send never blocks (_send), and a client whose
        buffer is full gets no answer, only its connection closed as the worker exits."""
        self._aborting = True
        serving, self._serving = self._serving, None
        if serving is not None:
            resp, client, addr, environ, pending = serving
            self._abort_answered = True
            started = resp.on_the_wire
            try:
                self._answer_timeout_abort(
                    resp, None if started else client, addr, environ, pending
                )
                if not started:
                    # Whatever the app still writes goes nowhere; the client sees the end.
                    with contextlib.suppress(OSError):
                        client.shutdown(socket.SHUT_RDWR)
            except Exception:  # nothing may stop the SystemExit below
                log.exception("failed to answer a request aborted by the worker timeout")
            # The master SIGKILLs a worker that outlives its abort by about a second;
            # leaving earlier, with the lines written, is an exit it logs as such.
            leave = threading.Timer(ABORT_EXIT_AFTER, _leave_after_abort)
            leave.daemon = True
            leave.start()
        super().handle_abort(sig, frame)

    def _watch(self, client: socket.socket) -> None:
        if client not in self._watched and self._selector is not None:
            self._selector.register(client, selectors.EVENT_READ, "client")
            self._watched.add(client)

    def _unwatch(self, client: socket.socket) -> None:
        if client in self._watched:
            self._watched.discard(client)
            if self._selector is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(client)

    def _linger_refused(self, client: socket.socket) -> None:
        self._close_after_response(client, complete=False)

    def _close_after_response(self, client: socket.socket, complete: bool) -> None:
        self._unwatch(client)  # before close(): the descriptor may be reused at once
        if complete and _nothing_pending(client):
            util.close(client)
            return
        selector = self._selector
        if selector is None:
            util.close_graceful(client)
            return
        self._lingering.start(
            client, lambda sock: selector.register(sock, selectors.EVENT_READ, "linger")
        )

    def run(self) -> None:
        # QUEUE_TIMEOUT is the threaded worker's: this loop cannot see a request's wait in
        # the listen backlog (docs/server.md, "Overload").
        limits = _settings_from(self.wsgi)
        header_timeout, body_timeout = limits.header_timeout, limits.body_timeout
        body_limit, send_timeout = limits.body_limit, limits.send_timeout
        waiting_max, cors_origins = limits.waiting_max, limits.cors_origins
        self._cors_origins = cors_origins
        self._keepalive = keepalive = float(self.cfg.keepalive or 0)
        selector = selectors.DefaultSelector()
        self._selector = selector
        lingering = self._lingering
        for listener in self.sockets:
            listener.setblocking(False)
            selector.register(listener, selectors.EVENT_READ, None)
        selector.register(self.PIPE[0], selectors.EVENT_READ, "pipe")
        pending: dict[socket.socket, tuple[PendingRequest, Any, Any]] = {}
        ready: deque[socket.socket] = deque()
        outbound: dict[socket.socket, Outbound] = {}  # answers the clients still take
        # One write per batch of access lines instead of one per request: -9 us of CPU per
        # list served (bench/README.md, "The access line"). Flushed below.
        access_lines = hold_access_lines()

        def accept(listener: socket.socket) -> bool:
            try:
                client, addr = listener.accept()
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                    return False
                if exc.errno in _ACCEPT_EXHAUSTED:
                    _exhausted()
                    return False
                raise
            client.setblocking(False)
            util.close_on_exec(client)
            now = time.monotonic()
            request = PendingRequest(now + header_timeout, body_timeout, body_limit)
            pending[client] = (request, listener, addr)
            # The request has usually arrived with the connection: try at once.
            readable(client, now)
            if client in pending and client not in ready:
                self._watch(client)
            return True

        def keep_alive(
            client: socket.socket, listener: socket.socket, addr: Any, pipelined: bytes, served: int
        ) -> None:
            # Back to the selector: the connection waits for its next request like a new
            # one, closed silently after `keepalive` idle seconds; its header timeout
            # starts when that wait ends at the latest.
            now = time.monotonic()
            request = PendingRequest(
                now + keepalive + header_timeout,
                body_timeout,
                body_limit,
                idle_deadline=now + keepalive,
                kept_alive=True,
                served=served,
            )
            pending[client] = (request, listener, addr)
            # Blocking only if gunicorn's parser read it, or an answer did not fit one send().
            if client.gettimeout() != 0.0:
                try:
                    client.setblocking(False)
                except OSError:
                    drop(client)
                    return
            if pipelined:
                # Its next request has begun: the header deadline counts from now, not
                # from the end of an idle wait that is already over.
                request.deadline = now + header_timeout
                if request.feed(pipelined, now):
                    ready.append(client)
                    return
                if request.expects_continue:
                    # Its headers came with the answered request's bytes: the client
                    # waits for the 100 as for one read from the socket (readable).
                    _maybe_continue(client, request)
            self._watch(client)

        def readable(client: socket.socket, now: float) -> None:
            request = pending[client][0]
            done = _recv_into(client, request, now)
            if done is None:
                drop(client)
                return
            if done:
                ready.append(client)
            elif request.expects_continue:
                _maybe_continue(client, request)

        def drop(client: socket.socket) -> None:
            pending.pop(client, None)
            outbound.pop(client, None)
            self._unwatch(client)
            util.close(client)

        def start_outbound(client: socket.socket, state: Outbound) -> None:
            if not state.fits(sum(o.size for o in outbound.values()), waiting_max):
                drop(client)
                return
            outbound[client] = state
            if client in self._watched:
                selector.modify(client, selectors.EVENT_WRITE, "outbound")
            else:
                selector.register(client, selectors.EVENT_WRITE, "outbound")
                self._watched.add(client)

        def writable(client: socket.socket) -> None:
            state = outbound[client]
            try:
                done = state.send(client)
            except OSError:  # the client is gone
                drop(client)
                return
            if not done:
                return
            del outbound[client]
            if state.after is None or not self.alive:  # stopping: no next request
                self._close_after_response(client, state.complete)
                return
            selector.modify(client, selectors.EVENT_READ, "client")
            keep_alive(client, state.listener, state.addr, state.after, state.served)

        def expire(now: float) -> None:
            # Checked every turn of the loop (at least once a second).
            for client, answer in list(outbound.items()):
                if answer.stalled(now, send_timeout):
                    drop(client)
            for client, (request, _, _) in list(pending.items()):
                if client in ready:
                    continue
                state = request.expired(now)
                if state is None:
                    continue
                self._unwatch(client)
                pending.pop(client, None)
                if state == "idle":
                    util.close(client)
                else:
                    _refuse(
                        client,
                        request,
                        408,
                        ReadTimeout.description,
                        linger=self._linger_refused,
                        cors_origins=cors_origins,
                    )

        catching_up = False  # an answer took SLOW_ANSWER or more: requests queued meanwhile

        def dispatch_one() -> None:
            nonlocal catching_up
            client = ready.popleft()
            request, listener, addr = pending.pop(client)
            if request.refuse is not None:
                self._unwatch(client)
                _refuse(
                    client,
                    request,
                    *request.refuse,
                    linger=self._linger_refused,
                    cors_origins=cors_origins,
                )
                return
            if catching_up and _client_gone(client):
                # Its client gave up while it waited (a proxy's or the kubelet's timeout):
                # serving it would only delay the live ones behind it, and a write would be
                # stored that nobody was told of. Checked only after a slow answer: one
                # more syscall per request otherwise.
                self._unwatch(client)
                _dropped_client_gone(request)
                util.close(client)
                return
            started = time.monotonic()
            pipelined, unsent = self._serve(listener, client, addr, request)
            if time.monotonic() - started >= SLOW_ANSWER:
                catching_up = True
            if unsent:
                answer = Outbound.waiting(
                    unsent, request.complete, listener, addr, pipelined, request.served + 1
                )
                start_outbound(client, answer)
                return
            if pipelined is not None:
                keep_alive(client, listener, addr, pipelined, request.served + 1)

        listening = True

        def set_listening(on: bool) -> None:
            # A readable listener we do not accept from would wake select() at once,
            # every turn: unregister it while full or stopping.
            nonlocal listening
            if on == listening:
                return
            for listener in self.sockets:
                if on:
                    selector.register(listener, selectors.EVENT_READ, None)
                else:
                    selector.unregister(listener)
            listening = on

        def idle_kept() -> socket.socket | None:
            # The kept-alive connection idle longest (nothing of its next request yet).
            oldest: tuple[float, socket.socket] | None = None
            for client, (request, _, _) in pending.items():
                if not request.kept_alive or request.data or client in ready:
                    continue
                if oldest is None or request.idle_deadline < oldest[0]:
                    oldest = (request.idle_deadline, client)
            return None if oldest is None else oldest[1]

        def room_to_accept() -> bool:
            # Full: an idle kept-alive connection gives way to a new one, as nginx closes
            # idle keepalive connections when it runs out of connections. Without one to
            # close, the listener is left alone (a readable listener we cannot accept
            # from would wake select() at once, every turn).
            if len(pending) + len(outbound) < MAX_BUFFERING:
                return True
            return idle_kept() is not None

        deferred_since: float | None = None

        notified = 0.0
        expiry_checked = 0.0
        burst = 0  # connections accepted less than ACCEPT_DEFER apart
        last_accept = 0.0

        def loop_once(timeout: float, accept_new: bool) -> None:
            nonlocal deferred_since, notified, expiry_checked, burst, last_accept, catching_up
            # gunicorn's heartbeat (a syscall on a temp file), which its arbiter checks
            # against the worker timeout (30 s): twice a second is plenty, not every turn.
            if time.monotonic() - notified >= HEARTBEAT_EVERY:
                self.notify()
                notified = time.monotonic()
            set_listening(accept_new and room_to_accept())
            try:
                # Held access lines go out before the worker waits for work (a busy worker
                # writes them in batches, an idle one holds none).
                if timeout and access_lines is not None and access_lines.holding():
                    events = selector.select(0)
                    if not events:
                        access_lines.flush()
                        events = selector.select(timeout)
                else:
                    events = selector.select(timeout)
            except InterruptedError:
                events = []
            now = time.monotonic()
            asked = False  # the listener had a connection waiting this turn
            for key, _ in events:
                if key.data == "pipe":
                    with contextlib.suppress(OSError):
                        os.read(self.PIPE[0], 64)
                elif key.data == "client":
                    if key.fileobj in pending and key.fileobj not in ready:
                        readable(key.fileobj, now)  # type: ignore[arg-type]
                elif key.data == "outbound":
                    if key.fileobj in outbound:
                        writable(key.fileobj)  # type: ignore[arg-type]
                elif key.data == "linger":
                    if key.fileobj in lingering.socks:
                        lingering.readable(key.fileobj, selector.unregister)  # type: ignore[arg-type]
                elif room_to_accept():
                    # One connection per turn. Kept-alive connections stay where they
                    # land, so balance is decided here: a busy worker waits 0.25 ms per
                    # connection it holds, and the one holding fewer takes it first (one
                    # worker kept 13 of wrk's 16 connections, the other 3, and the 13
                    # waited twice as long). An idle one waits as much per connection it
                    # has just accepted, so a burst of new connections is shared too
                    # (one worker took all 16 at wrk's start while the other woke up).
                    asked = True
                    if now - last_accept > ACCEPT_DEFER:
                        burst = 0
                    held = len(pending) if ready else burst
                    defer = accept_defer(held, self.cfg.workers)
                    waited = now - (deferred_since or now)
                    if waited >= defer:
                        deferred_since = None
                        burst += 1
                        last_accept = now
                        if len(pending) >= MAX_BUFFERING and (idle := idle_kept()):
                            drop(idle)
                        accept(key.fileobj)  # type: ignore[arg-type]
                    else:
                        if deferred_since is None:
                            deferred_since = now
                        if not ready:
                            # Nothing to serve: wait here, not spin on the listener
                            # (which stays readable) and take a core from the others.
                            time.sleep(defer - waited)
            if not asked:
                deferred_since = None  # another worker took it
            if ready:
                dispatch_one()
            elif not asked:
                catching_up = False  # nothing queued here or in the backlog: caught up
            now = time.monotonic()
            if now - expiry_checked >= EXPIRE_EVERY:
                if access_lines is not None:
                    access_lines.flush()  # between requests, none waits past EXPIRE_EVERY
                expire(now)
                lingering.expire(now, selector.unregister)
                expiry_checked = now

        timeout = min(self.timeout or 0.5, 1.0)
        checked = 0.0
        while self.alive:
            loop_once(0 if ready else timeout, True)
            # getppid() is a syscall: asking twice a second notices a dead master in time.
            if time.monotonic() - checked >= HEARTBEAT_EVERY:
                if not self.is_parent_alive():
                    return
                checked = time.monotonic()

        if self._aborting:
            return
        # Stopping: serve what is already queued in the backlog (the master has closed
        # its copy of the listener; ours is closed when this process exits), then finish
        # the requests still being buffered, within the graceful timeout less the margin
        # (stop_deadline): the 503s below go out before the master's SIGKILL.
        stop_by = self.stop_deadline()
        taken = 0
        for listener in self.sockets:
            while taken < MAX_BACKLOG_DRAIN and time.monotonic() < stop_by:
                if not accept(listener):
                    break
                taken += 1
                while ready:
                    dispatch_one()
        # A new connection that has sent nothing yet gets STOP_IDLE_LINGER more seconds;
        # an idle kept-alive one is closed at once (after one more read, in case its next
        # request is already here), as Go's Server.Shutdown does. Responses sent from now
        # on say "Connection: close".
        now = time.monotonic()
        linger = now + STOP_IDLE_LINGER
        for request, _, _ in pending.values():
            until = now if request.kept_alive else linger
            request.idle_deadline = min(request.idle_deadline, until)
        while (
            (pending or ready or outbound or lingering.socks)
            and time.monotonic() < stop_by
            and not self._aborting
        ):
            loop_once(0 if ready else max(0.0, min(0.2, stop_by - time.monotonic())), False)
        for client in list(outbound):
            drop(client)  # past the graceful timeout: what they did not take is lost
        for client in list(pending):
            request = pending.pop(client)[0]
            if request.data:
                _refuse(
                    client,
                    request,
                    503,
                    "the server is shutting down; retry",
                    cors_origins=cors_origins,
                )
            else:
                util.close(client)
        selector.close()

    def _serve(
        self, listener: socket.socket, client: socket.socket, addr: Any, pending: PendingRequest
    ) -> tuple[bytes | None, list[memoryview]]:
        """gunicorn's SyncWorker.handle, fed from the buffer. Returns the bytes the client
        sent after this request (pipelined) when the connection is kept alive (None: it is
        closed, or is to be once the rest is sent), and the rest of the answer the socket
        did not take at once (for the main loop to send)."""
        req = None
        keep = False
        answered = False
        end = pending.header_end + pending.content_length  # the next request starts there
        try:
            lean = None
            if pending.exact:
                lean = self._lean.read(
                    pending.data,
                    pending.header_end,
                    pending.content_length,
                    client,
                    addr,
                    listener,
                )
            if lean is not None:
                req, environ = lean
                keep = self.handle_request(listener, req, client, addr, pending, environ)
                answered = True
            else:
                client.setblocking(True)
                if pending.chunked_end >= 0 and _chunked_end_agrees(self.cfg, pending, addr):
                    # Its end is known and gunicorn's parser agrees: it gets the bytes up to
                    # there and then an end of input, never the socket, so the next
                    # request's bytes cannot become this one's body.
                    end = pending.chunked_end
                    parser = http.get_parser(self.cfg, (), addr)
                    parser.unreader.unread(bytes(pending.data[:end]))
                else:
                    pending.chunked_end = -1  # not kept alive (_may_keep_alive)
                    reader = DeadlineReader(client, pending.deadline)
                    parser = http.get_parser(self.cfg, reader, addr)
                    parser.unreader.unread(bytes(pending.data))
                req = next(parser)
                if pending.unusual is not None:
                    unusual_request(req, pending.unusual)
                keep = self.handle_request(listener, req, client, addr, pending)
                answered = True
        except http_errors.NoMoreData:
            pass
        except StopIteration:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                log.error("socket error processing a request: %s", exc.__class__.__name__)
        except BaseException as exc:
            if not (isinstance(exc, SystemExit) and self._abort_answered):
                self.handle_error(req, client, addr, exc, pending)
        unsent, self._unsent = self._unsent, []
        after = bytes(pending.data[end:]) if keep else None
        if answered and unsent:
            return after, unsent  # the connection stays open until the client has it all
        if keep:
            return after, []
        self._close_after_response(client, pending.complete)
        return None, []

    def _may_keep_alive(self, pending: PendingRequest) -> bool:
        # Only after a request whose end we know exactly (a chunked one: and gunicorn's
        # parser ends it there too, see _chunked_end_agrees), and never while stopping.
        return (
            self.alive
            and self._keepalive > 0
            and (pending.exact or pending.chunked_end >= 0)
            and pending.served + 1 < KEEPALIVE_REQUESTS
        )

    def handle_request(  # type: ignore[override]
        self,
        listener: socket.socket,
        req: Any,
        client: socket.socket,
        addr: Any,
        pending: PendingRequest,
        lean_environ: dict[str, Any] | None = None,
    ) -> bool:
        """gunicorn's SyncWorker.handle_request, except that the connection may be kept
        alive: gunicorn forces it closed "until someone shows a buffering proxy that
        supports Keep-Alive", and this worker's main loop is that buffer (an idle
        connection waits in its selector, not in a worker). True: keep it open.
        ``lean_environ``: the environ lean_requests.py built (``req`` is then its
        LeanRequest); otherwise gunicorn's ``wsgi.create`` builds it."""
        # What the socket does not take at once waits here for the main loop (_serve).
        unsent: list[memoryview] = []
        self._unsent = unsent

        def build() -> tuple[CoalescingResponse, dict[str, Any]]:
            if lean_environ is not None:
                resp, environ = (
                    CoalescingResponse(req, client, self.cfg, self._date, unsent),
                    lean_environ,
                )
            else:
                resp, environ = wsgi.create(
                    req,
                    client,
                    addr,
                    listener.getsockname(),
                    self.cfg,
                    CoalescingResponse,
                    (self._date, unsent),
                )
            self._serving = (resp, client, addr, environ, pending)
            return resp, environ

        try:
            return _answer(self, req, client, unsent, build, self._may_keep_alive(pending))
        finally:
            self._serving = None


# --------------------------------------------------------------------------- threads


class CheckedOutConnections:
    """Which thread holds which pooled database connection (SQLAlchemy's pool events, for
    every pool of the process), so that the main loop can cut off a thread it aborts."""

    def __init__(self) -> None:
        # Pool record -> (thread ident, DBAPI connection). Dict operations are atomic: the
        # threads write, the main loop reads a copy.
        self._held: dict[Any, tuple[int, Any]] = {}

    def listen(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.pool import Pool

        event.listen(Pool, "checkout", self._checkout)
        event.listen(Pool, "checkin", self._checkin)

    def _checkout(self, dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        self._held[record] = (threading.get_ident(), dbapi_connection)

    def _checkin(self, _dbapi_connection: Any, record: Any) -> None:
        self._held.pop(record, None)

    def shut_down(self, thread: int) -> int:
        """Shut down the sockets of the connections ``thread`` holds (PostgreSQL; SQLite
        has none): its waits end at once with an error, nothing more reaches the server,
        which rolls back what it has not committed once it reads the end. The socket,
        not the connection: closing a psycopg connection frees what the thread is using.
        Returns how many."""
        cut = 0
        for holder, dbapi_connection in list(self._held.values()):
            fileno = getattr(dbapi_connection, "fileno", None)
            if holder != thread or fileno is None:
                continue
            try:
                with socket.socket(fileno=os.dup(fileno())) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
            except Exception:  # closed already, or not a socket: nothing to cut
                log.debug("no database socket to shut down for an aborted request")
                continue
            cut += 1
        if cut:
            log.warning(
                "shut down the database connection of a request aborted at WORKER_TIMEOUT",
                extra={"connections": cut},
            )
        return cut


# Where a WSGI middleware keeps the app it wraps: functools.wraps' ``__wrapped__``, and
# werkzeug's middleware's ``app`` (ProxyFix, SharedDataMiddleware, ProfilerMiddleware).
_WRAPPED_APP_ATTRIBUTES = ("__wrapped__", "app")
_MAX_WRAPPERS = 8


def comments_app(wsgi: Any) -> Any | None:
    """The comments app (``create_app()``'s Flask app) behind the WSGI app gunicorn serves:
    itself, or one that middleware wraps (followed through ``_WRAPPED_APP_ATTRIBUTES``, a
    few levels deep). None: not found."""
    for _ in range(_MAX_WRAPPERS):
        extensions = getattr(wsgi, "extensions", None)
        if isinstance(extensions, dict) and EXTENSION_KEY in extensions:
            return wsgi
        wrapped = (getattr(wsgi, name, None) for name in _WRAPPED_APP_ATTRIBUTES)
        wsgi = next((inner for inner in wrapped if inner is not None), None)
        if wsgi is None:
            return None
    return None  # deeper than any real stack of middleware, or a loop


def app_services(wsgi: Any) -> Services | None:
    """The comments app's services behind the WSGI app gunicorn serves (``comments_app``)."""
    app = comments_app(wsgi)
    return cast("Services", app.extensions[EXTENSION_KEY]) if app is not None else None


class _Conn(TConn):  # type: ignore[misc]
    """gthread's connection; its graceful close lingers in the worker's main loop."""

    def __init__(self, worker: BufferedThreadWorker, *args: Any) -> None:
        super().__init__(*args)
        self.worker = worker

    request_complete = False
    # Requests answered on this connection (KEEPALIVE_REQUESTS), as PendingRequest.served.
    served = 0
    # Its request ran past WORKER_TIMEOUT and was answered by the main loop
    # (BufferedThreadWorker._abort_overdue): the thread's end of it is ignored.
    aborted = False

    def close(self, graceful: bool = False) -> None:
        if graceful and not (self.request_complete and _nothing_pending(self.sock)):
            self.worker.linger(self.sock)
        else:
            super().close()


class BufferedThreadWorker(_StopClock, _ErrorsMixin, ThreadWorker):  # type: ignore[misc]
    """``THREADS>1``: gunicorn's gthread worker (keep-alive, a thread pool), but its
    main loop buffers each request in full before a thread takes it, and sends the rest
    of an answer the client does not take at once (Outbound), so no thread waits for a
    client to read."""

    alive: bool  # gunicorn's: False once the worker is stopping

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The request each connection's thread serves: what handle_error answers from.
        self._requests: weakref.WeakKeyDictionary[socket.socket, PendingRequest] = (
            weakref.WeakKeyDictionary()
        )
        self._buffering: dict[TConn, PendingRequest] = {}
        self._aborting = False
        self._drained = False
        self._limits = _settings_from(self.app.wsgi())  # the preloaded app, in the master
        self._cors_origins = self._limits.cors_origins
        self._lingering = Lingering()
        # The accept rule (accept_defer): when this worker started leaving a waiting
        # connection to the others, and until when its loop does not accept.
        self._deferred_since: float | None = None
        self._accept_paused_until = 0.0
        self._date = _DateHeader()
        # Answers being sent from the main loop, with the future of the request they end.
        self._outbound: dict[TConn, tuple[Outbound, Any]] = {}
        # The requests in the app, each with when its thread took it, its response and its
        # environ and its thread: what the main loop looks at for one past WORKER_TIMEOUT.
        self._running: dict[TConn, tuple[float, CoalescingResponse, dict[str, Any], int]] = {}
        self._checked_out = CheckedOutConnections()
        # The threads whose request _abort_overdue answered while they were still in the
        # app, until they leave it: the app's repository rolls back their writes (run).
        self._aborted_threads: set[int] = set()
        self._next_overdue_check = 0.0
        # Requests waiting for a thread, with their futures, oldest first (enqueue_req).
        self._queued: dict[TConn, Any] = {}

    def finish_request(self, conn: TConn, fs: Any) -> None:
        # Main thread. An answer with bytes left over is sent from here before gthread
        # decides between keep-alive and close, as it would have right after the thread.
        if conn.aborted:  # answered by _abort_overdue; the thread came back later
            with contextlib.suppress(OSError):
                conn.sock.close()  # the closed-peer socket, or the rest of a cut answer
            return
        unsent = getattr(conn, "unsent", None)
        conn.unsent = None
        finished = not fs.cancelled() and fs.exception() is None
        if not unsent or not finished or fs.result() is _DEFER:
            self._keep_alive_or_close(conn, fs)
            return
        state = Outbound.waiting(unsent, bool(conn.request_complete))
        held = sum(waiting.size for waiting, _ in self._outbound.values())
        if not state.fits(held, self._limits.waiting_max):
            self.nr_conns -= 1
            conn.close()
            return
        self._outbound[conn] = (state, fs)
        self.poller.register(conn.sock, selectors.EVENT_WRITE, self._writable_cb(conn))

    def _writable_cb(self, conn: TConn) -> Any:
        def callback(_fileobj: Any) -> None:
            if conn not in self._outbound:
                return
            state, fs = self._outbound[conn]
            try:
                done = state.send(conn.sock)
            except OSError:  # the client is gone
                self._close_held(conn, self._outbound)
                return
            if done:
                del self._outbound[conn]
                self.poller.unregister(conn.sock)
                self._keep_alive_or_close(conn, fs)

        return callback

    def _keep_alive_or_close(self, conn: TConn, fs: Any) -> None:
        super().finish_request(conn, fs)
        keptalive = self.keepalived_conns
        if not self.alive and keptalive and keptalive[-1] is conn:
            # Stopping, and an answer that began before the stop kept its connection: it
            # is closed at the loop's next turn after one more read, as the kept-alive
            # connections are at the stop (set_accept_enabled). gthread kept it
            # STOP_KEEPALIVE_LINGER (2 s), and an idle worker waited that long to exit.
            # Each such timeout is at most the time it is appended: the deque stays sorted.
            conn.timeout = min(conn.timeout, time.monotonic())

    # gthread's loop stops accepting while ``nr_conns >= worker_connections``; reporting 0
    # while the buffering set is full, or while an accept is deferred, makes it stop then
    # too (instead of spinning on a listener that accept() would leave readable).
    @property  # type: ignore[override]
    def worker_connections(self) -> int:
        if len(getattr(self, "_buffering", ())) >= MAX_BUFFERING:
            return 0
        if time.monotonic() < getattr(self, "_accept_paused_until", 0.0):
            return 0
        return int(self._worker_connections)

    @worker_connections.setter
    def worker_connections(self, value: int) -> None:
        self._worker_connections = value

    def handle_abort(self, sig: int, frame: Any) -> None:
        self._aborting = True
        super().handle_abort(sig, frame)

    def run(self) -> None:
        self._checked_out.listen()  # in this worker process only, not in the master
        # The app's repository, this worker's copy (after the fork), consults the set the
        # main loop writes at an abort: set here, not a module global every app would share.
        services = app_services(self.wsgi)
        if services is not None:
            services.repo.aborted_threads = self._aborted_threads
        else:
            log.warning(
                "the aborted-request guard is not installed: no comments app found in the "
                "WSGI app %s (create_app(), or a middleware keeping it as .app or "
                ".__wrapped__); a write of a request answered 500 at WORKER_TIMEOUT may "
                "still commit",
                type(self.wsgi).__qualname__,
            )
        self._run_loop()
        if not self._aborting:
            self._leave_cut_off()

    def _run_loop(self) -> None:
        """gthread's ThreadWorker.run (gunicorn 27), but a stopping worker is done by
        stop_deadline: GRACEFUL_TIMEOUT after the SIGTERM less the margin, not after its
        loop saw it, and its waits end there (gthread's took up to 1 s each, so the 503s
        of _leave_cut_off came after the master's SIGKILL or raced it)."""
        self.poller.register(
            self.method_queue.fileno(), selectors.EVENT_READ, self.method_queue.run_callbacks
        )
        self.set_accept_enabled(True)
        while self.alive:
            self.notify()
            can_accept = self.nr_conns < self.worker_connections
            if can_accept != self._accepting:
                self.set_accept_enabled(can_accept)
            self.wait_for_and_dispatch_events(timeout=1.0)
            if not self.is_parent_alive():
                break
            self.murder_keepalived()
            self.murder_pending()
        # Stopping: the backlog drained (set_accept_enabled), kept-alive connections
        # closed at their next turn, the rest finished by the deadline.
        self.set_accept_enabled(False)
        self._cap_keepalive(time.monotonic() + STOP_KEEPALIVE_LINGER)
        stop_by = self.stop_deadline()
        while self.nr_conns > 0:
            left = stop_by - time.monotonic()
            if left <= 0:
                break
            self.notify()
            timeout = min(1.0, left)
            if self.keepalived_conns:
                timeout = min(timeout, max(self.keepalived_conns[0].timeout - time.monotonic(), 0))
            self.wait_for_and_dispatch_events(timeout=timeout)
            self.murder_keepalived()
            self.murder_pending()
        self.murder_keepalived(force=True)
        self.tpool.shutdown(wait=False)
        self.poller.close()
        self.method_queue.close()
        for listener in self.sockets:
            listener.close()

    def _leave_cut_off(self) -> None:
        """After the stop loop (its deadline passed, or nothing was left): the
        requests still being read, or still waiting for a thread, get the sync worker's
        JSON 503, and those still in the
        app, which this process's exit ends unanswered, one error line (a SIGTERM stop's
        scrapes are over: the listener closed when it began)."""
        for conn, pending in list(self._buffering.items()):
            self._buffering.pop(conn, None)
            if pending.data:
                _refuse(
                    conn.sock,
                    pending,
                    503,
                    "the server is shutting down; retry",
                    cors_origins=self._limits.cors_origins,
                )
            else:
                with contextlib.suppress(OSError):
                    conn.sock.close()
        # Still waiting for a thread: never started, so a 503 tells the client it may
        # retry (a create too); closed unanswered, it could not tell whether it ran.
        for conn, fs in list(self._queued.items()):
            del self._queued[conn]
            request = self._requests.get(conn.sock)
            if request is not None and fs.cancel():
                _refuse(
                    conn.sock,
                    request,
                    503,
                    "the server is shutting down; retry",
                    cors_origins=self._limits.cors_origins,
                )
        # Not those answered 500 at WORKER_TIMEOUT already (their threads are still out).
        cut = sum(1 for conn in list(self._running) if not conn.aborted)
        if cut:
            log.error(
                "stop: GRACEFUL_TIMEOUT ran out; leaving %d request(s) in the app, whose "
                "clients get their connection closed without an answer (counted in no "
                "metric)",
                cut,
                extra={"in_flight": cut, "graceful_timeout": self.cfg.graceful_timeout},
            )

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        # While accepting is paused, wake when the pause ends, not after gthread's 1 s.
        paused = self._accept_paused_until - time.monotonic()
        super().wait_for_and_dispatch_events(min(timeout, paused) if paused > 0 else timeout)

    def _defer_accept(self) -> bool:
        """True: leave the waiting connection to the workers holding fewer for now (the
        sync worker's rule: accept_defer per connection this one holds), and pause
        accepting until then. A stopping worker never defers: it drains its backlog."""
        if not self.alive:
            return False
        now = time.monotonic()
        since = self._deferred_since
        if since is None or now - since > 2 * ACCEPT_DEFER:
            since = self._deferred_since = now  # a new wait; the last one ended elsewhere
        defer = accept_defer(self.nr_conns, self.cfg.workers)
        if now - since >= defer:
            self._deferred_since = None
            return False
        self._accept_paused_until = since + defer
        return True

    def accept(self, listener: socket.socket) -> None:
        if len(self._buffering) >= MAX_BUFFERING or self._defer_accept():
            return
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno in _ACCEPT_EXHAUSTED:
                _exhausted()
                return
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = _Conn(self, self.cfg, client_sock, client_addr, listener.getsockname())
        self._start_buffering(conn, fresh=True)

    def on_client_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        # A kept-alive connection's next request: buffer it like a new one.
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._start_buffering(conn, fresh=False)

    def enqueue_req(self, conn: TConn) -> None:
        # gthread calls this (finish_request) only for bytes its parser read ahead past
        # the request just answered: a pipelined request, which it would parse at once in
        # a thread, blocking on the socket for the rest of it (a client that pipelines
        # half a request held a thread until REQUEST_HEADER_TIMEOUT). It is buffered by
        # the main loop like any other; complete requests go to ThreadWorker.enqueue_req.
        self._start_buffering(conn, fresh=False, ahead=conn.parser.unreader.take_buffered())

    def _start_buffering(self, conn: TConn, fresh: bool, ahead: bytes = b"") -> None:
        limits = self._limits
        now = time.monotonic()
        pending = PendingRequest(
            now + limits.header_timeout, limits.body_timeout, limits.body_limit
        )
        if not fresh:
            pending.idle_deadline = now + min(float(self.cfg.keepalive), limits.header_timeout)
        self._buffering[conn] = pending
        conn.sock.setblocking(False)
        if ahead and self._dispatch_when_done(conn, pending, pending.feed(ahead, now)):
            return
        if not self._on_readable(conn, now) and conn in self._buffering:
            self.poller.register(conn.sock, selectors.EVENT_READ, self._readable_cb(conn))

    def _readable_cb(self, conn: TConn) -> Any:
        def callback(_fileobj: Any) -> None:
            self._on_readable(conn, time.monotonic())

        return callback

    def _on_readable(self, conn: TConn, now: float) -> bool:
        """Read; dispatch when complete. True when the connection left the buffering set."""
        pending = self._buffering[conn]
        done = _recv_into(conn.sock, pending, now)
        if done is None:
            self._close_held(conn, self._buffering)
            return True
        return self._dispatch_when_done(conn, pending, done)

    def _dispatch_when_done(self, conn: TConn, pending: PendingRequest, done: bool) -> bool:
        """After new bytes: dispatch (or refuse) once ``done``. True when the connection
        left the buffering set."""
        if not done:
            if pending.expects_continue:
                _maybe_continue(conn.sock, pending)
            return False
        del self._buffering[conn]
        # Out of the poller here, not after: a refusal's linger registers the socket again.
        with contextlib.suppress(KeyError, ValueError):
            self.poller.unregister(conn.sock)
        if pending.refuse is not None:
            self.nr_conns -= 1
            _refuse(
                conn.sock,
                pending,
                *pending.refuse,
                linger=self.linger,
                cors_origins=self._limits.cors_origins,
            )
            return True
        self._requests[conn.sock] = pending
        reader = getattr(conn, "deadline_reader", None)
        if conn.parser is None or reader is None:
            reader = DeadlineReader(conn.sock, pending.deadline)
            conn.deadline_reader = reader
            conn.parser = http.get_parser(self.cfg, reader, conn.client)
        else:
            reader.deadline = pending.deadline  # the next request on a kept-alive connection
        if pending.chunked_end >= 0 and not _chunked_end_agrees(self.cfg, pending, conn.client):
            # gunicorn's parser will refuse the body while the app reads it: the app's
            # answer then says "Connection: close", as gthread closes the connection.
            pending.unusual = (pending.expects_continue, True)
        conn.parser.unreader.unread(pending.data)  # copied there
        # Kept for handle_error (target, Origin) while the connection lives: its head only.
        del pending.data[pending.header_end :]
        conn.unusual = pending.unusual
        conn.request_complete = pending.complete
        conn.data_ready = True
        self._submit(conn)
        return True

    def _submit(self, conn: TConn) -> None:
        """gthread's ThreadWorker.enqueue_req, keeping each request's future until a
        thread takes it, oldest first, for ``_shed_queued``. Main thread only."""
        conn.queued_at = time.monotonic()
        fs = self.tpool.submit(self.handle, conn)
        # Kept with QUEUE_TIMEOUT=0 too: a stop answers those never started (_leave_cut_off).
        self._queued.pop(conn, None)  # a kept-alive connection's next request: at the end
        self._queued[conn] = fs
        fs.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))

    def _shed_queued(self, now: float) -> None:
        """Answer the requests that have waited ``QUEUE_TIMEOUT`` for a thread, still
        unstarted, with a JSON 503 and ``Retry-After``, from the main loop.

        Overload: every thread held by slow answers (a database slowed to
        DB_STATEMENT_TIMEOUT) left the rest queued with no bound but the client's own
        timeout (measured: reads waited 10-15 s behind held creates). Shed at the queue's
        deadline, not when a thread frees up: that would bound nothing, and would refuse a
        fast read that could be served at once. The cancelled future goes through
        finish_request, which closes the connection."""
        limit = self._limits.queue_timeout
        queued = self._queued
        while queued:  # from the front only: each loop turn costs no walk of the queue
            conn, fs = next(iter(queued.items()))
            if fs.running() or fs.done():
                del queued[conn]  # a thread has it: WORKER_TIMEOUT's business now
                continue
            if not limit or now - conn.queued_at < limit:
                break  # oldest first: the rest waited less (QUEUE_TIMEOUT=0: none is shed)
            del queued[conn]
            if not fs.cancel():  # started meanwhile: a thread has the socket
                continue
            pending = self._requests.get(conn.sock)
            if _client_gone(conn.sock):
                # Its client gave up while it waited: a 499, as handle_request counts one,
                # not a 503 sent to nobody that would inflate the overload's refusals.
                _dropped_client_gone(pending)
                continue
            _shed_overdue(conn.sock, pending, now - conn.queued_at, self._cors_origins)

    def _close_held(self, conn: TConn, held: dict[TConn, Any]) -> None:
        """Close a connection the main loop holds: being read (``_buffering``), or its
        answer being sent (``_outbound``)."""
        held.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError):
            self.poller.unregister(conn.sock)
        self.nr_conns -= 1
        conn.close()

    def linger(self, sock: socket.socket) -> None:
        # Runs on the main thread (finish_request). Counted as a connection, so a stopping
        # worker waits for it (at most LINGER seconds) before closing everything.
        def register(s: socket.socket) -> None:
            self.nr_conns += 1
            self.poller.register(s, selectors.EVENT_READ, self._linger_readable)

        self._lingering.start(sock, register)

    def _linger_readable(self, sock: socket.socket) -> None:
        if sock in self._lingering.socks:
            self._lingering.readable(sock, self._linger_unregister)

    def _linger_unregister(self, sock: socket.socket) -> None:
        self.nr_conns -= 1
        self.poller.unregister(sock)

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        if self._queued:
            self._shed_queued(now)
        if self._running and now >= self._next_overdue_check:
            self._next_overdue_check = now + OVERDUE_CHECK_EVERY
            self._abort_overdue(now)
        for conn, (answer, _) in list(self._outbound.items()):
            if answer.stalled(now, self._limits.send_timeout):
                self._close_held(conn, self._outbound)
        self._lingering.expire(now, self._linger_unregister)
        for conn, pending in list(self._buffering.items()):
            state = pending.expired(now)
            if state is None:
                continue
            self._buffering.pop(conn, None)
            with contextlib.suppress(KeyError, ValueError):
                self.poller.unregister(conn.sock)
            self.nr_conns -= 1
            if state == "idle":
                conn.close()
            else:
                _refuse(
                    conn.sock,
                    pending,
                    408,
                    ReadTimeout.description,
                    linger=self.linger,
                    cors_origins=self._limits.cors_origins,
                )

    def _abort_overdue(self, now: float) -> None:
        """Answer a request its thread has held past WORKER_TIMEOUT with the sync worker's
        500, from the main loop, and stop this worker so the master replaces it.

        gthread's main loop heartbeats while a thread is stuck, so the master never times
        the worker out, and a thread cannot be stopped from outside. The connection is
        taken from the thread first: its descriptor is made a socket whose peer is closed
        (dup2 is atomic), so whatever the thread writes later fails (EPIPE), and the 500
        goes out on a duplicate only if nothing of the thread's answer had started
        (``on_the_wire`` is set before a send). The other threads' requests and answers
        are finished as at SIGTERM; the worker's exit ends the stuck thread."""
        limit = float(self.cfg.timeout)
        if limit <= 0:
            return
        for conn, (started, resp, environ, thread) in list(self._running.items()):
            if now - started < limit or conn.aborted:
                continue
            conn.aborted = True
            self.nr_conns -= 1
            client = None if resp.on_the_wire else self._take_from_thread(conn)
            # A thread stuck on SQLite's write lock has no socket to shut down: its
            # repository rolls back instead of committing. Not if it has left the app
            # meanwhile (it forgets its ident as it leaves, handle_request): a later
            # request on that thread must commit. Before the shut-down below: the app
            # tells the error it wakes the thread with from a database outage by this set.
            self._aborted_threads.add(thread)
            if conn not in self._running:
                self._aborted_threads.discard(thread)
            # Its database connections, after its client (the thread, woken by the error,
            # must find its client gone): the thread may be waiting on its database, and
            # must not commit after its client is told 500, as the worker finishes the
            # other threads' answers before it exits, and a backend that resumed meanwhile
            # let it finish the create. A COMMIT the database already has cannot be taken
            # back.
            self._checked_out.shut_down(thread)
            # Its access line and request count too, which the thread will never write.
            try:
                self._answer_timeout_abort(
                    resp, client, conn.client, environ, self._requests.get(conn.sock)
                )
            finally:
                if client is not None:
                    client.close()
            if self.alive:
                log.warning(
                    "stopping the worker: a thread is held by a request past WORKER_TIMEOUT; "
                    "the master starts another"
                )
                self.alive = False

    @staticmethod
    def _take_from_thread(conn: TConn) -> socket.socket | None:
        """The client connection of a stuck thread's request, on a new descriptor; the
        thread's own descriptor now names a socket whose peer is closed. None when the
        thread has closed it (its descriptor may already be another connection's)."""
        fd = conn.sock.fileno()
        if fd < 0:
            return None
        try:
            client = socket.socket(fileno=os.dup(fd))
        except OSError:
            return None
        try:
            same = client.getpeername() == conn.client
        except OSError:
            same = False
        if not same:
            client.close()
            return None
        dead, peer = socket.socketpair()
        peer.close()
        os.dup2(dead.fileno(), fd)
        dead.close()
        return client

    def _request_of(self, client: Any) -> PendingRequest | None:
        return self._requests.get(client)

    def _keepalive_after(self, conn: TConn, keepalive: bool) -> bool:
        # gthread drains an unread body before reusing the connection; with our reader a
        # stalled client ends that drain with ReadTimeout, which must close the
        # connection quietly (the response is already sent), not answer a second time.
        try:
            return bool(super()._keepalive_after(conn, keepalive))
        except ReadTimeout:
            return False

    def handle_request(self, req: Any, conn: TConn) -> bool:
        """gthread's ThreadWorker.handle_request (gunicorn 27), answered by ``_answer``."""
        started = time.monotonic()
        queued_at = getattr(conn, "queued_at", None)
        waited = 0.0 if queued_at is None else started - queued_at
        if waited >= SLOW_ANSWER and _client_gone(conn.sock):
            # Every thread was held by slow answers while this request waited, and its
            # client gave up meanwhile: dropped unserved, as the sync worker does. Checked
            # only after such a wait: one more syscall per request otherwise.
            _dropped_client_gone(self._requests.get(conn.sock))
            return False
        unusual = getattr(conn, "unusual", None)
        if unusual is not None:
            unusual_request(req, unusual)
        unsent: list[memoryview] = []
        conn.unsent = unsent

        def build() -> tuple[CoalescingResponse, dict[str, Any]]:
            resp, environ = wsgi.create(
                req,
                conn.sock,
                conn.client,
                conn.server,
                self.cfg,
                CoalescingResponse,
                (self._date, unsent),
            )
            environ["wsgi.multithread"] = True
            running[conn] = (started, resp, environ, threading.get_ident())
            return resp, environ

        # The 100th answer closes the connection, as the sync worker's: the client's
        # reconnect lands on the worker holding fewer (ACCEPT_DEFER_PER_CONNECTION).
        conn.served = served = conn.served + 1
        keep_alive = (
            self.alive
            and bool(self.cfg.keepalive)
            and len(self.keepalived_conns) < self.max_keepalived
            and served < KEEPALIVE_REQUESTS
        )
        running = self._running
        try:
            return _answer(self, req, conn.sock, unsent, build, keep_alive)
        finally:
            running.pop(conn, None)
            if self._aborted_threads:  # its request aborted: its next one may commit
                self._aborted_threads.discard(threading.get_ident())

    def set_accept_enabled(self, enabled: bool) -> None:
        if not enabled and not self.alive and not self._drained and not self._aborting:
            # Stopping: take what is queued in the backlog before closing our listener
            # copies (the master has closed its own), so the kernel resets none of it.
            self._drained = True
            taken = 0
            for listener in self.sockets:
                while taken < MAX_BACKLOG_DRAIN:
                    before = self.nr_conns
                    try:
                        listener.setblocking(False)
                        self.accept(listener)
                    except OSError:
                        break
                    if self.nr_conns == before:
                        break
                    taken += 1
            now = time.monotonic()
            linger = now + STOP_IDLE_LINGER
            for pending in self._buffering.values():
                pending.idle_deadline = min(pending.idle_deadline, linger)
            # Idle kept-alive connections are closed at once, after one more read in case
            # their next request has just arrived (gthread's loop then polls without
            # waiting), as the sync worker does. gthread kept them STOP_KEEPALIVE_LINGER
            # (2 s), so a server with a proxy's idle pooled connections took 2 s to stop.
            # Setting all to the same time keeps the deque sorted by timeout.
            for conn in self.keepalived_conns:
                conn.timeout = min(conn.timeout, now)
        super().set_accept_enabled(enabled)


def worker_class_for(threads: int) -> str:
    """The ``worker_class`` gunicorn_conf selects: sync semantics or a thread pool."""
    name = "BufferedThreadWorker" if threads > 1 else "BufferedSyncWorker"
    return f"{__name__}.{name}"


__all__ = [
    "BufferedSyncWorker",
    "BufferedThreadWorker",
    "app_services",
    "comments_app",
    "error_document",
    "worker_class_for",
]
