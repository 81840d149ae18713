"""Run at image build time (Dockerfile, build stage): shrink the venv without changing it.

Every Python module is shipped exactly once, as bytecode (issue #5's 80 MB budget; the
read-only root cannot cache bytecode, and compiling at every boot is too slow):

* Pure-Python distributions go into one deflate-compressed zip on sys.path (a .pth file
  adds it); zipimport loads the sourceless .pyc from it, and importlib.resources still
  reads package data from it (limits' Lua scripts).
* What must stay real files stays on disk, sourceless (`module.pyc` beside where
  `module.py` was, which the import system loads when no source exists): packages with
  extension modules (a package cannot be split between a zip and a directory),
  comments_api, whose migrations Alembic loads by file name (those stay .py), and
  limits, whose package data is read at every start.
* A .pth file puts the zip on sys.path and imports a small fix for zipimport's double
  loading (see SPEEDUP below).
* Dead weight goes: dist-info RECORD files (for pip, which is not in the image) and
  SQLAlchemy's optional Cython accelerators, which have pure-Python twins with the same
  behaviour, so SQLAlchemy can be zipped (4.8 MB of its bytecode becomes 1.7 MB).

The bytecode is made by this interpreter (the build stage's Debian 12 Python 3.11); the
runtime stage imports everything from it, so a magic-number mismatch fails the build.
Tracebacks show file names and line numbers but no source lines.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import zipfile
from pathlib import Path

SITE = Path(sys.argv[1] if len(sys.argv) > 1 else "/venv/lib/python3.11/site-packages")
ARCHIVE = SITE.parent / "site-packages.zip"
# Loaded by file name (Alembic) or located through __file__ (Flask's root_path).
KEEP_SOURCE = ("comments_api/store/migrations/",)
# limits reads its Lua scripts through importlib.resources at import time: from a zip
# that re-reads the whole archive's directory per file, 0.2 s of CPU per process.
ON_DISK = {"comments_api", "limits"}


# Imported through the .pth file at every start. Python 3.11's zipimport decompresses
# and unmarshals each module twice: once in get_filename, only to learn the path for the
# module's spec. For bytecode with no source beside it, that path is the zip entry's own,
# so look it up instead (0.15-0.3 s of CPU per start). Anything else: the original.
SPEEDUP = "_zipimport_spec_path"
SPEEDUP_SOURCE = """\
import zipimport


def _install():
    cls = zipimport.zipimporter
    module_path = getattr(zipimport, "_get_module_path", None)
    order = getattr(zipimport, "_zip_searchorder", None)
    if module_path is None or order is None:
        return  # another Python: its zipimport is left alone
    original = cls.get_filename

    def get_filename(self, fullname):
        files = getattr(self, "_files", None)
        if isinstance(files, dict):
            path = module_path(self, fullname)
            for suffix, isbytecode, _ in order:
                entry = files.get(path + suffix)
                if entry is not None:
                    if isbytecode and path + suffix[:-1] not in files:
                        return entry[0]
                    break
        return original(self, fullname)

    cls.get_filename = get_filename


_install()
"""


def pyc(source: Path, display_name: str) -> bytes:
    """Timestamp-style bytecode with a zero mtime: never checked (no source beside it)."""
    code = compile(source.read_bytes(), display_name, "exec", dont_inherit=True)
    return bytes(importlib._bootstrap_external._code_to_timestamp_pyc(code, 0, 0))  # type: ignore[attr-defined]


def has_extension(entry: Path) -> bool:
    return entry.is_dir() and any(entry.rglob("*.so"))


def main() -> None:
    for record in SITE.glob("*.dist-info/RECORD"):
        record.unlink()
    # SQLAlchemy imports each *_cy module's .py twin when the compiled one is absent.
    for accelerator in (SITE / "sqlalchemy").rglob("*.so"):
        if accelerator.with_name(accelerator.name.split(".")[0] + ".py").exists():
            accelerator.unlink()

    zipped = 0
    with zipfile.ZipFile(ARCHIVE, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for entry in sorted(SITE.iterdir()):
            name = entry.name
            if name.endswith((".dist-info", ".libs", ".pth")) or name == "__pycache__":
                continue
            if entry.is_file() and entry.suffix != ".py":
                continue  # top-level extension modules (_cffi_backend)
            if name in ON_DISK or has_extension(entry):
                for source in sorted(entry.rglob("*.py")):
                    rel = source.relative_to(SITE).as_posix()
                    if rel.startswith(KEEP_SOURCE):
                        continue
                    source.with_suffix(".pyc").write_bytes(pyc(source, str(source)))
                    source.unlink()
                continue
            files = [entry] if entry.is_file() else [entry, *sorted(entry.rglob("*"))]
            for path in files:
                rel = path.relative_to(SITE).as_posix()
                if path.is_dir():
                    # zipimport finds namespace packages (flask.sansio) by directory entry.
                    archive.writestr(rel + "/", b"")
                    continue
                if path.suffix == ".py":
                    display = f"{ARCHIVE}/{rel}"
                    archive.writestr(rel[:-3] + ".pyc", pyc(path, display))
                elif path.suffix not in (".pyc", ".pyi", ".typed"):
                    archive.write(path, rel)  # package data (Lua scripts, templates)
            zipped += 1
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    speedup = SITE / f"{SPEEDUP}.py"
    speedup.write_text(SPEEDUP_SOURCE, encoding="utf-8")
    speedup.with_suffix(".pyc").write_bytes(pyc(speedup, str(speedup)))
    speedup.unlink()
    # site.py appends each existing path in a .pth file to sys.path, after site-packages,
    # and runs its import lines.
    (SITE / "site-packages-zip.pth").write_text(f"{ARCHIVE}\nimport {SPEEDUP}\n", encoding="utf-8")
    print(f"{zipped} top-level modules zipped: {ARCHIVE} ({ARCHIVE.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
