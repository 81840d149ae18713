"""scripts/image-build.sh (`make image`) from one checkout, twice at once.

It fills build/wheels, which the Dockerfile copies, after emptying it: a second build
started while the first's `docker build` was reading the directory emptied it under that
build. The script runs here on a copy of itself, with stand-ins for pip and docker that
record which run's wheels the build found (no network, no Docker engine).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# pip download/wheel: one file named after the run (RUN_ID) in the -d/-w directory.
PIP = """#!/bin/sh
out=
while [ $# -gt 0 ]; do
  case $1 in -d | -w) out=$2; shift ;; esac
  shift
done
touch "$out/wheel-of-$RUN_ID.whl"
"""

# docker build: says it started, reads build/wheels over a while (as a build's context
# upload would), and fails if this run's wheel went from under it.
DOCKER = """#!/bin/sh
case $1 in
  build)
    touch "$MARKS/building-$RUN_ID"
    for _ in 1 2 3 4 5 6; do
      [ -e "build/wheels/wheel-of-$RUN_ID.whl" ] || { echo "wheels gone mid-build" >&2; exit 1; }
      sleep 0.25
    done ;;
  image) echo 1000 ;;
esac
"""


def checkout(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "image-build.sh", repo / "scripts" / "image-build.sh")
    shutil.copy2(ROOT / "pyproject.toml", repo / "pyproject.toml")
    (repo / "requirements.lock").write_text("")
    bin_dir = repo / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    for name, text in (("pip", PIP), ("docker", DOCKER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "DOCKER": str(bin_dir / "docker"), "MARKS": str(marks)}
    return repo, env


def start(repo: Path, env: dict[str, str], run_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(repo / "scripts" / "image-build.sh")],
        env={**env, "RUN_ID": run_id, "IMAGE": f"comments-api:{run_id}"},
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_second_build_from_one_checkout_waits_for_the_first(tmp_path: Path):
    repo, env = checkout(tmp_path)
    first = start(repo, env, "first")
    deadline = time.monotonic() + 30
    while not (Path(env["MARKS"]) / "building-first").exists():
        assert first.poll() is None, first.communicate()[0]
        assert time.monotonic() < deadline, "the first build never reached docker build"
        time.sleep(0.02)
    second = start(repo, env, "second")
    out_first, _ = first.communicate(timeout=60)
    out_second, _ = second.communicate(timeout=60)
    assert first.returncode == 0, out_first
    assert second.returncode == 0, out_second
    assert "built comments-api:first" in out_first
    assert "built comments-api:second" in out_second
    assert "another image build from this checkout" in out_second  # it said why it waited
    assert sorted(p.name for p in (repo / "build" / "wheels").iterdir()) == ["wheel-of-second.whl"]
