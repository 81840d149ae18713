"""Operational endpoints: liveness, readiness (podinfo conventions)."""

from __future__ import annotations

import logging
import os

from flask import Blueprint, Response, jsonify
from sqlalchemy.exc import SQLAlchemyError

from .. import __version__
from .common import services

bp = Blueprint("ops", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers. No database call, so a DB outage never restarts pods."""
    return jsonify(status="ok", version=__version__)


def _not_ready(reason: str) -> tuple[Response, int]:
    response = jsonify(status="unavailable", reason=reason)
    response.headers["Retry-After"] = "5"
    return response, 503


@bp.get("/readyz")
def readyz() -> Response | tuple[Response, int]:
    """Readiness: draining? database reachable? schema at the migration this code expects?"""
    svc = services()
    if svc.drain_file and os.path.exists(svc.drain_file):
        return _not_ready("shutting down")
    try:
        revision = svc.repo.schema_revision()
    except SQLAlchemyError as exc:
        log.warning("readiness: database unreachable: %s", exc.__class__.__name__)
        return _not_ready("database unreachable")
    if revision != svc.expected_revision:
        return _not_ready(
            f"database schema is at {revision or 'no revision'}, "
            f"this code needs {svc.expected_revision}; run `comments-api migrate`"
        )
    return jsonify(status="ready", schema_revision=revision)


# The name operators were promised in the original write-up; same check as readiness.
bp.add_url_rule("/healthcheck", "healthcheck", readyz)
