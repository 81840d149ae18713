"""The ``comments-api`` command line."""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import ipaddress
import itertools
import logging
import math
import os
import re
import signal
import stat
import sys
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from typing import IO, Any, TextIO, cast

import click

from .settings import SECONDS_MAX, Settings, SettingsError


class ConfigurationError(click.ClickException):
    """A setting is wrong: one line and exit code 2. Not click's UsageError, whose usage
    hint would come first although the command line itself was right."""

    exit_code = 2

    def __init__(self, problem: object) -> None:
        super().__init__(f"configuration error: {problem}")


def _settings(*, rate_limits: bool = True, drivers: bool = True) -> Settings:
    try:
        return Settings.from_env(rate_limits=rate_limits, drivers=drivers)
    except SettingsError as exc:
        raise ConfigurationError(exc) from None


def configure_logging(settings: Settings) -> None:
    """The service's log format. Imported here, not at the top: the logging setup loads
    Flask, SQLAlchemy and gunicorn, which `healthcheck` (Docker runs it every 10 s) and
    `--help` have no use for."""
    from .telemetry import configure_logging as configure

    configure(settings)


class _HelpToStdout:
    """``--help`` and ``--version`` written as ``keys list`` writes its list: where stdout
    cannot take them (a full disk, closed) one line on stderr and exit 1. A full stdout was
    click's traceback; a closed one an exit 0 with nothing shown."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)  # type: ignore[misc]
        except OSError as exc:
            raise click.ClickException(f"could not write to stdout: {exc.strerror}") from None
        except click.exceptions.Exit as done:
            # Only the eager --help and --version end while the command line is read.
            if done.exit_code == 0 and sys.stdout is None:
                raise click.ClickException(
                    "could not write to stdout: standard output is closed"
                ) from None
            raise


class _Command(_HelpToStdout, click.Command):
    pass


class _Commands(_HelpToStdout, click.Group):
    """click's group, its own errors (a usage error, a ClickException) said on stderr as
    ``_note`` says a line: with stderr full, writing one was a traceback that made a usage
    error's exit 2 an exit 1, and with stderr closed click wrote it to stdout, into what
    a command writes there (a key, an export)."""

    command_class = _Command
    group_class = type  # `keys`: a group of this class, its commands _Command

    def main(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("standalone_mode", True) is False:
            return super().main(*args, **kwargs)
        try:
            code = super().main(*args, **{**kwargs, "standalone_mode": False})
        except click.ClickException as exc:
            exc.show(file=_diagnostics())
            sys.exit(exc.exit_code)
        except click.Abort:
            _note("Aborted!")
            sys.exit(1)
        # A command's return value (None), or the code of a ctx.exit (--help, --version).
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        """Ctrl-C (or an end of input at a prompt) as click says it, its line break on
        stderr as ``_note`` writes: click's own wrote it to sys.stderr, which with stderr
        closed is None, and click.echo then wrote it to stdout, into an export there."""
        try:
            return super().invoke(ctx)
        except (EOFError, KeyboardInterrupt):
            _note("")
            raise click.Abort() from None


@click.group(
    cls=_Commands,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="comments-api: the comments backend of a news site.\n\n"
    "All configuration comes from environment variables (see docs/configuration.md).",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, param, value: _print_version(ctx, value),
    help="Show the version and exit.",
)
def main() -> None:
    pass


def _print_version(ctx: click.Context, wanted: bool) -> None:
    # click's version_option reads the version when the command line is built: every
    # command, `healthcheck` included, paid for importlib.metadata.
    if not wanted or ctx.resilient_parsing:
        return
    from . import __version__

    click.echo(f"comments-api, version {__version__}")
    ctx.exit()


@main.command(
    help="Run the HTTP server: gunicorn with WORKERS processes on HOST:PORT. "
    "Upgrades the database schema first unless MIGRATE_ON_START=false. "
    "On SIGTERM, /readyz turns 503 for SHUTDOWN_DELAY seconds, then in-flight "
    "requests drain for up to GRACEFUL_TIMEOUT seconds."
)
def serve() -> None:
    settings = _settings()
    configure_logging(settings)
    if settings.migrate_on_start:
        # A schema ahead of this code (a newer release migrated it, and the code was rolled
        # back, not the schema) is served as /readyz serves it: expand/contract keeps this
        # release working on it. Exiting here crash-looped every rolled-back replica that
        # migrates on start (compose.yaml's app), while /readyz would have said ready.
        _migrate(settings, newer_schema_ok=True)
    from .server import run_gunicorn

    try:
        run_gunicorn(settings)
    except SettingsError as exc:
        # Found while building the app (JWT keys, the metrics directory), after the
        # environment's own checks: the same one line and exit status as those.
        raise ConfigurationError(exc) from None


@main.command(help="Upgrade the database schema in DATABASE_URL to the latest migration.")
@click.option(
    "--down-to",
    metavar="REVISION",
    help="Downgrade the schema to this older revision instead, to roll back further than "
    "one release (docs/deployment.md). Stop every instance of the newer releases first. "
    "Drops what the newer migrations added, rows and all (docs/operations.md): take a "
    "backup first.",
)
def migrate(down_to: str | None) -> None:
    settings = _settings()
    configure_logging(settings)
    revision = _migrate(settings, down_to=down_to)
    _confirm(f"database is at revision {revision}")


def _to_stdout(line: str) -> None:
    """``line`` on stdout, or OSError: with stdout closed click.echo dropped it silently."""
    if sys.stdout is None:
        raise OSError(errno.EBADF, "standard output is closed")
    click.echo(line)


def _confirm(line: str) -> None:
    """A change's confirmation on stdout, or on stderr where stdout cannot take it (closed,
    a full disk): the change is made, and a traceback and exit 1 had said it failed."""
    try:
        _to_stdout(line)
    except OSError as exc:
        _note(f"{line} (stdout: {exc.strerror or exc})")


class _Diagnostics(io.TextIOBase):
    """stderr for what a command says on the way (progress, summaries), dropping what
    stderr refuses: on a full disk (a cron job's log) the progress label stopped an export
    or import that had nothing wrong, and a summary turned a finished backup into exit 1."""

    def isatty(self) -> bool:
        return sys.stderr is not None and sys.stderr.isatty()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if sys.stderr is not None:  # None: started with stderr closed
            with contextlib.suppress(OSError):
                sys.stderr.write(text)
        return len(text)

    def flush(self) -> None:
        if sys.stderr is not None:
            with contextlib.suppress(OSError):
                sys.stderr.flush()


def _diagnostics() -> TextIO:
    # A text stream in all but typeshed's name (io.TextIOBase is not typing.TextIO).
    return cast(TextIO, _Diagnostics())


def _note(message: str) -> None:
    """One line on stderr, if stderr takes it (``_Diagnostics``)."""
    click.echo(message, file=_diagnostics())


def _migrate(
    settings: Settings, *, down_to: str | None = None, newer_schema_ok: bool = False
) -> str:
    from alembic.util import CommandError
    from sqlalchemy.exc import DatabaseError, DBAPIError, OperationalError

    from .store.repository import Repository, TransactionPoolerRefused, head_revision, make_engine
    from .store.repository import migrate as run_migrations

    _refuse_a_missing_directory(settings)
    # SQLite's lock is waited for as long as DB_STATEMENT_TIMEOUT allows (it was a fixed
    # 5 s); on PostgreSQL a migration lifts the statement timeout for itself (migrate()).
    engine = make_engine(settings.database_url, statement_timeout=settings.db_statement_timeout)
    try:
        if down_to is not None:
            return _downgrade(engine, down_to)
        run_migrations(engine)
    except TransactionPoolerRefused as exc:
        raise click.ClickException(str(exc)) from None
    except CommandError:
        # Alembic cannot find the database's revision among ours: a newer release migrated
        # it (a rollback of the code, not of the schema). A traceback before.
        try:
            revision = Repository(engine).schema_revision()
        except DBAPIError as exc:
            # Read again to name it, and the database failed meanwhile (a timeout, a lost
            # connection): a traceback from inside this handler before.
            raise click.ClickException(
                f"cannot reach the database: {_driver_message(exc)}; nothing was migrated"
            ) from None
        if newer_schema_ok and revision is not None and _is_newer(revision):
            logging.getLogger(__name__).warning(
                "database schema %s is ahead of this code's %s (a newer release migrated "
                "it); not migrating, serving on it (migrations expand first)",
                revision,
                head_revision(),
            )
            return revision
        raise click.ClickException(_newer_schema(revision)) from None
    except DatabaseError as exc:
        # Unreachable or refused, or a SQLite file that is not a database: one line, no
        # traceback. Any other database error here is a bug, and keeps its traceback.
        unusable = getattr(exc.orig, "sqlite_errorname", "") in _SQLITE_UNUSABLE
        if getattr(exc.orig, "sqlstate", None) == _INSUFFICIENT_PRIVILEGE:
            # A role that may not create the tables (PostgreSQL 15 gives other roles than
            # the database's owner no CREATE on schema public): a traceback before.
            raise click.ClickException(
                f"the database refused the migration: {_driver_message(exc)}; the role in "
                "DATABASE_URL must be allowed to create and alter the tables (the owner of "
                "the database, or of its schema)"
            ) from None
        if not (isinstance(exc, OperationalError) or unusable):
            raise
        if _is_locked(exc):  # it was "cannot reach the database", as though it were down
            raise click.ClickException(
                "the database is locked by another writer; nothing was migrated, run it "
                f"again once that writer is done: {_driver_message(exc)}"
            ) from None
        raise click.ClickException(f"cannot reach the database: {_driver_message(exc)}") from None
    finally:
        engine.dispose()
    return head_revision()


def _downgrade(engine: Any, target: str) -> str:
    """``migrate --down-to``: checked before anything runs, so that a mistyped revision or
    one ahead of the database is one line and the schema stays as it was."""
    from .store.repository import Repository, revisions_before, shipped_revisions
    from .store.repository import migrate as run_migrations

    head, older = shipped_revisions()
    if target != head and target not in older:
        raise click.ClickException(
            f"--down-to {target}: not a revision this version ships (0001 to {head})"
        )
    current = Repository(engine).schema_revision()
    if current is None:
        raise click.ClickException("the database has no schema yet: nothing to downgrade")
    if current != head and current not in older:
        raise click.ClickException(_newer_schema(current))
    if current == target:
        return current
    if target not in revisions_before(current):
        raise click.ClickException(
            f"the database is at revision {current}, below {target}: nothing to downgrade "
            "(run migrate without --down-to to upgrade)"
        )
    run_migrations(engine, target, down=True)
    return target


def _refuse_a_missing_directory(settings: Settings) -> None:
    """A SQLite file in a directory that is not there is a mistyped path (sqlite:////var/
    lib/comentz/x.db): it was created, directories and all, and a new empty database
    migrated and served in it. Only the default's ./data is made (make_engine), so that
    the first `make run` works."""
    from .settings import DEFAULT_SQLITE_URL
    from .store.repository import sqlite_file

    path = sqlite_file(settings.database_url)
    if path is None or settings.database_url == DEFAULT_SQLITE_URL:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        why = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise ConfigurationError(
            f"DATABASE_URL: {directory} {why}; correct the path, or create the directory first"
        )


_SQLITE_UNUSABLE = frozenset({"SQLITE_NOTADB", "SQLITE_CORRUPT"})
_INSUFFICIENT_PRIVILEGE = "42501"  # PostgreSQL's SQLSTATE: permission denied


def _is_locked(exc: Exception) -> bool:
    """Another writer held SQLite's lock past the wait: SQLITE_BUSY, or an extended code
    of it (SQLITE_BUSY_SNAPSHOT: a write on a read snapshot another writer has moved past)."""
    return getattr(getattr(exc, "orig", None), "sqlite_errorname", "").startswith("SQLITE_BUSY")


def _is_newer(revision: str) -> bool:
    """A revision this code does not ship: a newer release's (as /readyz reads it)."""
    from .store.repository import shipped_revisions

    head, older = shipped_revisions()
    return revision != head and revision not in older


def _newer_schema(revision: str | None) -> str:
    from .store.repository import head_revision

    return (
        f"the database schema is at revision {revision}, which this version does not know "
        f"(its newest is {head_revision()}): a newer comments-api migrated it; use that version"
    )


def _driver_message(exc: Exception) -> str:
    # The driver's first line (host, port, reason); never the URL, which may hold a password.
    text = str(getattr(exc, "orig", None) or exc.__class__.__name__).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


@main.command(
    help="Exit 0 if this host's server answers 200 on PATH (default /readyz; below "
    "SCRIPT_NAME when that is set), else 1. "
    "For container HEALTHCHECKs: the runtime image has no shell or curl."
)
@click.option("--path", default="/readyz", show_default=True, help="URL path to probe.")
@click.option(
    "--timeout",
    default=2.0,
    show_default=True,
    # The socket's timeout: 'inf' or 1e300 overflowed it and 'nan' was refused by it, each
    # in a traceback (FloatRange lets nan through: it compares false with any bound).
    type=click.FloatRange(min=0, min_open=True, max=SECONDS_MAX),
    callback=lambda ctx, param, value: _a_number(value, param),
    help="Seconds to wait.",
)
def healthcheck(path: str, timeout: float) -> None:
    import http.client
    import urllib.error
    import urllib.request

    probe = path.startswith("/") and not path.startswith("//")
    if not (probe and path.isascii() and path.isprintable() and " " not in path):
        # Appended to this host's own address: anything else would name another host or
        # port, or be refused by urllib with a traceback.
        raise click.BadParameter(
            "must be a path on this server, such as /readyz", param_hint="--path"
        )
    # The probe sends one GET to HOST:PORT. The limits' notation and the URLs' driver
    # options are for the server, which refuses to start on a typo; reading them here
    # loaded limits, asyncio, SQLAlchemy, psycopg or redis-py on every run.
    settings = _settings(rate_limits=False, drivers=False)
    # Mounted under gunicorn's SCRIPT_NAME (docs/server.md), the server serves every path
    # below it, /readyz included: probed at the root, it answered 404 and the container
    # stayed unhealthy. Joined as gunicorn strips it from a request's path.
    prefix = os.environ.get("SCRIPT_NAME", "")
    if prefix and not (
        prefix.startswith("/") and prefix.isascii() and prefix.isprintable() and " " not in prefix
    ):
        raise ConfigurationError(f"SCRIPT_NAME must be a path such as /comments, got {prefix!r}")
    host = _probe_host(settings.host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{settings.port}{prefix}{path}"
    try:
        # A fixed http:// URL built from our own settings, never from user input (bandit
        # B310 warns about file:// and custom schemes, which cannot occur here).
        # No proxy: HTTP_PROXY/HTTPS_PROXY set for the app's egress (the JWKS fetch) sent
        # this probe of our own loopback address to the proxy, and the container never
        # turned healthy.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=timeout) as response:  # nosec B310
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        _note(f"unhealthy: {url}: {exc}")
        raise SystemExit(1) from None
    except http.client.HTTPException as exc:
        # Something that is not an HTTP server answers on PORT (a TLS port, Redis): a
        # BadStatusLine or LineTooLong traceback before.
        _note(f"unhealthy: {url}: not an HTTP answer ({exc.__class__.__name__})")
        raise SystemExit(1) from None
    # The exit status is the probe's answer; its line only says why. A full or closed
    # stdout turned a healthy server's exit 0 into a traceback and exit 1.
    if status != 200:
        _note(f"unhealthy: {url}: HTTP {status}")
        raise SystemExit(1)
    _confirm(f"healthy: {url}")


def _a_number(value: float, param: click.Parameter) -> float:
    if math.isnan(value):
        raise click.BadParameter("must be a number of seconds", param=param)
    return value


def _probe_host(host: str) -> str:
    """A wildcard bind address is reachable on loopback; anything else is probed as given."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "127.0.0.1"
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return host


# --- API keys (issue #3) -------------------------------------------------------------
@main.group(help="Manage API keys for trusted callers (site backend, moderators, ops).")
def keys() -> None:
    pass


def _repository(settings: Settings, statement_timeout: float | None = None) -> Any:
    """The migrated database, each statement allowed ``statement_timeout`` seconds
    (default DB_STATEMENT_TIMEOUT, as the service's: it was a fixed 5 s)."""
    from .store.repository import Repository, make_engine, shipped_revisions, sqlite_file

    if statement_timeout is None:
        statement_timeout = settings.db_statement_timeout

    path = sqlite_file(settings.database_url)
    if path is not None and not os.path.exists(path):
        # Opening it created an empty file (and its directories) for a mistyped path, and
        # then said "run `comments-api migrate`" as though the database were there.
        raise click.ClickException(_no_database(path))
    repo = Repository(make_engine(settings.database_url, statement_timeout=statement_timeout))
    try:
        revision = repo.schema_revision()
    except Exception as exc:  # unreachable database: say so, no traceback
        raise click.ClickException(f"cannot reach the database: {_driver_message(exc)}") from None
    head, older = shipped_revisions()
    if revision is not None and revision != head and revision not in older:
        # `migrate` cannot help there; it would only fail the same way.
        raise click.ClickException(_newer_schema(revision))
    if revision != head:
        raise click.ClickException(
            f"the database schema is at {revision or 'no revision'}; run `comments-api migrate`"
        )
    return repo


@contextlib.contextmanager
def _database_write() -> Iterator[None]:
    """A write the database refuses or times out on (another writer holds SQLite's lock
    past the statement timeout, a server gone): one line, nothing changed. A traceback
    before."""
    from sqlalchemy.exc import DBAPIError

    try:
        yield
    except DBAPIError as exc:
        raise click.ClickException(
            f"the database refused the change, nothing was changed: {_driver_message(exc)}"
        ) from None


def _no_database(path: str) -> str:
    return f"no database at {path}: check DATABASE_URL, or create it with `comments-api migrate`"


# Control, format, and surrogates (bytes that were not UTF-8 in the command line).
_NOT_IN_A_NAME = frozenset({"Cc", "Cf", "Cs"})


@keys.command(
    "create",
    help="Create a key and print it (only the key, on stdout) once: it is not stored, only "
    "its hash. Example: KEY=$(comments-api keys create --name backend --scope comments:write)",
)
@click.option("--name", required=True, help="What the key is for (shown by `keys list`).")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(["comments:write", "comments:moderate", "admin"]),
    help="Repeat for several scopes; admin implies every scope.",
)
def keys_create(name: str, scopes: tuple[str, ...]) -> None:
    from .identity.service import MAX_KEY_NAME_LENGTH, IdentityService

    if not name.strip() or len(name) > MAX_KEY_NAME_LENGTH:
        raise click.BadParameter(
            f"must be 1 to {MAX_KEY_NAME_LENGTH} characters", param_hint="--name"
        )
    if any(unicodedata.category(ch) in _NOT_IN_A_NAME for ch in name):
        # `keys list` prints one key per line, its fields separated by tabs: a tab or a
        # line break in a name shifted the columns or made up a line. Format characters
        # (a right-to-left override, zero-width spaces) made a name read as another one.
        raise click.BadParameter(
            "must not contain control or format characters (tabs, line breaks, "
            "bidirectional or zero-width marks)",
            param_hint="--name",
        )
    identity = IdentityService(_repository(_settings()))
    with _database_write():
        new = identity.issue_key(name, scopes)
    try:
        # Only its hash is stored: a key that never reached stdout (closed, a full disk, a
        # broken pipe) could be used by no one, yet stood in `keys list` as live.
        if sys.stdout is None:
            raise OSError(errno.EBADF, "standard output is closed")
        sys.stdout.write(new.key + "\n")
        sys.stdout.flush()
    except OSError as exc:
        with _database_write():
            identity.revoke_key(new.key_id)
        raise click.ClickException(
            f"the key could not be written to stdout ({exc.strerror or exc}): "
            f"key {new.key_id} is revoked; nothing usable was created"
        ) from None
    _note(f"created key {new.key_id}; store it now, it cannot be shown again")


@keys.command("list", help="List keys: id, name, scopes, dates. Never the key or its hash.")
def keys_list() -> None:
    from .comments.rules import iso_timestamp
    from .identity.service import IdentityService

    identity = IdentityService(_repository(_settings()))

    def when(value: Any) -> str:
        # UTC as the API writes it: PostgreSQL answers in the session's time zone.
        stamp = iso_timestamp(value)
        return stamp[:19] + "Z" if stamp is not None else "-"

    try:
        _to_stdout("id\tname\tscopes\tcreated_at\tlast_used_at\trevoked_at")
        for key in identity.list_keys():
            _to_stdout(
                f"{key.id}\t{key.name}\t{','.join(key.scopes)}\t{when(key.created_at)}\t"
                f"{when(key.last_used_at)}\t{when(key.revoked_at)}"
            )
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            raise  # a reader that stopped (`| head`): click exits 1 quietly, as tools do
        # A full disk was a traceback, and stdout closed an exit 0 listing nothing.
        raise click.ClickException(
            f"the key list could not be written to stdout: {exc.strerror or exc}"
        ) from None


@keys.command("revoke", help="Revoke a key by its id (see `keys list`); takes effect at once.")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    from .identity.service import IdentityService

    key_id = _key_id(key_id)
    with _database_write():
        revoked = IdentityService(_repository(_settings())).revoke_key(key_id)
    if not revoked:
        raise click.ClickException(f"no active key with id {key_id}")
    _confirm(f"revoked key {key_id}")


_KEY_ID = re.compile(r"[0-9a-f]{12}")


def _key_id(value: str) -> str:
    """A key id as `keys list` shows it; a whole key pasted instead gives the id in it.
    Anything else was echoed back as the id not found: the secret of a pasted key went to
    stderr (and the logs that keep it), and a line break or 100 kB went along as well."""
    from .identity.credentials import AuthError, api_key_id, is_api_key

    if is_api_key(value):
        with contextlib.suppress(AuthError):
            return api_key_id(value)
    elif _KEY_ID.fullmatch(value):
        return value
    raise click.BadParameter(
        "must be a key id: 12 hex digits, as `comments-api keys list` shows", param_hint="KEY_ID"
    )


# --- backup, export, import (issue #8) ------------------------------------------------
# Bulk statements on a big database may take minutes; the request-path limit does not apply.
BULK_TIMEOUT = 6 * 3600.0


def _refuse_a_transaction_pooler(settings: Settings, command: str) -> None:
    """``export``/``import`` set BULK_TIMEOUT per connection, which a transaction pooler
    passes on to no server: refused before anything is read. Refused at the connection
    before, whose advice was to set the role's statement_timeout to these 6 hours (every
    request's limit too)."""
    from .store.repository import pooler_mode

    if pooler_mode(settings.database_url) == "transaction":
        raise click.ClickException(
            f"{command} allows its statements hours (not DB_STATEMENT_TIMEOUT), which a "
            "transaction pooler (DATABASE_URL ?pooler=transaction) cannot set: run it with "
            "a DATABASE_URL that reaches PostgreSQL directly or through a session-mode "
            "pool (docs/deployment.md, 'Behind PgBouncer')"
        )


def _progress(label: str, length: int) -> Any:
    """A progress bar on stderr; click draws it only on a terminal (pipes get the label)."""
    return click.progressbar(
        length=max(1, length), label=label, file=_diagnostics(), show_pos=True, show_percent=True
    )


class _Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwinds like KeyboardInterrupt, through every cleanup. Its subclass,
    so that libraries treat it as Ctrl-C: psycopg cancels the running query only for one,
    and a SIGTERM in its wait for an import's batch left the pipeline busy, whose error
    replaced the signal ("the database refused a row", a traceback, exit 1)."""


def _sigterm_aborts(command: Callable[..., None]) -> Callable[..., None]:
    """SIGTERM (`timeout`, a CronJob's deadline, `docker stop`, systemd) stops the command
    through the cleanups Ctrl-C runs. Its default action ended the process at once: an
    export or backup left its hidden partial file (the whole copy so far) beside DEST, one
    more each time a deadline cut a run short, and an import left the new SQLite file it
    had made. Exit status 143, the signal's own."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        def stop(signum: int, frame: Any) -> None:
            # A second SIGTERM must not cut the cleanup short; SIGKILL still can.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            raise _Terminated

        previous = signal.signal(signal.SIGTERM, stop)
        try:
            command(*args, **kwargs)
        except _Terminated:
            _note("\nTerminated.")
            raise SystemExit(128 + signal.SIGTERM) from None
        finally:
            signal.signal(signal.SIGTERM, previous)

    return run


@main.command(
    "export",
    help="Write the whole database (comments, bans, audit log, API key records) to OUTPUT "
    "as JSON Lines; '-' (the default) is stdout. Streams, so any size fits; one consistent "
    "snapshot on PostgreSQL. API keys are exported as their hashes, never the keys.",
)
@click.argument("output", default="-", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--no-api-keys", is_flag=True, help="Leave the API key records out.")
@_sigterm_aborts
def export_command(output: str, no_api_keys: bool) -> None:
    from sqlalchemy.exc import DBAPIError

    from .store.repository import sqlite_file
    from .store.transfer import TABLES, TransferError, export, table_counts

    settings = _settings()
    _refuse_a_transaction_pooler(settings, "export")
    source = sqlite_file(settings.database_url)
    _refuse_the_database_itself(output, source)
    repo = _repository(settings, statement_timeout=BULK_TIMEOUT)
    names = [n for n in TABLES if not (no_api_keys and n == "api_keys")]
    total = sum(table_counts(repo.engine, names).values())
    try:
        with _export_target(output, source) as out, _progress("exporting", total) as bar:
            written = export(
                repo.engine, out, include_api_keys=not no_api_keys, progress=bar.update
            )
    except _StreamCutShort as exc:  # a pipe or device failed after taking rows
        raise click.ClickException(f"the export to {output} is incomplete: {exc}") from None
    except OSError as exc:  # cannot create it, or the disk filled up on the way
        raise click.ClickException(
            f"no export written to {output}: {exc.strerror or exc}"
        ) from None
    except (DBAPIError, TransferError) as exc:  # the database went away mid-way: one line
        reason = _driver_message(exc) if isinstance(exc, DBAPIError) else str(exc)
        if _is_stream(output):  # what was written cannot be taken back
            raise click.ClickException(f"the export to {output} is incomplete: {reason}") from None
        raise click.ClickException(f"no export written to {output}: {reason}") from None
    summary = ", ".join(f"{n} {name}" for name, n in written.items())
    _note(f"exported {summary}")


def _refuse_the_database_itself(
    output: str, source: str | None, what: str = "an export", param: str = "OUTPUT"
) -> None:
    """An OUTPUT that is the SQLite database being exported, or a file beside it that is
    part of it (its WAL, shared memory, journal, writers' lock): `export /data/comments.db`,
    a backup's argument, renamed the export onto the live database, exit 0, and the
    service then found "file is not a database" there. A backup named as its WAL, while
    none was there, was taken by SQLite for a broken WAL and written over."""
    if source is None or output == "-":
        return
    database = os.path.realpath(source)
    target = os.path.realpath(output)
    suffixes = ("", "-wal", "-shm", "-journal", "-writer.lock")
    same = target in {database + suffix for suffix in suffixes}
    # The same directory by another path (a bind mount, a second mount of the file
    # system), which realpath does not see through: by the directory's (st_dev, st_ino)
    # and the name in it. The -wal or -shm file may not exist yet (no connection open).
    folder, name = os.path.split(target)
    database_folder, database_name = os.path.split(database)
    if name in {database_name + suffix for suffix in suffixes}:
        with contextlib.suppress(OSError):  # a directory not there: nothing of ours in it
            same = same or os.path.samefile(folder, database_folder)
    with contextlib.suppress(OSError):  # the same file by another name (a hard link)
        same = same or os.path.samefile(output, source)
    if same:
        raise click.BadParameter(
            f"{output} is the database in DATABASE_URL (or one of its files): {what} "
            "there would replace it; give it its own file",
            param_hint=param,
        )


@contextlib.contextmanager
def _export_target(output: str, source: str | None) -> Iterator[IO[str]]:
    """The file an export is written to. A regular file is written beside its place and
    renamed onto it once complete: opened in place, it was truncated at once, so a failed
    export (a full disk, a lost database, Ctrl-C) destroyed the good export it was to
    replace, or left a partial one. stdout, a device or a pipe is written as it is.
    ``source``: the SQLite database's file (None: PostgreSQL), whose mode bounds a new
    export's (``_copy_mode``)."""
    if _is_stream(output):
        with _stream_target(output) as out:
            yield out
        return
    # A symlink's target is replaced, as writing through it did, not the link itself.
    target = os.path.realpath(output)
    folder, name = os.path.split(target)
    partial = None
    try:
        with _ctrl_c_deferred():
            fd, partial = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=folder)
        # mkstemp's 0600 would change who may read a replaced export; a new one may be
        # read by no more users than the database it copies.
        os.fchmod(fd, _mode_of(target) if os.path.exists(target) else _copy_mode(source))
        with open(fd, "w", encoding="utf-8") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    except BaseException:
        if partial is not None:
            with contextlib.suppress(OSError):
                os.remove(partial)
        raise


class _StreamCutShort(Exception):
    """Writing to stdout, a pipe or a device failed after the OS had taken some of it."""


class _CountedWrites(io.RawIOBase):
    """A file descriptor's writes, counting the bytes the OS took (never closes it)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.taken = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = os.write(self.fd, data)
        self.taken += n
        return n


@contextlib.contextmanager
def _stream_target(output: str) -> Iterator[IO[str]]:
    """stdout, a pipe or a device, written as it is. A write error there said "no export
    written" even after the reader had taken the header and rows (`export | import -` into a
    target the import refuses: a broken pipe): it is `_StreamCutShort` once bytes went out."""
    if output == "-":
        if sys.stdout is None:  # started with fd 1 closed (`export >&-`): no traceback
            raise OSError(errno.EBADF, "standard output is closed")
        sys.stdout.flush()
        fd, owned = sys.stdout.fileno(), False
    else:
        fd, owned = os.open(output, os.O_WRONLY), True
    raw = _CountedWrites(fd)
    out = io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8")
    try:
        yield out
        out.flush()
    except OSError as exc:
        if raw.taken:
            raise _StreamCutShort(exc.strerror or str(exc)) from None
        raise
    finally:
        with contextlib.suppress(OSError, ValueError):
            out.close()  # what is still buffered, if the stream takes it
        if owned:
            os.close(fd)


@contextlib.contextmanager
def _ctrl_c_deferred() -> Iterator[None]:
    """Ctrl-C waits until the block ends. Around a temporary file's creation and the
    assignment of its name: in between, a KeyboardInterrupt left the file behind, with no
    name to remove it by. Raised when the block ends, it reaches the caller's cleanup with
    the name assigned (pthread_sigmask raises a signal that came meanwhile at once).
    SIGTERM likewise (``_sigterm_aborts``)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# link() refused by a file system without hard links (FAT/exFAT, some SMB and FUSE mounts).
_NO_HARD_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS)


def _place_new_file(partial: str, dest: str) -> None:
    """Give the complete file ``partial`` the name ``dest``, never replacing a file there
    (FileExistsError instead): a hard link does both at once. Where the file system has
    none, a rename after a last check: a file made at ``dest`` in between is replaced."""
    try:
        os.link(partial, dest)
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(dest):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dest) from None
        os.rename(partial, dest)


