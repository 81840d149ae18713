"""Cost per request of validating the hot-path inputs: hand validators, msgspec, pydantic v2.

Run: ``.venv/bin/python bench/validation.py`` (msgspec and pydantic must be importable).
It times the v1 create body and the list query (limit, order) with each library, the same
rules expressed the way each library expresses them (types and JSON-Schema constraints in
the model, the rest in a post-validation hook), and prints microseconds per call. It is a
measurement for choosing the library of comments_api.contract, not a test.

The "domain.py" rows call the service's own functions: at 6d45e21 (before issue 10) they
were the hand validators (v1 body 6.6 us, list query 0.3 us on this machine); since then
they delegate to comments_api.contract.models (the pydantic models plus the domain object).
"""

from __future__ import annotations

import re
import timeit
from typing import Annotated, Any, Literal

import msgspec
import pydantic

from comments_api.comments.rules import (
    EMAIL_PATTERN,
    MAX_AUTHOR_NAME_LENGTH,
    MAX_EMAIL_LENGTH,
    MAX_ID,
    NAME_PATTERN,
    TEXT_PATTERN,
    Limits,
)

MAX_LEN = 5000
BODY = {
    "body": "A reasonable comment about the article, two sentences long. Nothing more.",
    "email": "alice@example.com",
    "author_name": "Alice",
    "parent_id": 42,
}
QUERY = {"limit": "25", "order": "newest"}
_INT = re.compile(r"-?[0-9]+")


# --- msgspec ------------------------------------------------------------------------


class MsgspecNewComment(msgspec.Struct, forbid_unknown_fields=True):
    body: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LEN, pattern=TEXT_PATTERN)]
    email: (
        Annotated[str, msgspec.Meta(max_length=MAX_EMAIL_LENGTH, pattern=EMAIL_PATTERN)] | None
    ) = None
    author_name: (
        Annotated[
            str, msgspec.Meta(min_length=1, max_length=MAX_AUTHOR_NAME_LENGTH, pattern=NAME_PATTERN)
        ]
        | None
    ) = None
    parent_id: int | float | None = None

    def __post_init__(self) -> None:
        if self.parent_id is not None and not (
            not isinstance(self.parent_id, bool)
            and float(self.parent_id).is_integer()
            and 1 <= self.parent_id <= MAX_ID
        ):
            raise ValueError("parent_id")
        if self.author_name is not None:
            self.author_name = self.author_name.strip()


class MsgspecListQuery(msgspec.Struct, forbid_unknown_fields=True):
    limit: Annotated[str, msgspec.Meta(pattern=r"^-?[0-9]+$")] | None = None
    order: Literal["oldest", "newest"] = "oldest"

    def __post_init__(self) -> None:
        if self.limit is not None and not 1 <= int(self.limit) <= 100:
            raise ValueError("limit")


# --- pydantic -------------------------------------------------------------------------

# Our patterns end with a lookahead (see domain.py), which the Rust engine lacks.
_STRICT = pydantic.ConfigDict(extra="forbid", strict=True, regex_engine="python-re")


class PydanticNewComment(pydantic.BaseModel):
    model_config = _STRICT
    body: Annotated[str, pydantic.Field(min_length=1, max_length=MAX_LEN, pattern=TEXT_PATTERN)]
    email: (
        Annotated[str, pydantic.Field(max_length=MAX_EMAIL_LENGTH, pattern=EMAIL_PATTERN)] | None
    ) = None
    author_name: (
        Annotated[
            str,
            pydantic.Field(min_length=1, max_length=MAX_AUTHOR_NAME_LENGTH, pattern=NAME_PATTERN),
        ]
        | None
    ) = None
    parent_id: int | float | None = None

    @pydantic.model_validator(mode="after")
    def _rules(self) -> PydanticNewComment:
        if self.parent_id is not None and not (
            float(self.parent_id).is_integer() and 1 <= self.parent_id <= MAX_ID
        ):
            raise ValueError("parent_id")
        return self


class PydanticListQuery(pydantic.BaseModel):
    model_config = _STRICT
    limit: Annotated[str, pydantic.Field(pattern=r"^-?[0-9]+$")] | None = None
    order: Literal["oldest", "newest"] = "oldest"


def main() -> None:
    from comments_api.contract.requests import parse_limit, parse_order, validate_v1_create

    limits = Limits(MAX_LEN)
    adapter = pydantic.TypeAdapter(PydanticNewComment)
    cases: dict[str, dict[str, Any]] = {
        "v1 create body": {
            "contract.requests function": lambda: validate_v1_create(BODY, "1", limits),
            "msgspec.convert": lambda: msgspec.convert(BODY, MsgspecNewComment),
            "pydantic model_validate": lambda: PydanticNewComment.model_validate(BODY),
            "pydantic TypeAdapter": lambda: adapter.validate_python(BODY),
        },
        "list query": {
            "contract.requests function": lambda: (
                parse_limit(QUERY.get("limit")),
                parse_order(QUERY.get("order")),
            ),
            "msgspec.convert": lambda: msgspec.convert(QUERY, MsgspecListQuery),
            "pydantic model_validate": lambda: PydanticListQuery.model_validate(QUERY),
        },
    }
    number = 20_000
    for case, fns in cases.items():
        print(case)
        for name, fn in fns.items():
            fn()  # warm up and prove it accepts the input
            best = min(timeit.repeat(fn, number=number, repeat=5)) / number
            print(f"  {name:26s} {best * 1e6:6.2f} us/call")


if __name__ == "__main__":
    main()
