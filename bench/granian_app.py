"""The WSGI app as granian runs it in the bench: ``comments_api.wsgi:app`` plus the JSON
logging that ``comments-api serve`` configures before it loads the app, so granian's rows
write the same access log line per request as gunicorn's (a fair comparison)."""

from comments_api.settings import Settings
from comments_api.telemetry import configure_logging

configure_logging(Settings.from_env())

from comments_api.wsgi import app  # noqa: E402 - after logging, as serve does

__all__ = ["app"]
