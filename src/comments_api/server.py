"""Runs gunicorn in-process with podinfo's shutdown order: readiness off, pause, drain."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import threading
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from .settings import Settings

log = logging.getLogger(__name__)


class DrainingArbiter(Arbiter):  # type: ignore[misc]
    """On the first SIGTERM, report not-ready and keep serving for ``shutdown_delay``.

    Kubernetes removes a pod from Service endpoints only after readiness fails, so
    stopping at once would drop the requests still routed to it.
    """

    def __init__(self, app: Any, drain_file: str, delay: float) -> None:
        super().__init__(app)
        self.drain_file = drain_file
        self.delay = delay
        self.draining = False

    def handle_term(self) -> None:
        if self.draining or self.delay <= 0:
            super().handle_term()
            return
        self.draining = True
        with open(self.drain_file, "w", encoding="utf-8"):
            pass
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
        DrainingArbiter(self, self.drain_file, self.settings.shutdown_delay).run()


def run_gunicorn(settings: Settings) -> None:
    from .app import DRAIN_FILE_ENV

    runtime_dir = tempfile.mkdtemp(prefix="comments-api-")
    drain_file = os.path.join(runtime_dir, "draining")
    os.environ[DRAIN_FILE_ENV] = drain_file
    if settings.metrics_enabled:
        # Before the app (and prometheus_client) is loaded in the master: workers then
        # share one metrics directory, emptied of any previous run's files.
        from .observability import prepare_multiproc_dir

        prepare_multiproc_dir(settings.prometheus_multiproc_dir, runtime_dir)
    try:
        CommentsGunicorn(settings, drain_file).run()
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)
