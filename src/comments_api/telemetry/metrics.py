"""Prometheus metrics: the metric objects, the multiprocess directory, event receivers.

Metrics use prometheus_client's multiprocess mode whenever ``PROMETHEUS_MULTIPROC_DIR``
is set (``comments-api serve`` sets it before the app is created), so ``/metrics`` from
any gunicorn worker reports the totals of all workers. prometheus_client is imported
lazily: it decides between single- and multi-process storage when first imported.

Label values never come from user input as such: routes are URL rule *templates*,
methods and business labels come from fixed allowlists, anything else is "other".
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import logging
import math
import mmap
import operator
import os
import re
import struct
import time
from collections.abc import Callable, Collection, Iterator
from functools import cache, reduce
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

from ..comments.rules import STATUSES, DomainError
from ..contract.problems import status_slug
from ..processes import pid_at_fork

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy.engine import Engine

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# app.extensions key: the engine whose pool the worker gauges describe (set by init_app
# when metrics are on), so gunicorn's post_fork needs nothing from the web layer.
EXTENSION_KEY = "comments_api_telemetry"

# Fixed allowlists: any other value is counted as "other", so a client can never mint
# a new time series (cardinality) or smuggle data into a label.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CREATED_APIS = ("legacy", "v1")
MODERATION_ACTIONS = ("approve", "hide", "delete", "ban", "unban", "edit")
OTHER = "other"

# Client errors the HTTP layer itself answers on a comment write (werkzeug exceptions,
# the auth challenge, the rate limiter), counted under their registered problem slug.
# Statuses no write route can produce (405: no endpoint matched, so nothing is counted)
# are left out.
HTTP_REJECTION_STATUSES = (400, 401, 403, 404, 413, 415, 429)

# comments_api_server_refusals_total's reasons: the slugs of the statuses the server
# answers itself (worker.py: its refusals and those of gunicorn's parser, 403 a PROXY line
# from an address not allowed, 404 a target outside SCRIPT_NAME, 417 an Expect other than
# 100-continue), then those of clients cut off while taking an answer and of requests
# dropped because their client had already closed the connection (nginx's 499).
SERVER_REFUSAL_STATUSES = (400, 403, 404, 405, 408, 413, 414, 417, 431, 500, 501, 503)
SEND_TIMED_OUT = "send-timeout"
ANSWERS_FULL = "waiting-answers-full"
CLIENT_GONE = "client-closed-request"

# Why a request's database work failed (app._database_unavailable answers each with a JSON
# 503, disk_full with a 507). disk_full and refused (a read-only database, an id sequence
# behind max(id)) need an operator; pool_exhausted, timeout and unavailable may pass.
DATABASE_ERROR_CAUSES = ("disk_full", "pool_exhausted", "timeout", "refused", "unavailable")


def _domain_codes(cls: type[DomainError]) -> set[str]:
    codes = {cls.code}
    for sub in cls.__subclasses__():
        codes |= _domain_codes(sub)
    return codes


@cache
def reject_reasons() -> tuple[str, ...]:
    """Every ``reason`` a rejected comment can carry: the problem slugs the app can emit.

    Derived, not listed by hand: the HTTP layer's own client errors plus the ``code`` of
    every DomainError subclass (validation, not-found, conflict, duplicate, bans, flood,
    idempotency), so a new rule's reason gets its series without touching this file.
    Computed on first use, after the app factory has imported every module that defines
    a rule. tests/test_metrics.py holds every reason to contract.problems' registry.
    """
    http = {status_slug(status) for status in HTTP_REJECTION_STATUSES}
    return tuple(sorted(http | _domain_codes(DomainError)))


def server_refusal_reasons() -> tuple[str, ...]:
    """Every ``reason`` of comments_api_server_refusals_total the server counts."""
    statuses = tuple(status_slug(status) for status in SERVER_REFUSAL_STATUSES)
    return (*statuses, SEND_TIMED_OUT, ANSWERS_FULL, CLIENT_GONE)


# A fast API: most requests take a few ms; the tail up to the 2.5 s we would page for.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class ForeignFilesError(ValueError):
    """The metrics directory holds something prometheus_client did not write."""


log = logging.getLogger(__name__)

# prometheus_client's multiprocess files, <type>_<pid>.db (counter_42.db, gauge_livesum_42.db),
# the dead workers' archives, <type>_archive.db (and .tmp while one is written), their lock.
ARCHIVE = "archive"
_METRICS_FILE = re.compile(
    rf"[a-z]+(?:_[a-z]+)*_(?:[0-9]+\.db|{ARCHIVE}\.(?:db|tmp))|{ARCHIVE}\.lock"
)


def prepare_multiproc_dir(configured: str | None, runtime_dir: str) -> str:
    """Create (or empty) the multiprocess directory and export it; call before forking.

    Files left by a previous run would be summed into this run's counters, so the
    directory is emptied at every start. Its contents only, not the directory itself:
    containers mount a tmpfs there. Only metrics files are removed: a directory holding
    anything else (``PROMETHEUS_MULTIPROC_DIR`` set to a data directory, ``/tmp`` or
    ``.``) raises ``ForeignFilesError`` and nothing is deleted.
    """
    path = Path(configured or os.path.join(runtime_dir, "prometheus"))
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    children = list(path.iterdir())
    foreign = sorted(
        child.name
        for child in children
        if child.is_symlink() or not child.is_file() or not _METRICS_FILE.fullmatch(child.name)
    )
    if foreign:
        shown = ", ".join(repr(name) for name in foreign[:3])
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise ForeignFilesError(
            f"PROMETHEUS_MULTIPROC_DIR: {path} holds {shown}{more}, which are not metrics "
            "files; serve empties this directory at every start, so give the metrics a "
            "directory of their own (nothing was deleted)"
        )
    for child in children:
        child.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    return str(path)


def multiproc_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def count_server_refusal(reason: str) -> None:
    """One more ``comments_api_server_refusals_total`` (the server process's own answers,
    which the app's request metrics never see); nothing when metrics are off."""
    if multiproc_dir():
        metrics().server_refusals.labels(reason).inc()


def count_ratelimit_storage_failure() -> None:
    """One more ``comments_api_ratelimit_storage_failures_total``: the shared rate-limit
    storage failed, and this process limits on its own until it answers again."""
    if multiproc_dir():
        metrics().ratelimit_storage_failures.inc()


def count_database_error(cause: str) -> None:
    """One more ``comments_api_database_errors_total``: a request answered 503/507 because
    of the database. Nothing when metrics are off: init_app builds the metric objects only
    when they are on (in the master, before gunicorn forks the workers)."""
    if _metrics is not None:
        _metrics.database_errors.labels(
            cause if cause in DATABASE_ERROR_CAUSES else "unavailable"
        ).inc()


def requests_in_flight_of(pid: int) -> int | None:
    """The requests one worker process holds in the app now, read from its metrics file
    (the master's view of a worker it is about to kill); None when metrics are off or the
    worker has no such file (still booting, or already marked dead)."""
    directory = multiproc_dir()
    if not directory:
        return None
    path = os.path.join(directory, f"gauge_livesum_{pid}.db")
    try:
        if os.path.getsize(path) < 8:
            return None
        from prometheus_client.multiprocess import MultiProcessCollector

        families = MultiProcessCollector.merge([path], accumulate=True)
    except (OSError, ValueError):
        return None
    for family in families:
        if family.name == "comments_api_http_requests_in_flight":
            return int(sum(sample.value for sample in family.samples))
    return None


def mark_worker_dead(pid: int, live_pids: Collection[int] = ()) -> None:
    """gunicorn ``child_exit`` (in the master): drop a dead worker's live gauges (in-flight,
    pool) and fold its other files into the archives (``fold_dead_workers``)."""
    global _waits_again_at
    directory = multiproc_dir()
    if not directory:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, directory)
    if _folds_off:
        return
    _unfolded.add(pid)
    # A new worker that got a dead one's pid writes on in its file: that file is live again.
    _unfolded.difference_update(live_pids)
    if not _unfolded:
        return
    # Once a fold was put off, the deaths of the next second do not wait for the lock again:
    # a SIGHUP's old workers are reaped in one turn of the master, and a stuck scrape held
    # it (and every scrape queued behind the fold) FOLD_LOCK_WAIT per worker, 51 s at 256.
    wait = FOLD_LOCK_WAIT if time.monotonic() >= _waits_again_at else 0.0
    try:
        folded = fold_dead_workers(directory, sorted(_unfolded), wait)
    except OSError as exc:
        # Raised out of child_exit, it would end the master's loop: the server would stop.
        log.warning("metrics: cannot fold dead workers' files (%s); they stay, still counted", exc)
        folded = False
    if folded:
        _unfolded.clear()
    else:
        _waits_again_at = time.monotonic() + FOLD_RETRY_WAIT_AFTER


