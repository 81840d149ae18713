"""The common request, turned into a WSGI environ without gunicorn's general parser.

The buffered workers (worker.py) hold every request in full before the application sees
it. Most are plain: an origin-form target, HTTP/1.1 or 1.0, a few ordinary header fields,
no body or a ``Content-Length`` one. For those, this module builds the environ straight
from the buffer: gunicorn's parser (re-reading the buffer through its unreader, header
policy, body reader) and ``wsgi.create`` cost ~11 % of a worker's CPU on a cached list
request (py-spy, bench/README.md). Anything else - a chunked body, ``Expect``,
``Upgrade``, a scheme or forwarding header, an underscore in a field name, obs-fold,
repeated fields, bytes outside printable ASCII, other targets or versions, more fields than
gunicorn allows - is declined (``None``) and gunicorn's parser handles it exactly as
before, errors included. Declining is always safe; accepting must give the environ
gunicorn would give (tests/test_lean_requests.py compares the two on generated requests).
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from typing import Any

from gunicorn import SERVER_SOFTWARE, util
from gunicorn.http.wsgi import FileWrapper, WSGIErrorsWrapper

# Uppercase only, 3-20 characters: gunicorn's default method rule, stricter than a token.
_METHOD = re.compile(rb"[A-Z]{3,20}")
# Origin-form, printable ASCII, no fragment, not "//..." (gunicorn re-splits those).
_TARGET = re.compile(rb"/(?!/)[!-\"$-~]*")
# An RFC 9110 token without "_": gunicorn drops underscored fields, so leave those to it.
_NAME = re.compile(rb"[!#$%&'*+\-.^`|~0-9A-Za-z]+")
# Visible ASCII, space and tab; gunicorn strips spaces and tabs at both ends.
_VALUE = re.compile(rb"[\t -~]*")
_LINE = re.compile(rb"(" + _METHOD.pattern + rb") (" + _TARGET.pattern + rb") HTTP/1\.([01])")
# Fields gunicorn acts on beyond copying them into the environ.
_ITS_OWN = frozenset({b"TRANSFER-ENCODING", b"EXPECT", b"UPGRADE", b"HTTP2-SETTINGS"})


@dataclass(frozen=True, slots=True)
class LeanRequest:
    """What gunicorn's response writer and hooks read from a request."""

    method: str
    uri: str
    path: str
    version: tuple[int, int]
    connection: str | None  # the first Connection field's value, lowercased

    def should_close(self) -> bool:
        # gunicorn's Request.should_close for a request this module accepted, except that
        # "close" among other options (Connection: TE, close) closes too (RFC 9112 9.6),
        # as the worker makes gunicorn's parser do (worker.unusual_request).
        connection = self.connection
        if connection is None:
            return self.version <= (1, 0)
        if connection == "close":
            return True
        if connection == "keep-alive":
            return False
        if "close" in (token.strip(" \t") for token in connection.split(",")):
            return True
        return self.version <= (1, 0)


@dataclass
class LeanReader:
    """Builds environs for one worker; ``cfg`` is gunicorn's config."""

    cfg: Any
    enabled: bool = field(init=False)
    _theirs: frozenset[bytes] = field(init=False)
    _base: dict[str, Any] = field(init=False)
    _servers: dict[int, tuple[str, str]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        cfg = self.cfg
        # Only under the settings gunicorn_conf.py gives; anything else: gunicorn decides.
        self.enabled = (
            not cfg.is_ssl
            and cfg.proxy_protocol == "off"
            and cfg.header_map == "drop"
            and not cfg.strip_header_spaces
            and not cfg.permit_obsolete_folding
            and not cfg.casefold_http_method
            and not os.environ.get("SCRIPT_NAME")
        )
        scheme = {name.upper().encode("latin-1") for name in cfg.secure_scheme_headers}
        self._theirs = _ITS_OWN | scheme | {b"FORWARDED"}
        self._base = {
            "wsgi.errors": WSGIErrorsWrapper(cfg),
            "wsgi.version": (1, 0),
            "wsgi.multithread": False,
            "wsgi.multiprocess": cfg.workers > 1,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
            "wsgi.url_scheme": "http",
            "SCRIPT_NAME": "",
        }

    def read(
        self,
        data: bytes | bytearray,
        header_end: int,
        content_length: int,
        sock: Any,
        peer: Any,
        listener: Any,
    ) -> tuple[LeanRequest, dict[str, Any]] | None:
        """The request in ``data[:header_end + content_length]``, or None: gunicorn's."""
        if not self.enabled or not isinstance(peer, tuple):
            return None
        head = bytes(data[: header_end - 4])
        lines = head.split(b"\r\n")
        match = _LINE.fullmatch(lines[0])
        if match is None:
            return None
        fields = lines[1:]
        if len(fields) > self.cfg.limit_request_fields:
            return None
        method_b, target_b, minor = match.groups()
        environ = dict(self._base)
        seen: set[bytes] = set()
        connection: str | None = None
        limit = self.cfg.limit_request_field_size
        for line in fields:
            name, colon, value = line.partition(b":")
            if not colon or len(line) + 2 > limit or _NAME.fullmatch(name) is None:
                return None
            upper = name.upper()
            if upper in seen or upper in self._theirs:
                return None
            seen.add(upper)
            if _VALUE.fullmatch(value) is None:
                return None
            text = value.strip(b" \t").decode("ascii")
            if upper == b"CONTENT-TYPE":
                environ["CONTENT_TYPE"] = text
            elif upper == b"CONTENT-LENGTH":
                if not text.isdigit() or int(text) != content_length:
                    return None
                environ["CONTENT_LENGTH"] = text
            else:
                if upper == b"CONNECTION":
                    connection = text.lower()
                environ["HTTP_" + upper.decode("ascii").replace("-", "_")] = text
        if content_length and b"CONTENT-LENGTH" not in seen:
            return None
        uri = target_b.decode("ascii")
        path, _, query = uri.partition("?")
        method = method_b.decode("ascii")
        version = (1, int(minor))
        server = self._server(listener)
        if server is None:
            return None
        body = bytes(data[header_end : header_end + content_length])
        environ.update(
            {
                "wsgi.input": io.BytesIO(body),
                "gunicorn.socket": sock,
                "REQUEST_METHOD": method,
                "QUERY_STRING": query,
                "RAW_URI": uri,
                "SERVER_PROTOCOL": f"HTTP/1.{minor.decode('ascii')}",
                "REMOTE_ADDR": peer[0],
                "REMOTE_PORT": str(peer[1]),
                "SERVER_NAME": server[0],
                "SERVER_PORT": server[1],
                "PATH_INFO": util.unquote_to_wsgi_str(path),
            }
        )
        return LeanRequest(method, uri, path, version, connection), environ

    def _server(self, listener: Any) -> tuple[str, str] | None:
        key = listener.fileno()
        server = self._servers.get(key)
        if server is None:
            name = listener.getsockname()
            if not isinstance(name, tuple):
                return None  # a unix socket: gunicorn derives these from Host
            server = self._servers[key] = (str(name[0]), str(name[1]))
        return server
