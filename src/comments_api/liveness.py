"""Liveness answered by the gunicorn master, on a port of its own (``LIVENESS_PORT``).

A sync worker answers one request at a time, so the workers' ``/healthz`` waits in the
queue behind every request accepted before it. Under a database slow for
``DB_STATEMENT_TIMEOUT``, with clients still waiting, the kubelet's probe timed out there
and a pod that would have recovered was restarted. The master serves no requests: its loop
reaps dead workers, replaces them and kills hung ones (``WORKER_TIMEOUT``). While that loop
turns, the workers are looked after, which is what a liveness probe asks. A thread of the
master answers ``GET /healthz`` here: 200 while the loop has turned within ``STALE_AFTER``
seconds or the server is stopping, 503 when the loop is stuck.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable

from . import __version__
from .contract.problems import status_title
from .worker import error_document

# The master's loop wakes at least once a second; a reload's forks take a few more.
STALE_AFTER = 10.0
# A probe sends its request at once; a client that does not is cut off, not waited for.
READ_TIMEOUT = 1.0
MAX_REQUEST_HEAD = 8192


class LivenessListener:
    """``GET /healthz`` (and ``HEAD``) on ``host:port``, answered from a daemon thread.

    ``last_turn`` gives the ``time.monotonic()`` of the master loop's latest turn;
    ``stopping`` says whether a stop was asked for (the loop then waits for the workers and
    does not turn, and restarting the pod would help nothing)."""

    def __init__(
        self,
        host: str,
        port: int,
        last_turn: Callable[[], float],
        stopping: Callable[[], bool],
        stale_after: float = STALE_AFTER,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # Bound in the caller, so a port in use fails the start with a clear error. Not
        # socket.create_server: it makes IPv6 sockets IPv6-only, where gunicorn (and so
        # PORT) keeps the system's default (`::` also takes IPv4; `::ffff:a.b.c.d` binds).
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((host, port))
            self._sock.listen(16)
        except OSError:
            self._sock.close()
            raise
        self.port = self._sock.getsockname()[1]
        self._last_turn = last_turn
        self._stopping = stopping
        self._stale_after = stale_after
        # A forked worker gets a copy of the descriptor; it must not keep the port open
        # after the master is gone.
        os.register_at_fork(after_in_child=_close_in_child(weakref.ref(self)))

    def start(self) -> None:
        threading.Thread(target=self._serve, name="liveness", daemon=True).start()

    def close(self) -> None:
        """Stop serving: the thread in accept() ends and the port refuses connections.

        close() alone leaves a thread blocked in accept() on Linux, the port still
        answering. Only the owner may shut the socket down: a forked child's copy shares
        it, so children only drop their descriptor (``release_descriptor``)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def release_descriptor(self) -> None:
        self._sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            # A prober that gave up, sent nothing or trickles costs READ_TIMEOUT at most;
            # the next is served.
            with conn, contextlib.suppress(OSError):
                request_line = _read_request_line(conn, time.monotonic() + READ_TIMEOUT)
                conn.settimeout(READ_TIMEOUT)
                conn.sendall(self._answer(request_line))

    def _answer(self, request_line: bytes) -> bytes:
        method, _, rest = request_line.partition(b" ")
        target = rest.partition(b" ")[0].partition(b"?")[0]
        head = method == b"HEAD"
        if target != b"/healthz":
            problem = error_document(404, "Only /healthz is served here.", None)
            return _response(404, *problem, head=head)
        if method not in (b"GET", b"HEAD"):
            problem = error_document(405, "/healthz here answers GET and HEAD.", None)
            return _response(405, *problem, head=head, extra="Allow: GET, HEAD")
        stale = time.monotonic() - self._last_turn()
        if stale > self._stale_after and not self._stopping():
            status = 503
            document = {"status": "unavailable", "reason": f"master loop stuck for {stale:.0f}s"}
        else:
            status, document = 200, {"status": "ok", "version": __version__}
        body = json.dumps(document, separators=(",", ":")).encode()
        return _response(status, "application/json", body, head=head)


def _read_request_line(conn: socket.socket, deadline: float) -> bytes:
    """The request line, once the whole head has arrived: closing with part of it unread
    would reset the connection, and the prober could lose the answer. By ``deadline``
    (``time.monotonic()``) for the whole head, else TimeoutError: a timeout per read let a
    client sending a byte a second hold this thread, and every probe queued behind it, for
    up to MAX_REQUEST_HEAD seconds (three timed-out kubelet probes restart the pod)."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < MAX_REQUEST_HEAD:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request head took too long")
        conn.settimeout(remaining)
        chunk = conn.recv(MAX_REQUEST_HEAD)
        if not chunk:
            break
        data += chunk
    return data.partition(b"\r\n")[0]


def _response(
    status: int, content_type: str, body: bytes, head: bool = False, extra: str | None = None
) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {status_title(status)}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else body)


def _close_in_child(listener: weakref.ref[LivenessListener]) -> Callable[[], None]:
    def close() -> None:
        live = listener()
        if live is not None:
            live.release_descriptor()

    return close
