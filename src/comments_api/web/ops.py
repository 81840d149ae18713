"""Operational endpoints: liveness, readiness (podinfo conventions)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .. import __version__
from .common import services

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers. No database call, so a DB outage never restarts pods."""
    return jsonify(status="ok", version=__version__)


@bp.get("/readyz")
def readyz() -> Response | tuple[Response, int]:
    """Readiness: draining? database reachable? schema at the migration this code expects?"""
    readiness = services().health.readiness()
    if not readiness.ready:
        response = jsonify(status="unavailable", reason=readiness.reason)
        response.headers["Retry-After"] = "5"
        return response, 503
    return jsonify(status="ready", schema_revision=readiness.schema_revision)


# The name operators were promised in the original write-up; same check as readiness.
bp.add_url_rule("/healthcheck", "healthcheck", readyz)