# Dead workers whose files a fold has yet to take (one was put off: a scrape held the lock).
_unfolded: set[int] = set()
# When a fold may wait for the lock again (time.monotonic()), after one was put off.
_waits_again_at = 0.0

# How the values of two processes' files combine per file type, when they do without the
# pid: (value, timestamp) pairs, as prometheus_client stores them. "all" gauges keep one
# series per pid, so a dead worker's "gauge_all" file stays as it is.
_SUMMED = frozenset({"counter", "histogram", "summary", "gauge_sum"})
_PICKS: dict[str, Callable[[tuple[float, float], tuple[float, float]], tuple[float, float]]] = {
    "gauge_max": lambda a, b: max(a, b, key=operator.itemgetter(0)),
    "gauge_min": lambda a, b: min(a, b, key=operator.itemgetter(0)),
    "gauge_mostrecent": lambda a, b: max(a, b, key=operator.itemgetter(1)),
}
# An archive keeps a summed series as the exact sum of what it took, in floats that do not
# overlap (math.fsum's partials), the largest under the series' key, each smaller one under
# the key and one more trailing space (JSON all the same to prometheus_client's reader).
# One rounded float would do for counts, but not for a histogram's _sum: a fold changed
# how it was rounded, and a scrape could read it a little lower than the one before, which
# Prometheus takes for a counter reset (rate() then counts the whole sum again).
_PARTIAL = " "


