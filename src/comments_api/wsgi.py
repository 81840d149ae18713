"""WSGI entry point for gunicorn or any other WSGI server: ``comments_api.wsgi:app``."""

from .app import create_app

app = create_app()
