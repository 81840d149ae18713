#!/usr/bin/env bash
# `make image`: builds $IMAGE (default comments-api:dev) from the Dockerfile.
#
# Wheels are fetched on the host (hash-checked against requirements.lock) together with
# a wheel of the project itself, so `docker build` needs no network. By default the
# Dockerfile's public base images are used; scripts/image-test.sh passes local stand-ins:
#   BUILD_BASE=... RUNTIME_BASE=...   base images (build args)
#   DOCKER_BUILD_NETWORK=none         network mode of the build
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-comments-api:dev}
DOCKER=${DOCKER:-docker}
WHEELS=build/wheels

# The project wheel is built with the dev venv's setuptools (no build isolation: offline).
[ -x .venv/bin/pip ] || make -s venv

# One build at a time per checkout: each empties and refills build/wheels, which the
# Dockerfile copies, so a second one would empty it under the first's `docker build`.
# The lock goes with this process (fd 9), also when it is killed.
mkdir -p build
exec 9>build/.image-build.lock
if ! flock -n 9; then
  echo "== waiting for another image build from this checkout (build/.image-build.lock)"
  flock 9
fi

rm -rf "$WHEELS"
mkdir -p "$WHEELS"
echo "== wheels for Python 3.11 manylinux x86_64 -> $WHEELS"
# pip's machine config names optional local mirrors; their "is ignored" notes are noise.
quiet_pip() { "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }
quiet_pip .venv/bin/pip download --quiet --disable-pip-version-check \
  --only-binary=:all: --python-version 3.11 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
  --require-hashes -r requirements.lock -d "$WHEELS"
quiet_pip .venv/bin/pip wheel --quiet --disable-pip-version-check \
  --no-deps --no-build-isolation -w "$WHEELS" .

version=$(.venv/bin/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
source_url=$(.venv/bin/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["urls"]["Source"])')
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)

args=(
  --build-arg "VERSION=$version"
  --build-arg "REVISION=$revision"
  --build-arg "CREATED=$created"
  --build-arg "SOURCE=$source_url"
)
[ -z "${BUILD_BASE:-}" ] || args+=(--build-arg "BUILD_BASE=$BUILD_BASE")
[ -z "${RUNTIME_BASE:-}" ] || args+=(--build-arg "RUNTIME_BASE=$RUNTIME_BASE")
[ -z "${DOCKER_BUILD_NETWORK:-}" ] || args+=(--network "$DOCKER_BUILD_NETWORK")

echo "== docker build $IMAGE (${BUILD_BASE:-public build base} -> ${RUNTIME_BASE:-public runtime base})"
$DOCKER build --quiet "${args[@]}" -t "$IMAGE" . >/dev/null
size=$($DOCKER image inspect -f '{{.Size}}' "$IMAGE")
awk -v s="$size" -v i="$IMAGE" 'BEGIN { printf "built %s: %.1f MB (%d bytes) uncompressed\n", i, s / 1e6, s }'