def _exact_partials(values: list[float]) -> list[float]:
    """Floats, smallest first, whose exact sum is that of ``values`` (Shewchuk's algorithm,
    as math.fsum keeps them)."""
    partials: list[float] = []
    for x in values:
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            high = x + y
            low = y - (high - x)
            if low:
                partials[i] = low
                i += 1
            x = high
        partials[i:] = [x]
    # Infinite or NaN (no count gets there): no exact sum to keep.
    return partials if all(map(math.isfinite, partials)) else [sum(values)]


def _exact_sum(values: list[float]) -> float:
    try:
        return math.fsum(values)
    except (ValueError, OverflowError):  # +inf and -inf, or beyond the floats: no exact sum
        return sum(values)


def _merge_exactly(files: list[str]) -> Any:
    """``MultiProcessCollector.merge(files, accumulate=True)``, with each series' values
    from its files added exactly (math.fsum), so in no order that depends on the files':
    a fold moves a dead worker's values into the archives, and a scrape still reads the
    same sum, to the last bit (checked against prometheus_client 0.26.0)."""
    from prometheus_client.multiprocess import MultiProcessCollector

    metrics = MultiProcessCollector._read_metrics(files)
    for metric in metrics.values():
        if metric.type == "gauge" and metric._multiprocess_mode not in ("sum", "livesum"):
            continue  # picked (max, min, most recent) or kept per pid: nothing added
        # Whole numbers (counts, buckets) add up exactly in any order: only the series
        # that hold a fraction somewhere (a _sum) are added with math.fsum.
        names = {sample.name for sample in metric.samples if not sample.value.is_integer()}
        if not names:
            continue
        kept: list[Any] = []
        terms: dict[tuple[str, Any], list[Any]] = {}
        for sample in metric.samples:
            if sample.name not in names:
                kept.append(sample)
                continue
            # A gauge's files label their samples with their pid: summed over all of them.
            labels = tuple(pair for pair in sample.labels if pair[0] != "pid")
            terms.setdefault((sample.name, labels), []).append(sample)
        metric.samples = kept + [
            group[0]._replace(labels=labels, value=_exact_sum([s.value for s in group]))
            for (_, labels), group in terms.items()
        ]
    return MultiProcessCollector._accumulate_metrics(metrics, True)


