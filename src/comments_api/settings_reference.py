"""The configuration reference in docs/configuration.md, generated from ``Settings``.

Each setting's description lives once, in its field's metadata in settings.py; this
module renders them as a Markdown table between two markers. ``make docs`` rewrites the
table; ``--check`` exits 1 when the file is stale (tests/test_settings_reference.py
checks the same, and that every variable ``Settings.from_env`` reads is in it).

    python -m comments_api.settings_reference [--check] [docs/configuration.md]
"""

from __future__ import annotations

import sys
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

from .settings import Settings

BEGIN = "<!-- BEGIN generated from Settings by `make docs`: edit settings.py, not this table -->"
END = "<!-- END generated -->"
UNSET = "-"


def env_name(item: Field[Any]) -> str:
    return item.name.upper()


def shown_default(item: Field[Any]) -> str:
    """The default as an operator would write it in the environment (``-``: unset)."""
    if "default" in item.metadata:
        return f"`{item.metadata['default']}`"
    value = getattr(Settings(), item.name)
    if value is None or value == ():
        return UNSET
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`"
    return f"`{value}`"


def table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for item in fields(Settings):
        if "doc" not in item.metadata:
            continue  # derived, not read from a variable of its own (path_of)
        name = f"`{env_name(item)}`"
        if item.metadata.get("file"):
            name += f" or `{env_name(item)}_FILE`"
        text = str(item.metadata["doc"]).replace("|", "\\|")
        rows.append(f"| {name} | {shown_default(item)} | {text} |")
    return "\n".join(rows)


def render(document: str) -> str:
    """``document`` with the text between the markers replaced by the current table."""
    start, end = document.index(BEGIN) + len(BEGIN), document.index(END)
    return f"{document[:start]}\n{table()}\n{document[end:]}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    paths = [a for a in args if a != "--check"]
    path = Path(paths[0] if paths else "docs/configuration.md")
    current = path.read_text(encoding="utf-8")
    fresh = render(current)
    if check:
        if fresh != current:
            print(f"{path} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    if fresh != current:
        path.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
