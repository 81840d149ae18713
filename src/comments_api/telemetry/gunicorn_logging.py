"""gunicorn's logger class for ``comments-api serve``: its lines in our format, no access log."""

from __future__ import annotations

import logging
from typing import Any

from gunicorn import glogging


class GunicornLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger without its access log: the app writes one JSON line per request
    (with the route template, not the raw path), so gunicorn's would duplicate it and leak
    paths; skipping it also saves building the access-log atoms on every request.

    Uses gunicorn's public logger-class interface (``access()``, which every worker calls
    once per request, and the ``access_log_enabled`` property protocol handlers read),
    not the private ``_compute_access_log_enabled``. Checked against gunicorn 27.0.1;
    tests/test_logging.py::test_gunicorn_logger_interface fails if either changes shape.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        # Python warnings as log lines in the same format, not bare text on stderr: what
        # configure_logging does for `serve` and the CLI, and plain `gunicorn -c
        # python:comments_api.gunicorn_conf` configures logging only through this class.
        logging.captureWarnings(True)

    @property
    def access_log_enabled(self) -> bool:
        return False

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None