# How long the master tries for the lock before putting a fold off to the next worker's exit:
# a scrape holds it for a few milliseconds; the master must not hang on a stuck one.
FOLD_LOCK_WAIT = 0.2
# After a fold was put off, how long the next ones try the lock once, without waiting.
FOLD_RETRY_WAIT_AFTER = 1.0
_folds_off = False


# Scrapes hold the directory's flock shared while they read, a fold holds it exclusive.
# Scrapes that overlap would keep a shared lock taken for ever, so a fold first takes this
# file's lock exclusive: scrapes that come meanwhile wait behind the fold (a turnstile).
GATE = f"{ARCHIVE}.lock"


def _open_gate(directory: str) -> int:
    return os.open(os.path.join(directory, GATE), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _open_directory(directory: str) -> int:
    return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


@contextlib.contextmanager
def _scrape_lock(directory: str) -> Iterator[None]:
    """Held while a scrape lists and reads the files: no fold runs meanwhile."""
    gate = _open_gate(directory)
    try:
        _flock(gate, fcntl.LOCK_SH, None)
        lock = _open_directory(directory)
    finally:
        os.close(gate)
    try:
        _flock(lock, fcntl.LOCK_SH, None)
        yield
    finally:
        os.close(lock)  # releases the lock


@contextlib.contextmanager
def _fold_lock(directory: str, wait: float) -> Iterator[bool | None]:
    """Yields whether no scrape reads: False when one still did after ``wait`` seconds,
    None when the file system has no flock (folds stay off)."""
    deadline = time.monotonic() + wait
    gate = _open_gate(directory)
    try:
        held = _flock(gate, fcntl.LOCK_EX, deadline)
        if not held:
            yield held
            return
        lock = _open_directory(directory)
        try:
            yield _flock(lock, fcntl.LOCK_EX, deadline)
        finally:
            os.close(lock)
    finally:
        os.close(gate)


def _flock(fd: int, operation: int, deadline: float | None) -> bool | None:
    while True:
        try:
            fcntl.flock(fd, operation if deadline is None else operation | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if deadline is None or time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        except OSError as exc:
            if exc.errno in (errno.ENOLCK, errno.EINVAL, errno.EBADF, errno.EOPNOTSUPP):
                return None
            raise


def fold_dead_workers(directory: str, pids: Collection[int], wait: float = FOLD_LOCK_WAIT) -> bool:
    """Fold the files of dead worker processes into one ``<type>_archive.db`` per type.

    Without it the directory kept ~3 files per worker death (crashes, WORKER_TIMEOUT, each
    SIGHUP's whole set), and every scrape read them all: ~0.7 s at 1,000 deaths. Each
    archive is written whole under a temporary name and renamed into place, and the dead
    files go, while the directory's exclusive lock keeps scrapes (shared lock, in
    ``_WorkerFilesCollector``) out: a scrape sees a dead worker's counts exactly once,
    either in its files or in the archive. Call only with pids of processes that are dead
    and whose pid no live writer has taken since (gunicorn's master, in ``child_exit``).
    Returns False when the fold was put off (lock busy after ``wait`` seconds, an error
    logged): the files stay, and are still counted exactly.
    """
    global _folds_off
    if _folds_off:
        return False
    from prometheus_client.mmap_dict import MmapedDict

    with _fold_lock(directory, wait) as held:
        if held is None:
            # Without a lock a scrape could count a fold twice: the files stay, as before.
            _folds_off = True
            log.warning("metrics: %s has no flock; dead workers' files are kept", directory)
        if not held:
            return False
        by_type: dict[str, list[str]] = {}
        for pid in pids:
            suffix = f"_{pid}.db"
            for path in glob.glob(os.path.join(directory, f"*{suffix}")):
                by_type.setdefault(os.path.basename(path)[: -len(suffix)], []).append(path)
        for file_type, paths in sorted(by_type.items()):
            summed = file_type in _SUMMED
            pick = _PICKS.get(file_type)
            if not summed and pick is None:
                continue
            archive = os.path.join(directory, f"{file_type}_{ARCHIVE}.db")
            staging = os.path.join(directory, f"{file_type}_{ARCHIVE}.tmp")
            try:
                terms: dict[str, list[tuple[float, float]]] = {}
                for path in [archive, *paths]:
                    # Shorter than its header: a worker killed as it created the file.
                    if os.path.exists(path) and os.path.getsize(path) >= 8:
                        for key, value, stamp, _ in MmapedDict.read_all_values_from_file(path):
                            terms.setdefault(key.rstrip(_PARTIAL), []).append((value, stamp))
                entries: list[tuple[str, float, float]] = []
                for key, pairs in terms.items():
                    if pick is not None:
                        entries.append((key, *reduce(pick, pairs)))
                        continue
                    stamp = max(pair[1] for pair in pairs)
                    partials = _exact_partials([pair[0] for pair in pairs])
                    entries.extend(
                        (key + _PARTIAL * rank, partial, stamp)
                        for rank, partial in enumerate(reversed(partials))
                    )
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(staging)  # a fold that failed half-way
                # Allocated up front (MmapedDict then never grows it): writing through the
                # mmap into a full tmpfs would SIGBUS the master; this raises ENOSPC instead.
                size = 8 + sum(len(key.encode()) + 32 for key, _, _ in entries)
                fd = os.open(staging, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
                try:
                    os.posix_fallocate(fd, 0, max(size, mmap.PAGESIZE))
                finally:
                    os.close(fd)
                staged = MmapedDict(staging)
                try:
                    for key, value, stamp in entries:
                        staged.write_value(key, value, stamp)
                finally:
                    staged.close()
                os.replace(staging, archive)
            except (OSError, RuntimeError, ValueError, struct.error) as exc:  # full, torn
                with contextlib.suppress(OSError):
                    os.unlink(staging)
                log.warning(
                    "metrics: cannot fold dead workers' %s files (%s); they stay, still counted",
                    file_type,
                    exc,
                )
                if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                    return False
                continue
            for path in paths:
                os.unlink(path)
        return True


class _Metrics:
    """All metric objects, built once per process (the module is shared by every app)."""

    def __init__(self) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            disable_created_metrics,
            values,
        )

        if multiproc_dir():
            # Chosen here, before the first metric exists, for two reasons. prometheus_client
            # may have been imported before the directory was set (gunicorn's config module,
            # a test), and it reads the environment once, in values.py: without the switch,
            # workers would not add up. And its default asks os.getpid() on every sample
            # written, to notice a fork: a system call each time, ~3 % of a cached list
            # request's samples. MultiProcessValue's documented process_identifier argument
            # takes the pid remembered at fork instead. No public way to choose storage
            # after import exists (checked against prometheus_client 0.26.0);
            # test_prometheus_value_class_override fails if these names change.
            values.ValueClass = values.MultiProcessValue(process_identifier=pid_at_fork())
        # `*_created` timestamps double the series and multiprocess mode lacks them anyway.
        disable_created_metrics()
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "comments_api_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "comments_api_http_request_duration_seconds",
            "Time from the request reaching Flask to the response, by method and route.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "comments_api_http_requests_in_flight",
            "Requests being handled right now (all live workers).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.workers = Gauge(
            "comments_api_workers",
            "Live worker processes.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.worker_slots = Gauge(
            "comments_api_worker_slots",
            "Requests the live workers can handle at once (workers x threads).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.created = Counter(
            "comments_api_comments_created",
            "Comments stored, by API and resulting status.",
            ["api", "status"],
            registry=r,
        )
        self.rejected = Counter(
            "comments_api_comments_rejected",
            "Comment submissions refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.server_refusals = Counter(
            "comments_api_server_refusals",
            "Requests the server answered or cut off itself, outside the app (unreadable or "
            "late requests, clients that do not take their answers), by reason.",
            ["reason"],
            registry=r,
        )
        self.ratelimit_storage_failures = Counter(
            "comments_api_ratelimit_storage_failures",
            "Times the shared rate-limit storage (Redis) failed a check; that process then "
            "limits on its own in memory, retrying the storage every few seconds.",
            registry=r,
        )
        self.database_errors = Counter(
            "comments_api_database_errors",
            "Requests refused because of the database (JSON 503, or 507 when its disk is "
            "full), by cause.",
            ["cause"],
            registry=r,
        )
        self.moderation = Counter(
            "comments_api_moderation_actions",
            "Moderation actions applied, by action (counts comments affected).",
            ["action"],
            registry=r,
        )
        self.db_duration = Histogram(
            "comments_api_db_query_duration_seconds",
            "Database statement execution time, by SQL verb.",
            ["operation"],
            buckets=DB_BUCKETS,
            registry=r,
        )
        self.pool_checked_out = Gauge(
            "comments_api_db_pool_checked_out",
            "Database connections checked out of the pools (all live workers).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_size = Gauge(
            "comments_api_db_pool_size",
            "Configured pool size summed over live workers (overflow may exceed it).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ready = Gauge(
            "comments_api_ready",
            "1 if the readiness check passed when /metrics was last scraped, else 0.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.build_info = Gauge(
            "comments_api_build_info",
            "Always 1; the labels say which build is running.",
            ["version", "revision"],
            registry=r,
            multiprocess_mode="max",
        )
        # Zero-valued series from the start: rate() and "no comments created" alerts
        # need the series to exist before the first event.
        for api in CREATED_APIS:
            for status in STATUSES:
                self.created.labels(api, status)
        for reason in (*reject_reasons(), OTHER):
            self.rejected.labels(reason)
        for action in MODERATION_ACTIONS:
            self.moderation.labels(action)
        for cause in DATABASE_ERROR_CAUSES:
            self.database_errors.labels(cause)
        # A refusal series born at its first refusal is scraped already counting it, and
        # rate() starts from a series' first sample: a reload's burst of 503s, reported at
        # once, never reached the SLO rules (nor a first 408 CommentsApiSlowClientsCutOff).
        for reason in server_refusal_reasons():
            self.server_refusals.labels(reason)
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._created_children: dict[tuple[str, str], Any] = {}
        self._db_children = {op: self.db_duration.labels(op) for op in _SQL_VERBS.values()}
        self._db_by_statement: dict[str, Any] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:  # cached: labels() locks and stringifies on every call
            children = (
                self.requests.labels(method, route, str(status)),
                self.duration.labels(method, route),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def created_child(self, api: str, status: str) -> Any:
        child = self._created_children.get((api, status))
        if child is None:  # cached: labels() locks and builds a key on every call
            child = self._created_children[(api, status)] = self.created.labels(api, status)
        return child

    def observe_query(self, statement: str, seconds: float) -> None:
        child = self._db_by_statement.get(statement)
        if child is None:
            head = statement.lstrip()[:8].split(None, 1)
            verb = _SQL_VERBS.get(head[0].lower(), OTHER) if head else OTHER
            child = self._db_children[verb]
            # The statements are the code's own, a few dozen texts: remembered up to a bound
            # (one built with a value in its text must not grow this without end).
            if len(self._db_by_statement) < _STATEMENTS_REMEMBERED:
                self._db_by_statement[statement] = child
        child.observe(seconds)


# How many statement texts observe_query remembers its child for.
_STATEMENTS_REMEMBERED = 512

_SQL_VERBS = {
    "select": "select",
    "insert": "insert",
    "update": "update",
    "delete": "delete",
    "with": "select",
    OTHER: OTHER,
}

_metrics: _Metrics | None = None


def metrics() -> _Metrics:
    global _metrics  # one set of metric objects per process
    if _metrics is None:
        _metrics = _Metrics()
    return _metrics


def worker_started(app: Flask, threads: int) -> None:
    """gunicorn ``post_fork``: per-worker live gauges (the master serves no requests)."""
    engine = app.extensions.get(EXTENSION_KEY)
    if engine is None:  # metrics disabled: init_app registered nothing
        return
    m = metrics()
    m.workers.set(1)
    m.worker_slots.set(threads)
    m.pool_size.set(_pool_size(engine))


def _pool_size(engine: Engine) -> int:
    size = getattr(engine.pool, "size", None)
    return int(size()) if callable(size) else 0


# Blinker receivers: module-level functions, so connecting again (another app in the
# same process, e.g. tests) is a no-op instead of double counting.
def _on_created(sender: object, **kw: Any) -> None:
    api = kw.get("api")
    status = kw.get("status")
    metrics().created_child(
        api if api in CREATED_APIS else OTHER, status if status in STATUSES else OTHER
    ).inc()


def _on_rejected(sender: object, **kw: Any) -> None:
    reason = kw.get("reason")
    metrics().rejected.labels(reason if reason in reject_reasons() else OTHER).inc()


def _on_moderation(sender: object, **kw: Any) -> None:
    action = kw.get("action")
    count = kw.get("count", 1)
    # count = comments affected; a bulk action that changed nothing adds nothing.
    amount = count if isinstance(count, int) and count >= 0 else 1
    if amount:
        metrics().moderation.labels(action if action in MODERATION_ACTIONS else OTHER).inc(amount)


# SQLAlchemy listeners. Statements on one connection run one at a time, so a single
# start time per connection is enough (and cannot leak when a statement fails).
def _before_cursor(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
    conn.info["obs_query_start"] = perf_counter()


def _after_cursor(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
    start = conn.info.pop("obs_query_start", None)
    if start is not None:
        metrics().observe_query(statement, perf_counter() - start)


# SQLAlchemy also fires "checkin" for a checkout that failed before any "checkout" event:
# a connect that failed, or a dead connection whose replacement could not connect. Only a
# record this module counted is uncounted, or every failed request in an outage lowered
# the gauge for good. record_info, unlike info, outlives the record's invalidation.
_COUNTED = "obs_checked_out"


def _checkout(dbapi_connection: Any, record: Any, *args: Any) -> None:
    record.record_info[_COUNTED] = True
    metrics().pool_checked_out.inc()


def _checkin(dbapi_connection: Any, record: Any) -> None:
    if record.record_info.pop(_COUNTED, False):
        metrics().pool_checked_out.dec()


def instrument_engine(engine: Engine) -> None:
    from sqlalchemy import event

    if event.contains(engine, "before_cursor_execute", _before_cursor):
        return
    event.listen(engine, "before_cursor_execute", _before_cursor)
    event.listen(engine, "after_cursor_execute", _after_cursor)
    # Pool events survive engine.dispose() (post_fork): the new pool keeps the dispatch.
    event.listen(engine, "checkout", _checkout)
    event.listen(engine, "checkin", _checkin)
    # A detached connection (the read cache's marker reader, store/versions.py) leaves the
    # pool for good without a checkin.
    event.listen(engine, "detach", _checkin)


class _WorkerFilesCollector:
    """prometheus_client's multiprocess collector, minus files of workers still booting.

    A worker creates its metrics file and sizes it a moment later; a scrape between the two
    read an empty file and answered 500. A file shorter than its 8-byte header holds no
    sample yet, so skipping it loses nothing. Uses the public ``MultiProcessCollector.merge``
    (prometheus_client 0.26); tests/test_metrics.py scrapes while workers boot.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def collect(self) -> Any:
        # Shared lock: the master's fold of dead workers' files into the archives waits
        # until the files are read, so no scrape sees a dead worker's counts twice or never.
        with _scrape_lock(self.directory):
            files = []
            for path in glob.glob(os.path.join(self.directory, "*.db")):
                try:
                    if os.path.getsize(path) >= 8:
                        files.append(path)
                except FileNotFoundError:  # a dead worker's live gauge, removed meanwhile
                    continue
            return _merge_exactly(files)
