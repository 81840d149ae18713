"""Telemetry: structured logs, Prometheus metrics and the per-request hooks (issue #4).

Split by concern (issue 10): ``log_format`` (JSON/text formatters, dictConfig),
``gunicorn_logging`` (gunicorn's logger class), ``metrics`` (prometheus_client setup,
collectors, the multiprocess directory, event receivers) and ``http_hooks`` (request ids,
the access line, request metrics, /metrics). Nothing here imports ``web``: the app passes
what the hooks need.
"""

# What the server process (gunicorn_conf, server.py) and the CLI need, in one place.
from .gunicorn_logging import GunicornLogger
from .log_format import configure_logging, logging_config
from .metrics import mark_worker_dead, prepare_multiproc_dir, worker_started

__all__ = [
    "GunicornLogger",
    "configure_logging",
    "logging_config",
    "mark_worker_dead",
    "prepare_multiproc_dir",
    "worker_started",
]
