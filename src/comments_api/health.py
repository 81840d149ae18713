"""Readiness: should this process get traffic? Plain Python, no Flask (web/ops.py renders it).

Liveness (/healthz) needs no service: the process answering is the whole check.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from time import monotonic

from sqlalchemy.exc import SQLAlchemyError

from .store.repository import SQLITE_WAL_SIZE_LIMIT, Repository

# Below this much free space on the SQLite volume a write may fail at any moment: the WAL
# alone may grow to 1 MiB before it is folded back (store/repository.py).
MIN_FREE_BYTES = 2 * SQLITE_WAL_SIZE_LIMIT
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str = ""  # why not, for the operator (and the probe's log)
    schema_revision: str | None = None


@dataclass
class _Check:
    """One readiness check running in its own thread, shared by the callers meanwhile."""

    pid: int
    started: float
    finished: threading.Event = field(default_factory=threading.Event)
    result: Readiness = Readiness(False, "database not answering")
    error: BaseException | None = None


class HealthService:
    def __init__(
        self,
        repo: Repository,
        expected_revision: str,
        drain_file: str | None,
        older_revisions: frozenset[str] = frozenset(),
        timeout: float = 5.0,
        give_up_after: float = 30.0,
    ) -> None:
        self.repo = repo
        self.expected_revision = expected_revision
        # This code's migrations before its own: a database at one of them is behind. Any
        # other revision is a newer release's migration (expand/contract keeps this code
        # working on it), which must not take this release out of service: during a rollout
        # the previous pods serve on the new schema, and after `rollout undo` they must turn
        # ready on it again (docs/deployment.md, "Migrations: expand, then contract").
        self.older_revisions = older_revisions
        self._ahead_logged: str | None = None
        # Created by the server on SIGTERM: readiness turns off before the drain.
        self.drain_file = drain_file
        # A database that stops answering (a frozen host: its kernel still acknowledges,
        # so neither statement_timeout, TCP keepalives nor tcp_user_timeout end the wait)
        # held each probe and scrape until WORKER_TIMEOUT, then a 500: /metrics went dark
        # (CommentsApiDown, which holds back the database alerts) and every probe cost a
        # worker. The check runs in its own thread, answered "not answering" past
        # ``timeout`` (DB_STATEMENT_TIMEOUT); callers meanwhile share that one check, so a
        # stuck database holds one connection per worker (two with one left behind, below),
        # not one per probe.
        self.timeout = timeout
        # A check that never ends (its one backend frozen while the rest of the database
        # answers) held every later probe to "not answering": the instance stayed out of
        # service for good while it could serve (a probe held to WORKER_TIMEOUT, as before,
        # got its worker replaced). Past ``give_up_after`` (WORKER_TIMEOUT) it is left
        # behind, one at a time, and the next probe checks again on another connection.
        self.give_up_after = give_up_after
        self._lock = threading.Lock()
        # A check started before a fork never ends in the child: each is the pid's.
        self._pending: _Check | None = None
        self._left_behind: _Check | None = None

    def readiness(self) -> Readiness:
        """Draining? Database reachable, its volume not full, its schema the one this code
        expects? Answered within ``timeout``."""
        if self.drain_file and os.path.exists(self.drain_file):
            return Readiness(False, "shutting down")
        with self._lock:
            check = self._pending
            if (
                check is None
                or check.pid != os.getpid()
                or check.finished.is_set()
                or self._leave_behind(check)
            ):
                check = self._pending = _Check(os.getpid(), monotonic())
                threading.Thread(
                    target=self._run, args=(check,), name="readiness", daemon=True
                ).start()
        if not check.finished.wait(max(0.0, check.started + self.timeout - monotonic())):
            log.warning("readiness: database not answering within %gs", self.timeout)
            return Readiness(False, "database not answering")
        if check.error is not None:  # the caller's to raise, as it did in its own thread
            raise check.error
        return check.result

    def _leave_behind(self, check: _Check) -> bool:
        """Whether to start another check in place of ``check``, stuck past
        ``give_up_after``: not while one left behind before still runs, so a database that
        is frozen whole holds two connections and threads per worker, not one per probe."""
        if monotonic() - check.started < self.give_up_after:
            return False
        left = self._left_behind
        if left is not None and left.pid == check.pid and not left.finished.is_set():
            return False
        self._left_behind = check
        log.warning(
            "readiness: a check stuck for %gs left behind; checking again", self.give_up_after
        )
        return True

    def _run(self, check: _Check) -> None:
        try:
            check.result = self._check()
        except BaseException as exc:
            check.error = exc
        finally:
            check.finished.set()

    def _check(self) -> Readiness:
        try:
            revision = self.repo.schema_revision()
        except SQLAlchemyError as exc:
            # Not in comments_api_database_errors_total, which counts refused requests: one
            # per probe would count the probe interval, and comments_api_ready says this.
            log.warning("readiness: database unreachable: %s", exc.__class__.__name__)
            return Readiness(False, "database unreachable")
        free = self.repo.free_bytes()
        if free is not None and free < MIN_FREE_BYTES:
            log.warning("readiness: database volume full (%d bytes free)", free)
            return Readiness(
                False, "the database volume is full; writes fail until space is freed on it"
            )
        if revision != self.expected_revision:
            if revision is None or revision in self.older_revisions:
                return Readiness(
                    False,
                    f"database schema is at {revision or 'no revision'}, "
                    f"this code needs {self.expected_revision}; run `comments-api migrate`",
                )
            if self._ahead_logged != revision:  # once per revision, not every probe
                self._ahead_logged = revision
                log.info(
                    "readiness: database schema %s is ahead of this code's %s; serving "
                    "(migrations expand first)",
                    revision,
                    self.expected_revision,
                )
        return Readiness(True, schema_revision=revision)
