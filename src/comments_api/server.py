"""Runs gunicorn in-process with podinfo's shutdown order: readiness off, pause, drain."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from .liveness import LivenessListener
from .processes import stop_signals_blocked
from .settings import Settings, SettingsError

log = logging.getLogger(__name__)


class DrainingArbiter(Arbiter):  # type: ignore[misc]
    """On the first SIGTERM, report not-ready and keep serving for ``shutdown_delay``.

    Kubernetes removes a pod from Service endpoints only after readiness fails, so
    stopping at once would drop the requests still routed to it.
    """

    def __init__(
        self, app: Any, drain_file: str, delay: float, liveness: tuple[str, int] | None = None
    ) -> None:
        super().__init__(app)
        self.drain_file = drain_file
        self.delay = delay
        self.draining = False
        self.liveness = liveness  # (host, port) of the master's own /healthz, or None
        self.last_turn = time.monotonic()
        self.stopping = False

    def start(self) -> None:
        super().start()
        if self.liveness is not None:
            host, port = self.liveness
            try:
                listener = LivenessListener(
                    host, port, lambda: self.last_turn, lambda: self.stopping
                )
            except OSError as exc:
                raise SettingsError(
                    f"LIVENESS_PORT: cannot listen on {host}:{port}: {exc.strerror or exc}"
                ) from None
            listener.start()
            shown = f"[{host}]" if ":" in host else host
            self.log.info("Liveness at: http://%s:%d/healthz (master)", shown, listener.port)

    def murder_workers(self) -> None:
        # Once per turn of the master's loop: the liveness listener's sign of life.
        self.last_turn = time.monotonic()
        super().murder_workers()

    def stop(self, graceful: bool = True) -> None:
        self.stopping = True
        super().stop(graceful)

    def kill_workers(self, sig: int) -> None:
        if sig == signal.SIGKILL and self.stopping:
            self._report_cut_off()
        super().kill_workers(sig)

    def _report_cut_off(self) -> None:
        """A stop whose GRACEFUL_TIMEOUT ran out: the workers still running are SIGKILLed,
        and the requests they hold get their connections closed without an answer. No
        scrape can count them (the listener closed when the stop began), so say it here,
        once, as an error line: the one trace they leave."""
        self.reap_workers()  # a worker that left at the deadline is not cut off
        pids = sorted(self.WORKERS)
        if not pids:
            return
        from .telemetry.metrics import requests_in_flight_of

        counts = [requests_in_flight_of(pid) for pid in pids]
        known = [count for count in counts if count is not None]
        log.error(
            "stop: GRACEFUL_TIMEOUT ran out; killing %d worker(s) with %s request(s) still "
            "in the app, whose clients get their connection closed without an answer "
            "(counted in no metric: the listener is closed)",
            len(pids),
            sum(known) if known else "an unknown number of",
            extra={
                "workers": len(pids),
                "in_flight": sum(known) if known else None,
                "graceful_timeout": self.cfg.graceful_timeout,
            },
        )

    def spawn_worker(self) -> int:
        # Fork with the stop signals blocked: the child keeps them blocked until its own
        # handlers are in place (gunicorn_conf.post_worker_init), the master gets any
        # that came meanwhile as soon as the fork returns.
        with stop_signals_blocked():
            return int(super().spawn_worker())

    def handle_term(self) -> None:
        if self.draining or self.delay <= 0:
            super().handle_term()
            return
        self.draining = True
        try:
            # The directory is recreated if something removed it: whatever happened to the
            # workers before, the master must still drain rather than crash here.
            os.makedirs(os.path.dirname(self.drain_file), mode=0o700, exist_ok=True)
            with open(self.drain_file, "w", encoding="utf-8"):
                pass
        except OSError as exc:
            log.error("cannot write the drain file (%s); draining anyway", exc.__class__.__name__)
        log.info("SIGTERM: readiness off, draining in %.1fs", self.delay)
        # The second SIGTERM is the real one: gunicorn's graceful stop.
        timer = threading.Timer(self.delay, os.kill, (os.getpid(), signal.SIGTERM))
        timer.daemon = True
        timer.start()


class CommentsGunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, drain_file: str) -> None:
        self.settings = settings
        self.drain_file = drain_file
        super().__init__()

    def load_config(self) -> None:
        from . import gunicorn_conf

        for key in dir(gunicorn_conf):
            if key in self.cfg.settings and not key.startswith("_"):
                self.cfg.set(key, getattr(gunicorn_conf, key))

    def load(self) -> Any:
        from .app import create_app

        return create_app(self.settings)

    def run(self) -> None:
        port = self.settings.liveness_port
        liveness = (self.settings.host, port) if port else None
        DrainingArbiter(self, self.drain_file, self.settings.shutdown_delay, liveness).run()


RUNTIME_PREFIX = "comments-api-"
OWNER_LOCK = "owner.lock"


def make_runtime_dir(parent: str | None = None) -> tuple[str, int]:
    """A private directory for this server (drain file, metrics), owned by a lock.

    The returned descriptor holds an exclusive ``flock`` on ``owner.lock`` inside it.
    Forked workers inherit it, so the lock is released only when the master and every
    worker are gone, whatever killed them (SIGKILL included): that is how the next start
    tells a stale directory from a live one, without trusting reusable PIDs.
    """
    clean_stale_runtime_dirs(parent)
    path = tempfile.mkdtemp(prefix=f"{RUNTIME_PREFIX}{os.getpid()}-", dir=parent)
    # Lock a file under a temporary name, then rename it into place: a concurrent start
    # never sees an unlocked owner.lock in a live directory.
    staging = os.path.join(path, ".owner.lock.new")
    fd = os.open(staging, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"{os.getpid()}\n".encode())
    os.rename(staging, os.path.join(path, OWNER_LOCK))
    return path, fd


def clean_stale_runtime_dirs(parent: str | None = None) -> list[str]:
    """Remove runtime directories whose owner lock is free (their server is gone).

    Only directories of this user that carry an ``owner.lock`` are candidates; anything
    else (another user's, an older version's without a lock) is left alone.
    """
    parent = parent or tempfile.gettempdir()
    removed: list[str] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(RUNTIME_PREFIX):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if entry.stat(follow_symlinks=False).st_uid != os.geteuid():
                continue
            fd = os.open(
                os.path.join(entry.path, OWNER_LOCK), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
            )
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # held: its server (master or an orphaned worker) still runs
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
        finally:
            os.close(fd)
    if removed:
        log.info(
            "removed %d stale runtime director%s", len(removed), "y" if len(removed) == 1 else "ies"
        )
    return removed


def _leave_worker(code: object) -> None:
    """End a forked worker without the interpreter's teardown.

    gunicorn ends a worker with sys.exit() once it has finished its requests and run its
    exit hooks; what is left is freeing the preloaded app object by object, which took
    1-3 s per worker on a loaded 2-core machine and delayed every reload and shutdown.
    A forked child owns nothing the master still needs, so, like multiprocessing's
    children, it flushes its logs and leaves with the same exit status.
    """
    status = 0 if code is None else code if isinstance(code, int) else 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def run_gunicorn(settings: Settings) -> None:
    from .app import DRAIN_FILE_ENV

    master_pid = os.getpid()
    if settings.threads > settings.db_pool_size:
        # Each worker thread holds one connection for its request: a smaller pool would
        # queue requests behind DB_POOL_TIMEOUT instead of behind the database.
        log.info("DB_POOL_SIZE raised to THREADS (%d)", settings.threads)
        settings = dataclasses.replace(settings, db_pool_size=settings.threads)
    runtime_dir, lock_fd = make_runtime_dir()
    drain_file = os.path.join(runtime_dir, "draining")
    os.environ[DRAIN_FILE_ENV] = drain_file
    if settings.metrics_enabled:
        # Before the app (and prometheus_client) is loaded in the master: workers then
        # share one metrics directory, emptied of any previous run's files.
        from .telemetry import prepare_multiproc_dir
        from .telemetry.metrics import ForeignFilesError

        try:
            prepare_multiproc_dir(settings.prometheus_multiproc_dir, runtime_dir)
        except ForeignFilesError as exc:
            raise SettingsError(str(exc)) from None
        except OSError as exc:
            raise SettingsError(
                f"PROMETHEUS_MULTIPROC_DIR: cannot use {exc.filename or runtime_dir}: "
                f"{exc.strerror or exc}"
            ) from None
    try:
        CommentsGunicorn(settings, drain_file).run()
    except SystemExit as exc:
        if os.getpid() != master_pid:
            _leave_worker(exc.code)
        raise
    finally:
        # Workers are forked inside run() and leave through here too (gunicorn ends a
        # worker with sys.exit): only the master may remove what every worker shares.
        if os.getpid() == master_pid:
            shutil.rmtree(runtime_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.close(lock_fd)
