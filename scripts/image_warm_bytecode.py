"""Run at image build time (Dockerfile, runtime stage): bytecode for the standard library.

The runtime root filesystem is read-only, so Python cannot cache bytecode at run time,
and compiling at every boot tripled the start time. The venv's bytecode comes from the
build stage (scripts/image_pack_venv.py); this compiles the standard-library modules the
server really uses, with the runtime image's own interpreter and sources: it imports
what `comments-api serve` imports (CLI, gunicorn, app, migrations, one request of each
kind), then writes their bytecode, deflate-compressed, to /usr/lib/python311.zip, which
the interpreter already has on sys.path ahead of /usr/lib/python3.11. A package goes in
whole (a package cannot be split between the zip and the directory). The code objects
keep the real source paths, so stdlib tracebacks still show source lines. Then it
deletes itself. Importing the app also proves the venv's bytecode matches this
interpreter (a bad magic number is an ImportError).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

STDLIB = Path(sys.base_prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
ARCHIVE = STDLIB.parent / f"python{sys.version_info[0]}{sys.version_info[1]}.zip"
SITE_ARCHIVE = Path(sys.prefix) / "lib" / STDLIB.name / "site-packages.zip"


def pyc(source: Path) -> bytes:
    code = compile(source.read_bytes(), str(source), "exec", dont_inherit=True)
    return bytes(importlib._bootstrap_external._code_to_timestamp_pyc(code, 0, 0))  # type: ignore[attr-defined]


def used_stdlib_sources() -> dict[str, list[Path]]:
    """Top-level stdlib name -> every source file of it (all of a package)."""
    used: dict[str, list[Path]] = {}
    for module in list(sys.modules.values()):
        origin = getattr(getattr(module, "__spec__", None), "origin", None) or ""
        path = Path(origin)
        if path.suffix != ".py" or not path.is_relative_to(STDLIB):
            continue
        top = path.relative_to(STDLIB).parts[0]
        if top in used or top in ("lib-dynload", "site-packages", "dist-packages"):
            continue
        entry = STDLIB / top
        # Symlinks point into /etc (sitecustomize): configuration, not library code.
        sources = sorted(entry.rglob("*.py")) if entry.is_dir() else [entry]
        if not any(s.is_symlink() for s in sources):
            used[top] = sources
    return used


def write_stdlib_archive() -> int:
    compiled: dict[str, bytes] = {}
    for sources in used_stdlib_sources().values():
        try:
            for source in sources:
                rel = source.relative_to(STDLIB).with_suffix(".pyc").as_posix()
                compiled[rel] = pyc(source)
        except SyntaxError:
            continue  # e.g. test data in a package: leave that whole package on disk
    with zipfile.ZipFile(ARCHIVE, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for rel, data in sorted(compiled.items()):
            archive.writestr(rel, data)
    return len(compiled)


def check_site_archive_magic() -> None:
    with zipfile.ZipFile(SITE_ARCHIVE) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".pyc"))
        magic = archive.read(name)[:4]
    if magic != importlib.util.MAGIC_NUMBER:
        raise SystemExit(f"{SITE_ARCHIVE}: bytecode magic {magic!r} does not match this Python")


def check_linked_libraries() -> None:
    """psycopg-binary's bundled OpenSSL and Kerberos are links to the base's libraries
    (Dockerfile): load libpq with every symbol bound on this base, so that a base without
    one of them fails the build, not the first PostgreSQL connection in production."""
    subprocess.run(
        [sys.executable, "-I", "-B", "-c", "import psycopg; psycopg.pq.version()"],
        env={"LD_BIND_NOW": "1", "PSYCOPG_IMPL": "binary"},  # binary: fail, not fall back
        check=True,
    )


def main() -> None:
    check_site_archive_magic()
    check_linked_libraries()
    workdir = Path(tempfile.mkdtemp(prefix="warm-"))
    os.environ.update(
        DATABASE_URL=f"sqlite:///{workdir / 'warm.db'}",
        PROMETHEUS_MULTIPROC_DIR=str(workdir / "metrics"),
        LOG_LEVEL="warning",
    )
    (workdir / "metrics").mkdir()

    import gunicorn.arbiter
    import gunicorn.workers.gthread
    import gunicorn.workers.sync  # noqa: F401

    from comments_api import cli, gunicorn_conf, server  # noqa: F401
    from comments_api.app import create_app
    from comments_api.settings import Settings
    from comments_api.store.repository import make_engine, migrate

    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    migrate(engine)
    engine.dispose()
    client = create_app(settings).test_client()
    for method, path, body in (
        ("GET", "/readyz", None),
        ("POST", "/api/comment/new", {"email": "a@example.com", "comment": "hi", "content_id": 1}),
        ("GET", "/api/comment/list/1", None),
        ("GET", "/api/v1/contents/1/comments", None),
        ("GET", "/metrics", None),
        ("GET", "/no-such-page", None),
    ):
        client.open(path, method=method, json=body)

    for child in sorted(workdir.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    workdir.rmdir()
    count = write_stdlib_archive()
    Path(__file__).unlink()
    print(f"{ARCHIVE}: {count} stdlib modules ({ARCHIVE.stat().st_size / 1e6:.1f} MB)", flush=True)


if __name__ == "__main__":
    main()
