"""Operational endpoints: liveness, readiness (podinfo conventions)."""

from __future__ import annotations

import logging
import os

from flask import Blueprint, Response, jsonify
from sqlalchemy.exc import SQLAlchemyError

from .. import __version__
from ..store.repository import SQLITE_WAL_SIZE_LIMIT
from .common import services

bp = Blueprint("ops", __name__)

# Below this much free space on the SQLite volume a write may fail at any moment: the WAL
# alone may grow to 1 MiB before it is folded back (storage.SQLITE_WAL_SIZE_LIMIT).
MIN_FREE_BYTES = 2 * SQLITE_WAL_SIZE_LIMIT
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
    free = svc.repo.free_bytes()
    if free is not None and free < MIN_FREE_BYTES:
        log.warning("readiness: database volume full (%d bytes free)", free)
        return _not_ready("the database volume is full; writes fail until space is freed on it")
    if revision != svc.expected_revision:
        return _not_ready(
            f"database schema is at {revision or 'no revision'}, "
            f"this code needs {svc.expected_revision}; run `comments-api migrate`"
        )
    return jsonify(status="ready", schema_revision=revision)


# The name operators were promised in the original write-up; same check as readiness.
bp.add_url_rule("/healthcheck", "healthcheck", readyz)