def _is_stream(output: str) -> bool:
    return output == "-" or (os.path.exists(output) and not os.path.isfile(output))


def _copy_mode(source: str | None) -> int:
    """The mode of a new export or backup of the database in the file ``source`` (None:
    PostgreSQL): what open() gives a new file, and no more than the database's own. A
    0600 database, which holds readers' email addresses, was copied 0644 under the usual
    umask: readable by every local user. An export of PostgreSQL (no file to follow) is
    0600."""
    try:
        allowed = 0o600 if source is None else stat.S_IMODE(os.stat(source).st_mode)
    except OSError:
        allowed = 0o600
    return _mode_of_new_file() & allowed


def _mode_of_new_file() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _mode_of(path: str) -> int:
    """The permissions of the file at ``path``, or those open() gives a new one."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return _mode_of_new_file()


@main.command(
    "import",
    help="Load an export (JSON Lines, from `comments-api export`; '-' is stdin) into the "
    "empty, migrated database in DATABASE_URL, keeping every id and timestamp. One "
    "transaction: on any error nothing is imported. Instances serving that database keep "
    "reading; their writes wait until the import commits (each at most its "
    "DB_STATEMENT_TIMEOUT, then a 503).",
)
@click.argument("source", type=click.Path(dir_okay=False, allow_dash=True, exists=False))
@_sigterm_aborts
def import_command(source: str) -> None:
    from sqlalchemy.exc import DBAPIError

    from .store.transfer import TransferError, import_, read_header

    settings = _settings()
    _refuse_a_transaction_pooler(settings, "import")
    if source == "-" and sys.stdin is None:  # started with fd 0 closed (`import - <&-`)
        raise click.ClickException("standard input is closed; nothing was imported")
    if source == "-" and sys.stdin.isatty():
        # `import -` typed without a pipe waited, without a word, for an export to be typed.
        raise click.ClickException(
            "standard input is a terminal: pipe an export into it "
            "(comments-api export | comments-api import -) or give the file's name"
        )
    try:
        # Opened before anything is migrated: a wrong path must not leave a new database.
        # utf-8-sig: a byte order mark (a file saved by a Windows editor) made the header
        # unreadable, "not a comments-api export".
        opened = click.open_file(source, "r", encoding="utf-8-sig")
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
    with opened as lines:
        try:
            # Checked before migrating: a file that is no export of this schema (gzipped,
            # of another release, empty) created, or upgraded, the target it then refused.
            first = lines.readline()
            read_header(iter([first]))
        except UnicodeDecodeError:
            raise click.ClickException(
                "not a comments-api export: the file is not UTF-8 text (compressed? "
                "decompress it first)"
            ) from None
        except (TransferError, OSError) as exc:
            raise click.ClickException(str(exc)) from None
        _refuse_non_empty(settings)
        with _new_sqlite_file_removed_on_failure(settings):
            _migrate(settings)
            repo = _repository(settings, statement_timeout=BULK_TIMEOUT)
            try:
                with _progress("importing", _announced_rows(first)) as bar:
                    rows = itertools.chain([first], lines)
                    written = import_(repo.engine, rows, progress=bar.update)
            except UnicodeDecodeError:  # was only "'utf-8' codec can't decode byte 0xff ..."
                raise click.ClickException(
                    "the file is damaged: it holds bytes that are not UTF-8 text; "
                    "nothing was imported"
                ) from None
            except (TransferError, OSError) as exc:
                raise click.ClickException(str(exc)) from None
            except DBAPIError as exc:  # gone before the import's transaction began
                raise click.ClickException(
                    f"cannot reach the database: {_driver_message(exc)}; nothing was imported"
                ) from None
            finally:
                repo.engine.dispose()  # closed before its files may be removed
    summary = ", ".join(f"{n} {name}" for name, n in written.items())
    _note(f"imported {summary}")


def _refuse_non_empty(settings: Settings) -> None:
    """Refuse a target that holds rows before migrating it: an import that refuses must
    change nothing, and it had upgraded an older schema first. A SQLite file that is not
    there yet is empty, and is not made here."""
    from sqlalchemy.exc import DBAPIError

    from .store.repository import sqlite_file
    from .store.transfer import TransferError, checking_engine, refuse_non_empty

    path = sqlite_file(settings.database_url)
    if path is not None and not os.path.exists(path):
        return
    # Not make_engine's: it would set WAL on the file even when the import then refuses.
    engine = checking_engine(settings.database_url)
    try:
        refuse_non_empty(engine)
    except TransferError as exc:
        raise click.ClickException(str(exc)) from None
    except DBAPIError as exc:
        raise click.ClickException(f"cannot reach the database: {_driver_message(exc)}") from None
    finally:
        engine.dispose()


@contextlib.contextmanager
def _new_sqlite_file_removed_on_failure(settings: Settings) -> Iterator[None]:
    """An import into a SQLite file that is not there yet creates and migrates it; if the
    import then fails or is stopped (Ctrl-C), the file and its WAL are removed again. An
    empty, migrated database stood there before, which a re-run, `serve` or `keys` then
    took for the database. (Another process creating the same file in between would lose
    it: an import into a path something else is about to use is a mistake already.)"""
    from .store.repository import sqlite_file

    path = sqlite_file(settings.database_url)
    if path is None or os.path.lexists(path):
        yield
        return
    try:
        yield
    except BaseException:
        for leftover in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal"):
            with contextlib.suppress(OSError):  # never hide why the import failed
                os.remove(leftover)
        raise


def _announced_rows(header_line: str) -> int:
    """The row total the file's header announces, for the progress bar."""
    import json

    try:
        return sum(int(v) for v in json.loads(header_line).get("tables", {}).values())
    except (ValueError, AttributeError, TypeError, OverflowError, RecursionError):
        return 0  # import_ reports what is wrong with it (a count of 1e999, deep nesting)


