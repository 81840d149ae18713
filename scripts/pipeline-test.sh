#!/usr/bin/env bash
# `make pipeline-test` (and .ci/run): the tests of the delivery pipeline itself, which run
# scripts/deploy.sh --target local for real (tests/pipeline, marker `pipeline`): one image
# build, two registries, skopeo promotion with a signature, haproxy, PostgreSQL, Redis, and
# 3 replicas per environment, all on 127.0.0.1.
#
# Installs what is missing from apt, starts a Docker engine when none answers (no bridge, no
# iptables; same data root as scripts/image-test.sh, so the base images are cached) and
# stops that one, by PID, at the end. Figures and per-run logs go to artifacts/.
#
# One pytest-xdist worker per core, as make test (TEST_JOBS=N, or 0: serially, in this
# process). --dist loadfile: each module's tests run on one worker, in order, so tests that
# share state (test_local_pipeline.py's kept stack and fixed image tags) must share a module;
# tests in different modules must share no name, port or directory. (Not loadgroup: with
# pytest 9.2 and pytest-xdist 3.8 it ignores xdist_group marks without a word,
# pytest-dev/pytest-xdist#1386, and spreads a group's tests over the workers.)
# Usage: scripts/pipeline-test.sh [pytest args...]      (make pipeline-test)
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_ROOT=${DOCKER_DATA_ROOT:-/var/lib/comments-api-docker}
ARTIFACTS=artifacts
mkdir -p "$ARTIFACTS"
start=$(date +%s)

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v haproxy >/dev/null || need+=(haproxy)
command -v redis-server >/dev/null || need+=(redis-server)
command -v gpg >/dev/null || need+=(gpg gpg-agent)
command -v curl >/dev/null || need+=(curl)
command -v kubectl >/dev/null || echo "note: kubectl absent: the pinned-kustomization test needs it"
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# SC1091: checked on its own (`shellcheck scripts/pipeline-test.sh`) the library is not
# followed; `make lint` passes it too, and follows it (as in deploy.sh).
# shellcheck source=scripts/lib/docker-engine.sh disable=SC1091
. scripts/lib/docker-engine.sh
trap docker_engine_stop EXIT
docker_engine_up "$DATA_ROOT" "$ARTIFACTS/dockerd-pipeline.log" "$ARTIFACTS/dockerd-pipeline.pid"

rc=0
rm -rf "$ARTIFACTS/pipeline-figures.json" "$ARTIFACTS/pipeline-logs"
.venv/bin/pytest -n "${TEST_JOBS:-auto}" --dist loadfile -m pipeline tests/pipeline/ \
  -p no:cacheprovider --durations=5 "$@" || rc=$?
if [ -f "$ARTIFACTS/pipeline-figures.json" ]; then
  echo "measured ($ARTIFACTS/pipeline-figures.json, logs in $ARTIFACTS/pipeline-logs/):"
  cat "$ARTIFACTS/pipeline-figures.json"
fi
echo "pipeline tests: exit $rc in $(($(date +%s) - start))s"
exit "$rc"
