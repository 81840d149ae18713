"""``DATABASE_URL_FILE`` followed for new PostgreSQL connections: a rotated password needs
no restart.

RDS rotates its master password on a schedule, and Kubernetes updates a mounted Secret in
place (External Secrets refreshes it, the kubelet swaps the files). Open connections keep
working after a rotation; new ones need the new password. So every new connection looks at
the file first (one ``stat``; it is read again only when it changed) and connects with the
user and password it holds now. Anything else in the URL (driver, host, port, database,
options) is not followed: pooled connections to one server and new ones to another would
split a worker's writes, so that change is refused in the log and needs a restart.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError

from ..settings import POOLER_OPTION

log = logging.getLogger(__name__)


class UrlFile:
    """The URL in ``path``, read again when the file changes (inode, size or mtime)."""

    def __init__(self, path: str, url: URL, pooler: str | None = None) -> None:
        self.path = path
        self.url = url
        # ?pooler=, which make_engine read and left out of ``url``: a change of it is
        # one more change that needs a restart.
        self.pooler = pooler
        self._stamp: tuple[int, int, int] | None = None  # first connection: read again

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            found = os.stat(self.path)  # follows the Secret volume's symlinks
        except OSError:
            return None
        return (found.st_ino, found.st_size, found.st_mtime_ns)

    def current(self) -> URL:
        """The URL to connect with now: the file's, if only its credentials changed."""
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return self.url  # unchanged, or briefly missing while the volume is updated
        try:
            text = Path(self.path).read_text(encoding="utf-8-sig").strip()  # as Settings
            fresh = make_url(text)
        except (OSError, UnicodeDecodeError, ArgumentError, ValueError):
            log.error("DATABASE_URL_FILE: unreadable after a change; connecting as before")
            return self.url
        self._stamp = stamp
        pooler = fresh.query.get(POOLER_OPTION)
        fresh = fresh.difference_update_query([POOLER_OPTION])  # as make_engine's URL
        if pooler != self.pooler or _without_credentials(fresh) != _without_credentials(self.url):
            log.error(
                "DATABASE_URL_FILE changed more than the user and password (driver, host, "
                "port, database, options or ?pooler=); restart to apply it; connecting as before"
            )
            return self.url
        if fresh != self.url:
            log.info("DATABASE_URL_FILE: new credentials, used from the next new connection")
            self.url = fresh
        return self.url


def _without_credentials(url: URL) -> URL:
    return url._replace(username=None, password=None)


def follow_url_file(engine: Engine, path: str, pooler: str | None = None) -> None:
    """Make ``engine``'s new connections use the credentials currently in ``path``
    (``pooler``: the ``?pooler=`` it was made with, which its URL no longer holds)."""
    follower = UrlFile(path, engine.url, pooler)
    started_with = engine.url

    @event.listens_for(engine, "do_connect")
    def _connect_with_current(
        dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]
    ) -> None:
        url = follower.current()
        if url is started_with:
            return
        # Only the credentials: current() refuses any other change. Taking every key the
        # dialect derives from the URL replaced the merged connect_args too: a URL's
        # `options` came back without DB_STATEMENT_TIMEOUT's statement_timeout.
        _, params = dialect.create_connect_args(url)
        for key in ("user", "password"):
            if key in params:
                cparams[key] = params[key]
            else:
                cparams.pop(key, None)