def _not_a_dash(dest: str) -> str:
    # A file named "-" was written, where export and import take "-" for stdout and stdin.
    # Not streamed instead: a backup is checked whole before it is given its name, and
    # bytes already on stdout cannot be taken back when the check fails.
    if dest == "-":
        raise click.BadParameter(
            "a backup is not written to stdout ('-'): it is a SQLite file, checked before "
            "it is given its name; give a file name (./- for a file named '-')"
        )
    return dest


@main.command(
    help="Copy the live SQLite database to DEST with SQLite's online backup API: "
    "consistent while the service keeps writing. For PostgreSQL use pg_dump (see "
    "docs/operations.md)."
)
@click.argument("dest", type=click.Path(dir_okay=False), callback=lambda c, p, v: _not_a_dash(v))
@_sigterm_aborts
def backup(dest: str) -> None:
    import sqlite3

    from .store.repository import sqlite_file
    from .store.transfer import TransferError, sqlite_backup

    settings = _settings()
    database = sqlite_file(settings.database_url)
    if database is None:
        raise click.ClickException(
            "`backup` copies a SQLite database; for PostgreSQL run "
            "pg_dump --format=custom (see docs/operations.md)"
        )
    _refuse_the_database_itself(dest, database, "a backup", "DEST")
    if os.path.exists(dest):
        raise click.ClickException(f"{dest} exists; choose a new file")
    if not os.path.exists(database):
        raise click.ClickException(_no_database(database))
    # Copied into a new file beside DEST, then linked to DEST: written in place, a backup
    # stopped by Ctrl-C (or a kill) was left at DEST looking complete, and a DEST made by
    # someone else between the check above and the copy was overwritten.
    folder, name = os.path.split(os.path.abspath(dest))
    partial = None
    try:
        with _ctrl_c_deferred():
            fd, partial = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=folder)
        os.close(fd)
        sqlite_backup(database, partial)
        # Narrowed once written: mkstemp's 0600 until then. A read-only database (0444)
        # gave a copy SQLite could not write: "attempt to write a readonly database".
        os.chmod(partial, _copy_mode(database))
        _place_new_file(partial, dest)
    except FileExistsError:
        raise click.ClickException(f"{dest} exists; choose a new file") from None
    except (TransferError, OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise click.ClickException(f"no backup written to {dest}: {reason}") from None
    finally:
        if partial is not None:
            # A copy that failed on a full disk left its rollback journal beside it.
            for leftover in (partial, f"{partial}-journal", f"{partial}-wal", f"{partial}-shm"):
                with contextlib.suppress(OSError):
                    os.remove(leftover)
    _note(f"backed up {database} to {dest}")


if __name__ == "__main__":  # python -m comments_api.cli, where the script is not installed
    main()
