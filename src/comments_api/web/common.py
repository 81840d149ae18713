"""Helpers every blueprint shares: the app's services and strict JSON bodies."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app, request
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

from ..auth import JwtVerifier
from ..domain import Limits
from ..moderation import AbuseRules
from ..settings import Settings
from ..storage import Repository

EXTENSION_KEY = "comments_api"


@dataclass
class Services:
    """Everything a request handler needs; built once by the app factory."""

    settings: Settings
    repo: Repository
    limits: Limits
    expected_revision: str
    drain_file: str | None = None
    jwt: JwtVerifier | None = None  # None: bearer tokens other than API keys are refused
    abuse: AbuseRules | None = None  # None: no duplicate / flood / ban checks


def emit(signal: Any, **data: object) -> None:
    """Announce a domain event (see events.py) with the real app object as sender."""
    signal.send(current_app._get_current_object(), **data)  # type: ignore[attr-defined]


def services() -> Services:
    return current_app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json() -> Any:
    """The request body as JSON, or a 4xx that says exactly what is wrong with it."""
    mimetype = request.mimetype
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType(
            "send the body as JSON with the header 'Content-Type: application/json'"
        )
    raw = request.get_data(cache=True)  # a too-large body raises 413 here
    try:
        text = raw.decode(request.mimetype_params.get("charset", "utf-8"))
    except (UnicodeDecodeError, LookupError):
        raise BadRequest("the request body is not valid UTF-8") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None


def iso_timestamp(value: datetime | None) -> str | None:
    """UTC timestamps on the wire: ``2026-11-29T20:07:08.790Z``."""
    if value is None:
        return None
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
