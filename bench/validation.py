"""Cost per request of validating the hot-path inputs: the msgspec contract vs pydantic v2.

Run: ``.venv/bin/python bench/validation.py``. It times the v1 create body and the list
query (limit, order) through comments_api.contract (msgspec models since the port), and,
when pydantic is importable (the dev venv has it: openapi-spec-validator needs it), the
same rules as the previous pydantic v2 contract (e8f4adb): strict models on Python's
``re``, 1.0 taken as the id 1, the name trimmed after validation, limit/order through
TypeAdapters. It prints microseconds per call (best of 5); a measurement for choosing
the library, not a test.

At 6d45e21 (before issue 10) the hand validators cost 6.6 us (v1 body) and 0.3 us (list
query) on this machine.
"""

from __future__ import annotations

import re
import timeit
from typing import Annotated, Any, Literal

from comments_api.comments.rules import (
    EMAIL_PATTERN,
    MAX_AUTHOR_NAME_LENGTH,
    MAX_EMAIL_LENGTH,
    MAX_ID,
    MAX_PAGE_SIZE,
    NAME_PATTERN,
    TEXT_PATTERN,
    Limits,
)
from comments_api.contract import models
from comments_api.contract.requests import parse_limit, parse_order, validate_v1_create

MAX_LEN = 5000
BODY = {
    "body": "A reasonable comment about the article, two sentences long. Nothing more.",
    "email": "alice@example.com",
    "author_name": "Alice",
    "parent_id": 42,
}
QUERY = {"limit": "25", "order": "newest"}
_INT = re.compile(r"-?[0-9]+")


def pydantic_cases() -> dict[str, dict[str, Any]]:
    """The previous contract's rules on pydantic v2 (empty when pydantic is missing)."""
    try:
        import pydantic
    except ImportError:
        return {}

    config = pydantic.ConfigDict(extra="forbid", strict=True, regex_engine="python-re")

    def integral(value: object) -> object:
        return int(value) if isinstance(value, float) and value.is_integer() else value

    def ascii_int(value: object) -> object:
        if isinstance(value, str) and _INT.fullmatch(value):
            return int(value) if len(value) <= 4 else MAX_PAGE_SIZE + 1
        return value

    class PydanticNewComment(pydantic.BaseModel):
        model_config = config
        body: Annotated[str, pydantic.Field(min_length=1, max_length=MAX_LEN, pattern=TEXT_PATTERN)]
        email: (
            Annotated[str, pydantic.Field(max_length=MAX_EMAIL_LENGTH, pattern=EMAIL_PATTERN)]
            | None
        ) = None
        author_name: (
            Annotated[
                str,
                pydantic.Field(
                    min_length=1, max_length=MAX_AUTHOR_NAME_LENGTH, pattern=NAME_PATTERN
                ),
            ]
            | None
        ) = None
        parent_id: (
            Annotated[int, pydantic.Field(ge=1, le=MAX_ID), pydantic.BeforeValidator(integral)]
            | None
        ) = None

        @pydantic.model_validator(mode="after")
        def _trim(self) -> PydanticNewComment:
            if self.author_name is not None:
                self.author_name = self.author_name.strip()
            return self

    limit = pydantic.TypeAdapter(
        Annotated[
            int,
            pydantic.Field(ge=1, le=MAX_PAGE_SIZE),
            pydantic.BeforeValidator(ascii_int),
        ],
        config=config,
    )
    order = pydantic.TypeAdapter(Literal["oldest", "newest"], config=config)
    return {
        "v1 create body": {
            "pydantic v2 model_validate": lambda: PydanticNewComment.model_validate(BODY),
        },
        "list query": {
            "pydantic v2 TypeAdapters": lambda: (
                limit.validate_python(QUERY["limit"]),
                order.validate_python(QUERY["order"]),
            ),
        },
    }


def main() -> None:
    limits = Limits(MAX_LEN)
    new_comment = models.comment_models(MAX_LEN).new
    cases: dict[str, dict[str, Any]] = {
        "v1 create body": {
            "msgspec: Body.parse": lambda: new_comment.parse(BODY),
            "msgspec: validate_v1_create": lambda: validate_v1_create(BODY, "1", limits),
        },
        "list query": {
            "msgspec: LIMIT/ORDER.validate": lambda: (
                models.LIMIT.validate(QUERY["limit"]),
                models.ORDER.validate(QUERY["order"]),
            ),
            "msgspec: parse_limit+order": lambda: (
                parse_limit(QUERY.get("limit")),
                parse_order(QUERY.get("order")),
            ),
        },
    }
    for case, fns in pydantic_cases().items():
        cases[case].update(fns)
    number = 20_000
    for case, fns in cases.items():
        print(case)
        for name, fn in fns.items():
            fn()  # warm up and prove it accepts the input
            best = min(timeit.repeat(fn, number=number, repeat=5)) / number
            print(f"  {name:30s} {best * 1e6:6.2f} us/call")


if __name__ == "__main__":
    main()
