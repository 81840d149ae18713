"""The app's JSON provider (msgspec) answers what Flask's default provider answered."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.json.provider import DefaultJSONProvider
from hypothesis import given, settings
from hypothesis import strategies as st

from comments_api.web.json_provider import MsgspecJSONProvider

pytestmark = pytest.mark.unit  # the fast tier: no servers, no network

# Text as the views emit it: any code point but lone surrogates (read_json refuses them).
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
_SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | _TEXT


def _json(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
        max_leaves=12,
    )


def _apps() -> tuple[Flask, Flask]:
    """Ours, and the default provider as create_app configured it before msgspec."""
    ours, before = Flask("ours"), Flask("before")
    ours.json = MsgspecJSONProvider(ours)
    assert isinstance(before.json, DefaultJSONProvider)
    before.json.ensure_ascii = False
    before.json.sort_keys = False
    return ours, before


@settings(max_examples=300, deadline=None)
@given(value=_json(_SCALARS))
def test_responses_are_byte_for_byte_what_flask_answered(value: Any) -> None:
    ours, before = _apps()
    with ours.app_context(), before.app_context():
        got = ours.json.response(value)
        expected = before.json.response(value)
    assert got.get_data() == expected.get_data()
    assert got.mimetype == expected.mimetype == "application/json"


@settings(max_examples=200, deadline=None)
@given(value=_json(_SCALARS | st.floats(allow_nan=False, allow_infinity=False)))
def test_floats_keep_their_value(value: Any) -> None:
    """msgspec spells exponents as ``1e16`` where Python writes ``1e+16``: the same number."""
    ours, _ = _apps()
    with ours.app_context():
        assert json.loads(ours.json.response(value).get_data()) == value


def test_arguments_and_keywords_as_flask_takes_them() -> None:
    ours, before = _apps()
    with ours.app_context(), before.app_context():
        for args, kwargs in (((), {}), ((1, "a"), {}), ((), {"status": "SUCCESS", "n": 2})):
            assert (
                ours.json.response(*args, **kwargs).get_data()
                == before.json.response(*args, **kwargs).get_data()
            )
        with pytest.raises(TypeError):
            ours.json.response(1, status="x")


def test_debug_mode_indents_and_dumps_options_are_honoured() -> None:
    ours, _ = _apps()
    ours.debug = True
    value = {"a": [1, {"b": "é"}]}
    with ours.app_context():
        body = ours.json.response(value).get_data()
    assert b'\n  "a": [' in body
    assert json.loads(body) == value
    assert ours.json.dumps({"b": 1, "a": 2}) == '{"b":1,"a":2}'
    assert ours.json.dumps({"b": 1, "a": 2}, sort_keys=True) == '{"a": 2, "b": 1}'
    assert ours.json.dumps(["é"], indent=None) == '["é"]'
    assert ours.json.dumps(["é"], ensure_ascii=True) == '["\\u00e9"]'
    assert ours.json.loads('{"x": [1]}') == {"x": [1]}
