"""The ``comments-api`` command line."""

from __future__ import annotations

import click

from . import __version__
from .observability import configure_logging
from .settings import Settings, SettingsError


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.UsageError(f"configuration error: {exc}") from None


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    help="comments-api: the comments backend of a news site.\n\n"
    "All configuration comes from environment variables (see README, Configuration).",
)
@click.version_option(__version__, prog_name="comments-api")
def main() -> None:
    pass


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
        _migrate(settings)
    from .server import run_gunicorn

    run_gunicorn(settings)


@main.command(help="Upgrade the database schema in DATABASE_URL to the latest migration.")
def migrate() -> None:
    settings = _settings()
    configure_logging(settings)
    revision = _migrate(settings)
    click.echo(f"database is at revision {revision}")


def _migrate(settings: Settings) -> str:
    from .storage import head_revision, make_engine
    from .storage import migrate as run_migrations

    engine = make_engine(settings.database_url)
    try:
        run_migrations(engine)
    finally:
        engine.dispose()
    return head_revision()
