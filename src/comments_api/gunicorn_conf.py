"""gunicorn configuration module, used by ``comments-api serve``.

Values come from the same typed settings as the app, so there is one source of truth.
"""

from __future__ import annotations

import gc
from typing import Any

from comments_api import telemetry
from comments_api.processes import block_stop_signals, tighten_timer_slack, unblock_stop_signals
from comments_api.settings import Settings
from comments_api.worker import app_services, comments_app, worker_class_for

_settings = Settings.from_env()

if _settings.metrics_enabled and not _settings.prometheus_multiproc_dir:
    # Plain `gunicorn -c python:comments_api.gunicorn_conf comments_api.wsgi:app` (without
    # `comments-api serve`, which sets it up itself): workers still need one shared metrics
    # directory, chosen before the app and prometheus_client load.
    from comments_api.server import make_runtime_dir

    # The lock descriptor stays open for the life of the master and its workers.
    _runtime_dir, _runtime_lock = make_runtime_dir()
    telemetry.prepare_multiproc_dir(None, _runtime_dir)

# An IPv6 HOST (`::`, `::1`; Settings takes it without brackets) needs them in the bind.
_host = f"[{_settings.host}]" if ":" in _settings.host else _settings.host
bind = f"{_host}:{_settings.port}"
workers = _settings.workers
threads = _settings.threads
# gunicorn's sync/gthread workers, except that each request is read in full by the
# worker's main loop before the application sees it (slow clients never hold a worker),
# and the server's own errors are JSON: see comments_api/worker.py.
worker_class = worker_class_for(_settings.threads)
# Load the app once in the master and fork: workers share its memory pages and start fast.
preload_app = True
graceful_timeout = _settings.graceful_timeout
timeout = _settings.worker_timeout
keepalive = _settings.keepalive_timeout
loglevel = _settings.log_level
accesslog = None  # one structured line per request comes from the app itself
errorlog = "-"
# gunicorn's own lines (boot, worker exits) in the same JSON/text format as the app.
logconfig_dict = telemetry.logging_config(_settings)
logger_class = telemetry.GunicornLogger
# The old app shipped debug=True; gunicorn never reloads or exposes a debugger here.
reload = False
# The control socket (gunicorn 24+) writes under $HOME, which is read-only in containers.
control_socket_disable = True
proc_name = "comments-api"
# The request line and header section limits are enforced by comments_api.worker, which
# reads requests first (48 KiB: 100 percent-encoded content ids must fit; gunicorn's own
# limit cannot exceed 8190 bytes, so it is off here: 0 = unlimited).
limit_request_line = 0
limit_request_fields = 50
limit_request_field_size = 8190
# gunicorn lets a peer in FORWARDED_ALLOW_IPS (loopback by default: any sidecar) set the
# WSGI SCRIPT_NAME and PATH_INFO from request headers. Neither is a proxy's to choose here:
# a header outside the mount answered 500, and the v1 pages' Link, cached per worker, would
# carry one request's prefix. The mount prefix is the SCRIPT_NAME environment variable.
forwarder_headers = ""


def pre_fork(server: Any, worker: Any) -> None:
    # What the master built (the app, SQLAlchemy's metadata, the contract's models) lives
    # as long as every worker: frozen, the cyclic GC never scans it again. A worker's full
    # collection over those ~90,000 objects took 55-70 ms here, added to a request's
    # latency whenever it struck. Frozen objects are also never written by the GC, so
    # their pages stay shared with the master after fork.
    # Once, before the first worker, with the garbage collected first: a freeze at every
    # fork (a worker replaced, a SIGHUP's new workers) also froze the master's garbage of
    # the moment, such as the configuration, argument parser and logging objects the last
    # reload replaced, cycles the collector could then never free (the master grew ~50 KiB
    # per SIGHUP, bench/README.md).
    if not gc.get_freeze_count():
        gc.collect()
        gc.freeze()


def post_fork(server: Any, worker: Any) -> None:
    # Until the worker's own signal handlers exist, a stop signal would reach the master's
    # copies and be lost (processes.STOP_SIGNALS). `serve` forks with them blocked already;
    # under plain gunicorn this narrows the window to the lines before this hook.
    block_stop_signals()
    # Short sleeps (the SQLite writer turn's polls) end on time, not ~50 us late. Before
    # the worker counts itself in the workers gauge below, which tests take to mean that
    # every worker is set up.
    tighten_timer_slack()
    # Connections opened in the master (migrations, preload) must not be shared by workers.
    # The app may sit behind middleware (ProxyFix, ...): the worker warns if it is not found.
    app = comments_app(server.app.wsgi())
    services = app_services(app)
    if app is None or services is None:
        server.log.warning(
            "the comments app was not found behind the served WSGI app: connections the "
            "master opened are not dropped in this worker, and its gauges are not set"
        )
    else:
        services.repo.engine.dispose(close=False)
        telemetry.worker_started(app, _settings.threads)


def post_worker_init(worker: Any) -> None:
    # The worker's handlers are installed (init_signals): a stop signal that came while it
    # booted is delivered now, and the worker drains and exits as if it came later.
    unblock_stop_signals()


def child_exit(server: Any, worker: Any) -> None:
    # Drop the dead worker's live gauges (in-flight, pool); its counters stay summed, folded
    # into the archives. WORKERS holds the live workers: a pid one of them reuses is live.
    telemetry.mark_worker_dead(worker.pid, server.WORKERS)


def pre_request(worker: Any, req: Any) -> None:
    # gunicorn's default logs "<method> <raw path>" at debug: the legacy list's path is the
    # author's email. The app's request line (route template, no query) says what is needed.
    return None
