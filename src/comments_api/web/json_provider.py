"""Flask's JSON provider on msgspec's encoder (issue 11 item 4: JSON encoding).

Flask's default provider builds a ``json.JSONEncoder`` per call and the body as text that
the response then encodes: ``jsonify`` of a create's two-field answer cost 10.5 µs here,
6.3 µs on msgspec, which the contract and the access line already use. The bytes are the
same (compact separators, UTF-8 rather than ``\\u`` escapes, keys in insertion order, a
trailing newline; indented when the app runs in debug mode), except that a float with an
exponent is spelt ``1e16`` rather than ``1e+16`` (the same number). Request bodies are
still parsed by the standard library (``web/common.read_json`` and its strict checks).
"""

from __future__ import annotations

import json
from typing import Any, cast

import msgspec
from flask import Response
from flask.json.provider import JSONProvider
from flask.sansio.app import App


class MsgspecJSONProvider(JSONProvider):
    mimetype = "application/json"

    def __init__(self, app: App) -> None:
        super().__init__(app)
        self._encode = msgspec.json.Encoder().encode

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs:  # a caller's json.dumps options (indent, sort_keys, ...): the standard way
            kwargs.setdefault("ensure_ascii", False)
            return json.dumps(obj, **kwargs)
        return self._encode(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return json.loads(s, **kwargs)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        body = self._encode(self._prepare_response_obj(args, kwargs))
        if self._app.debug:
            body = msgspec.json.format(body, indent=2)
        # Typed as werkzeug's sans-I/O class on Flask's provider base; a Flask app's is ours.
        response_class = cast("type[Response]", self._app.response_class)
        return response_class(body + b"\n", mimetype=self.mimetype)
